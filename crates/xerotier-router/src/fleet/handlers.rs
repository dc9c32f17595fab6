//! The fleet's HTTP surface: join keys, enrollment, agents, CURVE rotation and the event log.
//! Each handler takes the one service it needs, calls it, and maps the answer to a view.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use xerotier_proto::agents::{
    AgentQuery, AgentView, CandidateList, DecideWorkspaceRequest, DecisionView, EnrollRequest,
    EnrollResponse, RevokeAgentRequest, WithdrawGrantRequest,
};
use xerotier_proto::events::{AgentEventView, EventQuery};
use xerotier_proto::join_keys::{
    CreateJoinKeyRequest, IssuedJoinKey, JoinKeyQuery, JoinKeyView, RevokeJoinKeyRequest,
};
use xerotier_proto::rotation::{CurveRotateRequest, RotationView};
use xerotier_proto::{ErrorEnvelope, Page};
use xerotier_store::Decision;

use super::agents::AgentService;
use super::enroll::EnrollService;
use super::grants::GrantService;
use super::join_keys::JoinKeyService;
use super::rotation::RotationService;
use super::views;
use crate::agent_events::EventLog;
use crate::audit::AuditContext;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::extract::{JsonBody, QueryParams};
use crate::http::pagination::{into_page, page_request};
use crate::live_streams::LiveStreams;

/// Mint a join key. The token is shown once.
#[utoipa::path(
    post,
    path = "/v1/management/join-keys",
    tag = "join-keys",
    request_body = CreateJoinKeyRequest,
    responses(
        (status = 201, description = "Created; `token` cannot be shown again", body = IssuedJoinKey),
        (status = 400, description = "Invalid name, role, address or TTL", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn create_join_key(
    State(join_keys): State<JoinKeyService>,
    context: AuditContext,
    JsonBody(request): JsonBody<CreateJoinKeyRequest>,
) -> Result<(StatusCode, Json<IssuedJoinKey>), ApiError> {
    let issued = join_keys.create(&context, request).await?;
    Ok((StatusCode::CREATED, Json(views::issued_join_key(issued))))
}

/// List join keys: active ones, or all with `include_terminal`.
#[utoipa::path(
    get,
    path = "/v1/management/join-keys",
    tag = "join-keys",
    params(JoinKeyQuery),
    responses(
        (status = 200, description = "One page of join keys", body = Page<JoinKeyView>),
    ),
    security(("api_key" = []))
)]
pub async fn list_join_keys(
    State(join_keys): State<JoinKeyService>,
    QueryParams(query): QueryParams<JoinKeyQuery>,
) -> Result<Json<Page<JoinKeyView>>, ApiError> {
    let page = page_request(query.limit, query.after, "jk_")?;
    let slice = join_keys.list(&page, query.include_terminal).await?;
    Ok(Json(into_page(slice, |k| k.record.id.clone(), views::join_key)))
}

/// Show one join key.
#[utoipa::path(
    get,
    path = "/v1/management/join-keys/{id}",
    tag = "join-keys",
    params(("id" = String, Path, description = "Join key id, `jk_…`")),
    responses(
        (status = 200, description = "The join key", body = JoinKeyView),
        (status = 404, description = "No such join key", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn get_join_key(
    State(join_keys): State<JoinKeyService>,
    Path(id): Path<String>,
) -> Result<Json<JoinKeyView>, ApiError> {
    Ok(Json(views::join_key(join_keys.get(&id).await?)))
}

/// Revoke an unconsumed join key.
#[utoipa::path(
    post,
    path = "/v1/management/join-keys/{id}/revoke",
    tag = "join-keys",
    params(("id" = String, Path, description = "Join key id, `jk_…`")),
    request_body(content = Option<RevokeJoinKeyRequest>, description = "Optional reason"),
    responses(
        (status = 200, description = "Revoked", body = JoinKeyView),
        (status = 404, description = "No such join key", body = ErrorEnvelope),
        (status = 409, description = "Already used or revoked", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn revoke_join_key(
    State(join_keys): State<JoinKeyService>,
    context: AuditContext,
    Path(id): Path<String>,
    body: Option<JsonBody<RevokeJoinKeyRequest>>,
) -> Result<Json<JoinKeyView>, ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    let revoked = join_keys.revoke(&context, &id, request.reason.as_deref()).await?;
    Ok(Json(views::join_key(revoked)))
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
    State(enrollment): State<EnrollService>,
    context: AuditContext,
    body: Result<JsonBody<EnrollRequest>, ApiError>,
) -> Result<Json<EnrollResponse>, ApiError> {
    // A body that is not an enrollment request is a refused attempt too: audited, then answered.
    let request = match body {
        Ok(JsonBody(request)) => request,
        Err(rejection) => {
            enrollment.record_malformed(&context, rejection.code()).await;
            return Err(rejection);
        }
    };
    Ok(Json(enrollment.enroll(&context, request).await?))
}

/// The fleet: agents with their status.
#[utoipa::path(
    get,
    path = "/v1/management/agents",
    tag = "agents",
    params(AgentQuery),
    responses(
        (status = 200, description = "One page of agents", body = Page<AgentView>),
    ),
    security(("api_key" = []))
)]
pub async fn list_agents(
    State(agents): State<AgentService>,
    QueryParams(query): QueryParams<AgentQuery>,
) -> Result<Json<Page<AgentView>>, ApiError> {
    let page = page_request(query.limit, query.after, "agt_")?;
    let slice = agents.list(&page, query.include_revoked).await?;
    Ok(Json(into_page(slice, |a| a.record.id.clone(), views::agent)))
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
    State(agents): State<AgentService>,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    Ok(Json(views::agent(agents.get(&id).await?)))
}

/// Revoke an agent's credentials: its live session is cut at once; it must re-enroll.
#[utoipa::path(
    post,
    path = "/v1/management/agents/{id}/revoke-credentials",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id, `agt_…`")),
    request_body(content = Option<RevokeAgentRequest>, description = "Optional reason"),
    responses(
        (status = 200, description = "Revoked", body = AgentView),
        (status = 404, description = "No such agent", body = ErrorEnvelope),
        (status = 409, description = "Already revoked", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn revoke_agent_credentials(
    State(agents): State<AgentService>,
    context: AuditContext,
    Path(id): Path<String>,
    body: Option<JsonBody<RevokeAgentRequest>>,
) -> Result<Json<AgentView>, ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    let revoked = agents.revoke_credentials(&context, &id, request.reason.as_deref()).await?;
    Ok(Json(views::agent(revoked)))
}

/// Rotate the agent's CURVE key. Answers at once with the request id; watch the events stream.
#[utoipa::path(
    post,
    path = "/v1/management/agents/{id}/curve-rotate",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id, `agt_…`")),
    request_body(content = Option<CurveRotateRequest>, description = "Reason for the audit log (default `scheduled`)"),
    responses(
        (status = 202, description = "Requested: status `pending` (or `failed` for a revoked agent)", body = RotationView),
        (status = 404, description = "No such agent", body = ErrorEnvelope),
        (status = 409, description = "A rotation is already in flight (`rotation_in_flight`, the message names it)", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn curve_rotate(
    State(rotations): State<RotationService>,
    context: AuditContext,
    Path(id): Path<String>,
    body: Option<JsonBody<CurveRotateRequest>>,
) -> Result<(StatusCode, Json<RotationView>), ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    let rotation = rotations.request(&context, &id, request.reason.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(views::rotation(rotation))))
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
    State(rotations): State<RotationService>,
    Path((id, request_id)): Path<(String, String)>,
) -> Result<Json<RotationView>, ApiError> {
    Ok(Json(views::rotation(rotations.get(&id, &request_id).await?)))
}

/// The agent's events: a JSON page, or with `Accept: text/event-stream` a live SSE stream that
/// resumes after `Last-Event-ID` (or `after`).
#[utoipa::path(
    get,
    path = "/v1/management/agents/{id}/events",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id, `agt_…`"), EventQuery),
    responses(
        (status = 200, description = "A page of events (JSON) or a live stream (text/event-stream). A stream ends within a second of its API key's revocation or expiry (or of the end of the grace window of the value it was opened with).", body = Page<AgentEventView>),
        (status = 404, description = "No such agent", body = ErrorEnvelope),
        (status = 429, description = "Stream refused: this API key already holds the most live streams the router allows (`too_many_streams`, `--max-event-streams-per-key`); close one.", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn agent_events(
    State(events): State<EventLog>,
    State(streams): State<LiveStreams>,
    caller: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<EventQuery>,
) -> Result<Response, ApiError> {
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_stream {
        let page = page_request(query.limit, query.after, "evt_")?;
        let slice = events.list(&id, &page).await?;
        return Ok(Json(into_page(slice, |e| e.id.clone(), views::event)).into_response());
    }
    let resume = crate::http::extract::resume_point(&headers, query.after);
    // The stream holds its lease while it runs, and ends when its key stops authenticating.
    let lease = streams.open(&caller)?;
    let ended = lease.ended();
    let stream = events.follow(&id, resume).await?.take_until(ended).map(move |event| {
        let _held = &lease;
        let (id, kind) = (event.id.clone(), event.event_type.clone());
        let data = serde_json::to_string(&views::event(event)).unwrap_or_default();
        Ok::<_, std::convert::Infallible>(Event::default().id(id).event(kind).data(data))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// Workspaces agents declared beyond their grants (or with new tool definitions), and agents
/// whose join key requires approval: nothing is dispatched to them until an operator decides.
#[utoipa::path(
    get,
    path = "/v1/management/candidates",
    tag = "agents",
    responses(
        (status = 200, description = "Every candidate", body = CandidateList),
    ),
    security(("api_key" = []))
)]
pub async fn list_candidates(
    State(grants): State<GrantService>,
) -> Result<Json<CandidateList>, ApiError> {
    let candidates = grants.candidates().await?;
    Ok(Json(CandidateList { candidates: candidates.into_iter().map(views::candidate).collect() }))
}

/// Approve an agent's candidate workspaces (all, or `workspace`), for the tool definitions it
/// declared them with; a pending agent is approved with them.
#[utoipa::path(
    post,
    path = "/v1/management/agents/{id}/candidates/approve",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id, `agt_…`")),
    request_body(content = Option<DecideWorkspaceRequest>, description = "Optional workspace and reason"),
    responses(
        (status = 200, description = "What changed", body = DecisionView),
        (status = 404, description = "No such agent, or nothing to approve", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn approve_candidates(
    State(grants): State<GrantService>,
    context: AuditContext,
    Path(id): Path<String>,
    body: Option<JsonBody<DecideWorkspaceRequest>>,
) -> Result<Json<DecisionView>, ApiError> {
    decide(grants, context, id, body, Decision::Approve).await
}

/// Reject an agent's candidate workspaces (all, or `workspace`); without a workspace, a
/// pending agent is rejected as a whole.
#[utoipa::path(
    post,
    path = "/v1/management/agents/{id}/candidates/reject",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id, `agt_…`")),
    request_body(content = Option<DecideWorkspaceRequest>, description = "Optional workspace and reason"),
    responses(
        (status = 200, description = "What changed", body = DecisionView),
        (status = 404, description = "No such agent, or nothing to reject", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn reject_candidates(
    State(grants): State<GrantService>,
    context: AuditContext,
    Path(id): Path<String>,
    body: Option<JsonBody<DecideWorkspaceRequest>>,
) -> Result<Json<DecisionView>, ApiError> {
    decide(grants, context, id, body, Decision::Reject).await
}

/// Withdraw a granted workspace from an agent: no new work there from the next dispatch.
#[utoipa::path(
    post,
    path = "/v1/management/agents/{id}/grants/withdraw",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id, `agt_…`")),
    request_body(content = WithdrawGrantRequest, description = "The workspace and a reason"),
    responses(
        (status = 200, description = "What changed", body = DecisionView),
        (status = 404, description = "No such agent, or the workspace is not granted", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn withdraw_grant(
    State(grants): State<GrantService>,
    context: AuditContext,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<WithdrawGrantRequest>,
) -> Result<Json<DecisionView>, ApiError> {
    let WithdrawGrantRequest { workspace, reason } = request;
    let request = DecideWorkspaceRequest { workspace: Some(workspace), reason };
    decide(grants, context, id, Some(JsonBody(request)), Decision::Withdraw).await
}

async fn decide(
    grants: GrantService,
    context: AuditContext,
    id: String,
    body: Option<JsonBody<DecideWorkspaceRequest>>,
    decision: Decision,
) -> Result<Json<DecisionView>, ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    let workspace = request.workspace.as_deref();
    let decided =
        grants.decide(&context, &id, workspace, decision, request.reason.as_deref()).await?;
    Ok(Json(views::decision(decided)))
}

/// Lift an agent's quarantine (a suspected clone) once the second session is dealt with.
#[utoipa::path(
    post,
    path = "/v1/management/agents/{id}/release-quarantine",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id, `agt_…`")),
    request_body(content = Option<RevokeAgentRequest>, description = "Optional reason"),
    responses(
        (status = 200, description = "Released", body = AgentView),
        (status = 404, description = "No such agent, or it is not quarantined", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn release_quarantine(
    State(agents): State<AgentService>,
    context: AuditContext,
    Path(id): Path<String>,
    body: Option<JsonBody<RevokeAgentRequest>>,
) -> Result<Json<AgentView>, ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    let released = agents.release_quarantine(&context, &id, request.reason.as_deref()).await?;
    Ok(Json(views::agent(released)))
}
