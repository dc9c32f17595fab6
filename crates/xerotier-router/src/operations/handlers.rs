//! The HTTP surface of fleet-wide operations (scope `management`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use xerotier_proto::operations::{
    CreateOperationRequest, OperationPlanView, OperationQuery, OperationView,
    ResumeOperationRequest,
};
use xerotier_proto::{ErrorEnvelope, Page};

use super::service::{Created, OperationService};
use super::views;
use crate::audit::AuditContext;
use crate::error::ApiError;
use crate::http::extract::{JsonBody, QueryParams};
use crate::http::pagination::{into_page, page_request};

/// Start a fleet-wide operation, or (`dry_run`) only see its plan.
#[utoipa::path(
    post,
    path = "/v1/management/operations",
    tag = "agents",
    request_body = CreateOperationRequest,
    responses(
        (status = 200, description = "`dry_run`: the plan (targets and waves); nothing was written, not even an audit record", body = OperationPlanView),
        (status = 202, description = "Created, with its plan; the router runs it in the background (`GET …/operations/{id}` follows it)", body = OperationView),
        (status = 400, description = "An unknown kind, a selector field that does not apply to the kind or is out of its format, a selector naming an agent that is not live, more than 1000 agents or a selection of more than 10000 targets, wave_size outside 1-500, max_failures outside 0-10000, a blank reason (`invalid_request`, `param` names the field). Nothing is created.", body = ErrorEnvelope),
        (status = 409, description = "The selector is valid but matches nothing (`nothing_selected`); nothing is created, a dry run included", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn create_operation(
    State(operations): State<OperationService>,
    context: AuditContext,
    JsonBody(request): JsonBody<CreateOperationRequest>,
) -> Result<Response, ApiError> {
    Ok(match operations.create(&context, request).await? {
        Created::DryRun(plan) => (StatusCode::OK, Json(views::plan(plan))).into_response(),
        Created::Started(op) => (StatusCode::ACCEPTED, Json(views::operation(op))).into_response(),
    })
}

/// Fleet-wide operations, oldest first (without their targets).
#[utoipa::path(
    get,
    path = "/v1/management/operations",
    tag = "agents",
    params(OperationQuery),
    responses(
        (status = 200, description = "One page of operations", body = Page<OperationView>),
    ),
    security(("api_key" = []))
)]
pub async fn list_operations(
    State(operations): State<OperationService>,
    QueryParams(query): QueryParams<OperationQuery>,
) -> Result<Json<Page<OperationView>>, ApiError> {
    let page = page_request(query.limit, query.after, "op_")?;
    let slice = operations.list(&page).await?;
    Ok(Json(into_page(slice, |o| o.record.id.clone(), views::operation)))
}

/// One operation with every target's result.
#[utoipa::path(
    get,
    path = "/v1/management/operations/{id}",
    tag = "agents",
    params(("id" = String, Path, description = "Operation id, `op_…`")),
    responses(
        (status = 200, description = "The operation and its targets", body = OperationView),
        (status = 404, description = "No such operation", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn get_operation(
    State(operations): State<OperationService>,
    Path(id): Path<String>,
) -> Result<Json<OperationView>, ApiError> {
    Ok(Json(views::operation(operations.get(&id).await?)))
}

/// Cancel: no target is started after this; rotations in flight end by themselves.
#[utoipa::path(
    post,
    path = "/v1/management/operations/{id}/cancel",
    tag = "agents",
    params(("id" = String, Path, description = "Operation id, `op_…`")),
    responses(
        (status = 200, description = "Cancelled (pending targets `cancelled`)", body = OperationView),
        (status = 404, description = "No such operation", body = ErrorEnvelope),
        (status = 409, description = "It is completed, cancelled or failed already (`operation_state`)", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn cancel_operation(
    State(operations): State<OperationService>,
    context: AuditContext,
    Path(id): Path<String>,
) -> Result<Json<OperationView>, ApiError> {
    Ok(Json(views::operation(operations.cancel(&context, &id).await?)))
}

/// Resume a halted operation with its remaining targets (and, with `retry_failed`, the
/// failed ones; otherwise they stay failed).
#[utoipa::path(
    post,
    path = "/v1/management/operations/{id}/resume",
    tag = "agents",
    params(("id" = String, Path, description = "Operation id, `op_…`")),
    request_body(content = Option<ResumeOperationRequest>, description = "Optional: `retry_failed`"),
    responses(
        (status = 200, description = "Running again", body = OperationView),
        (status = 404, description = "No such operation", body = ErrorEnvelope),
        (status = 409, description = "It is not halted (`operation_state`)", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn resume_operation(
    State(operations): State<OperationService>,
    context: AuditContext,
    Path(id): Path<String>,
    body: Option<JsonBody<ResumeOperationRequest>>,
) -> Result<Json<OperationView>, ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    Ok(Json(views::operation(operations.resume(&context, &id, request.retry_failed).await?)))
}
