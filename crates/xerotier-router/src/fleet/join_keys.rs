//! Join keys: single-use, TTL-bounded enrollment tokens. Only the id and metadata are stored.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use xerotier_core::{IdGenerator, IdKind, SharedClock, UnixMillis, format_rfc3339};
use xerotier_proto::join_keys::{
    AGENT_ROLES, CreateJoinKeyRequest, IssuedJoinKey, JOIN_KEY_AUDIENCE, JOIN_KEY_ISSUER,
    JoinKeyClaims, JoinKeyQuery, JoinKeyView, RevokeJoinKeyRequest,
};
use xerotier_proto::{ErrorEnvelope, Page};
use xerotier_store::{JoinKeyRecord, Outcome, Store};

use super::Fleet;
use crate::AppState;
use crate::audit::{AuditLog, Target};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::extract::{JsonBody, QueryParams, RequestContext};
use crate::http::pagination::{into_page, page_request};
use crate::validate;

#[derive(Debug, Clone)]
pub struct JoinKeyService {
    store: Store,
    clock: SharedClock,
    ids: IdGenerator,
    audit: AuditLog,
    fleet: Arc<Fleet>,
}

/// Checks an agent role against the two the product knows.
pub fn validate_role(role: &str) -> Result<(), ApiError> {
    if AGENT_ROLES.contains(&role) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            format!("agent_role must be inference or execution, got {role:?}"),
            "agent_role",
        ))
    }
}

impl JoinKeyService {
    pub fn new(
        store: Store,
        clock: SharedClock,
        ids: IdGenerator,
        audit: AuditLog,
        fleet: Arc<Fleet>,
    ) -> Self {
        Self { store, clock, ids, audit, fleet }
    }

    pub async fn create(
        &self,
        actor: &Principal,
        context: &RequestContext,
        request: CreateJoinKeyRequest,
    ) -> Result<IssuedJoinKey, ApiError> {
        let settings = &self.fleet.settings;
        validate::name(&request.name, "name")?;
        if let Some(region) = &request.region {
            validate::name(region, "region")?;
        }
        let role =
            request.agent_role.clone().unwrap_or_else(|| settings.default_agent_role.clone());
        validate_role(&role)?;
        let router_addr =
            request.router_addr.clone().unwrap_or_else(|| self.fleet.advertised_mesh_addr());
        validate::mesh_addr(&router_addr, "router_addr")?;
        let ttl = request.ttl_seconds.unwrap_or(settings.join_key_default_ttl_seconds);
        if ttl == 0 || ttl > settings.join_key_max_ttl_seconds {
            return Err(ApiError::invalid(
                format!(
                    "ttl_seconds must be between 1 and the router maximum of {}",
                    settings.join_key_max_ttl_seconds
                ),
                "ttl_seconds",
            ));
        }
        let now = self.clock.now_millis();
        let expires_at = now + i64::try_from(ttl).unwrap_or(i64::MAX / 1000) * 1000;
        let record = JoinKeyRecord {
            id: self.ids.next(IdKind::JoinKey),
            name: request.name.clone(),
            region: request.region.clone(),
            role: role.clone(),
            router_addr: router_addr.clone(),
            created_at: now,
            created_by: Some(actor.key_id.clone()),
            expires_at,
            consumed_at: None,
            consumed_by_agent: None,
            revoked_at: None,
            revoked_by: None,
            revoked_reason: None,
        };
        let claims = JoinKeyClaims {
            iss: JOIN_KEY_ISSUER.into(),
            aud: JOIN_KEY_AUDIENCE.into(),
            jti: record.id.clone(),
            iat: now / 1000,
            exp: expires_at / 1000,
            name: record.name.clone(),
            region: record.region.clone(),
            role,
            router_addr,
            router_curve_key: self.fleet.router_curve_public_z85(),
        };
        let token = self
            .fleet
            .identity
            .join_signer
            .issue(&claims)
            .map_err(|e| ApiError::Internal(e.into()))?;
        let target = Target { kind: "join_key", id: Some(&record.id), name: Some(&record.name) };
        let details = serde_json::json!({
            "role": record.role, "region": record.region, "router_addr": record.router_addr,
            "ttl_seconds": ttl, "expires_at": format_rfc3339(expires_at),
        });
        let entry = self.audit.entry(
            Some(actor),
            context,
            "join_key.create",
            Some(target),
            Outcome::Success,
            None,
            details,
        );
        self.store.create_join_key(&record, &entry).await?;
        tracing::info!(join_key = %record.id, name = %record.name, ttl, actor = %actor.key_id, "join key created");
        Ok(IssuedJoinKey { join_key: view(record, now), token })
    }

    pub async fn list(&self, query: JoinKeyQuery) -> Result<Page<JoinKeyView>, ApiError> {
        let page = page_request(query.limit, query.after)?;
        let now = self.clock.now_millis();
        let slice = self.store.list_join_keys(&page, query.include_terminal, now).await?;
        Ok(into_page(slice, |k| k.id.clone(), |k| view(k, now)))
    }

    pub async fn get(&self, id: &str) -> Result<JoinKeyView, ApiError> {
        let record = self
            .store
            .join_key(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("join key {id}")))?;
        Ok(view(record, self.clock.now_millis()))
    }

    pub async fn revoke(
        &self,
        actor: &Principal,
        context: &RequestContext,
        id: &str,
        reason: Option<&str>,
    ) -> Result<JoinKeyView, ApiError> {
        let reason = validate::reason(reason)?;
        let now = self.clock.now_millis();
        let target = Target { kind: "join_key", id: Some(id), name: None };
        let entry = self.audit.entry(
            Some(actor),
            context,
            "join_key.revoke",
            Some(target.clone()),
            Outcome::Success,
            reason,
            serde_json::Value::Null,
        );
        match self.store.revoke_join_key(id, now, Some(&actor.key_id), reason, &entry).await {
            Ok(record) => {
                tracing::info!(join_key = %id, actor = %actor.key_id, "join key revoked");
                Ok(view(record, now))
            }
            Err(err) => {
                self.audit.record_failure(actor, context, "join_key.revoke", target, &err).await;
                Err(match err {
                    xerotier_store::StoreError::JoinKeyRevoked(id) => {
                        ApiError::AlreadyRevoked(format!("join key {id}"))
                    }
                    other => other.into(),
                })
            }
        }
    }
}

pub fn view(record: JoinKeyRecord, now: UnixMillis) -> JoinKeyView {
    JoinKeyView {
        state: record.state(now).to_string(),
        created_at: format_rfc3339(record.created_at),
        expires_at: format_rfc3339(record.expires_at),
        used_at: record.consumed_at.map(format_rfc3339),
        revoked_at: record.revoked_at.map(format_rfc3339),
        id: record.id,
        name: record.name,
        region: record.region,
        role: record.role,
        router_addr: record.router_addr,
        created_by: record.created_by,
        used_by_agent: record.consumed_by_agent,
        revoked_by: record.revoked_by,
        revoked_reason: record.revoked_reason,
    }
}

/// Mint a join key. The token is shown once.
#[utoipa::path(
    post,
    path = "/v1/management/join-keys",
    tag = "join-keys",
    request_body = CreateJoinKeyRequest,
    responses(
        (status = 201, description = "Created; `token` cannot be shown again", body = IssuedJoinKey),
        (status = 400, description = "Invalid name, role, address or TTL", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid API key", body = ErrorEnvelope),
        (status = 403, description = "Key lacks the management scope", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn create_join_key(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    context: RequestContext,
    JsonBody(request): JsonBody<CreateJoinKeyRequest>,
) -> Result<(StatusCode, Json<IssuedJoinKey>), ApiError> {
    Ok((StatusCode::CREATED, Json(state.join_keys().create(&actor, &context, request).await?)))
}

/// List join keys: active ones, or all with `include_terminal`.
#[utoipa::path(
    get,
    path = "/v1/management/join-keys",
    tag = "join-keys",
    params(JoinKeyQuery),
    responses(
        (status = 200, description = "One page of join keys", body = Page<JoinKeyView>),
        (status = 401, description = "Missing or invalid API key", body = ErrorEnvelope),
        (status = 403, description = "Key lacks the management scope", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn list_join_keys(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<JoinKeyQuery>,
) -> Result<Json<Page<JoinKeyView>>, ApiError> {
    Ok(Json(state.join_keys().list(query).await?))
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
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JoinKeyView>, ApiError> {
    Ok(Json(state.join_keys().get(&id).await?))
}

/// Revoke an unconsumed join key.
#[utoipa::path(
    post,
    path = "/v1/management/join-keys/{id}/revoke",
    tag = "join-keys",
    params(("id" = String, Path, description = "Join key id, `jk_…`")),
    request_body(content = RevokeJoinKeyRequest, description = "Optional reason"),
    responses(
        (status = 200, description = "Revoked", body = JoinKeyView),
        (status = 404, description = "No such join key", body = ErrorEnvelope),
        (status = 409, description = "Already used or revoked", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn revoke_join_key(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    context: RequestContext,
    Path(id): Path<String>,
    body: Option<JsonBody<RevokeJoinKeyRequest>>,
) -> Result<Json<JoinKeyView>, ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    Ok(Json(state.join_keys().revoke(&actor, &context, &id, request.reason.as_deref()).await?))
}
