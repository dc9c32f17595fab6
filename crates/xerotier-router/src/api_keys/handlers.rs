//! `/v1/management/api-keys`: requests in, views out.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use secrecy::ExposeSecret;
use serde::Deserialize;
use utoipa::IntoParams;
use xerotier_core::format_rfc3339;
use xerotier_proto::api_keys::{
    ApiKeyView, CreateApiKeyRequest, EndGraceRequest, EndGraceResponse, IssuedApiKey,
    RevokeApiKeyRequest, RotateApiKeyRequest,
};
use xerotier_proto::{ErrorEnvelope, Page, Scopes};

use super::service::{ApiKey, ApiKeyService, IssuedKey};
use crate::audit::AuditContext;
use crate::error::ApiError;
use crate::http::extract::{JsonBody, QueryParams};
use crate::http::pagination::{into_page, page_request};
use crate::validate;

/// How a key appears in the API.
pub fn view(key: ApiKey) -> ApiKeyView {
    let ApiKey { record, status, previous_valid_until } = key;
    // A scheduled end means something only while the window it would end is open.
    let scheduled = previous_valid_until.is_some();
    ApiKeyView {
        grace_uses: u64::try_from(record.grace_uses).unwrap_or(0),
        grace_last_used_at: record.grace_last_used_at.map(format_rfc3339),
        grace_last_used_from: record.grace_last_used_from.clone(),
        grace_end_when_quiet_seconds: record
            .grace_end_quiet_ms
            .filter(|_| scheduled)
            .and_then(|ms| u64::try_from(ms / 1000).ok()),
        grace_end_requested_at: record
            .grace_end_requested_at
            .filter(|_| scheduled)
            .map(format_rfc3339),
        status,
        scopes: Scopes::from_csv(&record.scopes).unwrap_or_default(),
        created_at: format_rfc3339(record.created_at),
        expires_at: record.expires_at.map(format_rfc3339),
        last_used_at: record.last_used_at.map(format_rfc3339),
        rotated_at: record.rotated_at.map(format_rfc3339),
        previous_value_valid_until: previous_valid_until.map(format_rfc3339),
        revoked_at: record.revoked_at.map(format_rfc3339),
        id: record.id,
        name: record.name,
        created_by: record.created_by,
        revoked_by: record.revoked_by,
        revoked_reason: record.revoked_reason,
    }
}

fn issued(issued: IssuedKey) -> IssuedApiKey {
    IssuedApiKey { value: issued.value.expose_secret().to_string(), key: view(issued.key) }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListApiKeysQuery {
    /// At most this many items (1-500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Only keys after this id: the previous page's `next_after`.
    #[param(pattern = "^key_[0-9a-hjkmnp-tv-z]{26}$")]
    pub after: Option<String>,
    /// Include revoked keys (default false).
    #[serde(default)]
    pub include_revoked: bool,
    /// Only the unrevoked key with exactly this name.
    #[param(pattern = "^[A-Za-z0-9._-]{1,128}$")]
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
        (status = 409, description = "An active key already has this name", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn create_api_key(
    State(keys): State<ApiKeyService>,
    context: AuditContext,
    JsonBody(request): JsonBody<CreateApiKeyRequest>,
) -> Result<(StatusCode, Json<IssuedApiKey>), ApiError> {
    let created = keys.create(&context, request).await?;
    Ok((StatusCode::CREATED, Json(issued(created))))
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
    ),
    security(("api_key" = []))
)]
pub async fn list_api_keys(
    State(keys): State<ApiKeyService>,
    QueryParams(query): QueryParams<ListApiKeysQuery>,
) -> Result<Json<Page<ApiKeyView>>, ApiError> {
    let page = page_request(query.limit, query.after, "key_")?;
    validate::optional(query.name.as_deref(), |n| validate::name(n, "name"))?;
    let listed = keys.list(&page, query.include_revoked, query.name.as_deref()).await?;
    Ok(Json(into_page(listed, |k| k.record.id.clone(), view)))
}

/// Show one API key.
#[utoipa::path(
    get,
    path = "/v1/management/api-keys/{id}",
    tag = "api-keys",
    params(("id" = String, Path, description = "Key id, `key_…`")),
    responses(
        (status = 200, description = "The key", body = ApiKeyView),
        (status = 404, description = "No such key", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn get_api_key(
    State(keys): State<ApiKeyService>,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyView>, ApiError> {
    Ok(Json(view(keys.get(&id).await?)))
}

/// Revoke an API key. Effective for the very next request on every replica.
#[utoipa::path(
    post,
    path = "/v1/management/api-keys/{id}/revoke",
    tag = "api-keys",
    params(("id" = String, Path, description = "Key id, `key_…`")),
    request_body(content = Option<RevokeApiKeyRequest>, description = "Optional reason; `allow_lockout` to revoke the calling key or the last management key"),
    responses(
        (status = 200, description = "Revoked", body = ApiKeyView),
        (status = 404, description = "No such key", body = ErrorEnvelope),
        (status = 409, description = "Already revoked (`already_revoked`); or refused without `allow_lockout: true`: the key this request is authenticated with (`self_revoke`), or the last active key with the management scope (`last_management_key`). Refusals are audited.", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn revoke_api_key(
    State(keys): State<ApiKeyService>,
    context: AuditContext,
    Path(id): Path<String>,
    body: Option<JsonBody<RevokeApiKeyRequest>>,
) -> Result<Json<ApiKeyView>, ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    let revoked =
        keys.revoke(&context, &id, request.reason.as_deref(), request.allow_lockout).await?;
    Ok(Json(view(revoked)))
}

/// Issue a new value for a key; the old value keeps working for the grace window.
#[utoipa::path(
    post,
    path = "/v1/management/api-keys/{id}/rotate",
    tag = "api-keys",
    params(("id" = String, Path, description = "Key id, `key_…`")),
    request_body(content = Option<RotateApiKeyRequest>, description = "Grace window and reason"),
    responses(
        (status = 200, description = "Rotated; `value` cannot be shown again", body = IssuedApiKey),
        (status = 400, description = "Bad grace window", body = ErrorEnvelope),
        (status = 404, description = "No such key", body = ErrorEnvelope),
        (status = 409, description = "The key is revoked", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn rotate_api_key(
    State(keys): State<ApiKeyService>,
    context: AuditContext,
    Path(id): Path<String>,
    body: Option<JsonBody<RotateApiKeyRequest>>,
) -> Result<Json<IssuedApiKey>, ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    Ok(Json(issued(keys.rotate(&context, &id, request).await?)))
}

/// End a rotated key's grace window: the previous value stops working now (on every replica
/// when this returns), or, with `when_quiet_seconds`, once it has been unused that long.
#[utoipa::path(
    post,
    path = "/v1/management/api-keys/{id}/end-grace",
    tag = "api-keys",
    params(("id" = String, Path, description = "Key id, `key_…`")),
    request_body(content = Option<EndGraceRequest>, description = "When to end it (absent: now), `dry_run`, reason"),
    responses(
        (status = 200, description = "`ended`: the previous value is refused from now on; `waiting`: the end is scheduled for when the previous value has been unused for `when_quiet_seconds` (audited when it happens). With `dry_run`, what would happen; nothing changed.", body = EndGraceResponse),
        (status = 400, description = "`when_quiet_seconds` out of 1..=2592000, or a bad reason", body = ErrorEnvelope),
        (status = 404, description = "No such key", body = ErrorEnvelope),
        (status = 409, description = "The key has no open grace window (`no_grace_window`), or is revoked (`already_revoked`)", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn end_api_key_grace(
    State(keys): State<ApiKeyService>,
    context: AuditContext,
    Path(id): Path<String>,
    body: Option<JsonBody<EndGraceRequest>>,
) -> Result<Json<EndGraceResponse>, ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    let outcome = keys.end_grace(&context, &id, request).await?;
    Ok(Json(EndGraceResponse {
        state: outcome.state,
        dry_run: outcome.dry_run,
        key: view(outcome.key),
    }))
}
