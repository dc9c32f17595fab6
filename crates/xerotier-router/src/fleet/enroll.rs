//! `POST /v1/enroll`: a XEM host trades a join key for an agent identity.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use xerotier_core::{IdGenerator, IdKind, SharedClock};
use xerotier_credentials::{JoinTokenError, parse_curve_public, parse_signing_public};
use xerotier_proto::agents::{EnrollRequest, EnrollResponse};
use xerotier_proto::{ErrorEnvelope, Scopes};
use xerotier_store::{AgentRecord, Outcome, Store};

use super::Fleet;
use super::events::EventLog;
use super::join_keys::validate_role;
use crate::AppState;
use crate::audit::{AuditLog, Target};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::extract::{JsonBody, RequestContext};
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
    fleet: Arc<Fleet>,
    events: EventLog,
}

impl EnrollService {
    pub fn new(
        store: Store,
        clock: SharedClock,
        ids: IdGenerator,
        audit: AuditLog,
        fleet: Arc<Fleet>,
        events: EventLog,
    ) -> Self {
        Self { store, clock, ids, audit, fleet, events }
    }

    pub async fn enroll(
        &self,
        context: &RequestContext,
        request: EnrollRequest,
    ) -> Result<EnrollResponse, ApiError> {
        validate::name(&request.registration_name, "registration_name")?;
        let curve = parse_curve_public(&request.curve_public_key)
            .map_err(|e| ApiError::invalid(e.to_string(), "curve_public_key"))?;
        parse_signing_public(&request.signing_public_key)
            .map_err(|e| ApiError::invalid(e.to_string(), "signing_public_key"))?;
        let manifest = &request.manifest;
        if manifest.tools.len() > MAX_MANIFEST_ENTRIES
            || manifest.workspaces.len() > MAX_MANIFEST_ENTRIES
        {
            return Err(ApiError::invalid(
                "the manifest lists too many tools or workspaces",
                "manifest",
            ));
        }
        let lease_interval = request.lease_renewal_interval_ms.unwrap_or(DEFAULT_LEASE_INTERVAL_MS);
        if !(100..=600_000).contains(&lease_interval) {
            return Err(ApiError::invalid(
                "lease_renewal_interval_ms must be 100..=600000",
                "lease_renewal_interval_ms",
            ));
        }

        let now = self.clock.now_millis();
        let claims = self.fleet.identity.join_signer.verify(&request.join_key, now).map_err(
            |err| match err {
                JoinTokenError::Expired => ApiError::JoinKeyExpired("(token)".into()),
                other => ApiError::JoinKeyInvalid(other.to_string()),
            },
        )?;
        validate_role(&claims.role).map_err(|_| ApiError::JoinKeyInvalid("unknown role".into()))?;
        if self.store.join_key(&claims.jti).await?.is_none() {
            return Err(ApiError::JoinKeyInvalid("unknown to this router".into()));
        }

        let agent = AgentRecord {
            id: self.ids.next(IdKind::Agent),
            name: request.registration_name.clone(),
            role: claims.role.clone(),
            region: claims.region.clone(),
            join_key_id: claims.jti.clone(),
            enrolled_at: now,
            curve_public_key: z85_of(&curve),
            signing_public_key: request.signing_public_key.trim().to_lowercase(),
            manifest: serde_json::to_string(manifest).map_err(|e| ApiError::Internal(e.into()))?,
            manifest_hash: manifest.hash(),
            manifest_version: i64::try_from(manifest.version).unwrap_or(i64::MAX),
            lease_interval_ms: i64::try_from(lease_interval).unwrap_or(i64::MAX),
            last_heartbeat_at: None,
            revoked_at: None,
            revoked_by: None,
            revoked_reason: None,
            previous_curve_public_key: None,
        };
        // The join key is the actor of its own enrollment.
        let actor = Principal {
            key_id: claims.jti.clone(),
            name: format!("join key {}", claims.name),
            scopes: Scopes::default(),
        };
        let target = Target { kind: "agent", id: Some(&agent.id), name: Some(&agent.name) };
        let details = serde_json::json!({
            "join_key_id": claims.jti, "role": agent.role, "region": agent.region,
            "curve_public_key": agent.curve_public_key, "manifest_hash": agent.manifest_hash,
        });
        let entry = self.audit.entry(
            Some(&actor),
            context,
            "agent.enroll",
            Some(target.clone()),
            Outcome::Success,
            None,
            details,
        );
        if let Err(err) = self.store.enroll_agent(&agent, now, &entry).await {
            let details = serde_json::json!({
                "error": ApiError::from_store_ref(&err), "join_key_id": claims.jti,
                "registration_name": agent.name,
            });
            let attempted = Target { id: None, ..target };
            self.audit
                .record_attempt(
                    &actor,
                    context,
                    "agent.enroll",
                    Some(attempted),
                    Outcome::Failed,
                    details,
                )
                .await;
            return Err(err.into());
        }
        self.fleet.allow.allow(curve, &agent.id);
        self.events
            .append(
                &agent.id,
                "enrolled",
                None,
                serde_json::json!({ "join_key_id": claims.jti, "name": agent.name }),
            )
            .await;
        tracing::info!(agent_id = %agent.id, name = %agent.name, join_key = %claims.jti, "agent enrolled");
        Ok(EnrollResponse {
            agent_id: agent.id,
            mesh_addr: claims.router_addr,
            router_curve_key: self.fleet.router_curve_public_z85(),
            role: agent.role,
            region: agent.region,
        })
    }
}

fn z85_of(key: &[u8; 32]) -> String {
    xerotier_credentials::curve_public_z85(key)
}

/// Enroll an agent with a join key (single use). No API key: the join key is the credential.
#[utoipa::path(
    post,
    path = "/v1/enroll",
    tag = "enrollment",
    request_body = EnrollRequest,
    responses(
        (status = 200, description = "Enrolled", body = EnrollResponse),
        (status = 400, description = "Malformed keys, name or manifest", body = ErrorEnvelope),
        (status = 401, description = "Join key invalid (`join_key_invalid`), expired (`join_key_expired`) or revoked (`join_key_revoked`)", body = ErrorEnvelope),
        (status = 409, description = "Join key already used (`join_key_used`), registration name taken (`registration_name_taken`) or CURVE key reused (`curve_key_taken`)", body = ErrorEnvelope),
    )
)]
pub async fn enroll(
    State(state): State<AppState>,
    context: RequestContext,
    JsonBody(request): JsonBody<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    Ok(Json(state.enrollment().enroll(&context, request).await?))
}
