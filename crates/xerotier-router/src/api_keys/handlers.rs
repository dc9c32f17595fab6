use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use utoipa::IntoParams;
use xerotier_proto::api_keys::{
    ApiKeyView, CreateApiKeyRequest, IssuedApiKey, RevokeApiKeyRequest, RotateApiKeyRequest,
};
use xerotier_proto::{ErrorEnvelope, Page};

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::extract::{JsonBody, QueryParams, RequestContext};
use crate::http::pagination::page_request;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListApiKeysQuery {
    pub limit: Option<u32>,
    pub after: Option<String>,
    /// Include revoked keys (default false).
    #[serde(default)]
    pub include_revoked: bool,
    /// Only the unrevoked key with exactly this name.
    pub name: Option<String>,
}

/// Create an API key. The answer is the only time its value is shown.
#[utoipa::path(
    post,
    path = "/v1/management/api-keys",
    tag = "api-keys",
    request_body = CreateApiKeyRequest,
    responses(
        (status = 201, description = "Created; `value` cannot be shown again", body = IssuedApiKey),
        (status = 400, description = "Invalid name, scopes or expiry", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid API key", body = ErrorEnvelope),
        (status = 403, description = "Key lacks the management scope", body = ErrorEnvelope),
        (status = 409, description = "An active key already has this name", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn create_api_key(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    context: RequestContext,
    JsonBody(request): JsonBody<CreateApiKeyRequest>,
) -> Result<(StatusCode, Json<IssuedApiKey>), ApiError> {
    let issued = state.api_keys().create(&actor, &context, request).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

/// List API keys (never their values).
#[utoipa::path(
    get,
    path = "/v1/management/api-keys",
    tag = "api-keys",
    params(ListApiKeysQuery),
    responses(
        (status = 200, description = "One page of keys", body = Page<ApiKeyView>),
        (status = 400, description = "Bad pagination", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid API key", body = ErrorEnvelope),
        (status = 403, description = "Key lacks the management scope", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn list_api_keys(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ListApiKeysQuery>,
) -> Result<Json<Page<ApiKeyView>>, ApiError> {
    let page = page_request(query.limit, query.after)?;
    let listed = state.api_keys().list(&page, query.include_revoked, query.name.as_deref()).await?;
    Ok(Json(listed))
}

/// Show one API key.
#[utoipa::path(
    get,
    path = "/v1/management/api-keys/{id}",
    tag = "api-keys",
    params(("id" = String, Path, description = "Key id, `key_…`")),
    responses(
        (status = 200, description = "The key", body = ApiKeyView),
        (status = 401, description = "Missing or invalid API key", body = ErrorEnvelope),
        (status = 403, description = "Key lacks the management scope", body = ErrorEnvelope),
        (status = 404, description = "No such key", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn get_api_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyView>, ApiError> {
    Ok(Json(state.api_keys().get(&id).await?))
}

/// Revoke an API key. Effective for the very next request on every replica.
#[utoipa::path(
    post,
    path = "/v1/management/api-keys/{id}/revoke",
    tag = "api-keys",
    params(("id" = String, Path, description = "Key id, `key_…`")),
    request_body(content = RevokeApiKeyRequest, description = "Optional reason"),
    responses(
        (status = 200, description = "Revoked", body = ApiKeyView),
        (status = 401, description = "Missing or invalid API key", body = ErrorEnvelope),
        (status = 403, description = "Key lacks the management scope", body = ErrorEnvelope),
        (status = 404, description = "No such key", body = ErrorEnvelope),
        (status = 409, description = "Already revoked", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    context: RequestContext,
    Path(id): Path<String>,
    body: Option<JsonBody<RevokeApiKeyRequest>>,
) -> Result<Json<ApiKeyView>, ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    let revoked = state.api_keys().revoke(&actor, &context, &id, request.reason.as_deref()).await?;
    Ok(Json(revoked))
}

/// Issue a new value for a key; the old value keeps working for the grace window.
#[utoipa::path(
    post,
    path = "/v1/management/api-keys/{id}/rotate",
    tag = "api-keys",
    params(("id" = String, Path, description = "Key id, `key_…`")),
    request_body(content = RotateApiKeyRequest, description = "Grace window and reason"),
    responses(
        (status = 200, description = "Rotated; `value` cannot be shown again", body = IssuedApiKey),
        (status = 400, description = "Bad grace window", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid API key", body = ErrorEnvelope),
        (status = 403, description = "Key lacks the management scope", body = ErrorEnvelope),
        (status = 404, description = "No such key", body = ErrorEnvelope),
        (status = 409, description = "The key is revoked", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn rotate_api_key(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    context: RequestContext,
    Path(id): Path<String>,
    body: Option<JsonBody<RotateApiKeyRequest>>,
) -> Result<Json<IssuedApiKey>, ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    Ok(Json(state.api_keys().rotate(&actor, &context, &id, request).await?))
}
