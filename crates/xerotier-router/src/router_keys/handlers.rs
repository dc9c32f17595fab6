//! The HTTP surface of the router's own keys (scope `management`).

use axum::Json;
use axum::extract::{Path, State};
use xerotier_proto::ErrorEnvelope;
use xerotier_proto::router_keys::{RotateRouterKeyRequest, RouterKeyRotationView, RouterKeysView};

use super::rollout::{RotationPhase, RouterKeyKind};
use super::service::{PhaseRequest, RouterKeyService};
use super::views;
use crate::audit::AuditContext;
use crate::error::ApiError;
use crate::http::extract::JsonBody;

/// The router's own keys (mesh, join signing, TLS), each kind with its rotation phase and
/// progress.
#[utoipa::path(
    get,
    path = "/v1/management/router/keys",
    tag = "router",
    responses(
        (status = 200, description = "Every kind, in the order mesh, join_signing, tls; retired keys are not listed (secrets never are)", body = RouterKeysView),
    ),
    security(("api_key" = []))
)]
pub async fn list_router_keys(
    State(keys): State<RouterKeyService>,
) -> Result<Json<RouterKeysView>, ApiError> {
    let now = keys.now();
    let kinds = keys.list().await?.into_iter().map(|k| views::kind(k, now)).collect();
    Ok(Json(RouterKeysView { kinds }))
}

/// Move a kind's rotation to its next phase (`init → update_clients → update_servers →
/// standby`, or `rollback` before `standby`), or (`dry_run`) only see what that would do.
#[utoipa::path(
    post,
    path = "/v1/management/router/keys/{kind}/rotation",
    tag = "router",
    params(("kind" = String, Path, description = "`mesh`, `join_signing` (or `join-signing`) or `tls`", pattern = "^(mesh|join_signing|join-signing|tls)$")),
    request_body = RotateRouterKeyRequest,
    responses(
        (status = 200, description = "The phase changed (every live replica applied it), or `dry_run`: what it would do; nothing was written", body = RouterKeyRotationView),
        (status = 400, description = "An unknown kind or phase, a reason over 1024 characters or with NUL, an unknown field (`invalid_request`)", body = ErrorEnvelope),
        (status = 409, description = "Not allowed from the current phase (the message names the allowed next phases), clients have not all moved yet (without `force`), another request moved the phase meanwhile, or the kind cannot rotate in this version (`tls`) (`operation_state`)", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn rotate_router_key(
    State(keys): State<RouterKeyService>,
    context: AuditContext,
    Path(kind): Path<String>,
    JsonBody(request): JsonBody<RotateRouterKeyRequest>,
) -> Result<Json<RouterKeyRotationView>, ApiError> {
    let kind = RouterKeyKind::parse(&kind).ok_or_else(|| {
        ApiError::invalid("kind must be mesh, join_signing or tls".to_string(), "kind")
    })?;
    let phase = match RotationPhase::parse(&request.phase) {
        Some(phase) if request.phase.len() <= 32 => phase,
        _ => {
            return Err(ApiError::invalid(
                "phase must be init, update_clients, update_servers, standby or rollback"
                    .to_string(),
                "phase",
            ));
        }
    };
    let advanced = keys
        .advance(
            &context,
            PhaseRequest {
                kind,
                phase,
                force: request.force,
                dry_run: request.dry_run,
                reason: request.reason.as_deref(),
            },
        )
        .await?;
    Ok(Json(views::advanced(advanced, keys.now())))
}
