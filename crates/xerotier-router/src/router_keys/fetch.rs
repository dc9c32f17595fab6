//! `POST /v1/agents/router-keys`: an enrolled agent that was offline for a whole mesh key
//! rotation holds only keys the router no longer serves; it asks for the current ones over
//! HTTPS with a request signed by its Ed25519 signing key (no join key, no API key).
//!
//! Every refusal is the same error (`agent_request_refused`, 401), whatever failed, so the
//! caller learns nothing about which agents exist or which check it missed; refusals are
//! audited, rate-limited per source like refused enrollments.

use std::sync::Arc;

use parking_lot::Mutex;
use xerotier_core::{IdKind, SharedClock, UnixMillis, is_valid_id};
use xerotier_proto::agents::{RouterKeysRequest, RouterKeysResponse, router_keys_signing_input};
use xerotier_proto::formats;
use xerotier_store::{Outcome, Store};

use crate::audit::{AuditContext, AuditLog, Change, Target};
use crate::mesh_link::MeshLink;
use crate::metrics::Metrics;
use crate::request_limits::{SourceLimiter, source_of_text};
use crate::service_error::ServiceError;

/// How far a request's timestamp may be from the router's clock, either way.
pub const MAX_SKEW_MS: i64 = 5 * 60_000;
/// Refusals audited per source and minute, sustained, and at once (as for enrollment).
const RECORDS_PER_MINUTE: u32 = 10;
const BURST: u32 = 20;

/// Why a fetch was refused: only ever in the audit record and the log, never in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    StaleTimestamp,
    UnknownAgent,
    RevokedAgent,
    BadSignature,
    UnknownKid,
    Replayed,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::StaleTimestamp => "stale_timestamp",
            Refusal::UnknownAgent => "unknown_agent",
            Refusal::RevokedAgent => "revoked_agent",
            Refusal::BadSignature => "bad_signature",
            Refusal::UnknownKid => "unknown_kid",
            Refusal::Replayed => "replayed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct KeyFetchService {
    store: Store,
    clock: SharedClock,
    link: Arc<MeshLink>,
    audit: AuditLog,
    metrics: Metrics,
    limiter: Arc<Mutex<SourceLimiter>>,
}

impl KeyFetchService {
    pub fn new(
        store: Store,
        clock: SharedClock,
        link: Arc<MeshLink>,
        audit: AuditLog,
        metrics: Metrics,
    ) -> Self {
        let limiter = Arc::new(Mutex::new(SourceLimiter::new(RECORDS_PER_MINUTE, BURST)));
        Self { store, clock, link, audit, metrics, limiter }
    }

    /// The current key set, for an agent that proves itself; otherwise the one refusal.
    pub async fn fetch(
        &self,
        context: &AuditContext,
        request: RouterKeysRequest,
    ) -> Result<RouterKeysResponse, ServiceError> {
        match self.check(&request).await {
            Ok(()) => {
                tracing::info!(agent_id = %request.agent_id, kid = %request.kid, "agent fetched the router's mesh keys with a signed request");
                Ok(RouterKeysResponse {
                    keys: self.link.router_mesh_keys(),
                    tls_ca_pins: self.link.tls_ca_pins(),
                })
            }
            Err(Checked::Refused(refusal)) => {
                self.record(context, &request, refusal).await;
                Err(ServiceError::AgentRequestRefused)
            }
            Err(Checked::Store(err)) => Err(err.into()),
        }
    }

    /// A body that never became a request: audited as a refusal all the same.
    pub async fn record_malformed(&self, context: &AuditContext) {
        self.record_refusal(context, None, Refusal::Malformed).await;
    }

    async fn check(&self, request: &RouterKeysRequest) -> Result<(), Checked> {
        let refuse = |refusal| Err(Checked::Refused(refusal));
        if !well_formed(request) {
            return refuse(Refusal::Malformed);
        }
        let now = self.clock.now_millis();
        // `abs_diff`: any i64 a client sends, however far off, is compared without overflow.
        if request.timestamp_ms.abs_diff(now) > MAX_SKEW_MS.unsigned_abs() {
            return refuse(Refusal::StaleTimestamp);
        }
        let agent = match self.store.agent(&request.agent_id).await.map_err(Checked::Store)? {
            Some(agent) => agent,
            None => return refuse(Refusal::UnknownAgent),
        };
        if agent.revoked_at.is_some() {
            return refuse(Refusal::RevokedAgent);
        }
        let input = router_keys_signing_input(
            &request.agent_id,
            request.timestamp_ms,
            &request.nonce,
            &request.kid,
        );
        let Ok(signature) = hex::decode(&request.signature) else {
            return refuse(Refusal::Malformed);
        };
        if !xerotier_credentials::verify_signature(&agent.signing_public_key, &input, &signature) {
            return refuse(Refusal::BadSignature);
        }
        if !self.kid_may_fetch(&request.kid) {
            return refuse(Refusal::UnknownKid);
        }
        // Last, once the request is proven to be the agent's: spending a nonce writes.
        let fresh = self
            .store
            .spend_router_key_nonce(&request.agent_id, &request.nonce, now, forget_before(now))
            .await
            .map_err(Checked::Store)?;
        if !fresh {
            return refuse(Refusal::Replayed);
        }
        Ok(())
    }

    /// The kid the agent holds must be one the router accepts now, or one retired within the
    /// overlap window (the rotation service keeps those in the state's `verify_only`, which
    /// the mesh rollout hands to the link): an agent holding an older key re-enrolls.
    fn kid_may_fetch(&self, kid: &str) -> bool {
        self.link.router_mesh_keys().iter().any(|k| k.kid == kid)
            || self.link.retired_mesh_kids().iter().any(|k| k == kid)
    }

    async fn record(&self, context: &AuditContext, request: &RouterKeysRequest, refusal: Refusal) {
        let agent_id =
            is_valid_id(IdKind::Agent, &request.agent_id).then_some(request.agent_id.as_str());
        self.record_refusal(context, agent_id, refusal).await;
    }

    async fn record_refusal(
        &self,
        context: &AuditContext,
        agent_id: Option<&str>,
        refusal: Refusal,
    ) {
        let source = source_of_text(context.client_addr.as_deref());
        tracing::info!(%source, agent_id = agent_id.unwrap_or("-"), reason = refusal.as_str(), "router key fetch refused");
        let admitted = self.limiter.lock().admit(&source, self.clock.now_millis());
        if !admitted {
            self.metrics.enroll_denied_unrecorded();
            return;
        }
        let target = Target { kind: "agent", id: agent_id, name: None };
        let change = Change::new("agent.router_keys_fetch", target)
            .reason(Some(refusal.as_str()))
            .details(serde_json::json!({ "error": "agent_request_refused" }));
        self.audit.record_attempt(context, &change, Outcome::Denied).await;
    }
}

/// Nonces older than the widest timestamp a request may carry are forgotten: such a request
/// is refused by its timestamp first.
fn forget_before(now: UnixMillis) -> UnixMillis {
    now - 2 * MAX_SKEW_MS
}

enum Checked {
    Refused(Refusal),
    Store(xerotier_store::StoreError),
}

fn well_formed(request: &RouterKeysRequest) -> bool {
    let lower_hex = |text: &str, len: usize| {
        text.len() == len && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    is_valid_id(IdKind::Agent, &request.agent_id)
        && lower_hex(&request.nonce, 32)
        && lower_hex(&request.signature, 128)
        && request.kid.starts_with("mks-")
        && formats::is_router_key_id(&request.kid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RouterKeysRequest {
        RouterKeysRequest {
            agent_id: "agt_01j9zk3v8p5q2r7t4w6x0y1abc".into(),
            timestamp_ms: 1_000,
            nonce: "0".repeat(32),
            kid: "mks-0123456789abcdef".into(),
            signature: "a".repeat(128),
        }
    }

    #[test]
    fn only_requests_of_the_documented_formats_are_looked_at() {
        assert!(well_formed(&request()));
        let cases: [fn(&mut RouterKeysRequest); 6] = [
            |r| r.agent_id = "agt_x".into(),
            |r| r.nonce = "0".repeat(31),
            |r| r.nonce = "G".repeat(32),
            |r| r.signature = "A".repeat(128),
            |r| r.kid = "jks-0123456789abcdef".into(),
            |r| r.kid = "mks-0123456789abcdef\nx".into(),
        ];
        for mutate in cases {
            let mut bad = request();
            mutate(&mut bad);
            assert!(!well_formed(&bad), "{bad:?}");
        }
    }
}
