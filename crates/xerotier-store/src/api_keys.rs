use sqlx::{Any, Transaction};
use xerotier_core::UnixMillis;

use crate::rows::{Record, record, sql};
use crate::{AuditEntry, Backend, PageRequest, PageSlice, Store, StoreError};

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

record!(ApiKeyRecord in "api_keys" {
    id, name, scopes, verifier, previous_verifier, previous_valid_until, created_at, created_by,
    expires_at, last_used_at, rotated_at, revoked_at, revoked_by, revoked_reason,
});

impl NewApiKey {
    /// Inserts the key in `tx`; the raw error, so that a caller can tell a taken name.
    async fn insert(&self, tx: &mut Transaction<'static, Any>) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, scopes, verifier, created_at, created_by, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&self.id)
        .bind(&self.name)
        .bind(&self.scopes)
        .bind(&self.verifier)
        .bind(self.created_at)
        .bind(&self.created_by)
        .bind(self.expires_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
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
        let inserted = key.insert(&mut tx).await;
        match inserted {
            Err(err) if StoreError::is_unique_violation(&err) => {
                return Err(StoreError::NameTaken(key.name.clone()));
            }
            other => other?,
        };
        audit.commit_with(tx).await
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
        key.insert(&mut tx).await?;
        audit.insert(&mut tx).await?;
        if let Err(err) = before_commit() {
            tx.rollback().await?;
            return Ok(Err(err));
        }
        tx.commit().await?;
        Ok(Ok(true))
    }

    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.get(id).await
    }

    /// The unrevoked key with this name, if any.
    pub async fn api_key_by_name(&self, name: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.fetch_optional(
            sqlx::query(sql::<ApiKeyRecord>(
                "SELECT {cols} FROM {table} WHERE name = $1 AND revoked_at IS NULL",
            ))
            .bind(name),
        )
        .await
    }

    pub async fn list_api_keys(
        &self,
        page: &PageRequest,
        include_revoked: bool,
    ) -> Result<PageSlice<ApiKeyRecord>, StoreError> {
        self.page(page, "$3 = 1 OR revoked_at IS NULL", |q| q.bind(i64::from(include_revoked)))
            .await
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
        let query = sqlx::query(sql::<ApiKeyRecord>(
            "UPDATE {table} SET previous_verifier = verifier, previous_valid_until = $2,
                 verifier = $3, rotated_at = $4
             WHERE id = $1 AND revoked_at IS NULL RETURNING {cols}",
        ))
        .bind(id)
        .bind(previous_valid_until)
        .bind(new_verifier)
        .bind(now);
        match self.update_audited(query, &[], audit).await? {
            Some(key) => Ok(key),
            None => Err(self.why_not_revocable::<ApiKeyRecord>(id, id.to_string()).await?),
        }
    }

    /// Soft-revokes: the row stays for the record, the key stops authenticating at once.
    ///
    /// With `keep_a_management_key`, the last usable key with the `management` scope is not
    /// revoked ([`StoreError::LastManagementKey`], nothing written): the condition is part of
    /// the `UPDATE`, and revocations are serialized (SQLite's write lock; an advisory lock on
    /// PostgreSQL, after which the `UPDATE` reads what every earlier one committed), so two
    /// concurrent revocations of the last two such keys cannot both succeed.
    pub async fn revoke_api_key(
        &self,
        id: &str,
        now: UnixMillis,
        revoked_by: Option<&str>,
        reason: Option<&str>,
        keep_a_management_key: bool,
        audit: &AuditEntry,
    ) -> Result<ApiKeyRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        self.serialize_key_revocations(&mut tx).await?;
        let revoked = sqlx::query(sql::<ApiKeyRecord>(
            "UPDATE {table} SET revoked_at = $2, revoked_by = $3, revoked_reason = $4,
                 previous_verifier = NULL, previous_valid_until = NULL
             WHERE id = $1 AND revoked_at IS NULL
               AND ($5 = 0
                    OR (',' || scopes || ',') NOT LIKE '%,management,%'
                    OR (expires_at IS NOT NULL AND expires_at <= $2)
                    OR EXISTS (SELECT 1 FROM {table} other
                               WHERE other.id <> $1 AND other.revoked_at IS NULL
                                 AND (other.expires_at IS NULL OR other.expires_at > $2)
                                 AND (',' || other.scopes || ',') LIKE '%,management,%'))
             RETURNING {cols}",
        ))
        .bind(id)
        .bind(now)
        .bind(revoked_by)
        .bind(reason)
        .bind(i64::from(keep_a_management_key))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = revoked {
            let key = ApiKeyRecord::from_row(&row)?;
            audit.commit_with(tx).await?;
            return Ok(key);
        }
        tx.rollback().await?;
        Err(match self.api_key(id).await? {
            None => StoreError::NotFound(id.to_string()),
            Some(key) if key.revoked_at.is_some() => StoreError::AlreadyRevoked(id.to_string()),
            Some(_) => StoreError::LastManagementKey(id.to_string()),
        })
    }

    /// Makes concurrent API key revocations take turns, inside `tx`: on PostgreSQL an
    /// advisory lock held until `tx` ends; on SQLite `BEGIN IMMEDIATE` already did.
    async fn serialize_key_revocations(
        &self,
        tx: &mut Transaction<'static, Any>,
    ) -> Result<(), StoreError> {
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7272)").execute(&mut **tx).await?;
        }
        Ok(())
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
