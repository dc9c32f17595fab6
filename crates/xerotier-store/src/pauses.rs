use sqlx::Row;
use sqlx::any::AnyRow;
use xerotier_core::UnixMillis;

use crate::rows::{Column, Record, sql};
use crate::{AuditEntry, Store, StoreError};

/// A containment pause: no new dispatch to the agent (`workspace` None) or to one workspace
/// on it. In-flight work is not touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseRecord {
    pub agent_id: String,
    pub workspace: Option<String>,
    pub paused_at: UnixMillis,
    pub paused_by: Option<String>,
    pub reason: Option<String>,
}

/// The whole agent is stored as the empty workspace, so one primary key covers both kinds.
const WHOLE_AGENT: &str = "";

impl Record for PauseRecord {
    const TABLE: &'static str = "exec_pauses";
    const COLUMNS: &'static str = "agent_id, workspace, paused_at, paused_by, reason";

    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let workspace: String = row.try_get("workspace")?;
        Ok(Self {
            agent_id: Column::read(row, "agent_id")?,
            workspace: (workspace != WHOLE_AGENT).then_some(workspace),
            paused_at: Column::read(row, "paused_at")?,
            paused_by: Column::read(row, "paused_by")?,
            reason: Column::read(row, "reason")?,
        })
    }
}

impl Store {
    /// Pauses dispatch. Pausing what is already paused keeps the first pause (and writes no
    /// audit record: nothing changed); the pause in force is returned either way, with whether
    /// this call created it.
    pub async fn pause_exec(
        &self,
        pause: &PauseRecord,
        audit: &AuditEntry,
    ) -> Result<(PauseRecord, bool), StoreError> {
        let mut tx = self.begin_write().await?;
        let workspace = pause.workspace.as_deref().unwrap_or(WHOLE_AGENT);
        let inserted = sqlx::query(
            "INSERT INTO exec_pauses (agent_id, workspace, paused_at, paused_by, reason)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (agent_id, workspace) DO NOTHING
             RETURNING agent_id",
        )
        .bind(&pause.agent_id)
        .bind(workspace)
        .bind(pause.paused_at)
        .bind(&pause.paused_by)
        .bind(&pause.reason)
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_some() {
            audit.insert(&mut tx).await?;
        }
        let row = sqlx::query(sql::<PauseRecord>(
            "SELECT {cols} FROM {table} WHERE agent_id = $1 AND workspace = $2",
        ))
        .bind(&pause.agent_id)
        .bind(workspace)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((PauseRecord::from_row(&row)?, inserted.is_some()))
    }

    /// Lifts one pause. `NotFound` (and nothing written) when there is no such pause.
    pub async fn resume_exec(
        &self,
        agent_id: &str,
        workspace: Option<&str>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query(
            "DELETE FROM exec_pauses WHERE agent_id = $1 AND workspace = $2 RETURNING agent_id",
        )
        .bind(agent_id)
        .bind(workspace.unwrap_or(WHOLE_AGENT))
        .fetch_optional(&mut *tx)
        .await?;
        if deleted.is_none() {
            tx.rollback().await?;
            let what = match workspace {
                Some(w) => format!("a pause of workspace {w:?} on agent {agent_id}"),
                None => format!("an agent-wide pause on agent {agent_id}"),
            };
            return Err(StoreError::NotPaused(what));
        }
        audit.commit_with(tx).await
    }

    /// Every pause in force, by agent then workspace (the agent-wide one first).
    pub async fn exec_pauses(
        &self,
        agent_id: Option<&str>,
    ) -> Result<Vec<PauseRecord>, StoreError> {
        self.fetch_all(
            sqlx::query(sql::<PauseRecord>(
                "SELECT {cols} FROM {table}
                 WHERE ($1 IS NULL OR agent_id = $1) ORDER BY agent_id, workspace",
            ))
            .bind(agent_id),
        )
        .await
    }
}
