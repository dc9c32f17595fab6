//! The mesh runtime: the CURVE endpoint, the per-agent frame tasks, and the background loops
//! that keep the allow-list, lease times and rotations in step with the store.
//!
//! Every task takes the shutdown token and is joined by [`MeshRuntime::stop`], which returns
//! only when none of them can touch the store again; the caller closes the store after it.

mod clones;
mod frames;
pub mod limits;
mod loops;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use xerotier_mesh::{InboundCap, MeshError, MeshServer};

use xerotier_store::{Store, StoreError};

pub use frames::{AGENT_QUEUE, FrameHandler};
pub use loops::{refresh_allow_list, stored_curve_key};

use crate::exec::ExecService;
use crate::fleet::rotation::RotationService;
use crate::replication::Replication;
use crate::replication::apply::SignalApplier;
use crate::replication::task::Addresses;

/// Messages a second one agent may put through the mesh thread (see `start`).
pub const TRANSPORT_CAP_PER_SECOND: u32 = 10_000;
/// Messages one agent may put through at once.
pub const TRANSPORT_CAP_BURST: u32 = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("loading the allow-list: {0}")]
    Store(#[from] StoreError),
    #[error("starting the mesh endpoint: {0}")]
    Mesh(#[from] MeshError),
    #[error("the router's mesh key is unusable: {0}")]
    Keys(String),
}

/// What the runtime's loops use besides the frame handler's services.
#[derive(Debug, Clone)]
pub struct RuntimeDeps {
    pub store: Store,
    pub frames: FrameHandler,
    pub rotations: RotationService,
    pub exec: ExecService,
    pub replication: Replication,
    pub applier: SignalApplier,
    pub posture: crate::posture::monitor::PostureMonitor,
    /// Runs fleet-wide operations.
    pub operations: crate::operations::executor::Executor,
}

/// A running mesh: the endpoint's threads and the tasks around it.
#[derive(Debug)]
pub struct MeshRuntime {
    server: Arc<MeshServer>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    /// Receives a message when the mesh can no longer serve (a thread died).
    pub fatal: mpsc::Receiver<String>,
}

/// Loads the allow-list, binds the endpoint, registers this replica (it serves nothing before
/// it holds a lease) and starts the tasks, each stopping on `shutdown`. `https_url` is where
/// this replica's API is reached, for the registry.
pub async fn start(
    deps: RuntimeDeps,
    https_url: String,
    shutdown: &CancellationToken,
) -> Result<MeshRuntime, RuntimeError> {
    let link = deps.frames.link.clone();
    // Read before the state it loads: every change after it is applied as a signal, so none
    // falls between the load and the first signal applied.
    deps.replication.set_applied(deps.store.latest_signal_seq().await?);
    let promoted = refresh_allow_list(&deps.store, &link).await?;
    deps.rotations.load_promoted(&promoted).await?;
    // Well above what an honest agent sends (the frame loop's limits are 200 control frames
    // and 4,000 output frames a second): only a flood reaches it, and then the mesh thread
    // drops it before it can fill the queue every agent's frames share.
    let cap = InboundCap {
        per_second: TRANSPORT_CAP_PER_SECOND,
        burst: TRANSPORT_CAP_BURST,
        clock: deps.frames.clock.clone(),
    };
    // The key the mesh key rollout last reconciled (the identity's until it ran).
    let serving = link.serving_mesh_keys().map_err(|e| RuntimeError::Keys(e.to_string()))?;
    let (server, handle, events) = MeshServer::start_capped(
        &link.settings.mesh_bind,
        &serving,
        link.allow.clone(),
        Some(cap),
    )?;
    link.attach_mesh(handle, server.endpoint().to_string());
    link.attach_rekey(server.rekey(), serving.public_bytes())
        .map_err(|e| RuntimeError::Keys(e.to_string()))?;
    tracing::info!(endpoint = %server.endpoint(), agents = link.allow.len(), "mesh endpoint listening (CURVE)");
    let server = Arc::new(server);
    let addresses = Addresses { https_url, mesh_addr: link.advertised_mesh_addr() };
    let replica = crate::replication::task::start(
        deps.replication.clone(),
        deps.applier.clone(),
        deps.frames.clock.clone(),
        addresses,
        shutdown.child_token(),
    )
    .await?;
    let (fatal_tx, fatal) = mpsc::channel(4);
    let settings = &link.settings;
    let tasks = vec![
        (
            "frames",
            frames::spawn(deps.frames.clone(), events, fatal_tx.clone(), shutdown.child_token()),
        ),
        (
            "heartbeat flush",
            loops::spawn_heartbeat_flush(
                deps.store.clone(),
                link.clone(),
                Duration::from_millis(settings.heartbeat_flush_ms),
                shutdown.child_token(),
            ),
        ),
        ("replica", replica),
        (
            "rotation sweep",
            loops::spawn_rotation_sweep(
                deps.rotations.clone(),
                deps.frames.clock.clone(),
                shutdown.child_token(),
            ),
        ),
        ("dispatch", crate::exec::spawn_dispatch(deps.exec.clone(), shutdown.child_token())),
        (
            "failover sweep",
            crate::membership::sweep::spawn(deps.exec.clone(), shutdown.child_token()),
        ),
        (
            "posture monitor",
            crate::posture::monitor::spawn(
                deps.posture.clone(),
                Duration::from_millis(settings.posture_interval_ms.max(1)),
                shutdown.child_token(),
            ),
        ),
        (
            "operations",
            crate::operations::runner::spawn(deps.operations.clone(), shutdown.child_token()),
        ),
        (
            "mesh health",
            loops::spawn_health_watch(
                server.clone(),
                deps.frames.metrics.clone(),
                fatal_tx,
                shutdown.child_token(),
            ),
        ),
    ];
    Ok(MeshRuntime { server, tasks, fatal })
}

impl MeshRuntime {
    /// After the shutdown token was cancelled: waits for every task (each finishes what it is
    /// doing; the heartbeat flush writes what is buffered), at most `deadline` in all, then
    /// stops the endpoint's threads. When this returns nothing of the mesh uses the store.
    pub async fn stop(self, deadline: Duration) {
        let until = tokio::time::Instant::now() + deadline;
        for (name, mut task) in self.tasks {
            match tokio::time::timeout_at(until, &mut task).await {
                Ok(Ok(())) => tracing::debug!(task = name, "stopped"),
                Ok(Err(err)) => tracing::error!(task = name, error = %err, "task failed"),
                Err(_) => {
                    tracing::warn!(task = name, "did not stop in time; abandoned");
                    task.abort();
                    let _ = task.await;
                }
            }
        }
        // The threads poll their stop flag every 100 ms and never block on a full queue.
        match Arc::try_unwrap(self.server) {
            Ok(server) => server.shutdown(),
            Err(_) => tracing::warn!("mesh endpoint still referenced; its threads stop at exit"),
        }
    }
}
