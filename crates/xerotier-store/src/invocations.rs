use xerotier_core::UnixMillis;

use crate::rows::{self, AnyQuery, Record, record, sql};
use crate::{AuditEntry, Backend, PageRequest, PageSlice, Store, StoreError};

/// A tool invocation. `status` is `queued`, `running`, `succeeded`, `failed`, `cancelled` or
/// `timed_out`; a `queued` one with an `agent_id` is on its way to that agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationRecord {
    pub id: String,
    pub tool: String,
    pub workspace: String,
    /// The arguments, JSON.
    pub args: String,
    pub status: String,
    pub agent_id: Option<String>,
    pub created_at: UnixMillis,
    /// The API key id that asked for it.
    pub created_by: Option<String>,
    pub dispatched_at: Option<UnixMillis>,
    pub started_at: Option<UnixMillis>,
    pub finished_at: Option<UnixMillis>,
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub error: Option<String>,
    pub credential_generation: Option<i64>,
    pub cancel_requested_at: Option<UnixMillis>,
}

#[derive(Debug, Clone)]
pub struct NewInvocation {
    pub id: String,
    pub tool: String,
    pub workspace: String,
    pub args: String,
    pub created_at: UnixMillis,
    pub created_by: Option<String>,
    /// The agent it is claimed for as it is created (dispatched at `created_at`), when the
    /// router chose one at once; `None` leaves it in the queue for dispatch. Claiming in the
    /// creating transaction saves the claim's own commit; nobody else can claim it in between,
    /// because nobody else can see it before it exists. An agent paused (entirely, or for this
    /// workspace) is not claimed: the check is part of the creating statement, so a pause
    /// committed before it always counts.
    pub claimed_by: Option<String>,
}

/// How an invocation ended, as its agent (or the router, for one that was lost) reports it.
#[derive(Debug, Clone)]
pub struct InvocationEnd {
    pub status: String,
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub error: Option<String>,
    pub started_at: Option<UnixMillis>,
    pub finished_at: UnixMillis,
    pub credential_generation: Option<i64>,
}

/// Filters for listing invocations; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct InvocationFilter {
    /// Only those created by this API key.
    pub created_by: Option<String>,
    pub status: Option<String>,
    pub agent_id: Option<String>,
    pub workspace: Option<String>,
    pub tool: Option<String>,
}

/// What a cancel request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It had not reached an agent: it is `cancelled` now.
    Cancelled(InvocationRecord),
    /// An agent has it: the request is recorded and the agent must stop it.
    Requested(InvocationRecord),
    /// It had already ended.
    AlreadyFinished(InvocationRecord),
}

record!(InvocationRecord in "invocations" {
    id, tool, workspace, args, status, agent_id, created_at, created_by, dispatched_at,
    started_at, finished_at, exit_code, stdout, stderr, stdout_truncated, stderr_truncated, error,
    credential_generation, cancel_requested_at,
});

impl Store {
    /// Runs one conditional `UPDATE … RETURNING` as a transaction of its own; true when it
    /// changed a row (its condition held).
    ///
    /// One statement alone, not wrapped in `BEGIN … COMMIT`: a statement outside a transaction
    /// is one (it commits, durably, when it completes), and this saves two round trips to the
    /// database per state change. SQLite takes the write lock as the statement begins (waiting
    /// out `busy_timeout`, as `BEGIN IMMEDIATE` does). The statement is run to its end
    /// (`fetch_all`), so a failed commit is this call's error, never lost with a dropped cursor.
    async fn update_one(&self, query: AnyQuery<'_>) -> Result<bool, StoreError> {
        let rows = query.fetch_all(self.pool()).await?;
        Ok(!rows.is_empty())
    }

    /// [`Self::update_one`] for an update that returns the invocation's columns: the record as
    /// it was committed, when the condition held.
    async fn update_returning(
        &self,
        query: AnyQuery<'_>,
    ) -> Result<Option<InvocationRecord>, StoreError> {
        let rows = query.fetch_all(self.pool()).await?;
        Ok(rows.first().map(InvocationRecord::from_row).transpose()?)
    }

    /// Creates a queued invocation (claimed for `new.claimed_by` if given and that agent is not
    /// paused for its workspace) with its audit record, in one transaction.
    pub async fn create_invocation<'q>(
        &self,
        new: &'q NewInvocation,
        audit: &'q AuditEntry,
    ) -> Result<InvocationRecord, StoreError> {
        // An agent-wide pause is stored with the workspace ''.
        let insert = sql::<InvocationRecord>(
            "INSERT INTO {table}
               (id, tool, workspace, args, status, created_at, created_by, agent_id, dispatched_at)
             SELECT $1, $2, $3, $4, 'queued', $5, $6, claim.agent_id,
                    CASE WHEN claim.agent_id IS NULL THEN NULL ELSE $5 END
             FROM (SELECT CASE WHEN EXISTS (SELECT 1 FROM exec_pauses
                                            WHERE agent_id = $7 AND workspace IN ('', $3))
                               THEN NULL ELSE $7 END AS agent_id) AS claim
             RETURNING {cols}",
        )
        .0;
        let bind = |query: AnyQuery<'q>| {
            query
                .bind(&new.id)
                .bind(&new.tool)
                .bind(&new.workspace)
                .bind(&new.args)
                .bind(new.created_at)
                .bind(&new.created_by)
                .bind(&new.claimed_by)
        };
        if self.backend() == Backend::Postgres {
            // One statement (the audit record's INSERT a data-modifying WITH of the
            // invocation's), so one transaction in one round trip to the server instead of four
            // (BEGIN, two INSERTs, COMMIT): both rows commit together or neither does.
            let statement = format!(
                "WITH audit AS ({}) {insert}",
                AuditEntry::insert_statement(8, Backend::Postgres)
            );
            let query = audit.bind(bind(sqlx::query(sqlx::AssertSqlSafe(statement))));
            let row = query.fetch_one(self.pool()).await?;
            return Ok(InvocationRecord::from_row(&row)?);
        }
        let mut tx = self.begin_write().await?;
        let row = bind(sqlx::query(sqlx::AssertSqlSafe(insert))).fetch_one(&mut *tx).await?;
        let record = InvocationRecord::from_row(&row)?;
        audit.commit_with(tx).await?;
        Ok(record)
    }

    pub async fn invocation(&self, id: &str) -> Result<Option<InvocationRecord>, StoreError> {
        self.get(id).await
    }

    /// Oldest first, like every listing here (ids sort by creation time).
    pub async fn list_invocations(
        &self,
        filter: &InvocationFilter,
        page: &PageRequest,
    ) -> Result<PageSlice<InvocationRecord>, StoreError> {
        self.page(
            page,
            "($3 IS NULL OR status = $3) AND ($4 IS NULL OR agent_id = $4)
               AND ($5 IS NULL OR workspace = $5) AND ($6 IS NULL OR tool = $6)
               AND ($7 IS NULL OR created_by = $7)",
            |q| {
                q.bind(&filter.status)
                    .bind(&filter.agent_id)
                    .bind(&filter.workspace)
                    .bind(&filter.tool)
                    .bind(&filter.created_by)
            },
        )
        .await
    }

    /// Queued invocations no agent has claimed yet, oldest first.
    pub async fn unclaimed_invocations(
        &self,
        limit: u32,
    ) -> Result<Vec<InvocationRecord>, StoreError> {
        self.fetch_all(
            sqlx::query(sql::<InvocationRecord>(
                "SELECT {cols} FROM {table}
                 WHERE status = 'queued' AND agent_id IS NULL ORDER BY id LIMIT $1",
            ))
            .bind(i64::from(limit)),
        )
        .await
    }

    /// Invocations an agent holds: claimed for it, or running on it.
    pub async fn invocations_held_by(
        &self,
        agent_id: &str,
    ) -> Result<Vec<InvocationRecord>, StoreError> {
        self.fetch_all(
            sqlx::query(sql::<InvocationRecord>(
                "SELECT {cols} FROM {table}
                 WHERE agent_id = $1 AND status IN ('queued', 'running') ORDER BY id",
            ))
            .bind(agent_id),
        )
        .await
    }

    /// Claims a queued invocation for `agent_id`. Exactly one claimant wins, on either backend
    /// and across replicas; false means another did (or it was cancelled).
    pub async fn claim_invocation(
        &self,
        id: &str,
        agent_id: &str,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        self.update_one(
            sqlx::query(
                "UPDATE invocations SET agent_id = $2, dispatched_at = $3
             WHERE id = $1 AND status = 'queued' AND agent_id IS NULL
               AND cancel_requested_at IS NULL RETURNING id",
            )
            .bind(id)
            .bind(agent_id)
            .bind(now),
        )
        .await
    }

    /// Puts a claimed but unstarted invocation back in the queue (its agent refused it or
    /// went away before starting it).
    pub async fn requeue_invocation(&self, id: &str, agent_id: &str) -> Result<bool, StoreError> {
        self.update_one(
            sqlx::query(
                "UPDATE invocations SET agent_id = NULL, dispatched_at = NULL
             WHERE id = $1 AND agent_id = $2 AND status = 'queued' RETURNING id",
            )
            .bind(id)
            .bind(agent_id),
        )
        .await
    }

    /// The agent started it: the record as committed; `None` when it is no longer this
    /// agent's to start.
    pub async fn start_invocation(
        &self,
        id: &str,
        agent_id: &str,
        now: UnixMillis,
        credential_generation: i64,
    ) -> Result<Option<InvocationRecord>, StoreError> {
        self.update_returning(
            sqlx::query(sql::<InvocationRecord>(
                "UPDATE {table} SET status = 'running', started_at = $3,
                 credential_generation = $4
             WHERE id = $1 AND agent_id = $2 AND status = 'queued' RETURNING {cols}",
            ))
            .bind(id)
            .bind(agent_id)
            .bind(now)
            .bind(credential_generation),
        )
        .await
    }

    /// Records how the invocation ended, once: the record as committed. A second report (an
    /// agent re-sending an unacknowledged result) changes nothing and returns `None`.
    /// `agent_id` None is the router's own verdict (a lost invocation), which only applies to
    /// unfinished ones too.
    pub async fn finish_invocation(
        &self,
        id: &str,
        agent_id: Option<&str>,
        end: &InvocationEnd,
    ) -> Result<Option<InvocationRecord>, StoreError> {
        self.update_returning(
            sqlx::query(sql::<InvocationRecord>(
                "UPDATE {table} SET status = $3, exit_code = $4, stdout = $5, stderr = $6,
                 stdout_truncated = $7, stderr_truncated = $8, error = $9,
                 started_at = COALESCE(started_at, $10), finished_at = $11,
                 credential_generation = COALESCE($12, credential_generation)
             WHERE id = $1 AND ($2 IS NULL OR agent_id = $2)
               AND status IN ('queued', 'running') RETURNING {cols}",
            ))
            .bind(id)
            .bind(agent_id)
            .bind(&end.status)
            .bind(end.exit_code)
            .bind(&end.stdout)
            .bind(&end.stderr)
            .bind(i64::from(end.stdout_truncated))
            .bind(i64::from(end.stderr_truncated))
            .bind(&end.error)
            .bind(end.started_at)
            .bind(end.finished_at)
            .bind(end.credential_generation),
        )
        .await
    }

    /// Cancels an invocation: at once if no agent has it, else by recording the request; the
    /// audit record commits with either. `owner` Some: only an invocation that API key
    /// created, any other is `NotFound` (as if it did not exist). An invocation that already
    /// ended changes nothing and writes nothing.
    pub async fn cancel_invocation(
        &self,
        id: &str,
        now: UnixMillis,
        owner: Option<&str>,
        audit: &AuditEntry,
    ) -> Result<CancelOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let cancelled = sqlx::query(sql::<InvocationRecord>(
            "UPDATE {table} SET status = 'cancelled', finished_at = $2,
                 cancel_requested_at = $2, error = 'cancelled before it reached an agent'
             WHERE id = $1 AND status = 'queued' AND agent_id IS NULL
               AND ($3 IS NULL OR created_by = $3) RETURNING {cols}",
        ))
        .bind(id)
        .bind(now)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = cancelled {
            let record = InvocationRecord::from_row(&row)?;
            audit.commit_with(tx).await?;
            return Ok(CancelOutcome::Cancelled(record));
        }
        let requested = sqlx::query(sql::<InvocationRecord>(
            "UPDATE {table} SET cancel_requested_at = COALESCE(cancel_requested_at, $2)
             WHERE id = $1 AND status IN ('queued', 'running')
               AND ($3 IS NULL OR created_by = $3) RETURNING {cols}",
        ))
        .bind(id)
        .bind(now)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(record) = rows::one(requested)? {
            audit.commit_with(tx).await?;
            return Ok(CancelOutcome::Requested(record));
        }
        tx.rollback().await?;
        match self.invocation(id).await? {
            Some(record) if owner.is_none_or(|key| record.created_by.as_deref() == Some(key)) => {
                Ok(CancelOutcome::AlreadyFinished(record))
            }
            _ => Err(StoreError::NotFound(format!("invocation {id}"))),
        }
    }
}
