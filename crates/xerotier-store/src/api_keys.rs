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
    /// Authenticated uses of the previous value since the last rotation (all replicas).
    pub grace_uses: i64,
    pub grace_last_used_at: Option<UnixMillis>,
    /// The client address of the latest of those uses, as the router saw it.
    pub grace_last_used_from: Option<String>,
    /// An end of the grace window scheduled for when the previous value has been unused this
    /// long (milliseconds).
    pub grace_end_quiet_ms: Option<i64>,
    pub grace_end_requested_at: Option<UnixMillis>,
}

/// Uses of a key's previous value counted by one router since its last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraceUses {
    pub key_id: String,
    /// The rotation the uses belong to (`rotated_at`): uses of an older rotation's value are
    /// dropped rather than added to a newer one's count.
    pub rotated_at: UnixMillis,
    pub count: i64,
    pub last_at: UnixMillis,
    pub last_from: Option<String>,
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
    expires_at, last_used_at, rotated_at, revoked_at, revoked_by, revoked_reason, grace_uses,
    grace_last_used_at, grace_last_used_from, grace_end_quiet_ms, grace_end_requested_at,
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

    /// Replaces the key's verifier; the old one stays valid until `previous_valid_until`. The
    /// previous rotation's evidence and any scheduled end of its grace are reset.
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
                 verifier = $3, rotated_at = $4, grace_uses = 0, grace_last_used_at = NULL,
                 grace_last_used_from = NULL, grace_end_quiet_ms = NULL,
                 grace_end_requested_at = NULL
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
                 previous_verifier = NULL, previous_valid_until = NULL,
                 grace_end_quiet_ms = NULL, grace_end_requested_at = NULL
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

    /// Adds one router's counted uses of previous values, each an atomic increment (so several
    /// replicas' counts add up); the latest use only ever moves forward. Uses of a rotation
    /// that has since been replaced are dropped.
    pub async fn add_grace_uses(&self, uses: &[GraceUses]) -> Result<(), StoreError> {
        for use_ in uses {
            sqlx::query(
                "UPDATE api_keys SET grace_uses = grace_uses + $3,
                     grace_last_used_from = CASE
                         WHEN grace_last_used_at IS NULL OR grace_last_used_at <= $4 THEN $5
                         ELSE grace_last_used_from END,
                     grace_last_used_at = CASE
                         WHEN grace_last_used_at IS NULL OR grace_last_used_at < $4 THEN $4
                         ELSE grace_last_used_at END
                 WHERE id = $1 AND rotated_at = $2",
            )
            .bind(&use_.key_id)
            .bind(use_.rotated_at)
            .bind(use_.count)
            .bind(use_.last_at)
            .bind(&use_.last_from)
            .execute(self.pool())
            .await?;
        }
        Ok(())
    }

    /// Ends the open grace window of `id` now: its previous value stops being accepted
    /// (`previous_valid_until` becomes `now`, the evidence stays). Refused with
    /// [`StoreError::NoGraceWindow`] (nothing written) when there is none open at `now`.
    /// `only_if_scheduled`: only if an end when quiet is still scheduled (the background
    /// check: a rotation or another replica's end in between wins).
    pub async fn end_api_key_grace(
        &self,
        id: &str,
        now: UnixMillis,
        only_if_scheduled: bool,
        audit: &AuditEntry,
    ) -> Result<ApiKeyRecord, StoreError> {
        let query = sqlx::query(sql::<ApiKeyRecord>(
            "UPDATE {table} SET previous_verifier = NULL, previous_valid_until = $2,
                 grace_end_quiet_ms = NULL, grace_end_requested_at = NULL
             WHERE id = $1 AND revoked_at IS NULL AND previous_verifier IS NOT NULL
               AND previous_valid_until > $2 AND ($3 = 0 OR grace_end_quiet_ms IS NOT NULL)
             RETURNING {cols}",
        ))
        .bind(id)
        .bind(now)
        .bind(i64::from(only_if_scheduled));
        match self.update_audited(query, &[], audit).await? {
            Some(key) => Ok(key),
            None => Err(self.why_no_grace(id).await?),
        }
    }

    /// Schedules the end of `id`'s open grace window for when its previous value has been
    /// unused for `quiet_ms`. Refused like [`Self::end_api_key_grace`].
    pub async fn schedule_api_key_grace_end(
        &self,
        id: &str,
        now: UnixMillis,
        quiet_ms: i64,
        audit: &AuditEntry,
    ) -> Result<ApiKeyRecord, StoreError> {
        let query = sqlx::query(sql::<ApiKeyRecord>(
            "UPDATE {table} SET grace_end_quiet_ms = $3, grace_end_requested_at = $2
             WHERE id = $1 AND revoked_at IS NULL AND previous_verifier IS NOT NULL
               AND previous_valid_until > $2
             RETURNING {cols}",
        ))
        .bind(id)
        .bind(now)
        .bind(quiet_ms);
        match self.update_audited(query, &[], audit).await? {
            Some(key) => Ok(key),
            None => Err(self.why_no_grace(id).await?),
        }
    }

    /// Keys whose grace window is open at `now` with an end scheduled for when quiet.
    pub async fn api_keys_ending_grace_when_quiet(
        &self,
        now: UnixMillis,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.fetch_all(
            sqlx::query(sql::<ApiKeyRecord>(
                "SELECT {cols} FROM {table}
                 WHERE grace_end_quiet_ms IS NOT NULL AND revoked_at IS NULL
                   AND previous_verifier IS NOT NULL AND previous_valid_until > $1
                 ORDER BY id",
            ))
            .bind(now),
        )
        .await
    }

    async fn why_no_grace(&self, id: &str) -> Result<StoreError, StoreError> {
        Ok(match self.api_key(id).await? {
            None => StoreError::NotFound(id.to_string()),
            Some(key) if key.revoked_at.is_some() => StoreError::AlreadyRevoked(id.to_string()),
            Some(_) => StoreError::NoGraceWindow(id.to_string()),
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
