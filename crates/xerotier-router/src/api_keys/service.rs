use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::ExposeSecret;
use xerotier_core::{IdGenerator, IdKind, SharedClock, SharedEntropy, UnixMillis, format_rfc3339};
use xerotier_credentials::{IssuedSecret, write_secret_file};
use xerotier_proto::api_keys::{
    ApiKeyView, CreateApiKeyRequest, DEFAULT_ROTATE_GRACE_SECONDS, IssuedApiKey,
    RotateApiKeyRequest,
};
use xerotier_proto::{Page, Scope, Scopes};
use xerotier_store::{ApiKeyRecord, NewApiKey, Outcome, PageRequest, Store};

use crate::audit::{AuditLog, Target};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::extract::RequestContext;
use crate::http::pagination::into_page;
use crate::key_cache::KeyCache;
use crate::validate;

pub const BOOTSTRAP_KEY_NAME: &str = "bootstrap";
pub const BOOTSTRAP_KEY_FILE: &str = "bootstrap.key";
/// Ten years: longer-lived keys are a policy smell (the cadence table says 180 days).
const MAX_EXPIRES_IN_SECONDS: u64 = 10 * 365 * 24 * 60 * 60;

#[derive(Debug, Clone)]
pub struct ApiKeyService {
    store: Store,
    clock: SharedClock,
    entropy: SharedEntropy,
    ids: IdGenerator,
    audit: AuditLog,
    cache: Arc<KeyCache>,
}

impl ApiKeyService {
    pub fn new(
        store: Store,
        clock: SharedClock,
        entropy: SharedEntropy,
        audit: AuditLog,
        cache: Arc<KeyCache>,
    ) -> Self {
        let ids = IdGenerator::new(clock.clone(), entropy.clone());
        Self { store, clock, entropy, ids, audit, cache }
    }

    pub fn view(&self, record: ApiKeyRecord) -> ApiKeyView {
        view(record, self.clock.now_millis())
    }

    pub async fn create(
        &self,
        actor: &Principal,
        context: &RequestContext,
        request: CreateApiKeyRequest,
    ) -> Result<IssuedApiKey, ApiError> {
        validate::name(&request.name, "name")?;
        if request.scopes.is_empty() {
            return Err(ApiError::invalid("at least one scope is required", "scopes"));
        }
        let now = self.clock.now_millis();
        let expires_at = match request.expires_in_seconds {
            None => None,
            Some(0) => {
                return Err(ApiError::invalid(
                    "expires_in_seconds must be positive",
                    "expires_in_seconds",
                ));
            }
            Some(secs) if secs > MAX_EXPIRES_IN_SECONDS => {
                return Err(ApiError::invalid(
                    format!("expires_in_seconds must be at most {MAX_EXPIRES_IN_SECONDS}"),
                    "expires_in_seconds",
                ));
            }
            Some(secs) => Some(now + secs_to_millis(secs)),
        };
        let id = self.ids.next(IdKind::ApiKey);
        let secret = IssuedSecret::generate(&id, self.entropy.as_ref());
        let new_key = NewApiKey {
            id: id.clone(),
            name: request.name.clone(),
            scopes: request.scopes.to_csv(),
            verifier: secret.verifier.to_hex(),
            created_at: now,
            created_by: Some(actor.key_id.clone()),
            expires_at,
        };
        let target = Target { kind: "api_key", id: Some(&id), name: Some(&request.name) };
        let details = serde_json::json!({ "scopes": request.scopes, "expires_at": expires_at.map(format_rfc3339) });
        let entry = self.audit.entry(
            Some(actor),
            context,
            "api_key.create",
            Some(target.clone()),
            Outcome::Success,
            None,
            details,
        );
        if let Err(err) = self.store.create_api_key(&new_key, &entry).await {
            let attempted = Target { id: None, ..target };
            self.audit.record_failure(actor, context, "api_key.create", attempted, &err).await;
            return Err(err.into());
        }
        tracing::info!(key_id = %id, name = %request.name, actor = %actor.key_id, "api key created");
        let record = self.get_record(&id).await?;
        Ok(IssuedApiKey { key: self.view(record), value: secret.value.expose_secret().to_string() })
    }

    pub async fn rotate(
        &self,
        actor: &Principal,
        context: &RequestContext,
        id: &str,
        request: RotateApiKeyRequest,
    ) -> Result<IssuedApiKey, ApiError> {
        let reason = validate::reason(request.reason.as_deref())?;
        let grace = request.grace_seconds.unwrap_or(DEFAULT_ROTATE_GRACE_SECONDS);
        if grace > MAX_EXPIRES_IN_SECONDS {
            return Err(ApiError::invalid("grace_seconds is too large", "grace_seconds"));
        }
        let now = self.clock.now_millis();
        let previous_valid_until = now + secs_to_millis(grace);
        let secret = IssuedSecret::generate(id, self.entropy.as_ref());
        let target = Target { kind: "api_key", id: Some(id), name: None };
        let details = serde_json::json!({
            "grace_seconds": grace,
            "previous_value_valid_until": format_rfc3339(previous_valid_until),
        });
        let entry = self.audit.entry(
            Some(actor),
            context,
            "api_key.rotate",
            Some(target.clone()),
            Outcome::Success,
            reason,
            details,
        );
        let result = self
            .store
            .rotate_api_key(id, &secret.verifier.to_hex(), now, previous_valid_until, &entry)
            .await;
        // Before answering, whatever the result: the change must hold on the next request.
        self.cache.invalidate(id);
        let rotated = match result {
            Ok(record) => record,
            Err(err) => {
                self.audit.record_failure(actor, context, "api_key.rotate", target, &err).await;
                return Err(err.into());
            }
        };
        tracing::info!(key_id = %id, grace_seconds = grace, actor = %actor.key_id, "api key rotated");
        Ok(IssuedApiKey {
            key: self.view(rotated),
            value: secret.value.expose_secret().to_string(),
        })
    }

    pub async fn revoke(
        &self,
        actor: &Principal,
        context: &RequestContext,
        id: &str,
        reason: Option<&str>,
    ) -> Result<ApiKeyView, ApiError> {
        let reason = validate::reason(reason)?;
        let now = self.clock.now_millis();
        let target = Target { kind: "api_key", id: Some(id), name: None };
        let entry = self.audit.entry(
            Some(actor),
            context,
            "api_key.revoke",
            Some(target.clone()),
            Outcome::Success,
            reason,
            serde_json::Value::Null,
        );
        let result = self.store.revoke_api_key(id, now, Some(&actor.key_id), reason, &entry).await;
        // Before answering, whatever the result: the revoke must hold on the next request.
        self.cache.invalidate(id);
        match result {
            Ok(record) => {
                tracing::info!(key_id = %id, actor = %actor.key_id, "api key revoked");
                Ok(self.view(record))
            }
            Err(err) => {
                self.audit.record_failure(actor, context, "api_key.revoke", target, &err).await;
                Err(err.into())
            }
        }
    }

    pub async fn get(&self, id: &str) -> Result<ApiKeyView, ApiError> {
        Ok(self.view(self.get_record(id).await?))
    }

    async fn get_record(&self, id: &str) -> Result<ApiKeyRecord, ApiError> {
        self.store.api_key(id).await?.ok_or_else(|| ApiError::NotFound(format!("API key {id}")))
    }

    pub async fn list(
        &self,
        page: &PageRequest,
        include_revoked: bool,
        name: Option<&str>,
    ) -> Result<Page<ApiKeyView>, ApiError> {
        if let Some(name) = name {
            let found = self.store.api_key_by_name(name).await?;
            return Ok(Page {
                data: found.into_iter().map(|r| self.view(r)).collect(),
                has_more: false,
                next_after: None,
            });
        }
        let slice = self.store.list_api_keys(page, include_revoked).await?;
        Ok(into_page(slice, |r| r.id.clone(), |r| self.view(r)))
    }

    /// On a store no router has bootstrapped, creates the admin key and writes its value to
    /// `<state_dir>/bootstrap.key` (0600) inside the same transaction. Returns the file's path
    /// when this call created it.
    pub async fn bootstrap(&self, state_dir: &Path) -> Result<Option<PathBuf>, ApiError> {
        let id = self.ids.next(IdKind::ApiKey);
        let secret = IssuedSecret::generate(&id, self.entropy.as_ref());
        let scopes = Scopes::new(Scope::ALL.to_vec());
        let new_key = NewApiKey {
            id: id.clone(),
            name: BOOTSTRAP_KEY_NAME.to_string(),
            scopes: scopes.to_csv(),
            verifier: secret.verifier.to_hex(),
            created_at: self.clock.now_millis(),
            created_by: None,
            expires_at: None,
        };
        let target = Target { kind: "api_key", id: Some(&id), name: Some(BOOTSTRAP_KEY_NAME) };
        let details = serde_json::json!({ "scopes": scopes, "file": BOOTSTRAP_KEY_FILE });
        let entry = self.audit.entry(
            None,
            &RequestContext::default(),
            "api_key.bootstrap",
            Some(target),
            Outcome::Success,
            None,
            details,
        );
        let path = state_dir.join(BOOTSTRAP_KEY_FILE);
        let value = format!("{}\n", secret.value.expose_secret());
        let created = self
            .store
            .bootstrap_api_key(&new_key, &entry, || write_secret_file(&path, value.as_bytes()))
            .await?
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("writing the bootstrap key: {e}")))?;
        Ok(created.then_some(path))
    }
}

fn secs_to_millis(secs: u64) -> UnixMillis {
    i64::try_from(secs).unwrap_or(i64::MAX / 1000).saturating_mul(1000)
}

/// How a key appears in the API at time `now`.
pub fn view(record: ApiKeyRecord, now: UnixMillis) -> ApiKeyView {
    let status = if record.revoked_at.is_some() {
        "revoked"
    } else if record.expires_at.is_some_and(|at| now >= at) {
        "expired"
    } else {
        "active"
    };
    let grace_open = record.previous_valid_until.filter(|until| now < *until);
    ApiKeyView {
        status: status.to_string(),
        scopes: Scopes::from_csv(&record.scopes).unwrap_or_default(),
        created_at: format_rfc3339(record.created_at),
        expires_at: record.expires_at.map(format_rfc3339),
        last_used_at: record.last_used_at.map(format_rfc3339),
        rotated_at: record.rotated_at.map(format_rfc3339),
        previous_value_valid_until: grace_open.map(format_rfc3339),
        revoked_at: record.revoked_at.map(format_rfc3339),
        id: record.id,
        name: record.name,
        created_by: record.created_by,
        revoked_by: record.revoked_by,
        revoked_reason: record.revoked_reason,
    }
}
