//! The replica's one background task: it registers, listens for signals, applies them in
//! order, renews the lease, re-reads everything now and then, and fences the replica when its
//! lease runs out. One task, so a full re-read and the signals never interleave: a re-read that
//! raced a revoke is corrected by the signal applied right after it, before it is acknowledged.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use xerotier_core::SharedClock;
use xerotier_store::{
    ACK_CHANNEL, DISPATCH_CHANNEL, NewReplica, Notice, Renewal, SIGNAL_CHANNEL, Signal, StoreError,
    WEBHOOK_CHANNEL,
};

use super::Replication;
use super::apply::SignalApplier;
use crate::mesh_runtime::refresh_allow_list;

/// Signals read per query while catching up.
const CATCH_UP_BATCH: u32 = 100;
/// How long a listener that cannot connect waits before it tries again.
const LISTEN_RETRY: Duration = Duration::from_millis(250);
/// How often the fence is checked between renewals.
const FENCE_CHECK: Duration = Duration::from_millis(50);
/// Signals older than this, applied by every replica, are deleted.
const SIGNALS_KEPT_MS: i64 = 10 * 60 * 1000;
/// Replicas gone (stopped or lease over) this long are forgotten.
const REPLICAS_KEPT_MS: i64 = 60 * 60 * 1000;

/// Where this replica is reached.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub https_url: String,
    pub mesh_addr: String,
}

/// Runs the replica. `before_load` is the last signal committed before this replica loaded its
/// allow-list and state (it applies everything after it). Registers, catches up and takes its
/// first lease before returning, so the replica serves nothing before it is counted.
pub async fn start(
    replication: Replication,
    applier: SignalApplier,
    clock: SharedClock,
    addresses: Addresses,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, StoreError> {
    let worker = Worker { replication, applier, clock, addresses };
    worker.register().await?;
    let (wake_tx, wake_rx) = mpsc::channel(1);
    let listener = spawn_listener(
        worker.replication.clone(),
        worker.applier.exec.clone(),
        worker.applier.webhooks.clone(),
        wake_tx,
        shutdown.child_token(),
    );
    Ok(tokio::spawn(async move {
        worker.run(wake_rx, shutdown).await;
        let _ = listener.await;
        worker.stopped().await;
    }))
}

/// Changes this replica has still to apply, and since when (its own monotonic clock).
#[derive(Debug, Default)]
struct Backlog {
    since: Option<Instant>,
    /// The last catch-up failed: the next waits for a timer or a notification, not a loop.
    failing: bool,
}

impl Backlog {
    /// Whether to go on applying at once (behind, and the last step worked).
    fn more_now(&self) -> bool {
        self.since.is_some() && !self.failing
    }
}

struct Worker {
    replication: Replication,
    applier: SignalApplier,
    clock: SharedClock,
    addresses: Addresses,
}

impl Worker {
    fn lease_ms(&self) -> i64 {
        i64::try_from(self.replication.settings().lease.as_millis()).unwrap_or(i64::MAX)
    }

    async fn register(&self) -> Result<(), StoreError> {
        let store = self.replication.lease_store();
        let sent = Instant::now();
        let replica = NewReplica {
            id: self.replication.replica_id().to_string(),
            https_url: self.addresses.https_url.clone(),
            mesh_addr: self.addresses.mesh_addr.clone(),
            started_at: self.clock.now_millis(),
        };
        store.register_replica(&replica, self.replication.applied(), self.lease_ms()).await?;
        // A revoke that committed before the registration did not wait for this replica:
        // apply it before serving.
        self.catch_up().await?;
        self.replication.renewed(sent);
        tracing::info!(replica_id = %replica.id, https = %replica.https_url, mesh = %replica.mesh_addr, "replica registered");
        Ok(())
    }

    async fn run(&self, mut wake: mpsc::Receiver<()>, shutdown: CancellationToken) {
        let settings = self.replication.settings();
        let mut renew = tokio::time::interval(settings.renew_every);
        let mut refresh = tokio::time::interval(settings.full_refresh);
        let mut fence = tokio::time::interval(FENCE_CHECK);
        for timer in [&mut renew, &mut refresh, &mut fence] {
            timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        refresh.reset();
        let mut backlog = Backlog::default();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                _ = fence.tick() => self.check_fence(),
                // Before the wake-ups: under a stream of notifications they are always ready.
                _ = renew.tick() => self.renew(&mut backlog).await,
                Some(()) = wake.recv() => {
                    self.catch_up_some(&mut backlog).await;
                }
                _ = refresh.tick() => self.full_refresh(&mut backlog).await,
                // Last, so a long backlog is applied between renewals, never instead of them.
                () = std::future::ready(()), if backlog.more_now() => {
                    self.catch_up_some(&mut backlog).await;
                }
            }
        }
    }

    /// Applies every signal after the last applied one, in order, and says how far it got.
    /// A signal that fails to apply is retried (never skipped): the cursor stops before it.
    /// With a `budget`, stops at the first batch's end past it and returns `false` (more to
    /// apply). Acknowledges what it applied.
    async fn catch_up_within(&self, budget: Option<Duration>) -> Result<bool, StoreError> {
        let store = self.replication.lease_store();
        let start = self.replication.applied();
        let began = Instant::now();
        let mut done = true;
        loop {
            let signals = store.signals_after(self.replication.applied(), CATCH_UP_BATCH).await?;
            let Some(last) = signals.last().map(|s| s.seq) else { break };
            let over_budget = || budget.is_some_and(|budget| began.elapsed() >= budget);
            let steps = plan(&signals);
            let mut agents =
                self.applier.read_changed_agents(steps.iter().map(|(at, _)| &signals[*at])).await?;
            for (at, cursor) in steps {
                self.applier.apply(&signals[at], &mut agents).await?;
                self.replication.set_applied(cursor);
                if cursor < last && over_budget() {
                    done = false;
                    break;
                }
            }
            if !done {
                break;
            }
            if last == self.replication.applied() && signals.len() < CATCH_UP_BATCH as usize {
                break;
            }
            if over_budget() {
                done = false;
                break;
            }
        }
        if self.replication.applied() > start {
            store
                .acknowledge_signals(self.replication.replica_id(), self.replication.applied())
                .await?;
        }
        Ok(done)
    }

    /// Everything applied, however long it takes (registration, rejoin, recovery: nothing is
    /// served meanwhile).
    async fn catch_up(&self) -> Result<(), StoreError> {
        self.catch_up_within(None).await.map(|_| ())
    }

    /// One budgeted step of catching up; `backlog` says since when this replica is behind.
    async fn catch_up_some(&self, backlog: &mut Backlog) -> bool {
        let step = self.catch_up_within(Some(self.replication.settings().renew_every)).await;
        backlog.failing = step.is_err();
        match step {
            Ok(true) => {
                if let Some(since) = backlog.since.take() {
                    tracing::info!(
                        behind_ms = since.elapsed().as_millis(),
                        "caught up with the other replicas' changes"
                    );
                }
                true
            }
            Ok(false) => {
                backlog.since.get_or_insert_with(Instant::now);
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not apply other replicas' changes; retrying");
                false
            }
        }
    }

    /// Catches up for a while, then renews the lease with what was applied. The serving
    /// deadline counts from before the renewal left, so it ends before the database's end of
    /// the lease. A replica may renew while it still has changes to apply (a burst of a fleet
    /// rotation's signals), but not once it has been behind for half a lease: then it lets
    /// the lease run out and is fenced until caught up, so a revoke waits for a slow replica
    /// at most about one and a half leases.
    async fn renew(&self, backlog: &mut Backlog) {
        if !self.catch_up_some(backlog).await {
            return;
        }
        if let Some(since) = backlog.since
            && since.elapsed() >= self.replication.settings().lease / 2
        {
            tracing::warn!(
                behind_ms = since.elapsed().as_millis(),
                "behind the other replicas' changes for half a lease: lease not renewed until caught up"
            );
            return;
        }
        let sent = Instant::now();
        let sessions = i64::try_from(self.applier.link.connected_sessions()).unwrap_or(i64::MAX);
        let store = self.replication.lease_store();
        let id = self.replication.replica_id();
        match store.renew_replica(id, self.replication.applied(), sessions, self.lease_ms()).await {
            Ok(Renewal::Renewed) => {
                self.replication.renewed(sent);
                if self.replication.is_fenced() {
                    self.recover().await;
                }
            }
            Ok(Renewal::MustCatchUp) => {
                tracing::warn!("lease over and changes pending; catching up before serving again")
            }
            Ok(Renewal::Unknown) => {
                // Forgotten while cut off for long (pruned): register afresh, from a full
                // re-read, as at start.
                if let Err(err) = self.rejoin().await {
                    tracing::warn!(error = %err, "could not register this replica again");
                }
            }
            Err(err) => tracing::warn!(error = %err, "could not renew this replica's lease"),
        }
    }

    async fn rejoin(&self) -> Result<(), StoreError> {
        let store = self.replication.lease_store();
        self.replication.set_applied(store.latest_signal_seq().await?);
        self.applier.cache.clear();
        self.reload_all().await?;
        self.register().await?;
        self.replication.lift_fence();
        Ok(())
    }

    /// The lease ran out: no authenticated request is served (the HTTP gate checks
    /// [`Replication::is_serving`]) and no agent stays connected here, until caught up.
    fn check_fence(&self) {
        if self.replication.is_serving() || !self.replication.engage_fence() {
            return;
        }
        let link = &self.applier.link;
        link.allow.clear();
        for agent_id in link.session_agents() {
            // Forgotten, not revoked: the agent keeps its identity and reconnects elsewhere.
            link.forget_session(&agent_id);
            self.applier.exec.on_agent_silenced(&agent_id);
        }
        self.applier.cache.clear();
        tracing::error!(replica_id = %self.replication.replica_id(), "lease lost: replica FENCED (no authenticated requests, no agent sessions) until it catches up");
    }

    /// Serving again after a fence: everything cut is re-read first.
    async fn recover(&self) {
        if let Err(err) = self.reload_all().await {
            tracing::warn!(error = %err, "could not re-read the allow-list after a fence; still cut");
            return;
        }
        self.replication.lift_fence();
        tracing::info!(replica_id = %self.replication.replica_id(), "caught up: replica serving again");
    }

    /// The allow-list, what agents serve and which promotions await retirement, re-read.
    async fn reload_all(&self) -> Result<(), StoreError> {
        let promoted =
            refresh_allow_list(self.replication.lease_store(), &self.applier.link).await?;
        let reread = self.applier.rotations.reconcile_promoted(&promoted).await;
        if reread > 0 {
            tracing::debug!(reread, "promotions re-read from the store");
        }
        self.applier.exec.refresh_served().await
    }

    /// The safety net: everything re-read, then the signals committed meanwhile applied again
    /// (a re-read that raced a revoke cannot outlive it), and old signals and replicas pruned.
    async fn full_refresh(&self, backlog: &mut Backlog) {
        if !self.replication.is_serving() {
            return;
        }
        if let Err(err) = self.reload_all().await {
            tracing::warn!(error = %err, "could not re-read the allow-list");
        }
        self.catch_up_some(backlog).await;
        let store = self.replication.lease_store();
        if let Err(err) = store.prune_signals(SIGNALS_KEPT_MS, self.clock.now_millis()).await {
            tracing::debug!(error = %err, "could not prune applied signals");
        }
        if let Err(err) = store.prune_replicas(REPLICAS_KEPT_MS).await {
            tracing::debug!(error = %err, "could not prune gone replicas");
        }
    }

    /// A clean stop: this replica no longer holds any revoke up.
    async fn stopped(&self) {
        let store = self.replication.lease_store();
        if let Err(err) = store.mark_replica_stopped(self.replication.replica_id()).await {
            tracing::warn!(error = %err, "could not mark this replica stopped");
        }
    }
}

/// How a batch is applied: for each changed thing only its last signal (applying re-reads the
/// thing's current state from the store, `apply.rs`, so the last signal does everything the
/// earlier ones would; a fleet rotation makes three signals per agent, which every replica
/// applied one by one), in order, each with the cursor that may be recorded once it is applied:
/// never past a skipped signal whose thing's last signal is still to come, so a catch-up that
/// stops after any step (its time budget) has everything before its cursor in force. Returns
/// (index in the batch, cursor) pairs; the last pair's cursor is the batch's last seq.
fn plan<'a>(signals: &'a [Signal]) -> Vec<(usize, i64)> {
    let key = |s: &'a Signal| (s.kind, s.subject.as_str());
    let mut first_of = std::collections::HashMap::new();
    let mut last_of = std::collections::HashMap::new();
    for (at, signal) in signals.iter().enumerate() {
        first_of.entry(key(signal)).or_insert(at);
        last_of.insert(key(signal), at);
    }
    let mut steps = Vec::new();
    for (at, signal) in signals.iter().enumerate() {
        if last_of.get(&key(signal)) != Some(&at) {
            continue;
        }
        // Things read but not yet applied at this point hold the cursor before their first
        // skipped signal.
        let held = last_of
            .iter()
            .filter(|(_, last)| **last > at)
            .filter_map(|(thing, _)| first_of.get(thing))
            .filter(|first| **first <= at)
            .map(|first| signals[*first].seq - 1)
            .min();
        steps.push((at, held.map_or(signal.seq, |held| held.min(signal.seq))));
    }
    steps
}

/// Listens for signals, acknowledgements, queued work and security events; wakes the worker
/// (signals, or a lost connection, after which notifications may have been missed), the
/// waiting revokes (acknowledgements), dispatch (an invocation only this replica's agents may
/// take) and the webhook dispatcher (an event or a retried delivery, written by any replica).
fn spawn_listener(
    replication: Replication,
    exec: crate::exec::ExecService,
    webhooks: crate::webhooks::WebhookService,
    wake: mpsc::Sender<()>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let listening = tokio::select! {
                () = shutdown.cancelled() => return,
                listening = replication.lease_store().listen(&[SIGNAL_CHANNEL, ACK_CHANNEL, DISPATCH_CHANNEL, WEBHOOK_CHANNEL]) => listening,
            };
            let mut notifications = match listening {
                Ok(Some(notifications)) => notifications,
                Ok(None) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for other replicas' changes; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(LISTEN_RETRY) => continue,
                    }
                }
            };
            // Whatever was sent before the listener was up is in the rows.
            let _ = wake.try_send(());
            webhooks.wake();
            loop {
                let notice = tokio::select! {
                    () = shutdown.cancelled() => return,
                    notice = notifications.next() => notice,
                };
                match notice {
                    Ok(Notice::Received { channel, .. }) if channel == ACK_CHANNEL => {
                        replication.acknowledged();
                    }
                    Ok(Notice::Received { channel, .. }) if channel == DISPATCH_CHANNEL => {
                        exec.wake();
                    }
                    Ok(Notice::Received { channel, .. }) if channel == WEBHOOK_CHANNEL => {
                        webhooks.wake();
                    }
                    Ok(Notice::Received { .. }) => {
                        let _ = wake.try_send(());
                    }
                    Ok(Notice::Lost) => {
                        let _ = wake.try_send(());
                        exec.wake();
                        webhooks.wake();
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "lost the notification connection; reconnecting");
                        break;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use xerotier_store::SignalKind;

    fn signal(seq: i64, kind: SignalKind, subject: &str) -> Signal {
        Signal { seq, kind: Some(kind), subject: subject.to_string(), at: 0 }
    }

    #[test]
    fn only_the_last_signal_of_each_changed_thing_is_applied_in_order() {
        let batch = [
            signal(1, SignalKind::Agent, "agt_a"),
            signal(2, SignalKind::ApiKey, "key_a"),
            signal(3, SignalKind::Agent, "agt_b"),
            signal(4, SignalKind::Agent, "agt_a"),
            // Same subject, another kind: a thing of its own.
            signal(5, SignalKind::Invocation, "agt_a"),
            signal(6, SignalKind::Agent, "agt_a"),
        ];
        let applied: Vec<i64> = plan(&batch).iter().map(|(at, _)| batch[*at].seq).collect();
        assert_eq!(applied, vec![2, 3, 5, 6]);
        assert!(plan(&[]).is_empty());
    }

    #[test]
    fn the_cursor_never_passes_a_skipped_signal_whose_last_is_still_to_come() {
        let batch = [
            signal(10, SignalKind::Agent, "agt_a"),
            signal(11, SignalKind::ApiKey, "key_a"),
            signal(12, SignalKind::Agent, "agt_b"),
            signal(13, SignalKind::Agent, "agt_a"),
            signal(14, SignalKind::ApiKey, "key_b"),
        ];
        // agt_a's first signal (10) is skipped for its last (13): until 13 is applied, a
        // catch-up that stops may record no cursor past 9.
        assert_eq!(plan(&batch), vec![(1, 9), (2, 9), (3, 13), (4, 14)]);
        // Every step's cursor is at most its own seq and never goes back.
        let steps = plan(&batch);
        assert!(steps.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(steps.last().map(|s| s.1), Some(14), "a whole batch ends at its last seq");
    }
}
