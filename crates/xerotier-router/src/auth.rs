//! API key authentication and scope enforcement for every `/v1/exec/*` and `/v1/management/*`
//! request.
//!
//! The key's row is found by primary key (the key id is embedded in the value), from the
//! [`KeyCache`] when this process owns the store, else from the store on every request, and the
//! secret is checked against the stored verifier in constant time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use xerotier_core::{SharedClock, UnixMillis};
use xerotier_credentials::{ApiKeyValue, Verifier};
use xerotier_proto::{Scope, Scopes};
use xerotier_store::{ApiKeyRecord, Outcome, Store};

use crate::AppState;
use crate::error::ApiError;
use crate::http::extract::RequestContext;
use crate::key_cache::KeyCache;

/// `last_used_at` is written at most this often per key, so the hot path stays read-only.
const LAST_USED_RESOLUTION_MILLIS: i64 = 60_000;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub name: String,
    pub scopes: Scopes,
}

#[derive(Debug, Clone)]
pub struct Authenticator {
    store: Store,
    clock: SharedClock,
    cache: Arc<KeyCache>,
    last_used_written: Arc<Mutex<HashMap<String, UnixMillis>>>,
}

impl Authenticator {
    pub fn new(store: Store, clock: SharedClock, cache: Arc<KeyCache>) -> Self {
        Self { store, clock, cache, last_used_written: Arc::default() }
    }

    async fn record(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, ApiError> {
        let ticket = match self.cache.get(key_id) {
            Ok(record) => return Ok(Some(record)),
            Err(ticket) => ticket,
        };
        let record = self.store.api_key(key_id).await?;
        if let Some(record) = &record {
            self.cache.insert(ticket, record);
        }
        Ok(record)
    }

    pub async fn authenticate(&self, header: Option<&HeaderValue>) -> Result<Principal, ApiError> {
        let header = header.ok_or(ApiError::MissingApiKey)?;
        let text = header.to_str().map_err(|_| ApiError::InvalidApiKey)?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .ok_or(ApiError::InvalidApiKey)?;
        let presented = ApiKeyValue::parse(token).map_err(|_| ApiError::InvalidApiKey)?;
        let record = self.record(presented.key_id()).await?.ok_or(ApiError::InvalidApiKey)?;
        let now = self.clock.now_millis();
        if !accepts(&record, &presented.verifier(), now) {
            return Err(ApiError::InvalidApiKey);
        }
        self.note_use(&record.id, now);
        let scopes = Scopes::from_csv(&record.scopes).map_err(|e| {
            ApiError::Internal(anyhow::anyhow!("stored scopes of {}: {e}", record.id))
        })?;
        Ok(Principal { key_id: record.id, name: record.name, scopes })
    }

    fn note_use(&self, key_id: &str, now: UnixMillis) {
        let due = {
            let mut written = match self.last_used_written.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            match written.get(key_id) {
                Some(last) if now - last < LAST_USED_RESOLUTION_MILLIS => false,
                _ => {
                    written.insert(key_id.to_string(), now);
                    true
                }
            }
        };
        if due {
            let (store, key_id) = (self.store.clone(), key_id.to_string());
            tokio::spawn(async move {
                if let Err(err) = store.touch_api_key(&key_id, now).await {
                    tracing::warn!(%key_id, error = %err, "could not record last use");
                }
            });
        }
    }
}

/// Whether `record` accepts a presented secret with verifier `presented` at time `now`:
/// not revoked, not expired, and matching the current verifier or, within the grace window
/// after a rotation, the previous one.
pub fn accepts(record: &ApiKeyRecord, presented: &Verifier, now: UnixMillis) -> bool {
    if record.revoked_at.is_some() || record.expires_at.is_some_and(|at| now >= at) {
        return false;
    }
    let stored = |hex: &str| Verifier::from_hex(hex).is_some_and(|v| v.matches(presented));
    let current = stored(&record.verifier);
    let previous = match (&record.previous_verifier, record.previous_valid_until) {
        (Some(hex), Some(until)) if now < until => stored(hex),
        _ => false,
    };
    // Both comparisons always run, so timing does not reveal which value was presented.
    current | previous
}

pub async fn require_execution(state: State<AppState>, req: Request, next: Next) -> Response {
    require(state, Scope::Execution, req, next).await
}

pub async fn require_management(state: State<AppState>, req: Request, next: Next) -> Response {
    require(state, Scope::Management, req, next).await
}

async fn require(
    State(state): State<AppState>,
    scope: Scope,
    mut req: Request,
    next: Next,
) -> Response {
    let presented = req.headers().get(header::AUTHORIZATION);
    let principal = match state.auth().authenticate(presented).await {
        Ok(principal) => principal,
        Err(err) => {
            state.metrics().auth_failure(err.code().as_str());
            return err.into_response();
        }
    };
    if !principal.scopes.contains(scope) {
        state.metrics().auth_failure("scope_insufficient");
        if req.method() != Method::GET {
            let context = RequestContext::from_http(req.headers(), req.extensions());
            let details = serde_json::json!({
                "method": req.method().as_str(),
                "path": req.uri().path(),
                "required_scope": scope.as_str(),
            });
            state
                .audit()
                .record_attempt(
                    &principal,
                    &context,
                    "authz.denied",
                    None,
                    Outcome::Denied,
                    details,
                )
                .await;
        }
        return ApiError::ScopeInsufficient(scope).into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}
