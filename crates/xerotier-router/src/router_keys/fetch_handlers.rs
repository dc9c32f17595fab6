//! The HTTP side of a signed router key fetch (`fetch.rs` holds the checks).

use axum::Json;
use axum::extract::State;
use xerotier_proto::ErrorEnvelope;
use xerotier_proto::agents::{RouterKeysRequest, RouterKeysResponse};

use super::fetch::KeyFetchService;
use crate::audit::AuditContext;
use crate::error::ApiError;
use crate::http::extract::JsonBody;

/// The router's current mesh keys, for an enrolled agent none of whose keys works any more (it
/// was offline for a whole mesh key rotation). No API key and no join key: the request is
/// signed with the agent's Ed25519 signing key over `xerotier-router-keys-fetch-v1`, the agent
/// id, the timestamp, the nonce and the kid, one a line. Refused alike (401
/// `agent_request_refused`) when the agent is unknown or revoked, the signature does not
/// verify, the timestamp is more than 5 minutes from the router's clock, the nonce was seen
/// before, or the kid is neither a key the router accepts nor one retired within the overlap
/// window.
#[utoipa::path(
    post,
    path = "/v1/agents/router-keys",
    tag = "enrollment",
    request_body = RouterKeysRequest,
    responses(
        (status = 200, description = "The router mesh keys to accept, in the order to try them", body = RouterKeysResponse),
        (status = 400, description = "Not a router key request (`invalid_request`)", body = ErrorEnvelope),
        (status = 401, description = "Refused (`agent_request_refused`), whatever the reason", body = ErrorEnvelope),
    )
)]
pub async fn fetch_router_keys(
    State(fetch): State<KeyFetchService>,
    context: AuditContext,
    body: Result<JsonBody<RouterKeysRequest>, ApiError>,
) -> Result<Json<RouterKeysResponse>, ApiError> {
    let request = match body {
        Ok(JsonBody(request)) => request,
        Err(rejection) => {
            fetch.record_malformed(&context).await;
            return Err(rejection);
        }
    };
    Ok(Json(fetch.fetch(&context, request).await?))
}
