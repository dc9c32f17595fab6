//! What the credential posture report reads, and the once-per-transition claim of its notices.
//!
//! A CURVE key's creation is the agent's enrollment, or the promotion time (`completed_at`) of
//! its latest `promoted` rotation: promotion is the moment the new key became the agent's
//! current key (the old one is retired later, when the agent is seen on the new one).

use xerotier_core::UnixMillis;

use crate::rows::{record, sql};
use crate::{AgentEvent, ApiKeyRecord, AuditEntry, JoinKeyRecord, Store, StoreError};

/// One live agent's current CURVE key and when it became current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurveKeyAge {
    pub agent_id: String,
    pub name: String,
    pub region: Option<String>,
    pub enrolled_at: UnixMillis,
    /// Promotion time of the latest completed rotation; none if never rotated.
    pub rotated_at: Option<UnixMillis>,
}

record!(CurveKeyAge in "agents" { agent_id, name, region, enrolled_at, rotated_at });

/// The state last announced for one credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncedState {
    pub kind: String,
    pub credential_id: String,
    pub state: String,
    pub changed_at: UnixMillis,
}

record!(AnnouncedState in "credential_posture" { kind, credential_id, state, changed_at });

/// One credential's move to a new posture state, with what announces it (none for a return to
/// `ok`, which is recorded silently so a later transition is announced again).
#[derive(Debug, Clone)]
pub struct Transition {
    pub kind: String,
    pub credential_id: String,
    pub state: String,
    pub at: UnixMillis,
    pub audit: Option<AuditEntry>,
    pub event: Option<AgentEvent>,
}

impl Store {
    /// API keys in force at `now`: unrevoked and unexpired.
    pub async fn posture_api_keys(&self, now: UnixMillis) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.fetch_all(
            sqlx::query(sql::<ApiKeyRecord>(
                "SELECT {cols} FROM {table}
                 WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)
                 ORDER BY id",
            ))
            .bind(now),
        )
        .await
    }

    /// Every live agent's current CURVE key (or one agent's) and when it became current.
    pub async fn posture_curve_keys(
        &self,
        agent_id: Option<&str>,
    ) -> Result<Vec<CurveKeyAge>, StoreError> {
        self.fetch_all(
            sqlx::query(
                "SELECT a.id AS agent_id, a.name AS name, a.region AS region,
                        a.enrolled_at AS enrolled_at,
                        (SELECT MAX(r.completed_at) FROM curve_rotations r
                          WHERE r.agent_id = a.id AND r.status = 'promoted') AS rotated_at
                 FROM agents a
                 WHERE a.revoked_at IS NULL AND ($1 IS NULL OR a.id = $1)
                 ORDER BY a.id",
            )
            .bind(agent_id),
        )
        .await
    }

    /// Join keys that can still enroll at `now`: unconsumed, unrevoked, unexpired.
    pub async fn posture_join_keys(
        &self,
        now: UnixMillis,
    ) -> Result<Vec<JoinKeyRecord>, StoreError> {
        self.fetch_all(
            sqlx::query(sql::<JoinKeyRecord>(
                "SELECT {cols} FROM {table}
                 WHERE consumed_at IS NULL AND revoked_at IS NULL AND expires_at > $1
                 ORDER BY id",
            ))
            .bind(now),
        )
        .await
    }

    /// The state last announced for every credential that ever left `ok`.
    pub async fn announced_states(&self) -> Result<Vec<AnnouncedState>, StoreError> {
        self.fetch_all(sqlx::query(sql::<AnnouncedState>("SELECT {cols} FROM {table}"))).await
    }

    /// Claims one transition: the stored state moves to `transition.state` only if it was
    /// another (or none), and only then are its audit record and event written, in the same
    /// transaction. Of several replicas (or a restarted router) claiming the same transition,
    /// exactly one gets `true`; the database decides (the row's primary key and the conditional
    /// upsert), never a read before the write.
    pub async fn claim_posture_transition(
        &self,
        transition: &Transition,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query(
            "INSERT INTO credential_posture (kind, credential_id, state, changed_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind, credential_id) DO UPDATE
               SET state = excluded.state, changed_at = excluded.changed_at
               WHERE credential_posture.state <> excluded.state
             RETURNING state",
        )
        .bind(&transition.kind)
        .bind(&transition.credential_id)
        .bind(&transition.state)
        .bind(transition.at)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if !claimed {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(event) = &transition.event {
            event.insert(&mut tx).await?;
        }
        match &transition.audit {
            Some(audit) => audit.commit_with(tx).await?,
            None => tx.commit().await?,
        }
        Ok(true)
    }

    /// Forgets what was announced for credentials that no longer exist (revoked, consumed,
    /// expired past listing), so the table stays the size of the fleet.
    pub async fn forget_posture(&self, kind: &str, credential_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM credential_posture WHERE kind = $1 AND credential_id = $2")
            .bind(kind)
            .bind(credential_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
