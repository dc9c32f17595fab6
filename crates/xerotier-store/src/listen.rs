//! PostgreSQL notifications, for replicas that act on each other's changes at once.
//!
//! A notification is only a hint: the durable row it announces is what counts, and a listener
//! that lost its connection is told so ([`Notice::Lost`]) and must catch up from the rows.

use sqlx::postgres::PgListener;

use crate::{Backend, Store, StoreError};

/// The database URL, kept for listeners; its `Debug` never shows the password.
#[derive(Clone)]
pub(crate) struct ListenUrl(std::sync::Arc<str>);

impl ListenUrl {
    pub(crate) fn new(url: &str) -> Self {
        Self(url.into())
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ListenUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::redact_url(&self.0))
    }
}

/// What a listener heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Received {
        channel: String,
        payload: String,
    },
    /// The connection dropped (and is being re-made): anything sent meanwhile is lost.
    Lost,
}

/// A dedicated connection listening on some channels.
pub struct Notifications {
    listener: PgListener,
}

impl std::fmt::Debug for Notifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notifications")
    }
}

impl Store {
    /// A listener on `channels`, or `None` on SQLite (one router, nothing to hear).
    pub async fn listen(&self, channels: &[&str]) -> Result<Option<Notifications>, StoreError> {
        if self.backend() != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = PgListener::connect(&self.listen_url().0).await?;
        listener.listen_all(channels.iter().copied()).await?;
        Ok(Some(Notifications { listener }))
    }
}

impl Notifications {
    /// The next notification, or [`Notice::Lost`] when the connection dropped. An error means
    /// the reconnection failed; calling again retries it.
    pub async fn next(&mut self) -> Result<Notice, StoreError> {
        Ok(match self.listener.try_recv().await? {
            Some(n) => Notice::Received {
                channel: n.channel().to_string(),
                payload: n.payload().to_string(),
            },
            None => Notice::Lost,
        })
    }
}
