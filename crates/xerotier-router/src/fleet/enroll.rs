//! `POST /v1/enroll`: a XEM host trades a join key for an agent identity.

use std::sync::Arc;

use xerotier_core::{IdGenerator, IdKind, SharedClock};
use xerotier_credentials::{JoinTokenError, parse_curve_public, parse_signing_public};
use xerotier_proto::agents::{EnrollRequest, EnrollResponse};
use xerotier_store::{AgentRecord, Store};

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
}

impl EnrollService {
    pub fn new(
        store: Store,
        clock: SharedClock,
        ids: IdGenerator,
        audit: AuditLog,
        link: Arc<MeshLink>,
        events: EventLog,
    ) -> Self {
        Self { store, clock, ids, audit, link, events }
    }

    /// `context` carries the request id and peer address; the join key becomes the actor.
    pub async fn enroll(
        &self,
        context: &AuditContext,
        request: EnrollRequest,
    ) -> Result<EnrollResponse, ServiceError> {
        validate::name(&request.registration_name, "registration_name")?;
        let curve = parse_curve_public(&request.curve_public_key)
            .map_err(|e| ServiceError::invalid(e.to_string(), "curve_public_key"))?;
        parse_signing_public(&request.signing_public_key)
            .map_err(|e| ServiceError::invalid(e.to_string(), "signing_public_key"))?;
        let manifest = &request.manifest;
        if manifest.tools.len() > MAX_MANIFEST_ENTRIES
            || manifest.workspaces.len() > MAX_MANIFEST_ENTRIES
        {
            return Err(ServiceError::invalid(
                "the manifest lists too many tools or workspaces",
                "manifest",
            ));
        }
        let lease_interval = request.lease_renewal_interval_ms.unwrap_or(DEFAULT_LEASE_INTERVAL_MS);
        if !(100..=600_000).contains(&lease_interval) {
            return Err(ServiceError::invalid(
                "lease_renewal_interval_ms must be 100..=600000",
                "lease_renewal_interval_ms",
            ));
        }

        let now = self.clock.now_millis();
        let claims = self.link.identity.join_signer.verify(&request.join_key, now).map_err(
            |err| match err {
                JoinTokenError::Expired => ServiceError::JoinKeyExpired("(token)".into()),
                other => ServiceError::JoinKeyInvalid(other.to_string()),
            },
        )?;
        validate_role(&claims.role)
            .map_err(|_| ServiceError::JoinKeyInvalid("unknown role".into()))?;
        // The grant is read from the store, not from the token: the router decides.
        let Some(join_key) = self.store.join_key(&claims.jti).await? else {
            return Err(ServiceError::JoinKeyInvalid("unknown to this router".into()));
        };

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
        };
        // The join key is the actor of its own enrollment.
        let context = AuditContext {
            actor: Some(Actor {
                key_id: claims.jti.clone(),
                name: format!("join key {}", claims.name),
            }),
            ..context.clone()
        };
        let target = Target { kind: "agent", id: Some(&agent.id), name: Some(&agent.name) };
        let change = Change::new("agent.enroll", target).creating().details(serde_json::json!({
            "join_key_id": claims.jti, "role": agent.role, "region": agent.region,
            "curve_public_key": agent.curve_public_key, "manifest_hash": agent.manifest_hash,
            "registration_name": agent.name,
        }));
        let record = &agent;
        self.audit
            .audited(&context, change, |entry| async move {
                self.store.enroll_agent(record, now, &entry).await
            })
            .await?;
        let grant = granted_by(&join_key);
        let declared = declared_workspaces(manifest);
        let decided = self
            .store
            .declare_workspaces(&agent.id, &declared, Some((&join_key.id, &grant)), now)
            .await?;
        self.link.allow.allow(curve, &agent.id);
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
        Ok(EnrollResponse {
            agent_id: agent.id,
            mesh_addr: claims.router_addr,
            router_curve_key: self.link.router_curve_public_z85(),
            role: agent.role,
            region: agent.region,
        })
    }
}

fn z85_of(key: &[u8; 32]) -> String {
    xerotier_credentials::curve_public_z85(key)
}
