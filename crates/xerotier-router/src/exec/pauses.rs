//! Containment: `pause-exec` / `resume-exec` stop and restart dispatch to an agent, or to one
//! workspace on it. In-flight work finishes; queued work waits and runs after the resume.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use xerotier_core::format_rfc3339;
use xerotier_proto::ErrorEnvelope;
use xerotier_proto::agents::CapabilityManifest;
use xerotier_proto::pauses::{PauseExecRequest, PauseList, PauseView};
use xerotier_store::{Outcome, PauseRecord};

use crate::AppState;
use crate::audit::Target;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::extract::{JsonBody, RequestContext};
use crate::validate;

fn view(record: PauseRecord) -> PauseView {
    PauseView {
        agent_id: record.agent_id,
        workspace: record.workspace,
        paused_at: format_rfc3339(record.paused_at),
        paused_by: record.paused_by,
        reason: record.reason,
    }
}

async fn pause_list(state: &AppState, agent_id: &str) -> Result<PauseList, ApiError> {
    let pauses = state.store().exec_pauses(Some(agent_id)).await?;
    Ok(PauseList { pauses: pauses.into_iter().map(view).collect() })
}

/// The agent must exist and be live; a named workspace must be one it declares, so that a
/// typo is an error rather than a pause that contains nothing.
async fn check_target(
    state: &AppState,
    agent_id: &str,
    workspace: Option<&str>,
) -> Result<(), ApiError> {
    let agent = state
        .store()
        .agent(agent_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("agent {agent_id}")))?;
    if agent.revoked_at.is_some() {
        return Err(ApiError::AlreadyRevoked(format!("agent {agent_id}")));
    }
    if let Some(workspace) = workspace {
        let manifest: CapabilityManifest =
            serde_json::from_str(&agent.manifest).unwrap_or_default();
        if !manifest.workspaces.iter().any(|w| w.id == workspace) {
            return Err(ApiError::WorkspaceNotFound(format!("{workspace} (on agent {agent_id})")));
        }
    }
    Ok(())
}

/// Stop dispatching to an agent (or one workspace on it). Idempotent.
#[utoipa::path(
    post,
    path = "/v1/management/agents/{id}/pause-exec",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id, `agt_…`")),
    request_body(content = PauseExecRequest, description = "Optional workspace and reason"),
    responses(
        (status = 200, description = "The pause in force", body = PauseView),
        (status = 404, description = "No such agent or workspace", body = ErrorEnvelope),
        (status = 409, description = "The agent is revoked", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn pause_exec(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    context: RequestContext,
    Path(agent_id): Path<String>,
    body: Option<JsonBody<PauseExecRequest>>,
) -> Result<Json<PauseView>, ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    let reason = validate::reason(request.reason.as_deref())?;
    let workspace = request.workspace.as_deref().filter(|w| !w.is_empty());
    check_target(&state, &agent_id, workspace).await?;
    let target = Target { kind: "agent", id: Some(&agent_id), name: None };
    let entry = state.audit().entry(
        Some(&actor),
        &context,
        "agent.pause_exec",
        Some(target),
        Outcome::Success,
        reason,
        serde_json::json!({ "workspace": workspace }),
    );
    let pause = PauseRecord {
        agent_id: agent_id.clone(),
        workspace: workspace.map(str::to_string),
        paused_at: state.clock().now_millis(),
        paused_by: Some(actor.key_id.clone()),
        reason: reason.map(str::to_string),
    };
    let (record, created) = state.store().pause_exec(&pause, &entry).await?;
    if created {
        tracing::warn!(%agent_id, workspace = workspace.unwrap_or("*"), actor = %actor.key_id, "dispatch paused");
        state
            .events()
            .append(
                &agent_id,
                "exec_paused",
                context.request_id.as_deref(),
                serde_json::json!({ "workspace": workspace, "by": actor.key_id, "reason": reason }),
            )
            .await;
    }
    Ok(Json(view(record)))
}

/// Resume dispatch; answers with the pauses still in force on the agent.
#[utoipa::path(
    post,
    path = "/v1/management/agents/{id}/resume-exec",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id, `agt_…`")),
    request_body(content = PauseExecRequest, description = "Optional workspace"),
    responses(
        (status = 200, description = "Pauses still in force", body = PauseList),
        (status = 404, description = "No such agent", body = ErrorEnvelope),
        (status = 409, description = "Not paused (`not_paused`)", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn resume_exec(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    context: RequestContext,
    Path(agent_id): Path<String>,
    body: Option<JsonBody<PauseExecRequest>>,
) -> Result<Json<PauseList>, ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    let reason = validate::reason(request.reason.as_deref())?;
    let workspace = request.workspace.as_deref().filter(|w| !w.is_empty());
    if state.store().agent(&agent_id).await?.is_none() {
        return Err(ApiError::NotFound(format!("agent {agent_id}")));
    }
    let target = Target { kind: "agent", id: Some(&agent_id), name: None };
    let entry = state.audit().entry(
        Some(&actor),
        &context,
        "agent.resume_exec",
        Some(target.clone()),
        Outcome::Success,
        reason,
        serde_json::json!({ "workspace": workspace }),
    );
    if let Err(err) = state.store().resume_exec(&agent_id, workspace, &entry).await {
        state.audit().record_failure(&actor, &context, "agent.resume_exec", target, &err).await;
        return Err(err.into());
    }
    tracing::info!(%agent_id, workspace = workspace.unwrap_or("*"), actor = %actor.key_id, "dispatch resumed");
    state
        .events()
        .append(
            &agent_id,
            "exec_resumed",
            context.request_id.as_deref(),
            serde_json::json!({ "workspace": workspace, "by": actor.key_id }),
        )
        .await;
    state.exec().wake();
    Ok(Json(pause_list(&state, &agent_id).await?))
}

/// The pauses in force on an agent.
#[utoipa::path(
    get,
    path = "/v1/management/agents/{id}/pauses",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id, `agt_…`")),
    responses((status = 200, description = "Pauses in force", body = PauseList)),
    security(("api_key" = []))
)]
pub async fn list_pauses(
    State(state): State<AppState>,
    Path(agent_id): Path<String>,
) -> Result<Json<PauseList>, ApiError> {
    Ok(Json(pause_list(&state, &agent_id).await?))
}
