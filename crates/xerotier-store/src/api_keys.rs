use sqlx::Row;
use sqlx::any::AnyRow;
use xerotier_core::UnixMillis;

use crate::{AuditEntry, PageRequest, PageSlice, Store, StoreError};

/// An API key row. `verifier` and `previous_verifier` are hashes, never secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    /// Canonical comma-separated scopes.
    pub scopes: String,
    pub verifier: String,
    pub previous_verifier: Option<String>,
    pub previous_valid_until: Option<UnixMillis>,
    pub created_at: UnixMillis,
    pub created_by: Option<String>,
    pub expires_at: Option<UnixMillis>,
    pub last_used_at: Option<UnixMillis>,
    pub rotated_at: Option<UnixMillis>,
    pub revoked_at: Option<UnixMillis>,
    pub revoked_by: Option<String>,
    pub revoked_reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub name: String,
    pub scopes: String,
    pub verifier: String,
    pub created_at: UnixMillis,
    pub created_by: Option<String>,
    pub expires_at: Option<UnixMillis>,
}

const COLUMNS: &str = "id, name, scopes, verifier, previous_verifier, previous_valid_until, \
    created_at, created_by, expires_at, last_used_at, rotated_at, revoked_at, revoked_by, \
    revoked_reason";

fn from_row(row: &AnyRow) -> Result<ApiKeyRecord, sqlx::Error> {
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        scopes: row.try_get("scopes")?,
        verifier: row.try_get("verifier")?,
        previous_verifier: row.try_get("previous_verifier")?,
        previous_valid_until: row.try_get("previous_valid_until")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        rotated_at: row.try_get("rotated_at")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_by: row.try_get("revoked_by")?,
        revoked_reason: row.try_get("revoked_reason")?,
    })
}

fn sql(template: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(template.replace("{cols}", COLUMNS))
}

impl Store {
    /// Inserts a key and its audit record in one transaction. A name held by an unrevoked key
    /// is refused with [`StoreError::NameTaken`] and nothing is written.
    pub async fn create_api_key(
        &self,
        key: &NewApiKey,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO api_keys (id, name, scopes, verifier, created_at, created_by, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(&key.scopes)
        .bind(&key.verifier)
        .bind(key.created_at)
        .bind(&key.created_by)
        .bind(key.expires_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(err) if StoreError::is_unique_violation(&err) => {
                return Err(StoreError::NameTaken(key.name.clone()));
            }
            other => other?,
        };
        audit.insert(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates the first admin key if, and only if, no router has bootstrapped this store yet.
    /// `before_commit` runs inside the transaction (the caller writes the key file there); if it
    /// fails, nothing is committed. Returns whether this call bootstrapped.
    pub async fn bootstrap_api_key<F, E>(
        &self,
        key: &NewApiKey,
        audit: &AuditEntry,
        before_commit: F,
    ) -> Result<Result<bool, E>, StoreError>
    where
        F: FnOnce() -> Result<(), E>,
    {
        let mut tx = self.begin_write().await?;
        let won = sqlx::query(
            "INSERT INTO store_meta (key, value) VALUES ('bootstrapped_with', $1)
             ON CONFLICT (key) DO NOTHING RETURNING key",
        )
        .bind(&key.id)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if !won {
            return Ok(Ok(false));
        }
        sqlx::query(
            "INSERT INTO api_keys (id, name, scopes, verifier, created_at, created_by, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(&key.scopes)
        .bind(&key.verifier)
        .bind(key.created_at)
        .bind(&key.created_by)
        .bind(key.expires_at)
        .execute(&mut *tx)
        .await?;
        audit.insert(&mut tx).await?;
        if let Err(err) = before_commit() {
            tx.rollback().await?;
            return Ok(Err(err));
        }
        tx.commit().await?;
        Ok(Ok(true))
    }

    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(sql("SELECT {cols} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// The unrevoked key with this name, if any.
    pub async fn api_key_by_name(&self, name: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row =
            sqlx::query(sql("SELECT {cols} FROM api_keys WHERE name = $1 AND revoked_at IS NULL"))
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    pub async fn list_api_keys(
        &self,
        page: &PageRequest,
        include_revoked: bool,
    ) -> Result<PageSlice<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(sql("SELECT {cols} FROM api_keys
             WHERE ($1 IS NULL OR id > $1) AND ($2 = 1 OR revoked_at IS NULL)
             ORDER BY id LIMIT $3"))
        .bind(&page.after)
        .bind(i64::from(include_revoked))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(self.pool())
        .await?;
        let records = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(PageSlice::from_probe(records, page.limit))
    }

    /// Replaces the key's verifier; the old one stays valid until `previous_valid_until`.
    pub async fn rotate_api_key(
        &self,
        id: &str,
        new_verifier: &str,
        now: UnixMillis,
        previous_valid_until: UnixMillis,
        audit: &AuditEntry,
    ) -> Result<ApiKeyRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sql(
            "UPDATE api_keys SET previous_verifier = verifier, previous_valid_until = $2,
                 verifier = $3, rotated_at = $4
             WHERE id = $1 AND revoked_at IS NULL RETURNING {cols}",
        ))
        .bind(id)
        .bind(previous_valid_until)
        .bind(new_verifier)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(self.why_not_mutable(id).await?);
        };
        audit.insert(&mut tx).await?;
        tx.commit().await?;
        Ok(from_row(&row)?)
    }

    /// Soft-revokes: the row stays for the record, the key stops authenticating at once.
    pub async fn revoke_api_key(
        &self,
        id: &str,
        now: UnixMillis,
        revoked_by: Option<&str>,
        reason: Option<&str>,
        audit: &AuditEntry,
    ) -> Result<ApiKeyRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sql(
            "UPDATE api_keys SET revoked_at = $2, revoked_by = $3, revoked_reason = $4,
                 previous_verifier = NULL, previous_valid_until = NULL
             WHERE id = $1 AND revoked_at IS NULL RETURNING {cols}",
        ))
        .bind(id)
        .bind(now)
        .bind(revoked_by)
        .bind(reason)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(self.why_not_mutable(id).await?);
        };
        audit.insert(&mut tx).await?;
        tx.commit().await?;
        Ok(from_row(&row)?)
    }

    async fn why_not_mutable(&self, id: &str) -> Result<StoreError, StoreError> {
        Ok(match self.api_key(id).await? {
            Some(_) => StoreError::AlreadyRevoked(id.to_string()),
            None => StoreError::NotFound(id.to_string()),
        })
    }

    /// Records use; only ever moves `last_used_at` forward.
    pub async fn touch_api_key(&self, id: &str, at: UnixMillis) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $2
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
        )
        .bind(id)
        .bind(at)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
