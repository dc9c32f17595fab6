//! On-demand CURVE key rotation with a signed acknowledgement.
//!
//! The router asks the agent (over its live CURVE session) for a fresh key pair; the agent keeps
//! it pending and answers with an Ed25519 signature binding agent, request, nonce and new key;
//! only a verified answer promotes the key. Until the agent is seen on the new key the old one
//! stays accepted, so no step can lock the agent out, and every rotation ends `promoted` or
//! `failed` with one reason.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use xerotier_core::{SharedClock, SharedEntropy, UnixMillis, format_rfc3339};
use xerotier_credentials::{curve_public_z85, fingerprint, parse_curve_public, verify_signature};
use xerotier_proto::mesh::{Frame, decode_ack_payload, rotate_ack_signing_input};
use xerotier_proto::rotation::{
    CurveRotateRequest, DEFAULT_ROTATION_REASON, FAILURE_ACK_TIMEOUT, FAILURE_REVOKED_AGENT,
    FAILURE_SIGNATURE_MISMATCH, RotationView,
};
use xerotier_proto::{ErrorEnvelope, Scopes};
use xerotier_store::{Outcome, RotationRecord, Store, StoreError};

use super::Fleet;
use super::events::EventLog;
use crate::AppState;
use crate::audit::{AuditLog, Target};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::extract::{JsonBody, RequestContext};
use crate::validate;

/// A promoted key the agent has not been seen on yet: (request id, new key, old key).
type Promoted = (String, [u8; 32], Option<[u8; 32]>);

#[derive(Debug, Clone)]
pub struct RotationService {
    store: Store,
    clock: SharedClock,
    entropy: SharedEntropy,
    audit: AuditLog,
    events: EventLog,
    fleet: Arc<Fleet>,
    /// Agents between promotion and first sight on the new key.
    promoted: Arc<Mutex<HashMap<String, Promoted>>>,
    /// Pending rotations whose instruction this replica has sent (request ids).
    delivered: Arc<Mutex<HashSet<String>>>,
}

fn lock_set(set: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    match set.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

pub fn monitor_path(agent_id: &str) -> String {
    format!("/v1/management/agents/{agent_id}/events")
}

pub fn view(r: RotationRecord) -> RotationView {
    RotationView {
        monitor: monitor_path(&r.agent_id),
        new_key_fingerprint: r
            .new_public_key
            .as_deref()
            .and_then(|k| parse_curve_public(k).ok())
            .map(|k| fingerprint(&k)),
        requested_at: format_rfc3339(r.requested_at),
        deadline_at: format_rfc3339(r.deadline_at),
        acknowledged_at: r.acknowledged_at.map(format_rfc3339),
        completed_at: r.completed_at.map(format_rfc3339),
        request_id: r.id,
        agent_id: r.agent_id,
        status: r.status,
        reason: r.reason,
        failure_reason: r.failure_reason,
        requested_by: r.requested_by,
    }
}

impl RotationService {
    pub fn new(
        store: Store,
        clock: SharedClock,
        entropy: SharedEntropy,
        audit: AuditLog,
        events: EventLog,
        fleet: Arc<Fleet>,
    ) -> Self {
        Self {
            store,
            clock,
            entropy,
            audit,
            events,
            fleet,
            promoted: Arc::default(),
            delivered: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Promoted>> {
        match self.promoted.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn random_hex(&self, bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        self.entropy.fill(&mut buf);
        hex::encode(buf)
    }

    /// Remembers agents that were promoted but not yet seen on the new key (after a restart).
    pub async fn load_promoted(&self) -> Result<(), StoreError> {
        let page = xerotier_store::PageRequest { limit: 500, after: None };
        let mut after = None;
        loop {
            let slice = self
                .store
                .list_agents(
                    &xerotier_store::PageRequest { after: after.clone(), ..page.clone() },
                    false,
                )
                .await?;
            for agent in &slice.items {
                if let (Some(previous), Ok(current)) =
                    (&agent.previous_curve_public_key, parse_curve_public(&agent.curve_public_key))
                {
                    let request_id =
                        self.store.latest_promoted_rotation(&agent.id).await?.unwrap_or_default();
                    self.lock().insert(
                        agent.id.clone(),
                        (request_id, current, parse_curve_public(previous).ok()),
                    );
                }
            }
            if !slice.has_more {
                return Ok(());
            }
            after = slice.items.last().map(|a| a.id.clone());
        }
    }

    /// `POST …/curve-rotate`: records the request and instructs the agent if it is connected
    /// here (otherwise it is instructed when it says hello, or the deadline fails it).
    pub async fn request(
        &self,
        actor: &Principal,
        context: &RequestContext,
        agent_id: &str,
        reason: Option<&str>,
    ) -> Result<RotationView, ApiError> {
        let reason = validate::reason(reason)?.unwrap_or(DEFAULT_ROTATION_REASON).to_string();
        let agent = self
            .store
            .agent(agent_id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("agent {agent_id}")))?;
        let now = self.clock.now_millis();
        let timeout_ms = i64::try_from(self.fleet.settings.curve_rotation_ack_timeout_ms)
            .unwrap_or(i64::MAX / 2);
        let rotation = RotationRecord {
            id: self.random_hex(16),
            agent_id: agent.id.clone(),
            reason: reason.clone(),
            nonce: self.random_hex(32),
            status: "pending".into(),
            failure_reason: None,
            requested_at: now,
            requested_by: Some(actor.key_id.clone()),
            requested_by_name: Some(actor.name.clone()),
            deadline_at: now + timeout_ms,
            acknowledged_at: None,
            completed_at: None,
            new_public_key: None,
            request_id: context.request_id.clone(),
        };
        let event = self.events.event(&agent.id, "rotation_requested", Some(&rotation.id), serde_json::json!({
            "reason": reason, "requested_by": actor.key_id, "deadline_at": format_rfc3339(rotation.deadline_at),
        }));
        let target = Target { kind: "agent", id: Some(&agent.id), name: Some(&agent.name) };
        let details =
            serde_json::json!({ "rotation_request_id": rotation.id, "phase": "requested" });
        let entry = self.audit.entry(
            Some(actor),
            context,
            "agent.curve_rotate",
            Some(target),
            Outcome::Success,
            Some(&reason),
            details,
        );
        self.store.create_rotation(&rotation, &event, &entry).await.map_err(|err| match err {
            StoreError::RotationInFlight(first) => ApiError::RotationInFlight(first),
            other => other.into(),
        })?;
        self.events.written();
        tracing::info!(agent_id = %agent.id, request_id = %rotation.id, %reason, actor = %actor.key_id, "CURVE rotation requested");
        if agent.revoked_at.is_some() {
            return Ok(view(
                self.fail(&rotation, FAILURE_REVOKED_AGENT).await?.unwrap_or(rotation),
            ));
        }
        self.instruct(&rotation);
        Ok(view(rotation))
    }

    pub async fn get(&self, agent_id: &str, request_id: &str) -> Result<RotationView, ApiError> {
        match self.store.rotation(request_id).await? {
            Some(r) if r.agent_id == agent_id => Ok(view(r)),
            _ => Err(ApiError::NotFound(format!("rotation {request_id} of agent {agent_id}"))),
        }
    }

    /// Ends a pending rotation as failed, audits it, logs the event and tells the agent.
    async fn fail(
        &self,
        rotation: &RotationRecord,
        reason: &str,
    ) -> Result<Option<RotationRecord>, ApiError> {
        let now = self.clock.now_millis();
        let event = self.events.event(
            &rotation.agent_id,
            "rotation_failed",
            Some(&rotation.id),
            serde_json::json!({ "reason": reason }),
        );
        let entry = self.terminal_audit(rotation, Outcome::Failed, serde_json::json!({ "rotation_request_id": rotation.id, "phase": "failed", "failure_reason": reason }));
        let failed = self.store.fail_rotation(&rotation.id, reason, now, &event, &entry).await?;
        if failed.is_some() {
            self.events.written();
            tracing::warn!(agent_id = %rotation.agent_id, request_id = %rotation.id, %reason, "CURVE rotation failed: treat as a containment trigger");
            self.fleet.send_to(
                &rotation.agent_id,
                &Frame::RotationFailed {
                    request_id: rotation.id.clone(),
                    reason: reason.to_string(),
                },
            );
        }
        Ok(failed)
    }

    /// The audit record of a rotation's end, in the name of the operator who asked for it.
    fn terminal_audit(
        &self,
        rotation: &RotationRecord,
        outcome: Outcome,
        details: serde_json::Value,
    ) -> xerotier_store::AuditEntry {
        let operator = Principal {
            key_id: rotation.requested_by.clone().unwrap_or_default(),
            name: rotation.requested_by_name.clone().unwrap_or_default(),
            scopes: Scopes::default(),
        };
        let context = RequestContext { request_id: rotation.request_id.clone(), client_addr: None };
        let target = Target { kind: "agent", id: Some(&rotation.agent_id), name: None };
        self.audit.entry(
            Some(&operator),
            &context,
            "agent.curve_rotate",
            Some(target),
            outcome,
            Some(&rotation.reason),
            details,
        )
    }

    /// An acknowledgement arrived on the agent's authenticated session.
    pub async fn on_ack(
        &self,
        agent_id: &str,
        payload: &[u8],
        signature: &[u8],
    ) -> Result<(), ApiError> {
        let Some(rotation) = self.store.pending_rotation(agent_id).await? else {
            tracing::warn!(%agent_id, "rotation acknowledgement with no rotation pending; ignored");
            return Ok(());
        };
        let agent = self
            .store
            .agent(agent_id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("agent {agent_id}")))?;
        // Verify the exact bytes received, then read them.
        let signed = verify_signature(
            &agent.signing_public_key,
            &rotate_ack_signing_input(payload),
            signature,
        );
        let body = decode_ack_payload(payload).ok();
        let new_key = body.as_ref().and_then(|b| parse_curve_public(&b.new_public_key).ok());
        let binds = body.as_ref().is_some_and(|b| {
            b.agent_id == agent.id && b.request_id == rotation.id && b.nonce == rotation.nonce
        });
        let (true, true, Some(new_key)) = (signed, binds, new_key) else {
            self.fail(&rotation, FAILURE_SIGNATURE_MISMATCH).await?;
            return Ok(());
        };
        if agent.revoked_at.is_some() {
            self.fail(&rotation, FAILURE_REVOKED_AGENT).await?;
            return Ok(());
        }
        let new_z85 = curve_public_z85(&new_key);
        let now = self.clock.now_millis();
        let events = [
            self.events.event(
                agent_id,
                "rotation_acknowledged",
                Some(&rotation.id),
                serde_json::json!({ "new_key_fingerprint": fingerprint(&new_key) }),
            ),
            self.events.event(
                agent_id,
                "rotation_promoted",
                Some(&rotation.id),
                serde_json::json!({ "new_key_fingerprint": fingerprint(&new_key) }),
            ),
        ];
        let entry = self.terminal_audit(&rotation, Outcome::Success, serde_json::json!({
            "rotation_request_id": rotation.id, "phase": "promoted", "new_key_fingerprint": fingerprint(&new_key),
        }));
        match self.store.promote_rotation(&rotation.id, &new_z85, now, &events, &entry).await {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(()), // ended meanwhile (deadline): nothing to promote
            Err(StoreError::AlreadyRevoked(_)) => {
                self.fail(&rotation, FAILURE_REVOKED_AGENT).await?;
                return Ok(());
            }
            Err(StoreError::CurveKeyTaken) => {
                self.fail(&rotation, FAILURE_SIGNATURE_MISMATCH).await?;
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        }
        self.events.written();
        let old_key = parse_curve_public(&agent.curve_public_key).ok();
        self.fleet.allow.allow(new_key, agent_id);
        self.lock().insert(agent_id.to_string(), (rotation.id.clone(), new_key, old_key));
        tracing::info!(%agent_id, request_id = %rotation.id, "CURVE key promoted");
        self.fleet.send_to(agent_id, &Frame::RotationPromoted { request_id: rotation.id.clone() });
        Ok(())
    }

    /// Every authenticated frame: an agent seen on its promoted key retires the old one.
    pub async fn on_seen(&self, agent_id: &str, curve_key: &[u8; 32]) {
        let promoted = self.lock().get(agent_id).cloned();
        let Some((request_id, new_key, old_key)) = promoted else { return };
        if &new_key != curve_key {
            return;
        }
        let event = self.events.event(agent_id, "rotation_completed", Some(&request_id), serde_json::json!({ "detail": "agent seen on the new key; the old key is no longer accepted" }));
        match self.store.retire_previous_key(agent_id, &curve_public_z85(&new_key), &event).await {
            Ok(_) => {
                if let Some(old) = old_key {
                    self.fleet.allow.remove_key(&old);
                }
                self.lock().remove(agent_id);
                self.events.written();
                tracing::info!(%agent_id, %request_id, "agent on its new CURVE key; old key retired");
            }
            Err(err) => {
                tracing::warn!(%agent_id, error = %err, "could not retire the previous CURVE key; will retry")
            }
        }
    }

    /// On (re)connect: re-send what the agent may have missed (a crash at any step).
    pub async fn on_hello(&self, agent_id: &str, curve_key: &[u8; 32]) {
        let promoted = self.lock().get(agent_id).cloned();
        if let Some((request_id, new_key, _)) = promoted {
            if &new_key != curve_key {
                self.fleet.send_to(agent_id, &Frame::RotationPromoted { request_id });
            }
            return;
        }
        match self.store.pending_rotation(agent_id).await {
            Ok(Some(rotation)) => {
                self.instruct(&rotation);
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(%agent_id, error = %err, "could not look up pending rotations")
            }
        }
    }

    /// Fails rotations whose acknowledgement did not arrive in time.
    pub async fn sweep(&self, now: UnixMillis) -> Result<(), ApiError> {
        for rotation in self.store.overdue_rotations(now).await? {
            self.fail(&rotation, FAILURE_ACK_TIMEOUT).await?;
        }
        self.deliver_pending().await?;
        Ok(())
    }

    /// Sends the instruction over the agent's session, if it has one on this replica.
    fn instruct(&self, rotation: &RotationRecord) {
        let frame =
            Frame::RotateCurve { request_id: rotation.id.clone(), nonce: rotation.nonce.clone() };
        if self.fleet.send_to(&rotation.agent_id, &frame) {
            lock_set(&self.delivered).insert(rotation.id.clone());
        }
    }

    /// A rotation requested through another replica reaches an agent whose session is here:
    /// each pending request is sent once by the replica that holds the session.
    async fn deliver_pending(&self) -> Result<(), ApiError> {
        let pending = self.store.pending_rotations().await?;
        let undelivered: Vec<&RotationRecord> = {
            let mut delivered = lock_set(&self.delivered);
            delivered.retain(|id| pending.iter().any(|r| &r.id == id));
            pending.iter().filter(|r| !delivered.contains(&r.id)).collect()
        };
        for rotation in undelivered {
            self.instruct(rotation);
        }
        Ok(())
    }

    /// The agent was revoked: its pending rotation can never complete.
    pub async fn on_revoked(&self, agent_id: &str) -> Result<(), ApiError> {
        if let Some(rotation) = self.store.pending_rotation(agent_id).await? {
            self.fail(&rotation, FAILURE_REVOKED_AGENT).await?;
        }
        self.lock().remove(agent_id);
        Ok(())
    }
}

/// Rotate the agent's CURVE key. Answers at once with the request id; watch the events stream.
#[utoipa::path(
    post,
    path = "/v1/management/agents/{id}/curve-rotate",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id, `agt_…`")),
    request_body(content = CurveRotateRequest, description = "Reason for the audit log (default `scheduled`)"),
    responses(
        (status = 202, description = "Requested: status `pending` (or `failed` for a revoked agent)", body = RotationView),
        (status = 404, description = "No such agent", body = ErrorEnvelope),
        (status = 409, description = "A rotation is already in flight (`rotation_in_flight`, the message names it)", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn curve_rotate(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    context: RequestContext,
    Path(id): Path<String>,
    body: Option<JsonBody<CurveRotateRequest>>,
) -> Result<(StatusCode, Json<RotationView>), ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    let view = state.rotations().request(&actor, &context, &id, request.reason.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// One rotation request and its state.
#[utoipa::path(
    get,
    path = "/v1/management/agents/{id}/curve-rotations/{request_id}",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id"), ("request_id" = String, Path, description = "Rotation request id")),
    responses(
        (status = 200, description = "The rotation", body = RotationView),
        (status = 404, description = "No such rotation", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn get_rotation(
    State(state): State<AppState>,
    Path((id, request_id)): Path<(String, String)>,
) -> Result<Json<RotationView>, ApiError> {
    Ok(Json(state.rotations().get(&id, &request_id).await?))
}
