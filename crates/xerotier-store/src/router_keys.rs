//! The router's own keys and their phased rotations (SPEC §9). The store keeps what a replica
//! needs to agree with every other: each key (public half, sealed secret, state) and each
//! rotation (kind, phase, old and new key). Phases are the router's to name; the store
//! guarantees the invariants: at most one `current` and one `next` key per kind, at most one
//! unfinished rotation per kind, and a phase moves only from the phase the caller saw.

use sqlx::Row;
use xerotier_core::UnixMillis;

use crate::rows::{all, one, record, sql};
use crate::{AuditEntry, Store, StoreError};

/// What a router key is for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouterKeyStatus {
    /// In force: served, signed with.
    Current,
    /// Being rotated in.
    Next,
    /// No longer served or signed with, still accepted (join signing, until the last join key
    /// it signed expires).
    VerifyOnly,
    /// Dropped: its secret is gone.
    Retired,
}

impl RouterKeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RouterKeyStatus::Current => "current",
            RouterKeyStatus::Next => "next",
            RouterKeyStatus::VerifyOnly => "verify_only",
            RouterKeyStatus::Retired => "retired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Current, Self::Next, Self::VerifyOnly, Self::Retired]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// How a rotation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationOutcome {
    Completed,
    RolledBack,
}

impl RotationOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RotationOutcome::Completed => "completed",
            RotationOutcome::RolledBack => "rolled_back",
        }
    }
}

/// One router key. `secret_sealed` is what the router's sealer made of the secret; the store
/// never sees it in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterKeyRecord {
    pub kid: String,
    pub kind: String,
    pub public_key: String,
    pub secret_sealed: Option<String>,
    pub state: String,
    pub created_at: UnixMillis,
    pub activated_at: Option<UnixMillis>,
    pub retired_at: Option<UnixMillis>,
    /// The rotation that created it (none for a key imported at bootstrap).
    pub rotation_id: Option<String>,
}

impl RouterKeyRecord {
    pub fn status(&self) -> Option<RouterKeyStatus> {
        RouterKeyStatus::parse(&self.state)
    }
}

record!(RouterKeyRecord in "router_keys" {
    kid, kind, public_key, secret_sealed, state, created_at, activated_at, retired_at, rotation_id,
});

/// One rotation of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterKeyRotationRecord {
    pub id: String,
    pub kind: String,
    /// The phase it is in (unfinished) or the last it reached.
    pub phase: String,
    pub old_kid: String,
    pub new_kid: String,
    pub started_at: UnixMillis,
    pub phase_changed_at: UnixMillis,
    pub ended_at: Option<UnixMillis>,
    /// `completed` or `rolled_back` once ended.
    pub outcome: Option<String>,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    /// The kind while unfinished, NULL after (the unique index on it admits one per kind).
    pub open_kind: Option<String>,
}

record!(RouterKeyRotationRecord in "router_key_rotations" {
    id, kind, phase, old_kid, new_kid, started_at, phase_changed_at, ended_at, outcome,
    requested_by, reason, open_kind,
});

/// How a rotation ends: which phase the caller saw, and what becomes of the key that is not
/// kept.
#[derive(Debug, Clone, Copy)]
pub struct RotationEnd<'a> {
    pub rotation_id: &'a str,
    /// The phase the caller read; the end happens only if the rotation is still in it.
    pub from_phase: &'a str,
    /// The phase recorded as the last reached (`standby` for a completion, `rollback`).
    pub final_phase: &'a str,
    pub outcome: RotationOutcome,
    /// The state of the key that is not kept: `VerifyOnly` or `Retired` (secret deleted).
    pub dropped_state: RouterKeyStatus,
    pub at: UnixMillis,
}

fn conflict(message: String) -> StoreError {
    StoreError::RouterKeyConflict(message)
}

impl Store {
    /// Records `key` as its kind's `current` key unless the kind already has keys (the first
    /// start after the upgrade, racing replicas: one import wins, the others change nothing).
    /// For the join-signing kind, join keys minted before (no `signing_kid`) are attributed to
    /// it in the same transaction. Returns whether this call imported it.
    pub async fn import_router_key(&self, key: &RouterKeyRecord) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(sql::<RouterKeyRecord>(
            "INSERT INTO {table} ({cols})
             SELECT $1, $2, $3, $4, 'current', $5, $5, NULL, NULL
             WHERE NOT EXISTS (SELECT 1 FROM router_keys WHERE kind = $2)
             ON CONFLICT DO NOTHING",
        ))
        .bind(&key.kid)
        .bind(&key.kind)
        .bind(&key.public_key)
        .bind(&key.secret_sealed)
        .bind(key.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted && key.kind == "join_signing" {
            sqlx::query("UPDATE join_keys SET signing_kid = $1 WHERE signing_kid IS NULL")
                .bind(&key.kid)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Every key of `kind` (oldest first), retired ones included.
    pub async fn router_keys(&self, kind: &str) -> Result<Vec<RouterKeyRecord>, StoreError> {
        self.fetch_all(
            sqlx::query(sql::<RouterKeyRecord>(
                "SELECT {cols} FROM {table} WHERE kind = $1 ORDER BY created_at, kid",
            ))
            .bind(kind),
        )
        .await
    }

    pub async fn router_key(&self, kid: &str) -> Result<Option<RouterKeyRecord>, StoreError> {
        self.fetch_optional(
            sqlx::query(sql::<RouterKeyRecord>("SELECT {cols} FROM {table} WHERE kid = $1"))
                .bind(kid),
        )
        .await
    }

    /// The unfinished rotation of `kind`, if any.
    pub async fn open_router_key_rotation(
        &self,
        kind: &str,
    ) -> Result<Option<RouterKeyRotationRecord>, StoreError> {
        self.fetch_optional(
            sqlx::query(sql::<RouterKeyRotationRecord>(
                "SELECT {cols} FROM {table} WHERE open_kind = $1",
            ))
            .bind(kind),
        )
        .await
    }

    /// The latest rotation of `kind` (finished or not).
    pub async fn last_router_key_rotation(
        &self,
        kind: &str,
    ) -> Result<Option<RouterKeyRotationRecord>, StoreError> {
        self.fetch_optional(
            sqlx::query(sql::<RouterKeyRotationRecord>(
                "SELECT {cols} FROM {table} WHERE kind = $1 ORDER BY started_at DESC, id DESC
                 LIMIT 1",
            ))
            .bind(kind),
        )
        .await
    }

    /// Starts a rotation (phase `init`) with its new key (`next`) and audit record. Refused
    /// with [`StoreError::RouterKeyConflict`] when the kind already has an unfinished rotation
    /// (of two racing starts exactly one wins: the unique index on `open_kind`).
    pub async fn start_router_key_rotation(
        &self,
        rotation: &RouterKeyRotationRecord,
        new_key: &RouterKeyRecord,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let opened = sqlx::query(sql::<RouterKeyRotationRecord>(
            "INSERT INTO {table} ({cols}) VALUES ($1, $2, $3, $4, $5, $6, $6, NULL, NULL, $7, $8, $2)",
        ))
        .bind(&rotation.id)
        .bind(&rotation.kind)
        .bind(&rotation.phase)
        .bind(&rotation.old_kid)
        .bind(&rotation.new_kid)
        .bind(rotation.started_at)
        .bind(&rotation.requested_by)
        .bind(&rotation.reason)
        .execute(&mut *tx)
        .await;
        match opened {
            Ok(_) => {}
            Err(err) if StoreError::is_unique_violation(&err) => {
                tx.rollback().await?;
                return Err(conflict(format!(
                    "a rotation of the {} key is already in progress",
                    rotation.kind
                )));
            }
            Err(err) => return Err(err.into()),
        }
        let key = sqlx::query(sql::<RouterKeyRecord>(
            "INSERT INTO {table} ({cols}) VALUES ($1, $2, $3, $4, 'next', $5, NULL, NULL, $6)",
        ))
        .bind(&new_key.kid)
        .bind(&new_key.kind)
        .bind(&new_key.public_key)
        .bind(&new_key.secret_sealed)
        .bind(new_key.created_at)
        .bind(&rotation.id)
        .execute(&mut *tx)
        .await;
        match key {
            Ok(_) => {}
            Err(err) if StoreError::is_unique_violation(&err) => {
                tx.rollback().await?;
                return Err(conflict(format!(
                    "key {} already exists or the {} key already has a next key",
                    new_key.kid, new_key.kind
                )));
            }
            Err(err) => return Err(err.into()),
        }
        audit.commit_with(tx).await
    }

    /// Moves an unfinished rotation from `from` to `to`, with its audit record; refused (a
    /// conflict, nothing written) when it is no longer in `from`.
    pub async fn advance_router_key_rotation(
        &self,
        rotation_id: &str,
        from: &str,
        to: &str,
        at: UnixMillis,
        audit: &AuditEntry,
    ) -> Result<RouterKeyRotationRecord, StoreError> {
        let query = sqlx::query(sql::<RouterKeyRotationRecord>(
            "UPDATE {table} SET phase = $3, phase_changed_at = $4
             WHERE id = $1 AND phase = $2 AND ended_at IS NULL RETURNING {cols}",
        ))
        .bind(rotation_id)
        .bind(from)
        .bind(to)
        .bind(at);
        self.update_audited(query, &[], audit).await?.ok_or_else(|| {
            conflict(format!("rotation {rotation_id} is no longer in phase {from}; reread it"))
        })
    }

    /// Ends an unfinished rotation: completed (the new key becomes current, the old one
    /// `end.dropped_state`) or rolled back (the old key stays current, the new one
    /// `end.dropped_state`), in one transaction with its audit record.
    pub async fn end_router_key_rotation(
        &self,
        end: RotationEnd<'_>,
        audit: &AuditEntry,
    ) -> Result<RouterKeyRotationRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sql::<RouterKeyRotationRecord>(
            "UPDATE {table} SET phase = $3, phase_changed_at = $4, ended_at = $4, outcome = $5,
                 open_kind = NULL
             WHERE id = $1 AND phase = $2 AND ended_at IS NULL RETURNING {cols}",
        ))
        .bind(end.rotation_id)
        .bind(end.from_phase)
        .bind(end.final_phase)
        .bind(end.at)
        .bind(end.outcome.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(rotation) = one::<RouterKeyRotationRecord>(row)? else {
            tx.rollback().await?;
            return Err(conflict(format!(
                "rotation {} is no longer in phase {}; reread it",
                end.rotation_id, end.from_phase
            )));
        };
        let (dropped, kept) = match end.outcome {
            RotationOutcome::Completed => (&rotation.old_kid, Some(&rotation.new_kid)),
            RotationOutcome::RolledBack => (&rotation.new_kid, None),
        };
        // Demote first: the kind may hold one `current` key at a time.
        set_dropped(&mut tx, dropped, end.dropped_state, end.at).await?;
        if let Some(kept) = kept {
            sqlx::query(
                "UPDATE router_keys SET state = 'current', activated_at = $2 WHERE kid = $1",
            )
            .bind(kept)
            .bind(end.at)
            .execute(&mut *tx)
            .await?;
        }
        audit.commit_with(tx).await?;
        Ok(rotation)
    }

    /// Drops a `verify_only` key: retired, its secret deleted, with its audit record. `false`
    /// (nothing written) when it was not `verify_only`.
    pub async fn drop_router_key(
        &self,
        kid: &str,
        at: UnixMillis,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let query = sqlx::query(sql::<RouterKeyRecord>(
            "UPDATE {table} SET state = 'retired', retired_at = $2, secret_sealed = NULL
             WHERE kid = $1 AND state = 'verify_only' RETURNING {cols}",
        ))
        .bind(kid)
        .bind(at);
        Ok(self.update_audited::<RouterKeyRecord>(query, &[], audit).await?.is_some())
    }

    /// Join keys signed by `kid` that could still enroll an agent at `now` (unconsumed,
    /// unrevoked, unexpired).
    pub async fn usable_join_keys_signed_by(
        &self,
        kid: &str,
        now: UnixMillis,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM join_keys WHERE signing_kid = $1 AND consumed_at IS NULL
                 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(kid)
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// Every rotation of `kind`, newest first (at most `limit`).
    pub async fn router_key_rotations(
        &self,
        kind: &str,
        limit: i64,
    ) -> Result<Vec<RouterKeyRotationRecord>, StoreError> {
        let rows = sqlx::query(sql::<RouterKeyRotationRecord>(
            "SELECT {cols} FROM {table} WHERE kind = $1 ORDER BY started_at DESC, id DESC LIMIT $2",
        ))
        .bind(kind)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        all(&rows)
    }
}

async fn set_dropped(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    kid: &str,
    state: RouterKeyStatus,
    at: UnixMillis,
) -> Result<(), StoreError> {
    let statement = match state {
        RouterKeyStatus::Retired => {
            "UPDATE router_keys SET state = 'retired', retired_at = $2, secret_sealed = NULL
             WHERE kid = $1"
        }
        // `retired_at` is when it stopped being in force: a mesh key is accepted by the signed
        // key fetch for the overlap window after it.
        _ => "UPDATE router_keys SET state = 'verify_only', retired_at = $2 WHERE kid = $1",
    };
    sqlx::query(statement).bind(kid).bind(at).execute(&mut **tx).await?;
    Ok(())
}
