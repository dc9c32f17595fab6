//! The execution API, `/v1/exec/*` (scope `execution`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use xerotier_proto::invocation::{InvocationQuery, InvocationView, InvokeRequest};
use xerotier_proto::tools::{ToolDetail, ToolList};
use xerotier_proto::{ErrorEnvelope, Page};

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::extract::{JsonBody, QueryParams};

/// Tools offered by the online agents connected to this router.
#[utoipa::path(
    get,
    path = "/v1/exec/tools",
    tag = "exec",
    responses(
        (status = 200, description = "Tools offered by online agents", body = ToolList),
        (status = 401, description = "Missing or invalid API key", body = ErrorEnvelope),
        (status = 403, description = "Key lacks the execution scope", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn list_tools(State(state): State<AppState>) -> Json<ToolList> {
    Json(state.exec().tools())
}

/// One tool: its argument schema and the agents that offer it.
#[utoipa::path(
    get,
    path = "/v1/exec/tools/{name}",
    tag = "exec",
    params(("name" = String, Path, description = "Tool name")),
    responses(
        (status = 200, description = "The tool", body = ToolDetail),
        (status = 404, description = "No online agent offers it", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn get_tool(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ToolDetail>, ApiError> {
    Ok(Json(state.exec().tool(&name)?))
}

/// Invoke a tool in a workspace. Arguments are checked against the tool's schema before
/// anything is queued; the invocation is dispatched to an online, unpaused agent.
#[utoipa::path(
    post,
    path = "/v1/exec/invocations",
    tag = "exec",
    request_body = InvokeRequest,
    responses(
        (status = 202, description = "Queued", body = InvocationView),
        (status = 400, description = "Bad request or arguments (`invalid_arguments`)", body = ErrorEnvelope),
        (status = 404, description = "Unknown tool or workspace", body = ErrorEnvelope),
        (status = 503, description = "No online agent serves it (`no_agent_available`, retryable)", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn create_invocation(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    JsonBody(request): JsonBody<InvokeRequest>,
) -> Result<(StatusCode, Json<InvocationView>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(state.exec().create(&actor, request).await?)))
}

/// Invocations, oldest first, with filters.
#[utoipa::path(
    get,
    path = "/v1/exec/invocations",
    tag = "exec",
    params(InvocationQuery),
    responses(
        (status = 200, description = "One page of invocations", body = Page<InvocationView>),
        (status = 400, description = "Bad filter", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn list_invocations(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<InvocationQuery>,
) -> Result<Json<Page<InvocationView>>, ApiError> {
    Ok(Json(state.exec().list(query).await?))
}

/// One invocation; while it runs, its output so far.
#[utoipa::path(
    get,
    path = "/v1/exec/invocations/{id}",
    tag = "exec",
    params(("id" = String, Path, description = "Invocation id, `inv_…`")),
    responses(
        (status = 200, description = "The invocation", body = InvocationView),
        (status = 404, description = "No such invocation", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn get_invocation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<InvocationView>, ApiError> {
    Ok(Json(state.exec().get(&id).await?))
}

/// Cancel an invocation: at once if it has not started, else its agent kills the tool.
#[utoipa::path(
    post,
    path = "/v1/exec/invocations/{id}/cancel",
    tag = "exec",
    params(("id" = String, Path, description = "Invocation id, `inv_…`")),
    responses(
        (status = 200, description = "Cancelled, or cancellation requested", body = InvocationView),
        (status = 404, description = "No such invocation", body = ErrorEnvelope),
        (status = 409, description = "Already ended (`invocation_finished`)", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn cancel_invocation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<InvocationView>, ApiError> {
    Ok(Json(state.exec().cancel(&id).await?))
}
