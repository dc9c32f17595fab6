//! The HTTP surface: the route table (which is also the OpenAPI document), middleware order,
//! and the envelope for requests that match no route.

pub mod contract;
pub mod extract;
pub mod listener;
pub mod pagination;
pub mod request_id;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::{Extension, Json};
use serde_json::Value;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api_keys::handlers as api_keys;
use crate::audit::handlers as audit;
use crate::error::ApiError;
use crate::exec::handlers as exec;
use crate::fleet::handlers as fleet;
use crate::membership::handlers as membership;
use crate::operations::handlers as operations;
use crate::webhooks::handlers as webhooks;
use xerotier_proto::Scope;

use crate::{AppState, auth, health, metrics};

/// Request bodies above this are refused with 413 before they are parsed. Above the 64 KiB of
/// tool arguments an invocation may carry, so those get their own `invalid_arguments`.
pub const MAX_BODY_BYTES: usize = 96 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Xerotier router API",
        description = "Credential plane of the Xerotier execution-agent mesh. Errors use the \
                       envelope `{\"error\":{\"message\",\"type\",\"code\",\"param\"}}`. Every \
                       response carries `X-Request-ID`: the router's own id of the request \
                       (`req_…`), also the `request_id` of the audit records it wrote. A client's \
                       `X-Request-ID` of at most 128 characters of `[A-Za-z0-9._-]` is kept as \
                       the request's correlation id (audit `correlation_id`) and echoed in \
                       `X-Correlation-ID`; any other value is dropped."
    ),
    modifiers(&BearerApiKey),
    tags(
        (name = "api-keys", description = "Client API keys (scope management)"),
        (name = "audit", description = "The audit log (scope management)"),
        (name = "join-keys", description = "Single-use enrollment keys (scope management)"),
        (name = "agents", description = "The fleet and containment (scope management)"),
        (name = "enrollment", description = "Agents trade a join key for an identity (no API key)"),
        (name = "exec", description = "Execution API (scope execution)"),
        (name = "router", description = "The router's replicas (scope management)"),
        (name = "webhooks", description = "Outbound webhooks for security events and their deliveries (scope management)"),
        (name = "operations", description = "Health, metrics, this document"),
    )
)]
struct ApiDoc;

struct BearerApiKey;

impl Modify for BearerApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("xero_…")
                    .description(Some("An API key: `Authorization: Bearer xero_…`"))
                    .build(),
            ),
        );
    }
}

/// This OpenAPI document, generated from the route table (of which it is itself a route).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json"))
)]
async fn openapi_document(Extension(doc): Extension<Arc<serde_json::Value>>) -> Json<Value> {
    Json(doc.as_ref().clone())
}

/// The route table and its OpenAPI document; one cannot gain a route the other lacks.
pub fn routes(state: &AppState) -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let gate = state.gate.clone();
    let management = OpenApiRouter::new()
        .routes(routes!(api_keys::create_api_key, api_keys::list_api_keys))
        .routes(routes!(api_keys::get_api_key))
        .routes(routes!(api_keys::revoke_api_key))
        .routes(routes!(api_keys::rotate_api_key))
        .routes(routes!(api_keys::end_api_key_grace))
        .routes(routes!(audit::list_audit))
        .routes(routes!(fleet::create_join_key, fleet::list_join_keys))
        .routes(routes!(fleet::get_join_key))
        .routes(routes!(fleet::revoke_join_key))
        .routes(routes!(fleet::list_agents))
        .routes(routes!(fleet::get_agent))
        .routes(routes!(fleet::revoke_agent_credentials))
        .routes(routes!(fleet::curve_rotate))
        .routes(routes!(fleet::get_rotation))
        .routes(routes!(fleet::agent_events))
        .routes(routes!(fleet::list_candidates))
        .routes(routes!(fleet::approve_candidates))
        .routes(routes!(fleet::reject_candidates))
        .routes(routes!(fleet::withdraw_grant))
        .routes(routes!(fleet::release_quarantine))
        .routes(routes!(exec::pause_exec))
        .routes(routes!(exec::resume_exec))
        .routes(routes!(exec::list_pauses))
        .routes(routes!(crate::posture::handlers::posture_report))
        .routes(routes!(membership::list_replicas))
        .routes(routes!(crate::router_keys::handlers::list_router_keys))
        .routes(routes!(crate::router_keys::handlers::rotate_router_key))
        .routes(routes!(webhooks::list_webhooks))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::retry_delivery))
        .routes(routes!(operations::create_operation, operations::list_operations))
        .routes(routes!(operations::get_operation))
        .routes(routes!(operations::cancel_operation))
        .routes(routes!(operations::resume_operation))
        .route_layer(auth::RequireScope::new(gate.clone(), Scope::Management));
    let exec = OpenApiRouter::new()
        .routes(routes!(exec::list_tools))
        .routes(routes!(exec::get_tool))
        .routes(routes!(exec::create_invocation, exec::list_invocations))
        .routes(routes!(exec::get_invocation))
        .routes(routes!(exec::invocation_output))
        .routes(routes!(exec::cancel_invocation))
        .route_layer(auth::RequireScope::new(gate, Scope::Execution));
    let public = OpenApiRouter::new()
        .routes(routes!(fleet::enroll))
        .routes(routes!(crate::router_keys::fetch_handlers::fetch_router_keys))
        .routes(routes!(health::healthz))
        .routes(routes!(metrics::serve_metrics))
        .routes(routes!(openapi_document));
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(management)
        .merge(exec)
        .merge(public)
        .split_for_parts();
    contract::document(&mut doc, &contract::Limits::of(state));
    (router, doc)
}

pub fn app(state: AppState) -> axum::Router {
    let (router, doc) = routes(&state);
    router
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(Arc::new(contract::served(&doc))))
        .layer(from_fn_with_state(state.metrics.clone(), metrics::track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .layer(from_fn_with_state(state.ids.clone(), request_id::assign))
        .with_state(state)
}

async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_string())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
