use sqlx::Row;
use xerotier_core::UnixMillis;

use crate::rows::{RevokeSql, record, sql};
use crate::{AuditEntry, PageRequest, PageSlice, Store, StoreError};

/// Ids bound in one `agents_by_ids` query: far under SQLite's and PostgreSQL's limits on bound
/// values (32,766 and 65,535).
const AGENTS_PER_QUERY: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    pub region: Option<String>,
    pub join_key_id: String,
    pub enrolled_at: UnixMillis,
    /// Z85.
    pub curve_public_key: String,
    /// Hex.
    pub signing_public_key: String,
    /// The capability manifest, JSON.
    pub manifest: String,
    pub manifest_hash: String,
    pub manifest_version: i64,
    pub lease_interval_ms: i64,
    pub last_heartbeat_at: Option<UnixMillis>,
    pub revoked_at: Option<UnixMillis>,
    pub revoked_by: Option<String>,
    pub revoked_reason: Option<String>,
    /// A rotated-away key still accepted until the agent is seen on its new one.
    pub previous_curve_public_key: Option<String>,
    /// `approved`, `pending` (its join key requires approval: no work, no rotation) or
    /// `rejected`. Set at enrollment from the join key; whatever the record says is ignored.
    pub approval: String,
    /// Set while the agent is quarantined (a suspected clone): no dispatch.
    pub quarantined_at: Option<UnixMillis>,
    pub quarantine_reason: Option<String>,
    /// The replica holding its mesh session as of its latest stored lease renewal; cleared
    /// when that replica died and the failover sweep released what the agent held.
    pub replica_id: Option<String>,
    /// When the agent was first seen on `replica_id`.
    pub replica_since: Option<UnixMillis>,
    /// When `signing_public_key` last changed by a promoted rotation; `None` if it is still
    /// the one enrolled with.
    pub signing_key_rotated_at: Option<UnixMillis>,
}

/// A lease renewal to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub agent_id: String,
    pub at: UnixMillis,
    pub manifest_hash: String,
    pub manifest_version: i64,
    /// The replica that received it (`agents.replica_id`).
    pub replica_id: String,
}

record!(AgentRecord in "agents" {
    id, name, role, region, join_key_id, enrolled_at, curve_public_key, signing_public_key,
    manifest, manifest_hash, manifest_version, lease_interval_ms, last_heartbeat_at, revoked_at,
    revoked_by, revoked_reason, previous_curve_public_key, approval, quarantined_at,
    quarantine_reason, replica_id, replica_since, signing_key_rotated_at,
});

impl Store {
    /// Consumes the join key and creates the agent, atomically: exactly one enrollment per key
    /// wins under any concurrency, on either backend. A refused enrollment (key used, revoked or
    /// expired; name or CURVE key taken) changes nothing, so the key stays usable when the
    /// refusal was about the agent.
    pub async fn enroll_agent(
        &self,
        agent: &AgentRecord,
        now: UnixMillis,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let consumed = sqlx::query(
            "UPDATE join_keys SET consumed_at = $1, consumed_by_agent = $2
             WHERE id = $3 AND consumed_at IS NULL AND revoked_at IS NULL AND expires_at > $1
             RETURNING id",
        )
        .bind(now)
        .bind(&agent.id)
        .bind(&agent.join_key_id)
        .fetch_optional(&mut *tx)
        .await?;
        if consumed.is_none() {
            tx.rollback().await?;
            return Err(self.why_join_key_unusable(&agent.join_key_id, now).await?);
        }
        let inserted = sqlx::query(
            "INSERT INTO agents (id, name, role, region, join_key_id, enrolled_at,
                 curve_public_key, signing_public_key, manifest, manifest_hash, manifest_version,
                 lease_interval_ms, approval)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                 (SELECT CASE WHEN require_approval = 1 THEN 'pending' ELSE 'approved' END
                  FROM join_keys WHERE id = $5))",
        )
        .bind(&agent.id)
        .bind(&agent.name)
        .bind(&agent.role)
        .bind(&agent.region)
        .bind(&agent.join_key_id)
        .bind(agent.enrolled_at)
        .bind(&agent.curve_public_key)
        .bind(&agent.signing_public_key)
        .bind(&agent.manifest)
        .bind(&agent.manifest_hash)
        .bind(agent.manifest_version)
        .bind(agent.lease_interval_ms)
        .execute(&mut *tx)
        .await;
        if let Err(err) = inserted {
            let refusal = if StoreError::violated(&err, "agents_name_live", "agents.name") {
                StoreError::AgentNameTaken(agent.name.clone())
            } else if StoreError::violated(&err, "agents_curve_key", "agents.curve_public_key") {
                StoreError::CurveKeyTaken
            } else {
                StoreError::Database(err)
            };
            tx.rollback().await?;
            return Err(refusal);
        }
        if let Err(refusal) =
            bind_curve_key(&mut tx, &agent.curve_public_key, &agent.id, agent.enrolled_at).await
        {
            tx.rollback().await?;
            return Err(refusal);
        }
        audit.commit_with(tx).await
    }

    /// Every CURVE key ever bound to `agent_id` (enrolled with or promoted to), oldest first.
    pub async fn agent_curve_keys(&self, agent_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT curve_public_key FROM agent_curve_keys WHERE agent_id = $1
             ORDER BY bound_at, curve_public_key",
        )
        .bind(agent_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| r.try_get("curve_public_key"))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub async fn agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.get(id).await
    }

    /// The records of those of `ids` that exist, by id, read in as few queries as the
    /// backends' limits on bound values allow: a replica catching up on a batch of signals
    /// reads every changed agent at once instead of one round trip each.
    pub async fn agents_by_ids(&self, ids: &[&str]) -> Result<Vec<AgentRecord>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(AGENTS_PER_QUERY) {
            // Only placeholders are formatted into the statement; the ids are bound.
            let placeholders: Vec<String> = (1..=chunk.len()).map(|at| format!("${at}")).collect();
            let statement = format!(
                "SELECT {{cols}} FROM {{table}} WHERE id IN ({}) ORDER BY id",
                placeholders.join(", ")
            );
            let query = chunk
                .iter()
                .fold(sqlx::query(sql::<AgentRecord>(&statement)), |query, id| query.bind(*id));
            found.extend(self.fetch_all::<AgentRecord>(query).await?);
        }
        Ok(found)
    }

    pub async fn list_agents(
        &self,
        page: &PageRequest,
        include_revoked: bool,
    ) -> Result<PageSlice<AgentRecord>, StoreError> {
        self.page(page, "$3 = 1 OR revoked_at IS NULL", |q| q.bind(i64::from(include_revoked)))
            .await
    }

    /// `(agent id, CURVE public key)` of every unrevoked agent, including a rotated-away key not
    /// yet retired: the mesh allow-list.
    pub async fn live_agent_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, curve_public_key FROM agents WHERE revoked_at IS NULL
             UNION ALL
             SELECT id, previous_curve_public_key FROM agents
             WHERE revoked_at IS NULL AND previous_curve_public_key IS NOT NULL",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("curve_public_key")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Live agents whose last lease renewal was stored at `since` or later: what every
    /// replica's agents offer, as far as the store knows (other replicas' agents included).
    pub async fn agents_heard_since(
        &self,
        since: UnixMillis,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        self.fetch_all(
            sqlx::query(sql::<AgentRecord>(
                "SELECT {cols} FROM {table}
                  WHERE revoked_at IS NULL AND last_heartbeat_at >= $1 ORDER BY id",
            ))
            .bind(since),
        )
        .await
    }

    /// Records a batch of lease renewals in one transaction; revoked agents are not updated.
    /// Each also says which replica holds the agent's session: the newest renewal wins, so an
    /// agent that moved is shown on its new replica once that one flushes.
    pub async fn record_heartbeats(&self, beats: &[Heartbeat]) -> Result<(), StoreError> {
        if beats.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for beat in beats {
            sqlx::query(
                "UPDATE agents SET last_heartbeat_at = $2, manifest_hash = $3, manifest_version = $4,
                     replica_since = CASE WHEN replica_id = $5 THEN replica_since ELSE $2 END,
                     replica_id = $5
                 WHERE id = $1 AND revoked_at IS NULL
                   AND (last_heartbeat_at IS NULL OR last_heartbeat_at < $2)",
            )
            .bind(&beat.agent_id)
            .bind(beat.at)
            .bind(&beat.manifest_hash)
            .bind(beat.manifest_version)
            .bind(&beat.replica_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a live agent's capability manifest (it changed its tools or workspaces).
    pub async fn update_agent_manifest(
        &self,
        id: &str,
        manifest: &str,
        manifest_hash: &str,
        manifest_version: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE agents SET manifest = $2, manifest_hash = $3, manifest_version = $4
             WHERE id = $1 AND revoked_at IS NULL AND manifest <> $2",
        )
        .bind(id)
        .bind(manifest)
        .bind(manifest_hash)
        .bind(manifest_version)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes the agent's credentials: its CURVE key leaves the allow-list for good.
    pub async fn revoke_agent(
        &self,
        id: &str,
        now: UnixMillis,
        revoked_by: Option<&str>,
        reason: Option<&str>,
        audit: &AuditEntry,
    ) -> Result<AgentRecord, StoreError> {
        match self.revoke(id, now, revoked_by, reason, RevokeSql::PLAIN, audit).await? {
            Some(agent) => Ok(agent),
            None => Err(self.why_not_revocable::<AgentRecord>(id, format!("agent {id}")).await?),
        }
    }
}

impl Store {
    /// The router secret called `name`: `candidate` if this call created it, else the one a
    /// router (maybe another replica) created first.
    pub async fn router_secret(
        &self,
        name: &str,
        candidate: &str,
        now: UnixMillis,
    ) -> Result<String, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO router_secrets (name, secret_hex, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT secret_hex FROM router_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.try_get("secret_hex")?)
    }
}

/// Records that `key` is bound to `agent_id`, inside the enrollment or promotion transaction:
/// a key any agent ever used (current, previous, retired or revoked) is refused with
/// [`StoreError::CurveKeyTaken`] by the table's primary key, on both backends.
pub(crate) async fn bind_curve_key(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    key: &str,
    agent_id: &str,
    at: UnixMillis,
) -> Result<(), StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO agent_curve_keys (curve_public_key, agent_id, bound_at) VALUES ($1, $2, $3)",
    )
    .bind(key)
    .bind(agent_id)
    .bind(at)
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(err) if StoreError::is_unique_violation(&err) => Err(StoreError::CurveKeyTaken),
        Err(err) => Err(err.into()),
    }
}

impl Store {
    /// Quarantines a live agent (a suspected clone), with its event and audit record. `None`
    /// when it is already quarantined or revoked (nothing is written).
    pub async fn quarantine_agent(
        &self,
        id: &str,
        now: UnixMillis,
        reason: &str,
        event: &crate::AgentEvent,
        audit: &AuditEntry,
    ) -> Result<Option<AgentRecord>, StoreError> {
        self.update_audited(
            sqlx::query(crate::rows::sql::<AgentRecord>(
                "UPDATE {table} SET quarantined_at = $2, quarantine_reason = $3
                 WHERE id = $1 AND quarantined_at IS NULL AND revoked_at IS NULL
                 RETURNING {cols}",
            ))
            .bind(id)
            .bind(now)
            .bind(reason),
            std::slice::from_ref(event),
            audit,
        )
        .await
    }

    /// Lifts an agent's quarantine, with its audit record. `NotFound` when it is not
    /// quarantined (nothing is written).
    pub async fn release_quarantine(
        &self,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<AgentRecord, StoreError> {
        let released = self
            .update_audited(
                sqlx::query(crate::rows::sql::<AgentRecord>(
                    "UPDATE {table} SET quarantined_at = NULL, quarantine_reason = NULL
                     WHERE id = $1 AND quarantined_at IS NOT NULL AND revoked_at IS NULL
                     RETURNING {cols}",
                ))
                .bind(id),
                &[],
                audit,
            )
            .await?;
        released.ok_or_else(|| StoreError::NotFound(format!("quarantine of agent {id}")))
    }
}
