use axum::Json;
use xerotier_proto::health::Health;

/// Liveness: answers 200 while the router serves. No authentication.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The router serves", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".to_string() })
}
