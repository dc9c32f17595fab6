//! On-demand CURVE key rotation with a signed acknowledgement.
//!
//! The router asks the agent (over its live CURVE session) for a fresh key pair; the agent keeps
//! it pending and answers with an Ed25519 signature binding agent, request, nonce, new CURVE key
//! and new signing key; only a verified answer promotes the keys. The signing key is replaced
//! outright at promotion: the next rotation must be signed by the new one. Until the agent is seen on the new key the old one
//! stays accepted, so no step can lock the agent out, and every rotation ends `promoted` or
//! `failed` with one reason.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;

use xerotier_core::{SharedClock, SharedEntropy, UnixMillis, format_rfc3339};
use xerotier_credentials::{
    curve_public_z85, fingerprint, parse_agent_curve_public, parse_curve_public,
    parse_signing_public, verify_signature,
};
use xerotier_proto::mesh::{Frame, decode_ack_payload, rotate_ack_signing_input};
use xerotier_proto::rotation::{
    DEFAULT_ROTATION_REASON, FAILURE_ACK_TIMEOUT, FAILURE_REVOKED_AGENT, FAILURE_SIGNATURE_MISMATCH,
};
use xerotier_proto::status::RotationStatus;
use xerotier_store::{AgentRecord, NewAgentKeys, Outcome, RotationRecord, Store, StoreError};

use super::promoted_keys::{Promoted, PromotedKeys};
use crate::agent_events::EventLog;
use crate::audit::{Actor, AuditContext, AuditLog, Change, Target};
use crate::mesh_link::MeshLink;
use crate::service_error::ServiceError;
use crate::validate;

#[derive(Debug, Clone)]
pub struct RotationService {
    store: Store,
    clock: SharedClock,
    entropy: SharedEntropy,
    audit: AuditLog,
    events: EventLog,
    link: Arc<MeshLink>,
    /// Agents between promotion and first sight on the new key.
    promoted: Arc<PromotedKeys>,
    /// Pending rotations whose instruction this replica has sent (request ids).
    delivered: Arc<Mutex<HashSet<String>>>,
    /// Test builds only (`ignore_promotion_reads`).
    #[cfg(feature = "test-faults")]
    ignore_promotion_reads: Arc<std::sync::atomic::AtomicBool>,
}

impl RotationService {
    pub fn new(
        store: Store,
        clock: SharedClock,
        entropy: SharedEntropy,
        audit: AuditLog,
        events: EventLog,
        link: Arc<MeshLink>,
    ) -> Self {
        Self {
            store,
            clock,
            entropy,
            audit,
            events,
            link,
            promoted: Arc::default(),
            delivered: Arc::default(),
            #[cfg(feature = "test-faults")]
            ignore_promotion_reads: Arc::default(),
        }
    }

    /// Test builds only: promotions are no longer read from the store on another replica's
    /// signal or on a hello, as if every such read had been lost, so that the full refresh's
    /// safety net (`reconcile_promoted`) can be shown to retire the old key by itself.
    #[cfg(feature = "test-faults")]
    pub fn ignore_promotion_reads(&self) {
        self.ignore_promotion_reads.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The promotion re-read on a signal or a hello (not in a test build told to lose it).
    async fn reload_promoted_on_event(&self, agent_id: &str) -> Result<(), StoreError> {
        #[cfg(feature = "test-faults")]
        if self.ignore_promotion_reads.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        self.reload_promoted(agent_id).await
    }

    fn random_hex(&self, bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        self.entropy.fill(&mut buf);
        hex::encode(buf)
    }

    /// Remembers agents that were promoted but not yet seen on the new key (after a restart):
    /// `in_store` are the agents the store lists with two keys (`refresh_allow_list`).
    pub async fn load_promoted(&self, in_store: &HashSet<String>) -> Result<(), StoreError> {
        for agent_id in in_store {
            self.reload_promoted(agent_id).await?;
        }
        Ok(())
    }

    /// `POST …/curve-rotate`: records the request and instructs the agent if it is connected
    /// here (otherwise it is instructed when it says hello, or the deadline fails it).
    pub async fn request(
        &self,
        context: &AuditContext,
        agent_id: &str,
        reason: Option<&str>,
    ) -> Result<RotationRecord, ServiceError> {
        let reason = validate::reason(reason)?.unwrap_or(DEFAULT_ROTATION_REASON).to_string();
        let agent = self
            .store
            .agent(agent_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("agent {agent_id}")))?;
        // An agent waiting for approval is a candidate: no work and no rotation.
        if agent.revoked_at.is_none() && agent.approval != "approved" {
            return Err(ServiceError::AgentNotApproved(agent.id));
        }
        let now = self.clock.now_millis();
        let timeout_ms =
            i64::try_from(self.link.settings.curve_rotation_ack_timeout_ms).unwrap_or(i64::MAX / 2);
        let rotation = RotationRecord {
            id: self.random_hex(16),
            agent_id: agent.id.clone(),
            reason: reason.clone(),
            nonce: self.random_hex(32),
            status: RotationStatus::Pending.as_str().into(),
            failure_reason: None,
            requested_at: now,
            requested_by: context.actor.as_ref().map(|a| a.key_id.clone()),
            requested_by_name: context.actor.as_ref().map(|a| a.name.clone()),
            deadline_at: now + timeout_ms,
            acknowledged_at: None,
            completed_at: None,
            new_public_key: None,
            request_id: context.request_id.clone(),
            new_signing_public_key: None,
        };
        let event = self.events.event(&agent.id, "rotation_requested", Some(&rotation.id), serde_json::json!({
            "reason": reason, "requested_by": context.actor_key_id(), "deadline_at": format_rfc3339(rotation.deadline_at),
        }));
        let target = Target { kind: "agent", id: Some(&agent.id), name: Some(&agent.name) };
        let details =
            serde_json::json!({ "rotation_request_id": rotation.id, "phase": "requested" });
        let change =
            Change::new("agent.curve_rotate", target).reason(Some(&reason)).details(details);
        let entry = self.audit.entry(context, &change, Outcome::Success);
        // A refusal (one already in flight) changes nothing and is answered, not audited: the
        // request that is in flight has its own record.
        self.store.create_rotation(&rotation, &event, &entry).await?;
        self.events.written();
        tracing::info!(agent_id = %agent.id, request_id = %rotation.id, %reason, actor = %context.actor_label(), "CURVE rotation requested");
        if agent.revoked_at.is_some() {
            return Ok(self.fail(&rotation, FAILURE_REVOKED_AGENT).await?.unwrap_or(rotation));
        }
        self.instruct(&rotation);
        Ok(rotation)
    }

    pub async fn get(
        &self,
        agent_id: &str,
        request_id: &str,
    ) -> Result<RotationRecord, ServiceError> {
        match self.store.rotation(request_id).await? {
            Some(r) if r.agent_id == agent_id => Ok(r),
            _ => Err(ServiceError::NotFound(format!("rotation {request_id} of agent {agent_id}"))),
        }
    }

    /// Ends a pending rotation as failed, audits it, logs the event and tells the agent.
    async fn fail(
        &self,
        rotation: &RotationRecord,
        reason: &str,
    ) -> Result<Option<RotationRecord>, ServiceError> {
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
            self.link.send_to(
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
        let context = AuditContext {
            actor: Some(Actor {
                key_id: rotation.requested_by.clone().unwrap_or_default(),
                name: rotation.requested_by_name.clone().unwrap_or_default(),
            }),
            request_id: rotation.request_id.clone(),
            correlation_id: None,
            client_addr: None,
        };
        let target = Target { kind: "agent", id: Some(&rotation.agent_id), name: None };
        let change = Change::new("agent.curve_rotate", target)
            .reason(Some(&rotation.reason))
            .details(details);
        self.audit.entry(&context, &change, outcome)
    }

    /// An acknowledgement with nothing pending is ignored. The log line says which of the
    /// agent's rotations it names, when that one ended, and how: an ack that comes after its
    /// rotation failed (a slow agent, a warning) needs an operator; one for a rotation already
    /// promoted is an answer sent twice (information only; see BENCHMARKS, 10k run 4). The
    /// payload is not verified here; only a well-formed rotation id of this agent is looked
    /// up, and only the stored row's facts are logged.
    async fn log_unexpected_ack(&self, agent_id: &str, payload: &[u8]) {
        let named = decode_ack_payload(payload)
            .ok()
            .map(|body| body.request_id)
            .filter(|id| xerotier_proto::formats::is_rotation_id(id));
        let ended = match named {
            Some(id) => self.store.rotation(&id).await.ok().flatten(),
            None => None,
        };
        let Some(r) = ended.filter(|r| r.agent_id == agent_id) else {
            tracing::warn!(%agent_id, "rotation acknowledgement with no rotation pending; ignored");
            return;
        };
        let ago_ms = r.completed_at.map(|at| self.clock.now_millis() - at);
        if r.status == RotationStatus::Promoted.as_str() {
            // The agent answered an instruction sent again while its first answer was on its
            // way (the sweep re-sends unanswered ones): nothing to act on.
            tracing::info!(
                %agent_id, request_id = %r.id, ended_ms_ago = ?ago_ms,
                "rotation acknowledgement sent again after its rotation was promoted; ignored"
            );
        } else {
            tracing::warn!(
                %agent_id, request_id = %r.id, status = %r.status,
                failure_reason = r.failure_reason.as_deref().unwrap_or(""),
                ended_ms_ago = ?ago_ms,
                "rotation acknowledgement for a rotation that already ended; ignored"
            );
        }
    }

    /// An acknowledgement arrived on the agent's authenticated session.
    pub async fn on_ack(
        &self,
        agent_id: &str,
        payload: &[u8],
        signature: &[u8],
    ) -> Result<(), ServiceError> {
        let Some(rotation) = self.store.pending_rotation(agent_id).await? else {
            self.log_unexpected_ack(agent_id, payload).await;
            return Ok(());
        };
        let agent = self
            .store
            .agent(agent_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("agent {agent_id}")))?;
        // Verify the exact bytes received, then read them.
        let signed = verify_signature(
            &agent.signing_public_key,
            &rotate_ack_signing_input(payload),
            signature,
        );
        let body = decode_ack_payload(payload).ok();
        // A weak (low-order) new key is refused like a forgery.
        let new_key = body.as_ref().and_then(|b| parse_agent_curve_public(&b.new_public_key).ok());
        let binds = body.as_ref().is_some_and(|b| {
            b.agent_id == agent.id && b.request_id == rotation.id && b.nonce == rotation.nonce
        });
        // The new signing key must be a valid one and a new one: an ack that keeps (or cannot
        // name) its signing key would leave a stolen key proving every later rotation.
        let new_signing = body.as_ref().and_then(|b| new_signing_key(b, &agent));
        let (true, true, Some(new_key), Some(new_signing)) = (signed, binds, new_key, new_signing)
        else {
            self.fail(&rotation, FAILURE_SIGNATURE_MISMATCH).await?;
            return Ok(());
        };
        if agent.revoked_at.is_some() {
            self.fail(&rotation, FAILURE_REVOKED_AGENT).await?;
            return Ok(());
        }
        let new_z85 = curve_public_z85(&new_key);
        let new_signing_hex = hex::encode(new_signing);
        let now = self.clock.now_millis();
        // Fingerprints only: the records say which keys, never the keys.
        let fingerprints = serde_json::json!({
            "new_key_fingerprint": fingerprint(&new_key),
            "new_signing_key_fingerprint": fingerprint(&new_signing),
            "previous_signing_key_fingerprint": signing_fingerprint(&agent.signing_public_key),
        });
        let events = [
            self.events.event(
                agent_id,
                "rotation_acknowledged",
                Some(&rotation.id),
                fingerprints.clone(),
            ),
            self.events.event(
                agent_id,
                "rotation_promoted",
                Some(&rotation.id),
                fingerprints.clone(),
            ),
        ];
        let mut details =
            serde_json::json!({ "rotation_request_id": rotation.id, "phase": "promoted" });
        if let (Some(details), Some(prints)) = (details.as_object_mut(), fingerprints.as_object()) {
            details.extend(prints.clone());
        }
        let entry = self.terminal_audit(&rotation, Outcome::Success, details);
        let new_keys = NewAgentKeys { curve: &new_z85, signing: &new_signing_hex };
        match self.store.promote_rotation(&rotation.id, &new_keys, now, &events, &entry).await {
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
        if !self.link.allow.allow(new_key, agent_id) {
            tracing::error!(%agent_id, request_id = %rotation.id, "promoted, but the new CURVE key maps to another agent on the allow-list");
        }
        self.promoted.set_here(agent_id, Some((rotation.id.clone(), new_key, old_key)));
        tracing::info!(%agent_id, request_id = %rotation.id, "CURVE key promoted");
        self.link.send_to(agent_id, &Frame::RotationPromoted { request_id: rotation.id.clone() });
        Ok(())
    }

    /// Every authenticated frame: an agent seen on its promoted key retires the old one.
    pub async fn on_seen(&self, agent_id: &str, curve_key: &[u8; 32]) {
        let Some((request_id, new_key, old_key)) = self.promoted.get(agent_id) else { return };
        if &new_key != curve_key {
            return;
        }
        let event = self.events.event(agent_id, "rotation_completed", Some(&request_id), serde_json::json!({ "detail": "agent seen on the new key; the old key is no longer accepted" }));
        // The router acts here (the agent proved it holds the new key), so the record names no
        // operator; the old key's fingerprint says what stopped being accepted.
        let target = Target { kind: "agent", id: Some(agent_id), name: None };
        let change = Change::new("agent.curve_key_retire", target).details(serde_json::json!({
            "rotation_request_id": request_id,
            "retired_key_fingerprint": old_key.as_ref().map(|k| fingerprint(k)),
            "current_key_fingerprint": fingerprint(&new_key),
        }));
        let entry = self.audit.entry(&AuditContext::default(), &change, Outcome::Success);
        let current = curve_public_z85(&new_key);
        match self.store.retire_previous_key(agent_id, &current, &event, &entry).await {
            Ok(_) => {
                if let Some(old) = old_key {
                    self.link.allow.remove_key(&old);
                }
                self.promoted.clear_if(agent_id, &request_id);
                self.events.written();
                tracing::info!(%agent_id, %request_id, "agent on its new CURVE key; old key retired");
            }
            Err(err) => {
                tracing::warn!(%agent_id, error = %err, "could not retire the previous CURVE key; will retry")
            }
        }
    }

    /// What the store says of the agent's rotation, made this replica's: a promotion made
    /// through any replica is known here (so the agent seen here on its new key retires the
    /// old one), and a pending instruction not yet sent from here is sent if its session is
    /// here. Called on hello and when another replica signals a change to the agent.
    pub async fn reload_agent(&self, agent_id: &str) -> Result<(), StoreError> {
        self.reload_promoted_on_event(agent_id).await?;
        if let Some(rotation) = self.store.pending_rotation(agent_id).await?
            && !self.delivered.lock().contains(&rotation.id)
        {
            self.instruct(&rotation);
        }
        Ok(())
    }

    /// On (re)connect: re-send what the agent may have missed (a crash at any step). The
    /// rotation's state is read from the store first: it may have moved on another replica.
    pub async fn on_hello(&self, agent_id: &str, curve_key: &[u8; 32]) {
        if let Err(err) = self.reload_promoted_on_event(agent_id).await {
            tracing::warn!(%agent_id, error = %err, "could not read the agent's promotion");
        }
        if let Some((request_id, new_key, _)) = self.promoted.get(agent_id) {
            if &new_key != curve_key {
                self.link.send_to(agent_id, &Frame::RotationPromoted { request_id });
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

    /// The promotion the store records for the agent (a current key with a previous one still
    /// accepted), or none.
    async fn reload_promoted(&self, agent_id: &str) -> Result<(), StoreError> {
        let ticket = self.promoted.ticket();
        let Some(agent) = self.store.agent(agent_id).await? else { return Ok(()) };
        let promoted = self.promotion_of(&agent).await?;
        self.promoted.set_read(&ticket, agent_id, promoted);
        Ok(())
    }

    /// The safety net (the replica's periodic full refresh): `in_store` are the live agents the
    /// store records with a previous key still accepted. Every such agent this replica does not
    /// know as promoted, and every agent it knows as promoted that the store no longer records
    /// so, is read again, so a promotion missed here (a lost signal, a failed read on hello) is
    /// finished: an agent found promoted whose session is here is told so again (what its hello
    /// would have done; an agent already on the new key ignores it), and its first frame on the
    /// new key retires the old one. Returns how many were read again.
    pub async fn reconcile_promoted(&self, in_store: &HashSet<String>) -> usize {
        let known = self.promoted.agents();
        let mut reread = 0;
        for agent_id in in_store.symmetric_difference(&known) {
            reread += 1;
            if let Err(err) = self.reload_promoted(agent_id).await {
                tracing::warn!(%agent_id, error = %err, "could not re-read the agent's promotion");
                continue;
            }
            if known.contains(agent_id) {
                continue;
            }
            if let Some((request_id, _, _)) = self.promoted.get(agent_id) {
                tracing::info!(%agent_id, %request_id, "a promotion this replica had missed was read from the store");
                self.link.send_to(agent_id, &Frame::RotationPromoted { request_id });
            }
        }
        reread
    }

    /// The promotion the agent's row records: a current key with the previous one still
    /// accepted (a live agent only), with the request that promoted it.
    async fn promotion_of(&self, agent: &AgentRecord) -> Result<Option<Promoted>, StoreError> {
        let (Some(previous), Ok(current), None) = (
            &agent.previous_curve_public_key,
            parse_curve_public(&agent.curve_public_key),
            agent.revoked_at,
        ) else {
            return Ok(None);
        };
        let request_id = self.store.latest_promoted_rotation(&agent.id).await?.unwrap_or_default();
        Ok(Some((request_id, current, parse_curve_public(previous).ok())))
    }

    /// Fails rotations whose acknowledgement did not arrive in time.
    pub async fn sweep(&self, now: UnixMillis) -> Result<(), ServiceError> {
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
        if self.link.send_to(&rotation.agent_id, &frame) {
            self.delivered.lock().insert(rotation.id.clone());
        }
    }

    /// A rotation requested through another replica reaches an agent whose session is here:
    /// each pending request is sent once by the replica that holds the session.
    async fn deliver_pending(&self) -> Result<(), ServiceError> {
        let pending = self.store.pending_rotations().await?;
        let undelivered: Vec<&RotationRecord> = {
            let mut delivered = self.delivered.lock();
            delivered.retain(|id| pending.iter().any(|r| &r.id == id));
            pending.iter().filter(|r| !delivered.contains(&r.id)).collect()
        };
        for rotation in undelivered {
            self.instruct(rotation);
        }
        Ok(())
    }

    /// The agent was revoked: its pending rotation can never complete.
    pub async fn on_revoked(&self, agent_id: &str) -> Result<(), ServiceError> {
        if let Some(rotation) = self.store.pending_rotation(agent_id).await? {
            self.fail(&rotation, FAILURE_REVOKED_AGENT).await?;
        }
        self.promoted.set_here(agent_id, None);
        Ok(())
    }
}

/// The new signing key an acknowledgement binds, if it is a valid Ed25519 key (not a weak
/// point) other than the agent's current one.
fn new_signing_key(
    body: &xerotier_proto::mesh::RotateAckPayload,
    agent: &AgentRecord,
) -> Option<[u8; 32]> {
    if !xerotier_proto::formats::is_signing_public_key(&body.new_signing_public_key) {
        return None;
    }
    let key = parse_signing_public(&body.new_signing_public_key).ok()?;
    let current = parse_signing_public(&agent.signing_public_key).ok();
    (current != Some(key)).then_some(key)
}

/// The fingerprint of a hex signing key, or none if it is not one.
pub(crate) fn signing_fingerprint(public_hex: &str) -> Option<String> {
    parse_signing_public(public_hex).ok().map(|k| fingerprint(&k))
}
