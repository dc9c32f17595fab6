//! Each agent's event log: appended by the fleet, read as JSON pages or followed live (SSE).
//!
//! Streams read by the database's order (`seq`, see `xerotier_store`'s `order.rs`), never by
//! id: ids carry the writing replica's clock, so an event written by a replica whose clock lags
//! would sort below a reader's cursor. A stream is woken by an append here and, on PostgreSQL,
//! by the notification every event commit sends (`EVENTS_CHANNEL`, payload the agent id),
//! which [`EventLog::spawn_listener`] hears for this replica; it then re-reads the store after
//! its cursor. The periodic re-read is only a safety net.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use xerotier_core::{IdGenerator, IdKind, SharedClock};
use xerotier_store::{AgentEvent, Backend, EVENTS_CHANNEL, Notice, PageRequest, PageSlice, Store};

use crate::service_error::ServiceError;

/// How often a live stream re-reads the store when nothing woke it: only a safety net (a wake-up
/// lost between a notification and a reconnect is covered by [`Notice::Lost`] too).
const STREAM_POLL: Duration = Duration::from_secs(1);
/// The listener's pause after a failed (re)connection, doubling up to [`LISTEN_BACKOFF_MAX`].
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a replica numbers committed events and audit records nobody has read yet.
const NUMBERING_INTERVAL: Duration = Duration::from_secs(1);
/// How many events a stream reads at a time.
const STREAM_BATCH: u32 = 100;

/// The wake-ups of live streams, one per agent that has any.
#[derive(Debug, Default)]
struct Wakers {
    /// Agent id → its streams' wake-up and how many streams share it.
    by_agent: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
}

impl Wakers {
    fn register(self: &Arc<Self>, agent_id: &str) -> WakerGuard {
        let mut map = self.by_agent.lock();
        let entry = map.entry(agent_id.to_string()).or_insert_with(|| (Arc::default(), 0));
        entry.1 += 1;
        WakerGuard { wakers: self.clone(), agent_id: agent_id.to_string(), notify: entry.0.clone() }
    }

    fn wake(&self, agent_id: &str) {
        if let Some((notify, _)) = self.by_agent.lock().get(agent_id) {
            notify.notify_waiters();
        }
    }

    fn wake_all(&self) {
        for (notify, _) in self.by_agent.lock().values() {
            notify.notify_waiters();
        }
    }
}

/// A stream's registration; the agent's entry goes with its last stream.
#[derive(Debug)]
struct WakerGuard {
    wakers: Arc<Wakers>,
    agent_id: String,
    notify: Arc<Notify>,
}

impl Drop for WakerGuard {
    fn drop(&mut self) {
        let mut map = self.wakers.by_agent.lock();
        if let Some(entry) = map.get_mut(&self.agent_id) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                map.remove(&self.agent_id);
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct EventLog {
    store: Store,
    clock: SharedClock,
    ids: IdGenerator,
    wakers: Arc<Wakers>,
    /// Cancelled when the router stops: live streams end, so HTTP can drain.
    closed: CancellationToken,
}

impl EventLog {
    pub fn new(store: Store, clock: SharedClock, ids: IdGenerator) -> Self {
        Self { store, clock, ids, wakers: Arc::default(), closed: CancellationToken::new() }
    }

    /// Ends every live stream (at shutdown, before HTTP drains).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// One page of an agent's events, in the order they committed.
    pub async fn list(
        &self,
        agent_id: &str,
        page: &PageRequest,
    ) -> Result<PageSlice<AgentEvent>, ServiceError> {
        self.require_agent(agent_id).await?;
        Ok(self.store.list_events(agent_id, page).await?)
    }

    /// The agent's events after the event `after` (an id), then each new one as it is
    /// committed (here or on another replica), in the database's order, until the router
    /// stops. The id is resolved to its place once; from then on the stream follows `seq`.
    pub async fn follow(
        &self,
        agent_id: &str,
        after: Option<String>,
    ) -> Result<impl Stream<Item = AgentEvent> + use<>, ServiceError> {
        self.require_agent(agent_id).await?;
        let seq = self.store.event_seq(after.as_deref()).await?;
        Ok(follow(self.clone(), agent_id.to_string(), seq))
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

    /// Wakes this replica's live streams after events were committed in a transaction of the
    /// caller's (every agent's: the caller does not say which). Other replicas hear of it from
    /// the commit's notification.
    pub fn written(&self) {
        self.wakers.wake_all();
    }

    /// Listens for the events other replicas commit (PostgreSQL) and wakes the streams of each
    /// event's agent; returns at once on SQLite, where every event is written here. Whenever
    /// notifications may have been missed (the connection dropped, or is made again) every
    /// stream is woken, and re-reads after its cursor. Runs until `shutdown`.
    pub fn spawn_listener(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let log = self.clone();
        tokio::spawn(async move { shutdown.run_until_cancelled(log.listen()).await.unwrap_or(()) })
    }

    /// On PostgreSQL, numbers committed events and audit records every second (readers number
    /// them before they read, so this only keeps a backlog from building up between reads);
    /// returns at once on SQLite, which numbers rows as they are inserted. Runs until
    /// `shutdown`.
    pub fn spawn_numbering(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let store = self.store.clone();
        tokio::spawn(async move {
            if store.backend() != Backend::Postgres {
                return;
            }
            let mut ticks = tokio::time::interval(NUMBERING_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while shutdown.run_until_cancelled(ticks.tick()).await.is_some() {
                if let Err(err) = store.number_pending().await {
                    tracing::warn!(error = %err, "numbering events and audit records failed");
                }
            }
        })
    }

    async fn listen(&self) {
        let mut backoff = LISTEN_BACKOFF_MIN;
        let mut notifications = loop {
            match self.store.listen(&[EVENTS_CHANNEL]).await {
                Ok(Some(notifications)) => break notifications,
                Ok(None) => return,
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?backoff, "event listener cannot connect");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
                }
            }
        };
        // Whatever committed before the listener was there is read by the streams themselves.
        self.wakers.wake_all();
        backoff = LISTEN_BACKOFF_MIN;
        loop {
            match notifications.next().await {
                Ok(Notice::Received { payload, .. }) => {
                    backoff = LISTEN_BACKOFF_MIN;
                    self.wakers.wake(&payload);
                }
                Ok(Notice::Lost) => {
                    tracing::info!("event listener lost its connection; every stream re-reads");
                    self.wakers.wake_all();
                }
                Err(err) => {
                    // The next call reconnects; whatever was sent meanwhile is lost, so every
                    // stream re-reads once it is back (and on the safety-net poll until then).
                    tracing::warn!(error = %err, retry_in = ?backoff, "event listener cannot reconnect");
                    self.wakers.wake_all();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
                }
            }
        }
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
            Ok(()) => self.wakers.wake(agent_id),
            Err(err) => {
                tracing::warn!(%agent_id, %event_type, error = %err, "could not record agent event")
            }
        }
    }
}

fn follow(log: EventLog, agent_id: String, seq: i64) -> impl Stream<Item = AgentEvent> {
    let waker = log.wakers.register(&agent_id);
    futures::stream::unfold(
        (log, agent_id, seq, Vec::<AgentEvent>::new(), waker),
        |(log, agent_id, mut seq, mut buffer, waker)| async move {
            loop {
                if log.closed.is_cancelled() {
                    return None;
                }
                if let Some(event) = buffer.pop() {
                    return Some((event, (log, agent_id, seq, buffer, waker)));
                }
                // Register for wake-ups before reading, so an append between the read and the
                // wait is not missed.
                let notified = waker.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                match log.store.events_after(&agent_id, seq, STREAM_BATCH).await {
                    Ok(batch) if !batch.is_empty() => {
                        seq = batch.last().map_or(seq, |event| event.seq);
                        buffer = batch.into_iter().rev().map(|event| event.record).collect();
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
