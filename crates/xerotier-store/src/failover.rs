//! Failover: what agents held on a replica that died.
//!
//! An agent's session lives on one replica (`agents.replica_id`, written with its lease
//! renewals). When that replica's lease has been over for longer than a grace period plus four
//! of the agent's lease intervals (it fails over after three silent ones; the fourth is for
//! connecting elsewhere and that replica storing its renewal) and the agent has not renewed
//! its lease through another one since (its `replica_id` still names the dead replica), nobody
//! will hear from the agent about what it held: its claimed but unstarted invocations go back
//! to the queue and its running ones fail. Each is one conditional update,
//! so several replicas sweeping at once (or the same one twice) change each invocation once.

use sqlx::Row;
use xerotier_core::UnixMillis;

use crate::rows::{Record, sql};
use crate::{InvocationRecord, Store, StoreError};

/// What one sweep released.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleasedWork {
    /// Agents no longer shown on a replica (their `replica_id` was cleared).
    pub agents: Vec<String>,
    /// Invocations that never started, back in the queue (unclaimed), by id.
    pub requeued: Vec<String>,
    /// Invocations that were running, now `failed`, as committed.
    pub failed: Vec<InvocationRecord>,
}

impl ReleasedWork {
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty() && self.requeued.is_empty() && self.failed.is_empty()
    }
}

impl Store {
    /// Releases the work of agents whose replica's lease ended more than `grace_ms` plus four of
    /// their lease intervals ago (by the database's clock) and who have not renewed their lease
    /// through another replica since. `now` is the time recorded as the failed invocations'
    /// end. Idempotent.
    pub async fn release_work_of_dead_replicas(
        &self,
        grace_ms: i64,
        now: UnixMillis,
    ) -> Result<ReleasedWork, StoreError> {
        let db_now = self.db_now().await?;
        let dead = sqlx::query(
            "SELECT DISTINCT r.id FROM router_replicas r JOIN agents a ON a.replica_id = r.id
              WHERE r.lease_expires_at < $1 - 4 * a.lease_interval_ms ORDER BY r.id",
        )
        .bind(db_now - grace_ms)
        .fetch_all(self.pool())
        .await?;
        let mut released = ReleasedWork::default();
        for row in dead {
            let replica: String = row.try_get("id")?;
            self.release_replica(&replica, db_now - grace_ms, now, &mut released).await?;
        }
        Ok(released)
    }

    /// One dead replica's agents, in one transaction. Every statement re-checks that the
    /// agent still names `replica` and that the replica is still dead (`expired_before`): a
    /// lease renewal through another replica, or the replica renewing again, committed first
    /// wins and the agent is left alone.
    async fn release_replica(
        &self,
        replica: &str,
        expired_before: i64,
        now: UnixMillis,
        released: &mut ReleasedWork,
    ) -> Result<(), StoreError> {
        const ORPHANS: &str = "SELECT a.id FROM agents a JOIN router_replicas r
                                ON r.id = a.replica_id
                              WHERE a.replica_id = $1
                                AND r.lease_expires_at < $2 - 4 * a.lease_interval_ms";
        let error = format!(
            "lost with router replica {replica}: the replica holding the agent's session died \
             while the invocation ran, and the agent did not report it through another replica"
        );
        let mut tx = self.begin_write().await?;
        let requeued = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE invocations SET agent_id = NULL, dispatched_at = NULL
              WHERE status = 'queued' AND agent_id IN ({ORPHANS}) RETURNING id"
        )))
        .bind(replica)
        .bind(expired_before)
        .fetch_all(&mut *tx)
        .await?;
        let failed = sqlx::query(sql::<InvocationRecord>(&format!(
            "UPDATE {{table}} SET status = 'failed', error = $3, finished_at = $4
              WHERE status = 'running' AND agent_id IN ({ORPHANS}) RETURNING {{cols}}"
        )))
        .bind(replica)
        .bind(expired_before)
        .bind(&error)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let agents = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE agents SET replica_id = NULL, replica_since = NULL
              WHERE id IN ({ORPHANS}) RETURNING id"
        )))
        .bind(replica)
        .bind(expired_before)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        for row in &requeued {
            released.requeued.push(row.try_get("id")?);
        }
        for row in &failed {
            released.failed.push(InvocationRecord::from_row(row)?);
        }
        for row in &agents {
            released.agents.push(row.try_get("id")?);
        }
        Ok(())
    }
}
