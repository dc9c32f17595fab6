//! The fleet view and agent containment.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use xerotier_core::{SharedClock, UnixMillis, format_rfc3339};
use xerotier_credentials::{fingerprint, parse_curve_public};
use xerotier_proto::agents::{AgentQuery, AgentView, CapabilityManifest, RevokeAgentRequest};
use xerotier_proto::{ErrorEnvelope, Page};
use xerotier_store::{AgentRecord, Outcome, Store};

use super::Fleet;
use super::events::EventLog;
use super::rotation::RotationService;
use crate::AppState;
use crate::audit::{AuditLog, Target};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::exec::ExecService;
use crate::http::extract::{JsonBody, QueryParams, RequestContext};
use crate::http::pagination::{into_page, page_request};
use crate::validate;

/// An agent whose last lease renewal is older than this many intervals is `disconnected`.
const MISSED_LEASES_BEFORE_DISCONNECTED: i64 = 3;

#[derive(Debug, Clone)]
pub struct AgentService {
    store: Store,
    clock: SharedClock,
    audit: AuditLog,
    fleet: Arc<Fleet>,
    events: EventLog,
    rotations: RotationService,
    exec: ExecService,
}

impl AgentService {
    pub fn new(
        store: Store,
        clock: SharedClock,
        audit: AuditLog,
        fleet: Arc<Fleet>,
        events: EventLog,
        rotations: RotationService,
        exec: ExecService,
    ) -> Self {
        Self { store, clock, audit, fleet, events, rotations, exec }
    }

    fn view(&self, record: AgentRecord) -> AgentView {
        let pending = self.fleet.pending_heartbeat_at(&record.id);
        view(record, pending, self.clock.now_millis())
    }

    pub async fn list(&self, query: AgentQuery) -> Result<Page<AgentView>, ApiError> {
        let page = page_request(query.limit, query.after)?;
        let slice = self.store.list_agents(&page, query.include_revoked).await?;
        Ok(into_page(slice, |a| a.id.clone(), |a| self.view(a)))
    }

    pub async fn get(&self, id: &str) -> Result<AgentView, ApiError> {
        let record =
            self.store.agent(id).await?.ok_or_else(|| ApiError::NotFound(format!("agent {id}")))?;
        Ok(self.view(record))
    }

    /// Revokes the agent's keys: removed from the allow-list (its live session's next frame is
    /// refused), told so over the mesh, and unable to reconnect. It needs a new join key.
    pub async fn revoke_credentials(
        &self,
        actor: &Principal,
        context: &RequestContext,
        id: &str,
        reason: Option<&str>,
    ) -> Result<AgentView, ApiError> {
        let reason = validate::reason(reason)?;
        let now = self.clock.now_millis();
        let target = Target { kind: "agent", id: Some(id), name: None };
        let entry = self.audit.entry(
            Some(actor),
            context,
            "agent.revoke_credentials",
            Some(target.clone()),
            Outcome::Success,
            reason,
            serde_json::Value::Null,
        );
        let record =
            match self.store.revoke_agent(id, now, Some(&actor.key_id), reason, &entry).await {
                Ok(record) => record,
                Err(err) => {
                    self.audit
                        .record_failure(actor, context, "agent.revoke_credentials", target, &err)
                        .await;
                    return Err(err.into());
                }
            };
        // Cut first, then tell: from here on no frame of this agent reaches the application.
        let removed = self.fleet.allow.remove_agent(id);
        self.fleet.end_session(id, reason.unwrap_or("credentials revoked by an operator"));
        tracing::warn!(agent_id = %id, keys_removed = removed, actor = %actor.key_id, "agent credentials revoked");
        self.events
            .append(
                id,
                "credentials_revoked",
                context.request_id.as_deref(),
                serde_json::json!({ "by": actor.key_id, "reason": reason }),
            )
            .await;
        self.rotations.on_revoked(id).await?;
        self.exec.on_agent_removed(id, "its credentials were revoked").await?;
        Ok(self.view(record))
    }
}

pub fn view(
    record: AgentRecord,
    pending_heartbeat: Option<UnixMillis>,
    now: UnixMillis,
) -> AgentView {
    let last = match (record.last_heartbeat_at, pending_heartbeat) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let status = if record.revoked_at.is_some() {
        "revoked"
    } else if last
        .is_some_and(|at| now - at <= MISSED_LEASES_BEFORE_DISCONNECTED * record.lease_interval_ms)
    {
        "active"
    } else {
        "disconnected"
    };
    let manifest: CapabilityManifest = serde_json::from_str(&record.manifest).unwrap_or_default();
    let curve_key_fingerprint =
        parse_curve_public(&record.curve_public_key).map(|k| fingerprint(&k)).unwrap_or_default();
    AgentView {
        status: status.to_string(),
        enrolled_at: format_rfc3339(record.enrolled_at),
        last_heartbeat_at: last.map(format_rfc3339),
        lease_renewal_interval_ms: u64::try_from(record.lease_interval_ms).unwrap_or(0),
        curve_key_fingerprint,
        manifest_version: u64::try_from(record.manifest_version).unwrap_or(0),
        tool_count: manifest.tools.len(),
        workspace_count: manifest.workspaces.len(),
        revoked_at: record.revoked_at.map(format_rfc3339),
        id: record.id,
        name: record.name,
        role: record.role,
        region: record.region,
        join_key_id: record.join_key_id,
        curve_public_key: record.curve_public_key,
        manifest_hash: record.manifest_hash,
        revoked_by: record.revoked_by,
        revoked_reason: record.revoked_reason,
    }
}

/// The fleet: agents with their status.
#[utoipa::path(
    get,
    path = "/v1/management/agents",
    tag = "agents",
    params(AgentQuery),
    responses(
        (status = 200, description = "One page of agents", body = Page<AgentView>),
        (status = 401, description = "Missing or invalid API key", body = ErrorEnvelope),
        (status = 403, description = "Key lacks the management scope", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn list_agents(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<AgentQuery>,
) -> Result<Json<Page<AgentView>>, ApiError> {
    Ok(Json(state.agents().list(query).await?))
}

/// One agent, with its manifest summary and CURVE key fingerprint.
#[utoipa::path(
    get,
    path = "/v1/management/agents/{id}",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id, `agt_…`")),
    responses(
        (status = 200, description = "The agent", body = AgentView),
        (status = 404, description = "No such agent", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn get_agent(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    Ok(Json(state.agents().get(&id).await?))
}

/// Revoke an agent's credentials: its live session is cut at once; it must re-enroll.
#[utoipa::path(
    post,
    path = "/v1/management/agents/{id}/revoke-credentials",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id, `agt_…`")),
    request_body(content = RevokeAgentRequest, description = "Optional reason"),
    responses(
        (status = 200, description = "Revoked", body = AgentView),
        (status = 404, description = "No such agent", body = ErrorEnvelope),
        (status = 409, description = "Already revoked", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn revoke_agent_credentials(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    context: RequestContext,
    Path(id): Path<String>,
    body: Option<JsonBody<RevokeAgentRequest>>,
) -> Result<Json<AgentView>, ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    Ok(Json(
        state.agents().revoke_credentials(&actor, &context, &id, request.reason.as_deref()).await?,
    ))
}
