//! Fleet-wide operations (migration 16): the operation row, its plan (one row per target, fixed
//! at creation), and the runner lease that lets exactly one replica execute it at a time.

use xerotier_core::UnixMillis;

use sqlx::Row;

use crate::rows::{Record, record, sql};
use crate::{AgentRecord, AuditEntry, JoinKeyRecord, PageRequest, PageSlice, Store, StoreError};

/// One operation. `status`, `kind` and the targets' statuses are the wire strings of
/// `xerotier_proto::operations` enums; counts are recomputed from the targets at each change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRecord {
    pub id: String,
    pub kind: String,
    /// The selector as given, JSON.
    pub selector: String,
    pub reason: String,
    pub requested_by: Option<String>,
    pub requested_by_name: Option<String>,
    /// The router's id of the request that created it: the per-credential audit records the
    /// runner writes carry it too.
    pub request_id: Option<String>,
    pub status: String,
    pub wave_size: i64,
    pub max_failures: i64,
    pub wave_count: i64,
    pub target_count: i64,
    pub succeeded_count: i64,
    pub failed_count: i64,
    pub skipped_count: i64,
    pub cancelled_count: i64,
    pub failure_baseline: i64,
    pub current_wave: i64,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub finished_at: Option<UnixMillis>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<UnixMillis>,
}

record!(OperationRecord in "operations" {
    id, kind, selector, reason, requested_by, requested_by_name, request_id, status, wave_size,
    max_failures, wave_count, target_count, succeeded_count, failed_count, skipped_count,
    cancelled_count, failure_baseline, current_wave, created_at, updated_at, finished_at,
    lease_owner, lease_expires_at,
});

/// One target of an operation's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationTargetRecord {
    pub operation_id: String,
    pub target_id: String,
    pub target_name: Option<String>,
    /// Order in the plan (0-based).
    pub position: i64,
    /// 1-based.
    pub wave: i64,
    pub status: String,
    pub result_reason: Option<String>,
    pub rotation_request_id: Option<String>,
    pub finished_at: Option<UnixMillis>,
}

record!(OperationTargetRecord in "operation_targets" {
    operation_id, target_id, target_name, position, wave, status, result_reason,
    rotation_request_id, finished_at,
});

/// The statuses the runner works on: `running` ones, and `cancelled` ones whose rotations in
/// flight have not all ended yet (`finished_at` unset).
const UNFINISHED: &str = "(status = 'running' OR (status = 'cancelled' AND finished_at IS NULL))";

/// Recomputes an operation's counts from its targets (one statement, both backends).
const RECOUNT: &str = "UPDATE operations SET
        succeeded_count = (SELECT COUNT(*) FROM operation_targets t WHERE t.operation_id = $1 AND t.status = 'succeeded'),
        failed_count = (SELECT COUNT(*) FROM operation_targets t WHERE t.operation_id = $1 AND t.status = 'failed'),
        skipped_count = (SELECT COUNT(*) FROM operation_targets t WHERE t.operation_id = $1 AND t.status = 'skipped'),
        cancelled_count = (SELECT COUNT(*) FROM operation_targets t WHERE t.operation_id = $1 AND t.status = 'cancelled'),
        updated_at = $2
     WHERE id = $1";

/// The statuses an operation counts, each with its count column.
const COUNTED: [(&str, &str); 4] = [
    ("succeeded", "succeeded_count"),
    ("failed", "failed_count"),
    ("skipped", "skipped_count"),
    ("cancelled", "cancelled_count"),
];

/// The update of an operation's counts after one target moved from one of `from` to `to`.
/// From uncounted statuses only (pending, running: every step of the runner) the count of
/// `to` goes up by one; a recount would read every target of the operation, for each of
/// its 10,000 targets' several steps. From a counted status, which one it was is not known
/// here: a recount.
fn count_change(from: &[&str], to: &str) -> sqlx::AssertSqlSafe<String> {
    let counted = |status: &str| COUNTED.iter().find(|(s, _)| *s == status).map(|(_, c)| *c);
    if from.iter().any(|status| counted(status).is_some()) {
        return sqlx::AssertSqlSafe(RECOUNT.to_string());
    }
    sqlx::AssertSqlSafe(match counted(to) {
        Some(column) => {
            format!("UPDATE operations SET {column} = {column} + 1, updated_at = $2 WHERE id = $1")
        }
        None => "UPDATE operations SET updated_at = $2 WHERE id = $1".to_string(),
    })
}

/// A running target with the state of the rotation it requested, read together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInFlight {
    pub target: OperationTargetRecord,
    /// The requested rotation's status; `None` when no rotation is recorded or it is missing.
    pub rotation_status: Option<String>,
    pub rotation_failure_reason: Option<String>,
}

impl Store {
    /// Creates the operation and its whole plan with the creation's audit record, in one
    /// transaction.
    pub async fn create_operation(
        &self,
        operation: &OperationRecord,
        targets: &[OperationTargetRecord],
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(sql::<OperationRecord>(
            "INSERT INTO {table} ({cols}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                 $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)",
        ))
        .bind(&operation.id)
        .bind(&operation.kind)
        .bind(&operation.selector)
        .bind(&operation.reason)
        .bind(&operation.requested_by)
        .bind(&operation.requested_by_name)
        .bind(&operation.request_id)
        .bind(&operation.status)
        .bind(operation.wave_size)
        .bind(operation.max_failures)
        .bind(operation.wave_count)
        .bind(operation.target_count)
        .bind(operation.succeeded_count)
        .bind(operation.failed_count)
        .bind(operation.skipped_count)
        .bind(operation.cancelled_count)
        .bind(operation.failure_baseline)
        .bind(operation.current_wave)
        .bind(operation.created_at)
        .bind(operation.updated_at)
        .bind(operation.finished_at)
        .bind(&operation.lease_owner)
        .bind(operation.lease_expires_at)
        .execute(&mut *tx)
        .await?;
        for target in targets {
            sqlx::query(sql::<OperationTargetRecord>(
                "INSERT INTO {table} ({cols}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            ))
            .bind(&target.operation_id)
            .bind(&target.target_id)
            .bind(&target.target_name)
            .bind(target.position)
            .bind(target.wave)
            .bind(&target.status)
            .bind(&target.result_reason)
            .bind(&target.rotation_request_id)
            .bind(target.finished_at)
            .execute(&mut *tx)
            .await?;
        }
        audit.commit_with(tx).await
    }

    pub async fn operation(&self, id: &str) -> Result<Option<OperationRecord>, StoreError> {
        self.get(id).await
    }

    /// The plan, in order.
    pub async fn operation_targets(
        &self,
        id: &str,
    ) -> Result<Vec<OperationTargetRecord>, StoreError> {
        self.fetch_all(
            sqlx::query(sql::<OperationTargetRecord>(
                "SELECT {cols} FROM {table} WHERE operation_id = $1 ORDER BY position",
            ))
            .bind(id),
        )
        .await
    }

    /// The running targets, in order, each with its rotation's status: one read for a whole
    /// wave in flight, however many targets the operation has.
    pub async fn operation_targets_in_flight(
        &self,
        id: &str,
    ) -> Result<Vec<TargetInFlight>, StoreError> {
        let rows = sqlx::query(sql::<OperationTargetRecord>(
            "SELECT {cols},
                 (SELECT r.status FROM curve_rotations r
                   WHERE r.id = operation_targets.rotation_request_id) AS rotation_status,
                 (SELECT r.failure_reason FROM curve_rotations r
                   WHERE r.id = operation_targets.rotation_request_id) AS rotation_failure_reason
             FROM {table} WHERE operation_id = $1 AND status = 'running' ORDER BY position",
        ))
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TargetInFlight {
                    target: OperationTargetRecord::from_row(row)?,
                    rotation_status: row.try_get("rotation_status")?,
                    rotation_failure_reason: row.try_get("rotation_failure_reason")?,
                })
            })
            .collect()
    }

    pub async fn list_operations(
        &self,
        page: &PageRequest,
    ) -> Result<PageSlice<OperationRecord>, StoreError> {
        self.page(page, "1 = 1", |q| q).await
    }

    /// Operations a runner should execute whose lease is free, expired or `owner`'s.
    pub async fn claimable_operations(
        &self,
        owner: &str,
        now: UnixMillis,
    ) -> Result<Vec<String>, StoreError> {
        let ops: Vec<OperationRecord> = self
            .fetch_all(
                sqlx::query(sql::<OperationRecord>(&format!(
                    "SELECT {{cols}} FROM {{table}} WHERE {UNFINISHED}
                     AND (lease_owner IS NULL OR lease_owner = $1 OR lease_expires_at <= $2)
                     ORDER BY id"
                )))
                .bind(owner)
                .bind(now),
            )
            .await?;
        Ok(ops.into_iter().map(|o| o.id).collect())
    }

    /// Takes (or renews) the runner lease of `id` until `until`: one conditional update, so of
    /// replicas claiming at once exactly one wins. `None`: someone else holds it, or the
    /// operation needs no runner any more.
    pub async fn claim_operation(
        &self,
        id: &str,
        owner: &str,
        now: UnixMillis,
        until: UnixMillis,
    ) -> Result<Option<OperationRecord>, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sql::<OperationRecord>(&format!(
            "UPDATE {{table}} SET lease_owner = $2, lease_expires_at = $4
             WHERE id = $1 AND {UNFINISHED}
             AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires_at <= $3)
             RETURNING {{cols}}"
        )))
        .bind(id)
        .bind(owner)
        .bind(now)
        .bind(until)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        crate::rows::one(row)
    }

    /// Gives the lease up (a stopping router), so a restarted one resumes at once.
    pub async fn release_operation(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE operations SET lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves one target from one of `from` to `status`, and recounts. False when the target
    /// was not in one of `from` (cancelled meanwhile, say): nothing changed.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_operation_target(
        &self,
        operation_id: &str,
        target_id: &str,
        from: &[&str],
        status: &str,
        reason: Option<&str>,
        rotation_request_id: Option<&str>,
        finished_at: Option<UnixMillis>,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let from_list: Vec<String> = from.iter().map(|s| format!("'{s}'")).collect();
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE operation_targets SET status = $3, result_reason = $4,
                 rotation_request_id = COALESCE($5, rotation_request_id), finished_at = $6
             WHERE operation_id = $1 AND target_id = $2 AND status IN ({})",
            from_list.join(", ")
        )))
        .bind(operation_id)
        .bind(target_id)
        .bind(status)
        .bind(reason)
        .bind(rotation_request_id)
        .bind(finished_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if changed {
            sqlx::query(count_change(from, status))
                .bind(operation_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Records the wave the runner is on.
    pub async fn set_operation_wave(
        &self,
        id: &str,
        wave: i64,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE operations SET current_wave = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(wave)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves the operation from `from` to `to`, with its audit record: `None` (nothing
    /// written) when it was not in `from`. `finish` sets `finished_at`; `cancel_pending`
    /// cancels every pending target; `retry_failed` makes failed targets pending again;
    /// `rebaseline` starts counting failures afresh (a resume).
    #[allow(clippy::too_many_arguments)]
    pub async fn transition_operation(
        &self,
        id: &str,
        from: &str,
        to: &str,
        now: UnixMillis,
        finish: bool,
        cancel_pending: bool,
        retry_failed: bool,
        audit: &AuditEntry,
    ) -> Result<Option<OperationRecord>, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sql::<OperationRecord>(
            "UPDATE {table} SET status = $3, updated_at = $4,
                 finished_at = CASE WHEN $5 = 1 THEN $4 ELSE finished_at END
             WHERE id = $1 AND status = $2 AND finished_at IS NULL RETURNING {cols}",
        ))
        .bind(id)
        .bind(from)
        .bind(to)
        .bind(now)
        .bind(i64::from(finish))
        .fetch_optional(&mut *tx)
        .await?;
        if row.is_none() {
            tx.rollback().await?;
            return Ok(None);
        }
        if cancel_pending {
            sqlx::query(
                "UPDATE operation_targets SET status = 'cancelled', result_reason = 'operation cancelled',
                     finished_at = $2
                 WHERE operation_id = $1 AND status = 'pending'",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if retry_failed {
            sqlx::query(
                "UPDATE operation_targets SET status = 'pending', result_reason = NULL,
                     rotation_request_id = NULL, finished_at = NULL
                 WHERE operation_id = $1 AND status = 'failed'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(RECOUNT).bind(id).bind(now).execute(&mut *tx).await?;
        if to == "running" {
            // A resume: the threshold counts failures from here on.
            sqlx::query("UPDATE operations SET failure_baseline = failed_count WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(sql::<OperationRecord>("SELECT {cols} FROM {table} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        audit.commit_with(tx).await?;
        crate::rows::one(row)
    }

    /// Live (unrevoked) agents, in id order.
    pub async fn live_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.fetch_all(sqlx::query(sql::<AgentRecord>(
            "SELECT {cols} FROM {table} WHERE revoked_at IS NULL ORDER BY id",
        )))
        .await
    }

    /// Live agents enrolled through a join key minted with API key `key_id`.
    pub async fn live_agents_minted_by(
        &self,
        key_id: &str,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        self.fetch_all(
            sqlx::query(sql::<AgentRecord>(
                "SELECT {cols} FROM {table} WHERE revoked_at IS NULL AND join_key_id IN
                     (SELECT id FROM join_keys WHERE created_by = $1)
                 ORDER BY id",
            ))
            .bind(key_id),
        )
        .await
    }

    /// Join keys that are unconsumed, unrevoked and unexpired at `now`, in id order.
    pub async fn usable_join_keys(
        &self,
        now: UnixMillis,
    ) -> Result<Vec<JoinKeyRecord>, StoreError> {
        self.fetch_all(
            sqlx::query(sql::<JoinKeyRecord>(
                "SELECT {cols} FROM {table}
                 WHERE consumed_at IS NULL AND revoked_at IS NULL AND expires_at > $1 ORDER BY id",
            ))
            .bind(now),
        )
        .await
    }
}
