//! Live streams (SSE) and the API key each was opened with.
//!
//! A stream outlives the request that authenticated it, so its credential is checked again:
//! [`LiveStreams::spawn_watch`] looks at every open stream's key every [`WATCH_INTERVAL`] (the
//! row from the key cache on SQLite, which every change invalidates, or from the store on
//! PostgreSQL, so a revoke on another replica counts too) and ends each stream whose presented
//! value would no longer authenticate (revoked, expired, or a rotated value whose grace window
//! closed), within a second of the change. Each key holds at most
//! [`RequestLimits::event_streams_per_key`] streams on this router at once; the next one is
//! refused (`too_many_streams`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use xerotier_core::SharedClock;

use crate::auth::{Authenticator, Presented, Principal, accepts};
use crate::request_limits::RequestLimits;
use crate::service_error::ServiceError;

/// How often open streams' keys are looked at again.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct LiveStreams {
    auth: Authenticator,
    clock: SharedClock,
    per_key: u32,
    open: Arc<Mutex<Open>>,
}

#[derive(Debug, Default)]
struct Open {
    next_slot: u64,
    streams: HashMap<u64, Stream>,
}

#[derive(Debug)]
struct Stream {
    key_id: String,
    credential: Presented,
    ended: CancellationToken,
}

/// One open stream's place: the stream holds it for as long as it runs, and gives it back
/// when dropped. [`Self::ended`] resolves when the stream must end.
#[derive(Debug)]
pub struct StreamLease {
    open: Arc<Mutex<Open>>,
    slot: u64,
    ended: CancellationToken,
}

impl StreamLease {
    /// Resolves when the key stops authenticating (or the router stops watching).
    pub fn ended(&self) -> WaitForCancellationFutureOwned {
        self.ended.clone().cancelled_owned()
    }
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        self.open.lock().streams.remove(&self.slot);
    }
}

impl LiveStreams {
    pub fn new(auth: Authenticator, clock: SharedClock, limits: &RequestLimits) -> Self {
        Self { auth, clock, per_key: limits.event_streams_per_key, open: Arc::default() }
    }

    /// A place for one more stream of `caller`'s key, or `TooManyStreams`.
    pub fn open(&self, caller: &Principal) -> Result<StreamLease, ServiceError> {
        let mut open = self.open.lock();
        let held = open.streams.values().filter(|s| s.key_id == caller.key_id).count();
        if held >= usize::try_from(self.per_key).unwrap_or(usize::MAX) {
            tracing::info!(key_id = %caller.key_id, limit = self.per_key, "live stream refused: the key holds its limit");
            return Err(ServiceError::TooManyStreams { limit: self.per_key });
        }
        let slot = open.next_slot;
        open.next_slot += 1;
        let ended = CancellationToken::new();
        open.streams.insert(
            slot,
            Stream {
                key_id: caller.key_id.clone(),
                credential: caller.credential.clone(),
                ended: ended.clone(),
            },
        );
        Ok(StreamLease { open: self.open.clone(), slot, ended })
    }

    /// Streams open now.
    pub fn count(&self) -> usize {
        self.open.lock().streams.len()
    }

    /// One look at every open stream's key: ends those whose value no longer authenticates.
    /// A key that cannot be read now (store down) ends nothing; the next look decides.
    pub async fn sweep(&self) {
        let keys: HashSet<String> =
            self.open.lock().streams.values().map(|s| s.key_id.clone()).collect();
        for key_id in keys {
            let record = match self.auth.record(&key_id).await {
                Ok(record) => record,
                Err(err) => {
                    tracing::warn!(%key_id, error = %err, "could not check a live stream's key");
                    continue;
                }
            };
            let now = self.clock.now_millis();
            let open = self.open.lock();
            for stream in open.streams.values().filter(|s| s.key_id == key_id) {
                let valid = record.as_ref().is_some_and(|r| accepts(r, &stream.credential.0, now));
                if !valid && !stream.ended.is_cancelled() {
                    tracing::info!(%key_id, "live stream ended: its API key no longer authenticates");
                    stream.ended.cancel();
                }
            }
        }
    }

    /// Sweeps every [`WATCH_INTERVAL`] until `shutdown`.
    pub fn spawn_watch(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let streams = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(WATCH_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while shutdown.run_until_cancelled(ticks.tick()).await.is_some() {
                streams.sweep().await;
            }
        })
    }
}
