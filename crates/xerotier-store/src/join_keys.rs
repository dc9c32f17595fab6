use xerotier_core::UnixMillis;

use crate::rows::{RevokeSql, record};
use crate::{AuditEntry, PageRequest, PageSlice, Store, StoreError};

/// A join key row. The token itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinKeyRecord {
    pub id: String,
    pub name: String,
    pub region: Option<String>,
    pub role: String,
    pub router_addr: String,
    pub created_at: UnixMillis,
    pub created_by: Option<String>,
    pub expires_at: UnixMillis,
    pub consumed_at: Option<UnixMillis>,
    pub consumed_by_agent: Option<String>,
    pub revoked_at: Option<UnixMillis>,
    pub revoked_by: Option<String>,
    pub revoked_reason: Option<String>,
    /// The workspaces an agent enrolled with this key serves at once, JSON list; none: the key
    /// grants nothing by itself.
    pub grant_workspaces: Option<String>,
    /// The agent waits, whole, for an operator's approval.
    pub require_approval: bool,
    /// The `kid` of the router key that signed its token (`jks-…`).
    pub signing_kid: Option<String>,
}

impl JoinKeyRecord {
    /// `active`, `used`, `revoked` or `expired` at `now`; a terminal state wins over expiry.
    pub fn state(&self, now: UnixMillis) -> &'static str {
        if self.consumed_at.is_some() {
            "used"
        } else if self.revoked_at.is_some() {
            "revoked"
        } else if now >= self.expires_at {
            "expired"
        } else {
            "active"
        }
    }
}

record!(JoinKeyRecord in "join_keys" {
    id, name, region, role, router_addr, created_at, created_by, expires_at, consumed_at,
    consumed_by_agent, revoked_at, revoked_by, revoked_reason, grant_workspaces, require_approval,
    signing_kid,
});

impl Store {
    pub async fn create_join_key(
        &self,
        key: &JoinKeyRecord,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO join_keys (id, name, region, role, router_addr, created_at, created_by,
                 expires_at, grant_workspaces, require_approval, signing_kid)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(&key.region)
        .bind(&key.role)
        .bind(&key.router_addr)
        .bind(key.created_at)
        .bind(&key.created_by)
        .bind(key.expires_at)
        .bind(&key.grant_workspaces)
        .bind(i64::from(key.require_approval))
        .bind(&key.signing_kid)
        .execute(&mut *tx)
        .await?;
        audit.commit_with(tx).await
    }

    pub async fn join_key(&self, id: &str) -> Result<Option<JoinKeyRecord>, StoreError> {
        self.get(id).await
    }

    /// Active keys (unconsumed, unrevoked, unexpired at `now`), or all with `include_terminal`.
    pub async fn list_join_keys(
        &self,
        page: &PageRequest,
        include_terminal: bool,
        now: UnixMillis,
    ) -> Result<PageSlice<JoinKeyRecord>, StoreError> {
        self.page(
            page,
            "$3 = 1 OR (consumed_at IS NULL AND revoked_at IS NULL AND expires_at > $4)",
            |q| q.bind(i64::from(include_terminal)).bind(now),
        )
        .await
    }

    /// Revokes an unconsumed, unrevoked key.
    pub async fn revoke_join_key(
        &self,
        id: &str,
        now: UnixMillis,
        revoked_by: Option<&str>,
        reason: Option<&str>,
        audit: &AuditEntry,
    ) -> Result<JoinKeyRecord, StoreError> {
        let unconsumed = RevokeSql { also_set: "", only_if: " AND consumed_at IS NULL" };
        match self.revoke(id, now, revoked_by, reason, unconsumed, audit).await? {
            Some(key) => Ok(key),
            None => Err(self.why_join_key_unusable(id, now).await?),
        }
    }

    /// Why `id` cannot be consumed or revoked now.
    pub(crate) async fn why_join_key_unusable(
        &self,
        id: &str,
        now: UnixMillis,
    ) -> Result<StoreError, StoreError> {
        Ok(match self.join_key(id).await? {
            None => StoreError::NotFound(format!("join key {id}")),
            Some(key) => match key.state(now) {
                "used" => StoreError::JoinKeyUsed(id.to_string()),
                "revoked" => StoreError::JoinKeyRevoked(id.to_string()),
                "expired" => StoreError::JoinKeyExpired(id.to_string()),
                _ => StoreError::NotFound(format!("join key {id}")),
            },
        })
    }
}
