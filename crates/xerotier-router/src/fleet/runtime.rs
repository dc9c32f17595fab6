//! The mesh runtime: the CURVE endpoint, the loop that handles agents' frames, and the
//! background work that keeps the allow-list and lease times in step with the store.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use xerotier_credentials::parse_curve_public;
use xerotier_mesh::{MeshError, MeshEvent, MeshServer};
use xerotier_proto::mesh::Frame;
use xerotier_store::{Heartbeat, StoreError};

use crate::AppState;

/// An invocation an agent was handed this long ago and no longer lists in its lease renewals
/// was lost (frames in flight get this long to arrive).
const LOST_INVOCATION_GRACE_MS: i64 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("loading the allow-list: {0}")]
    Store(#[from] StoreError),
    #[error("starting the mesh endpoint: {0}")]
    Mesh(#[from] MeshError),
}

/// A running mesh. Dropping it stops the endpoint.
#[derive(Debug)]
pub struct MeshRuntime {
    pub server: Arc<MeshServer>,
    /// Receives a message when the mesh can no longer serve (a thread died).
    pub fatal: mpsc::Receiver<String>,
}

/// Loads the allow-list, binds the endpoint and starts the loops.
pub async fn start(state: &AppState) -> Result<MeshRuntime, RuntimeError> {
    let fleet = state.fleet();
    refresh_allow_list(state).await?;
    state.rotations().load_promoted().await?;
    let (server, handle, events) = MeshServer::start(
        &fleet.settings.mesh_bind,
        &fleet.identity.mesh_keys,
        fleet.allow.clone(),
    )?;
    fleet.attach_mesh(handle, server.endpoint().to_string());
    tracing::info!(endpoint = %server.endpoint(), agents = fleet.allow.len(), "mesh endpoint listening (CURVE)");
    let server = Arc::new(server);
    let (fatal_tx, fatal) = mpsc::channel(4);
    tokio::spawn(handle_events(state.clone(), events, fatal_tx.clone()));
    tokio::spawn(flush_heartbeats(state.clone()));
    tokio::spawn(refresh_periodically(state.clone()));
    tokio::spawn(sweep_rotations(state.clone()));
    tokio::spawn(crate::exec::dispatch_loop(state.clone()));
    tokio::spawn(watch_health(server.clone(), fatal_tx));
    Ok(MeshRuntime { server, fatal })
}

async fn handle_events(
    state: AppState,
    mut events: mpsc::Receiver<MeshEvent>,
    fatal: mpsc::Sender<String>,
) {
    let fleet = state.fleet();
    while let Some(event) = events.recv().await {
        match event {
            MeshEvent::Frame { agent_id, routing_id, frame, curve_key } => {
                let now = state.clock().now_millis();
                state.rotations().on_seen(&agent_id, &curve_key).await;
                state.exec().on_seen(&agent_id);
                match frame {
                    Frame::Hello { manifest_hash, manifest_version, xem_version, .. } => {
                        state.metrics().mesh_frame("hello");
                        tracing::info!(%agent_id, %xem_version, "agent connected");
                        fleet.note_session(&agent_id, routing_id);
                        fleet.note_heartbeat(beat(
                            agent_id.clone(),
                            now,
                            manifest_hash,
                            manifest_version,
                        ));
                        let key = xerotier_credentials::fingerprint(&curve_key);
                        state.events().append(&agent_id, "connected", None, serde_json::json!({ "curve_key_fingerprint": key, "xem_version": xem_version })).await;
                        state.rotations().on_hello(&agent_id, &curve_key).await;
                        if let Err(err) = state.exec().on_hello(&agent_id).await {
                            tracing::warn!(%agent_id, error = %err, "could not load the agent's offer");
                        }
                    }
                    Frame::Manifest { manifest, .. } => {
                        state.metrics().mesh_frame("manifest");
                        if let Err(err) = state.exec().on_manifest(&agent_id, manifest).await {
                            tracing::warn!(%agent_id, error = %err, "could not record the agent's manifest");
                        }
                    }
                    Frame::InvocationStarted { invocation_id, credential_generation } => {
                        state.metrics().mesh_frame("invocation_started");
                        if let Err(err) = state
                            .exec()
                            .on_started(&agent_id, &invocation_id, credential_generation)
                            .await
                        {
                            tracing::warn!(%agent_id, %invocation_id, error = %err, "could not record an invocation start");
                        }
                    }
                    Frame::InvocationOutput { invocation_id, stream, chunk } => {
                        state.metrics().mesh_frame("invocation_output");
                        state.exec().on_output(&agent_id, &invocation_id, &stream, &chunk);
                    }
                    Frame::InvocationFinished { result } => {
                        state.metrics().mesh_frame("invocation_finished");
                        let invocation_id = result.invocation_id.clone();
                        if let Err(err) = state.exec().on_finished(&agent_id, result).await {
                            tracing::warn!(%agent_id, %invocation_id, error = %err, "could not record an invocation result; the agent will re-send it");
                        }
                    }
                    Frame::InvocationRefused { invocation_id, reason } => {
                        state.metrics().mesh_frame("invocation_refused");
                        if let Err(err) =
                            state.exec().on_refused(&agent_id, &invocation_id, &reason).await
                        {
                            tracing::warn!(%agent_id, %invocation_id, error = %err, "could not requeue a refused invocation");
                        }
                    }
                    Frame::CredentialsReloaded { report } => {
                        state.metrics().mesh_frame("credentials_reloaded");
                        if report.ok {
                            tracing::info!(%agent_id, trigger = %report.trigger, files = report.files.len(), "agent reloaded its workspace credentials");
                        } else {
                            tracing::warn!(%agent_id, trigger = %report.trigger, "agent credential reload failed for some files; their last good versions stay in use");
                        }
                        if let Err(err) = crate::exec::credential_ages::record(
                            state.store(),
                            &agent_id,
                            &report,
                            now,
                        )
                        .await
                        {
                            tracing::warn!(%agent_id, error = %err, "could not record the agent's credential report");
                        }
                        let event = if report.ok {
                            "credentials_reloaded"
                        } else {
                            "credentials_reload_failed"
                        };
                        let details = serde_json::to_value(&report).unwrap_or_default();
                        state.events().append(&agent_id, event, None, details).await;
                    }
                    Frame::RotateAck { payload, signature } => {
                        state.metrics().mesh_frame("rotate_ack");
                        fleet.note_session(&agent_id, routing_id);
                        if let Err(err) =
                            state.rotations().on_ack(&agent_id, &payload, &signature).await
                        {
                            tracing::warn!(%agent_id, error = %err, "could not process a rotation acknowledgement");
                        }
                    }
                    Frame::LeaseRenewal {
                        seq, manifest_hash, manifest_version, in_flight, ..
                    } => {
                        state.metrics().mesh_frame("lease_renewal");
                        fleet.send_raw(&routing_id, &Frame::LeaseAck { seq });
                        fleet.note_session(&agent_id, routing_id);
                        if let Err(err) = state
                            .exec()
                            .on_lease(&agent_id, &in_flight, LOST_INVOCATION_GRACE_MS)
                            .await
                        {
                            tracing::warn!(%agent_id, error = %err, "could not reconcile the agent's invocations");
                        }
                        fleet.note_heartbeat(beat(agent_id, now, manifest_hash, manifest_version));
                    }
                    Frame::LeaseAck { .. }
                    | Frame::Invoke { .. }
                    | Frame::CancelInvocation { .. }
                    | Frame::ResultAck { .. }
                    | Frame::Revoked { .. }
                    | Frame::RotateCurve { .. }
                    | Frame::RotationPromoted { .. }
                    | Frame::RotationFailed { .. } => {
                        state.metrics().mesh_dropped("unexpected");
                        tracing::debug!(%agent_id, "router-bound frame of a router-sent type; dropped");
                    }
                }
            }
            MeshEvent::Dropped { reason, agent_id } => {
                state.metrics().mesh_dropped(reason.as_str());
                tracing::debug!(
                    reason = reason.as_str(),
                    agent_id = agent_id.as_deref().unwrap_or("-"),
                    "mesh frame dropped"
                );
            }
            MeshEvent::Fatal(message) => {
                let _ = fatal.send(message).await;
                return;
            }
        }
    }
}

fn beat(agent_id: String, at: i64, manifest_hash: String, manifest_version: u64) -> Heartbeat {
    Heartbeat {
        agent_id,
        at,
        manifest_hash,
        manifest_version: i64::try_from(manifest_version).unwrap_or(i64::MAX),
    }
}

async fn flush_heartbeats(state: AppState) {
    let mut tick =
        tokio::time::interval(Duration::from_millis(state.fleet().settings.heartbeat_flush_ms));
    loop {
        tick.tick().await;
        let beats = state.fleet().take_heartbeats();
        if let Err(err) = state.store().record_heartbeats(&beats).await {
            tracing::warn!(error = %err, count = beats.len(), "could not record lease renewals");
        }
    }
}

/// Re-reads the allow-list from the store, so revocations and enrollments made through other
/// replicas take effect here; sessions of agents no longer allowed are ended.
pub async fn refresh_allow_list(state: &AppState) -> Result<(), StoreError> {
    let fleet = state.fleet();
    let since = fleet.allow.generation();
    let live = state.store().live_agent_keys().await?;
    let entries = live.into_iter().filter_map(|(agent_id, key)| match parse_curve_public(&key) {
        Ok(bytes) => Some((bytes, agent_id)),
        Err(err) => {
            tracing::error!(%agent_id, error = %err, "stored CURVE key is unreadable; agent not allowed");
            None
        }
    });
    fleet.allow.replace_all(entries, since);
    for agent_id in fleet.session_agents() {
        let still_allowed = fleet.allow.contains_agent(&agent_id);
        if !still_allowed {
            fleet.end_session(&agent_id, "credentials revoked");
        }
    }
    Ok(())
}

async fn refresh_periodically(state: AppState) {
    let mut tick =
        tokio::time::interval(Duration::from_millis(state.fleet().settings.allow_list_refresh_ms));
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(err) = refresh_allow_list(&state).await {
            tracing::warn!(error = %err, "could not refresh the mesh allow-list");
        }
    }
}

/// Fails rotations whose acknowledgement deadline passed (decided by the injected clock).
async fn sweep_rotations(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let now = state.clock().now_millis();
        if let Err(err) = state.rotations().sweep(now).await {
            tracing::warn!(error = %err, "could not sweep overdue rotations");
        }
    }
}

async fn watch_health(server: Arc<MeshServer>, fatal: mpsc::Sender<String>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if !server.is_healthy() {
            let _ = fatal.send("a mesh thread (ZAP handler or I/O) stopped".into()).await;
            return;
        }
    }
}
