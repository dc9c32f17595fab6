//! The mesh's periodic work. Each loop stops at its next tick after the shutdown token is
//! cancelled; none writes to the store after it returns.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use xerotier_core::SharedClock;
use xerotier_credentials::parse_curve_public;
use xerotier_mesh::MeshServer;
use xerotier_store::{Store, StoreError};

use crate::fleet::rotation::RotationService;
use crate::mesh_link::MeshLink;
use crate::metrics::Metrics;

/// How often overdue rotations are failed and undelivered ones sent.
const ROTATION_SWEEP: Duration = Duration::from_millis(250);
const HEALTH_CHECK: Duration = Duration::from_secs(1);

/// Runs `tick` every `period` until `shutdown`.
fn every<F, Fut>(period: Duration, shutdown: CancellationToken, mut tick: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            if !tick().await {
                return;
            }
        }
    })
}

/// Writes buffered lease renewals once per `period`, and once more at shutdown.
pub fn spawn_heartbeat_flush(
    store: Store,
    link: Arc<MeshLink>,
    period: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let periodic = every(period, shutdown, {
            let (store, link) = (store.clone(), link.clone());
            move || {
                let (store, link) = (store.clone(), link.clone());
                async move {
                    flush(&store, &link).await;
                    true
                }
            }
        });
        let _ = periodic.await;
        flush(&store, &link).await;
    })
}

async fn flush(store: &Store, link: &MeshLink) {
    let beats = link.heartbeats_to_store();
    if beats.is_empty() {
        return;
    }
    match store.record_heartbeats(&beats).await {
        Ok(()) => link.heartbeats_stored(&beats),
        // Kept pending: the next flush tries again.
        Err(err) => {
            tracing::warn!(error = %err, count = beats.len(), "could not record lease renewals")
        }
    }
}

/// A stored CURVE key as the allow-list takes it; an unreadable one is logged and left out
/// (the agent is not allowed on it).
pub fn stored_curve_key(agent_id: &str, key: &str) -> Option<[u8; 32]> {
    parse_curve_public(key)
        .inspect_err(|err| {
            tracing::error!(%agent_id, error = %err, "stored CURVE key is unreadable; agent not allowed");
        })
        .ok()
}

/// Re-reads the allow-list from the store, so revocations and enrollments made through other
/// replicas take effect here; sessions of agents no longer allowed are ended. Returns the agents
/// listed with two keys: promoted, the previous key not yet retired.
pub async fn refresh_allow_list(
    store: &Store,
    link: &MeshLink,
) -> Result<HashSet<String>, StoreError> {
    let since = link.allow.generation();
    let live = store.live_agent_keys().await?;
    let mut seen = HashSet::new();
    let mut two_keys = HashSet::new();
    for (agent_id, _) in &live {
        if !seen.insert(agent_id.as_str()) {
            two_keys.insert(agent_id.clone());
        }
    }
    let entries = live
        .into_iter()
        .filter_map(|(agent_id, key)| stored_curve_key(&agent_id, &key).map(|k| (k, agent_id)));
    link.allow.replace_all(entries, since);
    for agent_id in link.session_agents() {
        if !link.allow.contains_agent(&agent_id) {
            link.end_session(&agent_id, "credentials revoked");
        }
    }
    Ok(two_keys)
}

/// Fails rotations whose acknowledgement deadline passed (decided by the injected clock).
pub fn spawn_rotation_sweep(
    rotations: RotationService,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    every(ROTATION_SWEEP, shutdown, move || {
        let (rotations, now) = (rotations.clone(), clock.now_millis());
        async move {
            if let Err(err) = rotations.sweep(now).await {
                tracing::warn!(error = %err, "could not sweep overdue rotations");
            }
            true
        }
    })
}

/// Reports a dead mesh thread once, and every second what the mesh thread's per-agent cap
/// dropped (`mesh_frames_dropped{reason="transport_cap"}`).
pub fn spawn_health_watch(
    server: Arc<MeshServer>,
    metrics: Metrics,
    fatal: tokio::sync::mpsc::Sender<String>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let reported = Arc::new(std::sync::atomic::AtomicU64::new(0));
    every(HEALTH_CHECK, shutdown, move || {
        let (server, fatal, metrics) = (server.clone(), fatal.clone(), metrics.clone());
        let reported = reported.clone();
        async move {
            let dropped = server.cap_drops();
            let before = reported.swap(dropped, std::sync::atomic::Ordering::Relaxed);
            metrics.mesh_dropped_many("transport_cap", dropped.saturating_sub(before));
            if server.is_healthy() {
                return true;
            }
            let _ = fatal.send("a mesh thread (ZAP handler or I/O) stopped".into()).await;
            false
        }
    })
}
