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
const CATCH_UP_BATCH: u32 = 500;
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
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                _ = fence.tick() => self.check_fence(),
                Some(()) = wake.recv() => self.catch_up_logged().await,
                _ = renew.tick() => self.renew().await,
                _ = refresh.tick() => self.full_refresh().await,
            }
        }
    }

    /// Applies every signal after the last applied one, in order, and says how far it got.
    /// A signal that fails to apply is retried (never skipped): the cursor stops before it.
    async fn catch_up(&self) -> Result<(), StoreError> {
        let store = self.replication.lease_store();
        let start = self.replication.applied();
        loop {
            let signals = store.signals_after(self.replication.applied(), CATCH_UP_BATCH).await?;
            let Some(last) = signals.last().map(|s| s.seq) else { break };
            for signal in superseding(&signals) {
                self.applier.apply(signal).await?;
                self.replication.set_applied(signal.seq);
            }
            if last == self.replication.applied() && signals.len() < CATCH_UP_BATCH as usize {
                break;
            }
        }
        if self.replication.applied() > start {
            store
                .acknowledge_signals(self.replication.replica_id(), self.replication.applied())
                .await?;
        }
        Ok(())
    }

    async fn catch_up_logged(&self) {
        if let Err(err) = self.catch_up().await {
            tracing::warn!(error = %err, "could not apply other replicas' changes; retrying");
        }
    }

    /// Catches up, then renews the lease with what was applied. The serving deadline counts
    /// from before the renewal left, so it ends before the database's end of the lease.
    async fn renew(&self) {
        let sent = Instant::now();
        if let Err(err) = self.catch_up().await {
            tracing::warn!(error = %err, "could not catch up before renewing the lease");
            return;
        }
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
    async fn full_refresh(&self) {
        if !self.replication.is_serving() {
            return;
        }
        if let Err(err) = self.reload_all().await {
            tracing::warn!(error = %err, "could not re-read the allow-list");
        }
        self.catch_up_logged().await;
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

/// The signals of a batch that must be applied: for each changed thing, its last signal only.
/// Applying a signal re-reads the thing's current state from the store (`apply.rs`), so its
/// last signal does everything the earlier ones would; a fleet rotation makes three signals
/// per agent (request, promotion, retirement), which every replica applied one by one, ahead
/// of its lease renewal. Order is kept; the batch's last signal is always applied, so the
/// cursor reaches the batch's end, and never passes a signal whose effect is still to come
/// (a skipped one's later signal is applied before the cursor can pass it).
fn superseding(signals: &[Signal]) -> impl Iterator<Item = &Signal> {
    let mut last_of = std::collections::HashMap::new();
    for (at, signal) in signals.iter().enumerate() {
        last_of.insert((signal.kind, signal.subject.as_str()), at);
    }
    signals
        .iter()
        .enumerate()
        .filter(move |(at, signal)| {
            last_of.get(&(signal.kind, signal.subject.as_str())) == Some(at)
        })
        .map(|(_, signal)| signal)
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
        let applied: Vec<i64> = superseding(&batch).map(|s| s.seq).collect();
        assert_eq!(applied, vec![2, 3, 5, 6]);
        assert!(superseding(&[]).next().is_none());
    }
}
