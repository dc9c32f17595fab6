//! Agents' frames: one task per agent with a bounded queue, so one agent's frames never wait
//! behind another's database write, and a flooding agent fills only its own queue. Before a
//! frame is queued the router loop applies the agent's limits (`limits.rs`): over its rate a
//! frame is dropped, and an agent that keeps flooding is silenced for a cool-down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use xerotier_core::SharedClock;
use xerotier_mesh::MeshEvent;
use xerotier_proto::mesh::Frame;
use xerotier_store::Heartbeat;

use crate::agent_events::EventLog;
use crate::exec::ExecService;
use crate::exec::credential_ages::CredentialAges;
use crate::fleet::rotation::RotationService;
use crate::mesh_link::MeshLink;
use crate::metrics::Metrics;

use super::limits::{AgentLimiter, FrameClass, FrameLimits, HelloAction, HelloWindow, Verdict};

/// Frames waiting for one agent's task; past this the agent's frames are dropped (counted as
/// `agent_queue_full`), never anyone else's.
pub const AGENT_QUEUE: usize = 256;
/// An agent's task ends after this long without a frame (a new one starts with the next).
const WORKER_IDLE: Duration = Duration::from_secs(30);
/// An invocation an agent was handed this long ago and no longer lists in its lease renewals
/// was lost (frames in flight get this long to arrive).
const LOST_INVOCATION_GRACE_MS: i64 = 5_000;

/// One authenticated frame, as the mesh delivered it.
#[derive(Debug)]
struct Inbound {
    routing_id: Vec<u8>,
    curve_key: [u8; 32],
    frame: Frame,
    /// The first frame after a flood cool-down: re-establish the session as a hello would.
    resync: bool,
}

/// An agent's task, as the router loop sees it.
#[derive(Debug)]
struct Worker {
    queue: mpsc::Sender<Inbound>,
    /// Cancelled to stop the task between frames (the agent was silenced).
    stop: CancellationToken,
}

/// What handling a frame touches.
#[derive(Debug, Clone)]
pub struct FrameHandler {
    pub clock: SharedClock,
    pub link: Arc<MeshLink>,
    pub rotations: RotationService,
    pub exec: ExecService,
    pub events: EventLog,
    pub credential_ages: CredentialAges,
    pub metrics: Metrics,
    pub agents: crate::fleet::agents::AgentService,
    pub replication: crate::replication::Replication,
    /// Tells every agent, after its hello, where the live replicas are.
    pub replicas: crate::membership::ReplicaService,
    /// The router mesh keys each agent must hold (SPEC §9), told after its hello.
    pub router_keys: crate::router_keys::mesh::MeshKeyAcks,
}

/// Routes the mesh's events to per-agent tasks until `shutdown` (or the mesh ends); then waits
/// for each agent's task to finish the frame it is handling. A dead mesh thread is reported on
/// `fatal`.
pub fn spawn(
    handler: FrameHandler,
    mut events: mpsc::Receiver<MeshEvent>,
    fatal: mpsc::Sender<String>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let handler = Arc::new(handler);
        let limits = FrameLimits::from_settings(&handler.link.settings);
        let mut limiters: HashMap<String, AgentLimiter> = HashMap::new();
        let mut workers: HashMap<String, Worker> = HashMap::new();
        let mut tasks = JoinSet::new();
        loop {
            let event = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                event = events.recv() => event,
            };
            let Some(event) = event else { break };
            match event {
                MeshEvent::Frame { agent_id, routing_id, frame, curve_key } => {
                    let class = match frame {
                        Frame::InvocationOutput { .. } => FrameClass::Output,
                        _ => FrameClass::Control,
                    };
                    let now = handler.clock.now_millis();
                    let limiter = match limiters.get_mut(&agent_id) {
                        Some(limiter) => limiter,
                        None => limiters
                            .entry(agent_id.clone())
                            .or_insert_with(|| AgentLimiter::new(&limits, now)),
                    };
                    match limiter.check(&limits, class, now) {
                        Verdict::Accept { resync } => {
                            let inbound = Inbound { routing_id, curve_key, frame, resync };
                            route(&handler, &mut workers, &mut tasks, &shutdown, agent_id, inbound);
                        }
                        Verdict::Drop(reason) => handler.metrics.mesh_dropped(reason),
                        Verdict::Disconnect { dropped, window_ms } => {
                            handler.metrics.mesh_dropped("rate_limited");
                            silence(
                                &handler,
                                &mut workers,
                                &mut tasks,
                                &limits,
                                agent_id,
                                dropped,
                                window_ms,
                            );
                        }
                    }
                }
                MeshEvent::Dropped { reason, agent_id } => {
                    handler.metrics.mesh_dropped(reason.as_str());
                    tracing::debug!(
                        reason = reason.as_str(),
                        agent_id = agent_id.as_deref().unwrap_or("-"),
                        "mesh frame dropped"
                    );
                }
                MeshEvent::Skipped => {}
                MeshEvent::Fatal(message) => {
                    let _ = fatal.send(message).await;
                    break;
                }
            }
            reap(&mut tasks);
        }
        drop(workers);
        while let Some(done) = tasks.join_next().await {
            if let Err(err) = done {
                tracing::error!(error = %err, "an agent's frame task failed");
            }
        }
    })
}

fn reap(tasks: &mut JoinSet<()>) {
    while let Some(done) = tasks.try_join_next() {
        if let Err(err) = done {
            tracing::error!(error = %err, "an agent's frame task failed");
        }
    }
}

/// Silences a flooding agent for the cool-down: its task stops between frames, its session and
/// offer are forgotten (nothing is sent to it, no dispatch), and one event and one warning say
/// so. It is not revoked: it keeps its identity and is served again after the cool-down.
fn silence(
    handler: &Arc<FrameHandler>,
    workers: &mut HashMap<String, Worker>,
    tasks: &mut JoinSet<()>,
    limits: &FrameLimits,
    agent_id: String,
    dropped: u64,
    window_ms: i64,
) {
    if let Some(worker) = workers.remove(&agent_id) {
        worker.stop.cancel();
    }
    handler.link.forget_session(&agent_id);
    handler.exec.on_agent_silenced(&agent_id);
    handler.metrics.mesh_flood_disconnect();
    tracing::warn!(
        %agent_id,
        dropped,
        window_ms,
        cooldown_ms = limits.cooldown_ms,
        "agent flooded the mesh past its frame rate; its session is dropped for the cool-down"
    );
    let details = serde_json::json!({
        "dropped_frames": dropped,
        "window_ms": window_ms,
        "cooldown_ms": limits.cooldown_ms,
        "frames_per_second": limits.rate,
        "burst": limits.burst,
    });
    let events = handler.events.clone();
    tasks.spawn(async move {
        events.append(&agent_id, "disconnected_flooding", None, details).await;
    });
}

fn route(
    handler: &Arc<FrameHandler>,
    workers: &mut HashMap<String, Worker>,
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
    agent_id: String,
    inbound: Inbound,
) {
    let inbound = match workers.get(&agent_id) {
        None => inbound,
        Some(worker) => match worker.queue.try_send(inbound) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => {
                handler.metrics.mesh_dropped("agent_queue_full");
                tracing::debug!(%agent_id, "agent's frame queue full; frame dropped");
                return;
            }
            // Its task ended (idle): start another.
            Err(TrySendError::Closed(inbound)) => inbound,
        },
    };
    let (queue, frames) = mpsc::channel(AGENT_QUEUE);
    if queue.try_send(inbound).is_err() {
        return;
    }
    let stop = shutdown.child_token();
    workers.insert(agent_id.clone(), Worker { queue, stop: stop.clone() });
    tasks.spawn(agent_task(handler.clone(), agent_id, frames, stop));
}

/// Handles one agent's frames in order; stops between frames at shutdown (or when the agent
/// is silenced).
async fn agent_task(
    handler: Arc<FrameHandler>,
    agent_id: String,
    mut frames: mpsc::Receiver<Inbound>,
    shutdown: CancellationToken,
) {
    // Outlives the hello window (5 s) by far: the task idles out only after 30 s.
    let mut hellos = HelloWindow::default();
    let mut clones = super::clones::CloneWatch::default();
    loop {
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            next = frames.recv() => next,
            () = tokio::time::sleep(WORKER_IDLE) => return,
        };
        let Some(inbound) = next else { return };
        if clones.observe(&inbound.routing_id, handler.clock.now_millis()) {
            handler.suspected_clone(&agent_id, clones.sessions()).await;
        }
        handler.handle(&agent_id, inbound, &mut hellos).await;
    }
}

impl FrameHandler {
    /// Two live sessions on one key: quarantined (no dispatch) until an operator acts.
    async fn suspected_clone(&self, agent_id: &str, sessions: usize) {
        match self.agents.quarantine(agent_id, sessions).await {
            Ok(true) => self.metrics.agent_quarantined(),
            Ok(false) => {}
            Err(err) => {
                tracing::error!(%agent_id, error = %err, "could not quarantine a suspected clone")
            }
        }
    }

    async fn handle(&self, agent_id: &str, inbound: Inbound, hellos: &mut HelloWindow) {
        let Inbound { routing_id, curve_key, frame, resync } = inbound;
        // Checked again as the frame is acted on, not only when the mesh thread received it:
        // a frame queued before a revoke (here or on any replica) or before this replica was
        // fenced is dropped, so none is accepted after the revoke returned.
        if !self.replication.is_serving() {
            self.metrics.mesh_dropped("replica_fenced");
            return;
        }
        if self.link.allow.agent_for(&curve_key).as_deref() != Some(agent_id) {
            self.metrics.mesh_dropped("key_no_longer_allowed");
            return;
        }
        let kind = frame_kind(&frame);
        if kind != "unexpected" {
            self.metrics.mesh_frame(kind);
        }
        self.rotations.on_seen(agent_id, &curve_key).await;
        self.exec.on_seen(agent_id);
        if resync && !matches!(frame, Frame::Hello { .. }) {
            // Served again after a flood cool-down: what a hello would re-establish.
            tracing::info!(%agent_id, "agent served again after its flood cool-down");
            self.link.note_session(agent_id, routing_id.clone());
            self.resync(agent_id, &curve_key).await;
        }
        match frame {
            Frame::Hello { manifest_hash, manifest_version, xem_version, .. } => {
                let action = hellos.on_hello(&routing_id, self.clock.now_millis());
                let hello = Hello { manifest_hash, manifest_version, xem_version };
                self.on_hello(agent_id, routing_id, curve_key, hello, action).await;
            }
            Frame::Manifest { manifest, .. } => self.on_manifest(agent_id, manifest).await,
            Frame::InvocationStarted { invocation_id, credential_generation } => {
                if let Err(err) =
                    self.exec.on_started(agent_id, &invocation_id, credential_generation).await
                {
                    tracing::warn!(%agent_id, %invocation_id, error = %err, "could not record an invocation start");
                }
            }
            Frame::InvocationOutput { invocation_id, stream, chunk } => {
                self.exec.on_output(agent_id, &invocation_id, &stream, &chunk);
            }
            Frame::InvocationFinished { result } => {
                let invocation_id = result.invocation_id.clone();
                if let Err(err) = self.exec.on_finished(agent_id, result).await {
                    tracing::warn!(%agent_id, %invocation_id, error = %err, "could not record an invocation result; the agent will re-send it");
                }
            }
            Frame::InvocationRefused { invocation_id, reason } => {
                if let Err(err) = self.exec.on_refused(agent_id, &invocation_id, &reason).await {
                    tracing::warn!(%agent_id, %invocation_id, error = %err, "could not requeue a refused invocation");
                }
            }
            Frame::CredentialsReloaded { report } => self.on_credentials(agent_id, report).await,
            Frame::RotateAck { payload, signature } => {
                self.link.note_session(agent_id, routing_id);
                if let Err(err) = self.rotations.on_ack(agent_id, &payload, &signature).await {
                    tracing::warn!(%agent_id, error = %err, "could not process a rotation acknowledgement");
                }
            }
            Frame::LeaseRenewal { seq, manifest_hash, manifest_version, in_flight, .. } => {
                self.link.send_raw(&routing_id, &Frame::LeaseAck { seq });
                self.link.note_session(agent_id, routing_id);
                if let Err(err) =
                    self.exec.on_lease(agent_id, &in_flight, LOST_INVOCATION_GRACE_MS).await
                {
                    tracing::warn!(%agent_id, error = %err, "could not reconcile the agent's invocations");
                }
                self.note_heartbeat(agent_id, manifest_hash, manifest_version);
            }
            Frame::RouterKeysAck { kids } => self.router_keys.on_ack(agent_id, kids).await,
            Frame::LeaseAck { .. }
            | Frame::Replicas { .. }
            | Frame::Invoke { .. }
            | Frame::CancelInvocation { .. }
            | Frame::ResultAck { .. }
            | Frame::Revoked { .. }
            | Frame::RotateCurve { .. }
            | Frame::RotationPromoted { .. }
            | Frame::RotationFailed { .. }
            | Frame::RouterKeys { .. } => {
                self.metrics.mesh_dropped("unexpected");
                tracing::debug!(%agent_id, "router-bound frame of a router-sent type; dropped");
            }
        }
    }

    /// A hello always refreshes the session (routing id) and the heartbeat. The first in a
    /// [`HELLO_WINDOW_MS`](super::limits::HELLO_WINDOW_MS) is a `connected` event and an info
    /// line (later ones log at debug and are counted into the next event); the pending rotation
    /// and the offer are re-sent/reloaded once per window, or whenever the routing id changed
    /// (a real reconnect: a restarted XEM, or one on its promoted key).
    async fn on_hello(
        &self,
        agent_id: &str,
        routing_id: Vec<u8>,
        curve_key: [u8; 32],
        hello: Hello,
        action: HelloAction,
    ) {
        let Hello { manifest_hash, manifest_version, xem_version } = hello;
        // Answered at every hello (not only once a window): it is the agent's way to learn
        // replicas that started since it connected.
        let mesh_addrs = self.replicas.live_mesh_addrs().await;
        self.link.send_raw(&routing_id, &Frame::Replicas { mesh_addrs });
        // At every hello too: an agent that missed the set (offline, or on another replica
        // when it was sent) gets it here until it acknowledges exactly it.
        self.router_keys.on_hello(agent_id, &routing_id).await;
        self.link.note_session(agent_id, routing_id);
        self.note_heartbeat(agent_id, manifest_hash, manifest_version);
        if action.announce {
            tracing::info!(%agent_id, %xem_version, "agent connected");
            let key = xerotier_credentials::fingerprint(&curve_key);
            let details = serde_json::json!({
                "curve_key_fingerprint": key,
                "xem_version": xem_version,
                "repeated_hellos": action.repeated,
            });
            self.events.append(agent_id, "connected", None, details).await;
        } else {
            tracing::debug!(%agent_id, resync = action.resync, "repeated hello within the window");
        }
        if action.resync {
            self.resync(agent_id, &curve_key).await;
        }
    }

    /// Re-sends what a reconnected agent may have missed and reloads its offer.
    async fn resync(&self, agent_id: &str, curve_key: &[u8; 32]) {
        self.rotations.on_hello(agent_id, curve_key).await;
        if let Err(err) = self.exec.on_hello(agent_id).await {
            tracing::warn!(%agent_id, error = %err, "could not load the agent's offer");
        }
    }

    /// New candidates (declared beyond its grants, or with new tool definitions) are shown to
    /// operators: an event each, and the agent gets no work there until one decides.
    async fn on_manifest(
        &self,
        agent_id: &str,
        manifest: xerotier_proto::agents::CapabilityManifest,
    ) {
        let changed = match self.exec.on_manifest(agent_id, manifest).await {
            Ok(changed) => changed,
            Err(err) => {
                tracing::warn!(%agent_id, error = %err, "could not record the agent's manifest");
                return;
            }
        };
        for (workspace, state) in changed {
            if state == xerotier_store::CANDIDATE {
                tracing::warn!(%agent_id, %workspace, "workspace waits for approval (see `xeroctl agents candidates`)");
                let details = serde_json::json!({ "workspace": workspace });
                self.events.append(agent_id, "workspace_candidate", None, details).await;
            }
        }
    }

    async fn on_credentials(
        &self,
        agent_id: &str,
        report: xerotier_proto::workspace_credentials::ReloadReport,
    ) {
        if report.ok {
            tracing::info!(%agent_id, trigger = %report.trigger, files = report.files.len(), "agent reloaded its workspace credentials");
        } else {
            tracing::warn!(%agent_id, trigger = %report.trigger, "agent credential reload failed for some files; their last good versions stay in use");
        }
        if let Err(err) = self.credential_ages.record(agent_id, &report).await {
            tracing::warn!(%agent_id, error = %err, "could not record the agent's credential report");
        }
        let event = if report.ok { "credentials_reloaded" } else { "credentials_reload_failed" };
        let details = serde_json::to_value(&report).unwrap_or_default();
        self.events.append(agent_id, event, None, details).await;
    }

    fn note_heartbeat(&self, agent_id: &str, manifest_hash: String, manifest_version: u64) {
        self.link.note_heartbeat(Heartbeat {
            agent_id: agent_id.to_string(),
            at: self.clock.now_millis(),
            manifest_hash,
            manifest_version: i64::try_from(manifest_version).unwrap_or(i64::MAX),
            replica_id: self.link.replica_id.clone(),
        });
    }
}

/// What a hello carries besides the agent id.
#[derive(Debug)]
struct Hello {
    manifest_hash: String,
    manifest_version: u64,
    xem_version: String,
}

fn frame_kind(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello { .. } => "hello",
        Frame::Manifest { .. } => "manifest",
        Frame::InvocationStarted { .. } => "invocation_started",
        Frame::InvocationOutput { .. } => "invocation_output",
        Frame::InvocationFinished { .. } => "invocation_finished",
        Frame::InvocationRefused { .. } => "invocation_refused",
        Frame::CredentialsReloaded { .. } => "credentials_reloaded",
        Frame::RotateAck { .. } => "rotate_ack",
        Frame::LeaseRenewal { .. } => "lease_renewal",
        Frame::RouterKeysAck { .. } => "router_keys_ack",
        _ => "unexpected",
    }
}
