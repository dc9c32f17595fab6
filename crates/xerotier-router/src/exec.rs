//! The execution API, `/v1/exec/*` (scope `execution`).

use axum::Json;
use xerotier_proto::ErrorEnvelope;
use xerotier_proto::exec::ToolList;

/// Tools offered by online agents. Empty until agents can enroll.
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
pub async fn list_tools() -> Json<ToolList> {
    Json(ToolList::default())
}
