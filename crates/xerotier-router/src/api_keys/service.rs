use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use xerotier_core::{IdGenerator, IdKind, SharedClock, SharedEntropy, UnixMillis, format_rfc3339};
use xerotier_credentials::{IssuedSecret, write_secret_file};
use xerotier_proto::api_keys::{
    CreateApiKeyRequest, DEFAULT_ROTATE_GRACE_SECONDS, RotateApiKeyRequest,
};
use xerotier_proto::status::ApiKeyStatus;
use xerotier_proto::{Scope, Scopes};
use xerotier_store::{ApiKeyRecord, NewApiKey, Outcome, PageRequest, PageSlice, Store};

use super::GraceUseCounter;
use crate::audit::{AuditContext, AuditLog, Change, Target};
use crate::key_cache::KeyCache;
use crate::service_error::ServiceError;
use crate::validate;

pub const BOOTSTRAP_KEY_NAME: &str = "bootstrap";
pub const BOOTSTRAP_KEY_FILE: &str = "bootstrap.key";
/// Ten years: longer-lived keys are a policy smell (the cadence table says 180 days).
const MAX_EXPIRES_IN_SECONDS: u64 = xerotier_proto::api_keys::MAX_LIFETIME_SECONDS;

#[derive(Debug, Clone)]
pub struct ApiKeyService {
    pub(super) store: Store,
    pub(super) clock: SharedClock,
    entropy: SharedEntropy,
    ids: IdGenerator,
    pub(super) audit: AuditLog,
    pub(super) cache: Arc<KeyCache>,
    /// Uses of previous values counted by the authentication path, flushed by
    /// [`Self::spawn_grace_watch`].
    pub(super) grace_uses: Arc<GraceUseCounter>,
}

impl ApiKeyService {
    pub fn new(
        store: Store,
        clock: SharedClock,
        entropy: SharedEntropy,
        audit: AuditLog,
        cache: Arc<KeyCache>,
        grace_uses: Arc<GraceUseCounter>,
    ) -> Self {
        let ids = IdGenerator::new(clock.clone(), entropy.clone());
        Self { store, clock, entropy, ids, audit, cache, grace_uses }
    }

    pub(super) fn as_of_now(&self, record: ApiKeyRecord) -> ApiKey {
        ApiKey::at(record, self.clock.now_millis())
    }

    pub async fn create(
        &self,
        context: &AuditContext,
        request: CreateApiKeyRequest,
    ) -> Result<IssuedKey, ServiceError> {
        validate::name(&request.name, "name")?;
        if request.scopes.is_empty() {
            return Err(ServiceError::invalid("at least one scope is required", "scopes"));
        }
        let now = self.clock.now_millis();
        let expires_at = match request.expires_in_seconds {
            None => None,
            Some(0) => {
                return Err(ServiceError::invalid(
                    "expires_in_seconds must be positive",
                    "expires_in_seconds",
                ));
            }
            Some(secs) if secs > MAX_EXPIRES_IN_SECONDS => {
                return Err(ServiceError::invalid(
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
            created_by: context.actor_key_id().map(str::to_string),
            expires_at,
        };
        let target = Target { kind: "api_key", id: Some(&id), name: Some(&request.name) };
        let change = Change::new("api_key.create", target).creating().details(
            serde_json::json!({ "scopes": request.scopes, "expires_at": expires_at.map(format_rfc3339) }),
        );
        self.audit
            .audited(context, change, |entry| async move {
                self.store.create_api_key(&new_key, &entry).await
            })
            .await?;
        tracing::info!(key_id = %id, name = %request.name, actor = %context.actor_label(), "api key created");
        let record = self.get_record(&id).await?;
        Ok(IssuedKey { key: self.as_of_now(record), value: secret.value })
    }

    pub async fn rotate(
        &self,
        context: &AuditContext,
        id: &str,
        request: RotateApiKeyRequest,
    ) -> Result<IssuedKey, ServiceError> {
        let reason = validate::reason(request.reason.as_deref())?;
        let grace = request.grace_seconds.unwrap_or(DEFAULT_ROTATE_GRACE_SECONDS);
        if grace > MAX_EXPIRES_IN_SECONDS {
            return Err(ServiceError::invalid("grace_seconds is too large", "grace_seconds"));
        }
        let now = self.clock.now_millis();
        let previous_valid_until = now + secs_to_millis(grace);
        let secret = IssuedSecret::generate(id, self.entropy.as_ref());
        let target = Target { kind: "api_key", id: Some(id), name: None };
        let details = serde_json::json!({
            "grace_seconds": grace,
            "previous_value_valid_until": format_rfc3339(previous_valid_until),
        });
        let change = Change::new("api_key.rotate", target).reason(reason).details(details);
        let verifier = secret.verifier.to_hex();
        let rotated = self
            .audit
            .audited(context, change, |entry| async move {
                let result = self
                    .store
                    .rotate_api_key(id, &verifier, now, previous_valid_until, &entry)
                    .await;
                // Before answering, whatever the result: the change must hold on the next request.
                self.cache.invalidate(id);
                result
            })
            .await?;
        tracing::info!(key_id = %id, grace_seconds = grace, actor = %context.actor_label(), "api key rotated");
        Ok(IssuedKey { key: self.as_of_now(rotated), value: secret.value })
    }

    /// Revokes key `id`. Unless `allow_lockout`, two revocations are refused (and recorded
    /// `failed` with their code): the key the request is authenticated with (`self_revoke`),
    /// and the last usable key with the `management` scope (`last_management_key`, decided
    /// by the store inside the revoking transaction, so concurrent revocations cannot both
    /// pass it).
    pub async fn revoke(
        &self,
        context: &AuditContext,
        id: &str,
        reason: Option<&str>,
        allow_lockout: bool,
    ) -> Result<ApiKey, ServiceError> {
        let reason = validate::reason(reason)?;
        let now = self.clock.now_millis();
        let self_revoke = context.actor_key_id() == Some(id);
        let target = Target { kind: "api_key", id: Some(id), name: None };
        let mut change = Change::new("api_key.revoke", target).reason(reason);
        if allow_lockout {
            change = change
                .details(serde_json::json!({ "allow_lockout": true, "self_revoke": self_revoke }));
        }
        if self_revoke && !allow_lockout {
            let err = ServiceError::SelfRevoke(id.to_string());
            self.audit.record_failure(context, change, &err).await;
            return Err(err);
        }
        let revoked = self
            .audit
            .audited(context, change, |entry| async move {
                let result = self
                    .store
                    .revoke_api_key(id, now, context.actor_key_id(), reason, !allow_lockout, &entry)
                    .await;
                // Before answering, whatever the result: the revoke must hold on the next request.
                self.cache.invalidate(id);
                result
            })
            .await?;
        tracing::info!(key_id = %id, actor = %context.actor_label(), allow_lockout, "api key revoked");
        Ok(self.as_of_now(revoked))
    }

    pub async fn get(&self, id: &str) -> Result<ApiKey, ServiceError> {
        Ok(self.as_of_now(self.get_record(id).await?))
    }

    pub(super) async fn get_record(&self, id: &str) -> Result<ApiKeyRecord, ServiceError> {
        self.store.api_key(id).await?.ok_or_else(|| ServiceError::NotFound(format!("API key {id}")))
    }

    /// One page of keys, or the unrevoked key named `name` (a page of at most one).
    pub async fn list(
        &self,
        page: &PageRequest,
        include_revoked: bool,
        name: Option<&str>,
    ) -> Result<PageSlice<ApiKey>, ServiceError> {
        let now = self.clock.now_millis();
        let slice = match name {
            Some(name) => PageSlice {
                items: self.store.api_key_by_name(name).await?.into_iter().collect(),
                has_more: false,
            },
            None => self.store.list_api_keys(page, include_revoked).await?,
        };
        Ok(slice.map(|r| ApiKey::at(r, now)))
    }

    /// On a store no router has bootstrapped, creates the admin key and writes its value to
    /// `<state_dir>/bootstrap.key` (0600) inside the same transaction. Returns the file's path
    /// when this call created it.
    pub async fn bootstrap(&self, state_dir: &Path) -> Result<Option<PathBuf>, ServiceError> {
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
        let change = Change::new("api_key.bootstrap", target).details(details);
        let entry = self.audit.entry(&AuditContext::default(), &change, Outcome::Success);
        let path = state_dir.join(BOOTSTRAP_KEY_FILE);
        let value = format!("{}\n", secret.value.expose_secret());
        let created = self
            .store
            .bootstrap_api_key(&new_key, &entry, || write_secret_file(&path, value.as_bytes()))
            .await?
            .map_err(|e| ServiceError::internal(format!("writing the bootstrap key: {e}")))?;
        Ok(created.then_some(path))
    }
}

fn secs_to_millis(secs: u64) -> UnixMillis {
    i64::try_from(secs).unwrap_or(i64::MAX / 1000).saturating_mul(1000)
}

/// A key as of a given time: its record and what that time makes of it.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub record: ApiKeyRecord,
    pub status: ApiKeyStatus,
    /// Until when the value from before the last rotation is still accepted, if still open.
    pub previous_valid_until: Option<UnixMillis>,
}

impl ApiKey {
    pub fn at(record: ApiKeyRecord, now: UnixMillis) -> Self {
        let status = if record.revoked_at.is_some() {
            ApiKeyStatus::Revoked
        } else if record.expires_at.is_some_and(|at| now >= at) {
            ApiKeyStatus::Expired
        } else {
            ApiKeyStatus::Active
        };
        let previous_valid_until = record.previous_valid_until.filter(|until| now < *until);
        Self { record, status, previous_valid_until }
    }
}

/// A key together with its value: the only time the value leaves the service.
#[derive(Debug)]
pub struct IssuedKey {
    pub key: ApiKey,
    pub value: SecretString,
}
