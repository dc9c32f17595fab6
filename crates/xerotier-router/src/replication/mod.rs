//! Several replicas on one PostgreSQL: this replica's lease, the fence, and the wait that makes
//! a revoke hold everywhere when it returns.
//!
//! Every audited change commits a signal row (`xerotier_store::Signal`) with it and, on
//! PostgreSQL, a `NOTIFY`. Each replica's [`task`] listens, applies the signals it has not applied
//! ([`apply`]), and records how far it got (`router_replicas.applied_seq`). A revoke then waits
//! ([`Replication::await_everywhere`]) until every replica with a live lease has applied it.
//!
//! A replica that cannot show it is caught up cannot keep its lease: each renewal first applies
//! what is pending, a lease that ran out is renewed only once nothing is pending, and the lease
//! is judged by the database's clock. Locally, the replica serves (authenticated requests, mesh
//! frames) only until `sent + lease - margin`, measured on its monotonic clock from *before* the
//! renewal was sent, so it stops before the database considers its lease over. A revoke that
//! finds a replica's lease over may return: that replica is fenced, and it recovers only by
//! catching up.
//!
//! On SQLite one router owns the store: nothing is fenced and nothing is waited for.

pub mod apply;
pub mod task;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use xerotier_store::{Backend, Store, StoreError};

/// How long a lease lasts, how often it is renewed, and how much earlier than the database's
/// end of it this replica stops serving.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    pub lease: Duration,
    pub renew_every: Duration,
    pub margin: Duration,
    /// How often everything is re-read from the store anyway (a safety net; signals are what
    /// make changes take effect).
    pub full_refresh: Duration,
}

impl LeaseSettings {
    /// Renewed twelve times per lease, so a database that stalls for most of a lease does not
    /// fence the replica; it stops serving a sixth of a lease before the database's end of it.
    pub fn for_lease(lease: Duration) -> Self {
        Self {
            lease,
            renew_every: (lease / 12).max(Duration::from_millis(50)),
            margin: lease / 6,
            full_refresh: Duration::from_secs(10),
        }
    }
}

/// Connections of the replica task's own pool: its work is sequential; the second one covers
/// a connection being replaced.
const LEASE_POOL_CONNECTIONS: u32 = 2;

/// This replica's standing: its id, what it has applied, and until when it may serve.
#[derive(Debug, Clone)]
pub struct Replication(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    store: Store,
    /// The same database through a pool of its own, for this replica's background task:
    /// registration, catching up, acknowledgements and lease renewals never wait for a
    /// connection behind the request load (under which a renewal that waited fenced the
    /// replica), and they never starve it either.
    lease_store: Store,
    replica_id: String,
    settings: LeaseSettings,
    /// PostgreSQL: other replicas exist, so the fence and the waits are real.
    shared: bool,
    applied: AtomicI64,
    /// Until when this replica may serve (monotonic); `None` before the first lease.
    serving_until: Mutex<Option<Instant>>,
    /// Set while fenced, so the task knows to reload before serving again.
    fenced: AtomicBool,
    /// Not one of a fleet (an in-process test's state): never fenced.
    standalone: AtomicBool,
    /// Woken when any replica reports what it applied.
    acks: Notify,
}

/// Why a wait for every replica ended without all of them answering.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("reading the replicas: {0}")]
    Store(#[from] StoreError),
}

impl Replication {
    pub fn new(store: Store, replica_id: String, settings: LeaseSettings) -> Self {
        let shared = store.backend() == Backend::Postgres;
        let lease_store = store.with_own_pool(LEASE_POOL_CONNECTIONS).unwrap_or_else(|err| {
            tracing::warn!(error = %err, "no pool of its own for the replica's lease; sharing the main one");
            store.clone()
        });
        Self(Arc::new(Inner {
            store,
            lease_store,
            replica_id,
            settings,
            shared,
            applied: AtomicI64::new(0),
            serving_until: Mutex::new(None),
            fenced: AtomicBool::new(false),
            standalone: AtomicBool::new(false),
            acks: Notify::new(),
        }))
    }

    pub fn replica_id(&self) -> &str {
        &self.0.replica_id
    }

    pub fn settings(&self) -> LeaseSettings {
        self.0.settings
    }

    /// The store as the replica's background task reaches it (its own pool).
    pub(crate) fn lease_store(&self) -> &Store {
        &self.0.lease_store
    }

    /// Whether another replica may change what this one caches (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.0.shared
    }

    /// The last signal this replica has applied.
    pub fn applied(&self) -> i64 {
        self.0.applied.load(Ordering::SeqCst)
    }

    pub(crate) fn set_applied(&self, seq: i64) {
        self.0.applied.fetch_max(seq, Ordering::SeqCst);
    }

    /// Whether this replica may serve authenticated requests and accept mesh frames now: on
    /// PostgreSQL, only within its lease; on SQLite, always.
    pub fn is_serving(&self) -> bool {
        if !self.0.shared || self.0.standalone.load(Ordering::Relaxed) {
            return true;
        }
        self.0.serving_until.lock().is_some_and(|until| Instant::now() < until)
    }

    /// For a state used in-process, without the replica task (tests of the services): it
    /// serves without a lease and holds no revoke up. Never called by the daemon.
    pub fn run_standalone(&self) {
        self.0.standalone.store(true, Ordering::Relaxed);
    }

    /// A renewal sent at `sent` succeeded: serve until `sent + lease - margin`.
    pub(crate) fn renewed(&self, sent: Instant) {
        let settings = self.0.settings;
        let until = sent + settings.lease.saturating_sub(settings.margin);
        let mut serving = self.0.serving_until.lock();
        *serving = Some(serving.map_or(until, |old| old.max(until)));
    }

    /// Marks the fence engaged; true the first time (the caller then cuts what it serves).
    pub(crate) fn engage_fence(&self) -> bool {
        !self.0.fenced.swap(true, Ordering::SeqCst)
    }

    pub(crate) fn lift_fence(&self) -> bool {
        self.0.fenced.swap(false, Ordering::SeqCst)
    }

    pub fn is_fenced(&self) -> bool {
        self.0.fenced.load(Ordering::SeqCst)
    }

    pub(crate) fn acknowledged(&self) {
        self.0.acks.notify_waiters();
    }

    /// Returns once every replica with a live lease has applied every signal committed before
    /// this call (this one included), or once the others' leases have run out (they fenced
    /// themselves). Called after a revoke commits, so it is in force everywhere when the
    /// caller answers. Bounded: a lease renewed before the revoke's commit lasts at most one
    /// lease, and the renewal after it applies the revoke first.
    pub async fn await_everywhere(&self) -> Result<(), WaitError> {
        if !self.0.shared {
            return Ok(());
        }
        let store = &self.0.store;
        let seq = store.latest_signal_seq().await?;
        let settings = self.0.settings;
        let give_up = Instant::now() + settings.lease + settings.renew_every * 2;
        loop {
            let acked = self.0.acks.notified();
            tokio::pin!(acked);
            acked.as_mut().enable();
            let behind = store.replicas_behind(seq).await?;
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() >= give_up {
                // Unreachable by the lease argument above, unless clocks run at different
                // rates; the leases the database still counts as live are reported.
                tracing::error!(
                    ?behind,
                    seq,
                    "replicas neither applied a revoke nor fenced in time"
                );
                return Ok(());
            }
            // An acknowledgement wakes this at once; the timer covers a lost notification and
            // a lease running out.
            tokio::select! {
                () = acked => {}
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }
}
