use sqlx::Row;
use sqlx::any::AnyRow;
use xerotier_core::UnixMillis;

use crate::{AuditEntry, PageRequest, PageSlice, Store, StoreError};

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
}

/// A lease renewal to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub agent_id: String,
    pub at: UnixMillis,
    pub manifest_hash: String,
    pub manifest_version: i64,
}

const COLUMNS: &str = "id, name, role, region, join_key_id, enrolled_at, curve_public_key, \
    signing_public_key, manifest, manifest_hash, manifest_version, lease_interval_ms, \
    last_heartbeat_at, revoked_at, revoked_by, revoked_reason, previous_curve_public_key";

fn sql(template: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(template.replace("{cols}", COLUMNS))
}

fn from_row(row: &AnyRow) -> Result<AgentRecord, sqlx::Error> {
    Ok(AgentRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        region: row.try_get("region")?,
        join_key_id: row.try_get("join_key_id")?,
        enrolled_at: row.try_get("enrolled_at")?,
        curve_public_key: row.try_get("curve_public_key")?,
        signing_public_key: row.try_get("signing_public_key")?,
        manifest: row.try_get("manifest")?,
        manifest_hash: row.try_get("manifest_hash")?,
        manifest_version: row.try_get("manifest_version")?,
        lease_interval_ms: row.try_get("lease_interval_ms")?,
        last_heartbeat_at: row.try_get("last_heartbeat_at")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_by: row.try_get("revoked_by")?,
        revoked_reason: row.try_get("revoked_reason")?,
        previous_curve_public_key: row.try_get("previous_curve_public_key")?,
    })
}

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
                 lease_interval_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
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
        audit.insert(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(sql("SELECT {cols} FROM agents WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    pub async fn list_agents(
        &self,
        page: &PageRequest,
        include_revoked: bool,
    ) -> Result<PageSlice<AgentRecord>, StoreError> {
        let rows = sqlx::query(sql("SELECT {cols} FROM agents
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

    /// Records a batch of lease renewals in one transaction; revoked agents are not updated.
    pub async fn record_heartbeats(&self, beats: &[Heartbeat]) -> Result<(), StoreError> {
        if beats.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for beat in beats {
            sqlx::query(
                "UPDATE agents SET last_heartbeat_at = $2, manifest_hash = $3, manifest_version = $4
                 WHERE id = $1 AND revoked_at IS NULL
                   AND (last_heartbeat_at IS NULL OR last_heartbeat_at < $2)",
            )
            .bind(&beat.agent_id)
            .bind(beat.at)
            .bind(&beat.manifest_hash)
            .bind(beat.manifest_version)
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
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sql(
            "UPDATE agents SET revoked_at = $2, revoked_by = $3, revoked_reason = $4
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
            return Err(match self.agent(id).await? {
                Some(_) => StoreError::AlreadyRevoked(id.to_string()),
                None => StoreError::NotFound(format!("agent {id}")),
            });
        };
        audit.insert(&mut tx).await?;
        tx.commit().await?;
        Ok(from_row(&row)?)
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
