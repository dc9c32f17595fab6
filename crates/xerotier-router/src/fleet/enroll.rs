//! `POST /v1/enroll`: a XEM host trades a join key for an agent identity.

use std::sync::Arc;

use xerotier_core::{IdGenerator, IdKind, SharedClock, UnixMillis};
use xerotier_credentials::{
    JoinTokenError, parse_agent_curve_public, parse_curve_public, parse_signing_public,
    unverified_join_key_id,
};
use xerotier_proto::agents::{EnrollRequest, EnrollResponse};
use xerotier_proto::join_keys::JoinKeyClaims;
use xerotier_proto::{ErrorCode, formats};
use xerotier_store::{AgentRecord, JoinKeyRecord, Outcome, Store, StoreError};

use super::enroll_attempts::{Attempt, EnrollAttempts};
use super::join_keys::validate_role;
use crate::agent_events::EventLog;
use crate::audit::{Actor, AuditContext, AuditLog, Change, Target};
use crate::exec::service::{declared_workspaces, granted_by};
use crate::mesh_link::MeshLink;
use crate::service_error::ServiceError;
use crate::validate;

/// Default lease renewal interval when the agent does not say (SPEC 4.3).
const DEFAULT_LEASE_INTERVAL_MS: u64 = 10_000;
const MAX_MANIFEST_ENTRIES: usize = 1_000;

#[derive(Debug, Clone)]
pub struct EnrollService {
    store: Store,
    clock: SharedClock,
    ids: IdGenerator,
    audit: AuditLog,
    link: Arc<MeshLink>,
    events: EventLog,
    attempts: EnrollAttempts,
    replicas: crate::membership::ReplicaService,
}

/// A refused enrollment: what the caller is answered, and the reason its record gives.
#[derive(Debug)]
struct Refused {
    reason: &'static str,
    error: ServiceError,
}

impl Refused {
    fn new(reason: &'static str, error: ServiceError) -> Self {
        Self { reason, error }
    }
}

impl From<ServiceError> for Refused {
    fn from(error: ServiceError) -> Self {
        let reason = match &error {
            ServiceError::JoinKeyExpired(_) => "expired",
            ServiceError::JoinKeyUsed(_) => "used",
            ServiceError::JoinKeyRevoked(_) => "revoked",
            ServiceError::JoinKeyInvalid(_) => "invalid",
            ServiceError::NotFound(_) => "unknown_key",
            ServiceError::RegistrationNameTaken(_) => "name_taken",
            ServiceError::CurveKeyTaken => "curve_key_taken",
            ServiceError::Invalid { .. } => "malformed",
            _ => "internal",
        };
        Self { reason, error }
    }
}

impl From<StoreError> for Refused {
    fn from(error: StoreError) -> Self {
        ServiceError::from(error).into()
    }
}

/// The agent's keys, checked.
struct OfferedKeys {
    curve: [u8; 32],
}

impl EnrollService {
    pub fn new(
        store: Store,
        clock: SharedClock,
        ids: IdGenerator,
        audit: AuditLog,
        events: EventLog,
        attempts: EnrollAttempts,
        replicas: crate::membership::ReplicaService,
    ) -> Self {
        // The mesh link is the replica service's: one per process.
        let link = replicas.link().clone();
        Self { store, clock, ids, audit, link, events, attempts, replicas }
    }

    /// `context` carries the request id and peer address; the join key becomes the actor. A
    /// refusal is audited (`denied`, rate-limited per peer) naming the join key the token
    /// claims, as a label only.
    pub async fn enroll(
        &self,
        context: &AuditContext,
        request: EnrollRequest,
    ) -> Result<EnrollResponse, ServiceError> {
        let mut actor = None;
        let refused = match self.try_enroll(context, &request, &mut actor).await {
            Ok(response) => return Ok(response),
            Err(refused) => refused,
        };
        let claimed = unverified_join_key_id(&request.join_key);
        let param = match &refused.error {
            ServiceError::Invalid { param, .. } => param.as_deref(),
            _ => None,
        };
        let name = validate::name(&request.registration_name, "registration_name")
            .is_ok()
            .then_some(request.registration_name.as_str());
        let outcome = match refused.error {
            ServiceError::Internal(_) | ServiceError::StoreUnavailable(_) => Outcome::Failed,
            _ => Outcome::Denied,
        };
        let context = AuditContext { actor, ..context.clone() };
        let attempt = Attempt {
            join_key_id: claimed.as_deref(),
            reason: refused.reason,
            error_code: refused.error.code().as_str(),
            registration_name: name,
            param,
            outcome,
        };
        self.attempts.record(&context, attempt).await;
        Err(refused.error)
    }

    /// A body that never became an `EnrollRequest` (not JSON, wrong shape): refused before the
    /// service runs, audited here all the same.
    pub async fn record_malformed(&self, context: &AuditContext, error_code: ErrorCode) {
        let attempt = Attempt {
            join_key_id: None,
            reason: "malformed",
            error_code: error_code.as_str(),
            registration_name: None,
            param: None,
            outcome: Outcome::Denied,
        };
        self.attempts.record(context, attempt).await;
    }

    /// The request's own fields: name, keys (weak ones refused), manifest, lease interval.
    fn check_request(&self, request: &EnrollRequest) -> Result<OfferedKeys, Refused> {
        validate::name(&request.registration_name, "registration_name")?;
        // Exactly the document's formats; the parsers below then judge the keys themselves.
        if !formats::is_curve_public_key(&request.curve_public_key) {
            return Err(Refused::new(
                "malformed",
                ServiceError::invalid(
                    "curve_public_key must be 40 characters of Z85",
                    "curve_public_key",
                ),
            ));
        }
        if !formats::is_signing_public_key(&request.signing_public_key) {
            return Err(Refused::new(
                "malformed",
                ServiceError::invalid(
                    "signing_public_key must be 64 hex digits",
                    "signing_public_key",
                ),
            ));
        }
        let curve = parse_agent_curve_public(&request.curve_public_key).map_err(|e| {
            let weak = parse_curve_public(&request.curve_public_key).is_ok();
            Refused::new(
                if weak { "weak_key" } else { "malformed" },
                ServiceError::invalid(e.to_string(), "curve_public_key"),
            )
        })?;
        parse_signing_public(&request.signing_public_key).map_err(|e| {
            let weak = e.to_string().contains("weak");
            Refused::new(
                if weak { "weak_key" } else { "malformed" },
                ServiceError::invalid(e.to_string(), "signing_public_key"),
            )
        })?;
        let manifest = &request.manifest;
        if manifest.tools.len() > MAX_MANIFEST_ENTRIES
            || manifest.workspaces.len() > MAX_MANIFEST_ENTRIES
        {
            return Err(ServiceError::invalid(
                "the manifest lists too many tools or workspaces",
                "manifest",
            )
            .into());
        }
        let lease_interval = request.lease_renewal_interval_ms.unwrap_or(DEFAULT_LEASE_INTERVAL_MS);
        if !(100..=600_000).contains(&lease_interval) {
            return Err(ServiceError::invalid(
                "lease_renewal_interval_ms must be 100..=600000",
                "lease_renewal_interval_ms",
            )
            .into());
        }
        Ok(OfferedKeys { curve })
    }

    /// The token: signed by this router, EdDSA, unexpired, a known role and a join key this
    /// router minted.
    async fn verify_token(
        &self,
        token: &str,
        now: UnixMillis,
    ) -> Result<(JoinKeyClaims, JoinKeyRecord), Refused> {
        let claims =
            self.link.join_keyring.verify(&self.link.identity.join_signer, token, now).map_err(
                |err| {
                    let reason = match err {
                        JoinTokenError::Expired => "expired",
                        JoinTokenError::Malformed => "malformed",
                        JoinTokenError::WrongAlgorithm => "wrong_algorithm",
                        JoinTokenError::BadSignature => "bad_signature",
                        JoinTokenError::WrongAudience => "wrong_audience",
                        JoinTokenError::WrongIssuer => "wrong_issuer",
                        JoinTokenError::Signing(_) => "internal",
                    };
                    let error = match err {
                        JoinTokenError::Expired => ServiceError::JoinKeyExpired("(token)".into()),
                        other => ServiceError::JoinKeyInvalid(other.to_string()),
                    };
                    Refused::new(reason, error)
                },
            )?;
        validate_role(&claims.role).map_err(|_| {
            Refused::new("unknown_role", ServiceError::JoinKeyInvalid("unknown role".into()))
        })?;
        // The grant is read from the store, not from the token: the router decides.
        let Some(join_key) = self.store.join_key(&claims.jti).await? else {
            return Err(Refused::new(
                "unknown_key",
                ServiceError::JoinKeyInvalid("unknown to this router".into()),
            ));
        };
        Ok((claims, join_key))
    }

    async fn try_enroll(
        &self,
        context: &AuditContext,
        request: &EnrollRequest,
        actor: &mut Option<Actor>,
    ) -> Result<EnrollResponse, Refused> {
        // The credential first: without a join key this router minted, nothing else in the
        // request is looked at (a stranger learns nothing from which field we would refuse).
        let now = self.clock.now_millis();
        let (claims, join_key) = self.verify_token(&request.join_key, now).await?;
        // The join key (its signature verified) is the actor of its own enrollment.
        *actor =
            Some(Actor { key_id: claims.jti.clone(), name: format!("join key {}", claims.name) });
        let OfferedKeys { curve } = self.check_request(request)?;
        let manifest = &request.manifest;
        let lease_interval = request.lease_renewal_interval_ms.unwrap_or(DEFAULT_LEASE_INTERVAL_MS);

        let agent = AgentRecord {
            id: self.ids.next(IdKind::Agent),
            name: request.registration_name.clone(),
            role: claims.role.clone(),
            region: claims.region.clone(),
            join_key_id: claims.jti.clone(),
            enrolled_at: now,
            curve_public_key: z85_of(&curve),
            signing_public_key: request.signing_public_key.trim().to_lowercase(),
            manifest: serde_json::to_string(manifest).map_err(ServiceError::internal)?,
            manifest_hash: manifest.hash(),
            manifest_version: i64::try_from(manifest.version).unwrap_or(i64::MAX),
            lease_interval_ms: i64::try_from(lease_interval).unwrap_or(i64::MAX),
            last_heartbeat_at: None,
            revoked_at: None,
            revoked_by: None,
            revoked_reason: None,
            previous_curve_public_key: None,
            // Decided by the store from the join key, whatever is written here.
            approval: String::new(),
            quarantined_at: None,
            quarantine_reason: None,
            replica_id: None,
            replica_since: None,
            signing_key_rotated_at: None,
        };
        let context = AuditContext { actor: actor.clone(), ..context.clone() };
        let target = Target { kind: "agent", id: Some(&agent.id), name: Some(&agent.name) };
        let change = Change::new("agent.enroll", target).creating().details(serde_json::json!({
            "join_key_id": claims.jti, "role": agent.role, "region": agent.region,
            "curve_public_key": agent.curve_public_key, "manifest_hash": agent.manifest_hash,
            "registration_name": agent.name,
        }));
        let record = &agent;
        // A refusal (key used, revoked or expired; name or CURVE key taken) is recorded by
        // `enroll`, as a denied attempt on the join key.
        self.audit
            .audited_refusal_to_caller(&context, &change, |entry| async move {
                self.store.enroll_agent(record, now, &entry).await
            })
            .await?;
        let grant = granted_by(&join_key);
        let declared = declared_workspaces(manifest);
        let decided = self
            .store
            .declare_workspaces(&agent.id, &declared, Some((&join_key.id, &grant)), now)
            .await?;
        if !self.link.allow.allow(curve, &agent.id) {
            tracing::error!(agent_id = %agent.id, "enrolled, but its CURVE key maps to another agent on the allow-list");
        }
        self.events
            .append(
                &agent.id,
                "enrolled",
                None,
                serde_json::json!({
                    "join_key_id": claims.jti, "name": agent.name,
                    "require_approval": join_key.require_approval,
                    "workspaces": decided.iter()
                        .map(|(w, state)| serde_json::json!({ "workspace": w, "state": state }))
                        .collect::<Vec<_>>(),
                }),
            )
            .await;
        tracing::info!(agent_id = %agent.id, name = %agent.name, join_key = %claims.jti, "agent enrolled");
        // The address the join key names first (the one the agent connects to), then every
        // live replica's, to fail over to.
        let mut mesh_addrs = vec![claims.router_addr.clone()];
        for addr in self.replicas.live_mesh_addrs().await {
            if mesh_addrs.len() < xerotier_proto::mesh::MAX_REPLICA_ADDRS
                && !mesh_addrs.contains(&addr)
            {
                mesh_addrs.push(addr);
            }
        }
        Ok(EnrollResponse {
            agent_id: agent.id,
            mesh_addrs,
            mesh_addr: claims.router_addr,
            router_curve_key: self.link.router_curve_public_z85(),
            role: agent.role,
            region: agent.region,
            // The keys to hold (both, mid-rotation) and those rotated away that a join key
            // minted before the rotation may still pin (SPEC §9).
            router_mesh_keys: self.link.router_mesh_keys(),
            retired_router_mesh_kids: self.link.retired_mesh_kids(),
        })
    }
}

fn z85_of(key: &[u8; 32]) -> String {
    xerotier_credentials::curve_public_z85(key)
}
