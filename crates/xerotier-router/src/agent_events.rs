//! Each agent's event log: appended by the fleet, read as JSON pages or followed live (SSE).

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use xerotier_core::{IdGenerator, IdKind, SharedClock};
use xerotier_store::{AgentEvent, PageRequest, PageSlice, Store};

use crate::service_error::ServiceError;

/// How often a live stream looks at the store when nothing was appended here (events written
/// by another replica).
const STREAM_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct EventLog {
    store: Store,
    clock: SharedClock,
    ids: IdGenerator,
    appended: Arc<Notify>,
    /// Cancelled when the router stops: live streams end, so HTTP can drain.
    closed: CancellationToken,
}

impl EventLog {
    pub fn new(store: Store, clock: SharedClock, ids: IdGenerator) -> Self {
        Self {
            store,
            clock,
            ids,
            appended: Arc::new(Notify::new()),
            closed: CancellationToken::new(),
        }
    }

    /// Ends every live stream (at shutdown, before HTTP drains).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// One page of an agent's events, oldest first.
    pub async fn list(
        &self,
        agent_id: &str,
        page: &PageRequest,
    ) -> Result<PageSlice<AgentEvent>, ServiceError> {
        self.require_agent(agent_id).await?;
        Ok(self.store.list_events(agent_id, page).await?)
    }

    /// The agent's events after `after`, then each new one as it is committed (here or on
    /// another replica), until the router stops.
    pub async fn follow(
        &self,
        agent_id: &str,
        after: Option<String>,
    ) -> Result<impl Stream<Item = AgentEvent> + use<>, ServiceError> {
        self.require_agent(agent_id).await?;
        Ok(follow(self.clone(), agent_id.to_string(), after))
    }

    async fn require_agent(&self, agent_id: &str) -> Result<(), ServiceError> {
        match self.store.agent(agent_id).await? {
            Some(_) => Ok(()),
            None => Err(ServiceError::NotFound(format!("agent {agent_id}"))),
        }
    }

    /// An event to be written (with [`Self::append`] or inside a store transaction, followed by
    /// [`Self::written`]).
    pub fn event(
        &self,
        agent_id: &str,
        event_type: &str,
        request_id: Option<&str>,
        details: serde_json::Value,
    ) -> AgentEvent {
        AgentEvent {
            id: self.ids.next(IdKind::Event),
            agent_id: agent_id.to_string(),
            at: self.clock.now_millis(),
            event_type: event_type.to_string(),
            request_id: request_id.map(str::to_string),
            details: (!details.is_null()).then(|| details.to_string()),
        }
    }

    /// Wakes live streams after events were committed.
    pub fn written(&self) {
        self.appended.notify_waiters();
    }

    /// Best effort: the event log is a record for operators; a failure to write one is logged,
    /// never fails the operation it describes.
    pub async fn append(
        &self,
        agent_id: &str,
        event_type: &str,
        request_id: Option<&str>,
        details: serde_json::Value,
    ) {
        let event = self.event(agent_id, event_type, request_id, details);
        match self.store.append_event(&event).await {
            Ok(()) => self.written(),
            Err(err) => {
                tracing::warn!(%agent_id, %event_type, error = %err, "could not record agent event")
            }
        }
    }
}

fn follow(
    log: EventLog,
    agent_id: String,
    after: Option<String>,
) -> impl Stream<Item = AgentEvent> {
    futures::stream::unfold(
        (log, agent_id, after, Vec::<AgentEvent>::new()),
        |(log, agent_id, mut after, mut buffer)| async move {
            loop {
                if log.closed.is_cancelled() {
                    return None;
                }
                if let Some(event) = buffer.pop() {
                    after = Some(event.id.clone());
                    return Some((event, (log, agent_id, after, buffer)));
                }
                // Register for wake-ups before reading, so an append between the read and the wait
                // is not missed.
                let appended = log.appended.clone();
                let notified = appended.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let page = PageRequest { limit: 100, after: after.clone() };
                match log.store.list_events(&agent_id, &page).await {
                    Ok(slice) if !slice.items.is_empty() => {
                        buffer = slice.items;
                        buffer.reverse();
                        continue;
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(%agent_id, error = %err, "event stream read failed; retrying")
                    }
                }
                tokio::select! {
                    _ = tokio::time::timeout(STREAM_POLL, notified) => {}
                    () = log.closed.cancelled() => return None,
                }
            }
        },
    )
}
