//! Server-sent event streams that survive a broken connection: when the stream breaks or the
//! router closes it (a restart, a proxy timeout), it is opened again after a growing pause with
//! `Last-Event-ID` set to the last event received, so nothing is lost and nothing is seen twice.

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::Event;
use futures::{Stream, StreamExt};

use crate::client::{ApiError, Client};
use crate::exit::CliError;

/// The first pause before reconnecting; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(3);

type EventStream = Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

/// Whether a failure may go away by trying again: the router is restarting, overloaded or
/// unreachable. A 4xx answer will not change by asking again.
pub fn is_transient(err: &anyhow::Error) -> bool {
    if let Some(api) = err.downcast_ref::<ApiError>() {
        return api.status >= 500;
    }
    !matches!(err.downcast_ref::<CliError>(), Some(CliError::Usage(_)))
}

/// One logical stream of events at a path, over as many connections as it takes.
pub struct Resumable<'a> {
    client: &'a Client,
    path: String,
    /// Give up after failing for this long in a row (`None`: never).
    give_up_after: Option<Duration>,
    stream: Option<EventStream>,
    last_id: Option<String>,
    failing_since: Option<tokio::time::Instant>,
    backoff: Duration,
}

impl std::fmt::Debug for Resumable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resumable")
            .field("path", &self.path)
            .field("last_id", &self.last_id)
            .finish_non_exhaustive()
    }
}

impl<'a> Resumable<'a> {
    /// The stream at `path`, from `after` (an event id) or from where the router starts it.
    pub fn new(
        client: &'a Client,
        path: impl Into<String>,
        after: Option<String>,
        give_up_after: Option<Duration>,
    ) -> Self {
        Self {
            client,
            path: path.into(),
            give_up_after,
            stream: None,
            last_id: after,
            failing_since: None,
            backoff: FIRST_BACKOFF,
        }
    }

    /// Opens the first connection, so that a refusal (no such agent, a bad key) is reported at
    /// once rather than retried.
    pub async fn open(&mut self) -> anyhow::Result<()> {
        let stream = self.client.event_stream(&self.path, self.last_id.as_deref()).await?;
        self.stream = Some(Box::pin(stream));
        Ok(())
    }

    /// The next event, reconnecting as often as it takes (within `give_up_after`).
    pub async fn next(&mut self) -> anyhow::Result<Event> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                match self.client.event_stream(&self.path, self.last_id.as_deref()).await {
                    Ok(stream) => {
                        if self.failing_since.is_some() {
                            eprintln!("(reconnected to {}; resuming)", self.path);
                        }
                        self.stream = Some(Box::pin(stream));
                    }
                    Err(err) if is_transient(&err) => self.pause(err).await?,
                    Err(err) => return Err(err),
                }
                continue;
            };
            match stream.next().await {
                Some(Ok(event)) => {
                    self.failing_since = None;
                    self.backoff = FIRST_BACKOFF;
                    if !event.id.is_empty() {
                        self.last_id = Some(event.id.clone());
                    }
                    return Ok(event);
                }
                Some(Err(err)) => {
                    self.stream = None;
                    self.pause(CliError::Unavailable(format!("the stream broke: {err}")).into())
                        .await?;
                }
                None => {
                    self.stream = None;
                    let closed = "the router closed the stream".to_string();
                    self.pause(CliError::Unavailable(closed).into()).await?;
                }
            }
        }
    }

    /// Waits before the next attempt; the error once `give_up_after` has passed.
    async fn pause(&mut self, err: anyhow::Error) -> anyhow::Result<()> {
        let now = tokio::time::Instant::now();
        let since = match self.failing_since {
            Some(since) => since,
            None => {
                eprintln!("({err:#}; reconnecting)");
                *self.failing_since.insert(now)
            }
        };
        if let Some(window) = self.give_up_after
            && now.duration_since(since) > window
        {
            return Err(err.context(format!(
                "gave up reconnecting to {} after {}",
                self.path,
                humantime::format_duration(window)
            )));
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> anyhow::Error {
        ApiError {
            status,
            code: "x".into(),
            message: "m".into(),
            param: None,
            request_id: "-".into(),
        }
        .into()
    }

    #[test]
    fn only_server_side_and_transport_failures_are_retried() {
        assert!(is_transient(&CliError::Unavailable("cannot reach the router".into()).into()));
        assert!(is_transient(&api(503)));
        assert!(!is_transient(&api(404)));
        assert!(!is_transient(&api(401)));
        assert!(!is_transient(&CliError::Usage("no API key".into()).into()));
    }
}
