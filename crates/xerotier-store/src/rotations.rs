use sqlx::{Any, Row, Transaction};
use xerotier_core::UnixMillis;

use crate::order::{EVENTS_CHANNEL, Sequenced};
use crate::rows::{self, Record, record, sql};
use crate::{AuditEntry, PageRequest, PageSlice, Store, StoreError};

/// A CURVE rotation request. `status` is `pending`, `promoted` or `failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRecord {
    pub id: String,
    pub agent_id: String,
    pub reason: String,
    pub nonce: String,
    pub status: String,
    pub failure_reason: Option<String>,
    pub requested_at: UnixMillis,
    pub requested_by: Option<String>,
    pub requested_by_name: Option<String>,
    pub deadline_at: UnixMillis,
    pub acknowledged_at: Option<UnixMillis>,
    pub completed_at: Option<UnixMillis>,
    /// Z85, once acknowledged with a valid signature.
    pub new_public_key: Option<String>,
    /// The HTTP request id of the operator's call.
    pub request_id: Option<String>,
    /// The agent's new Ed25519 signing public key (hex) the acknowledgement bound; it
    /// replaces the agent's signing key at promotion.
    pub new_signing_public_key: Option<String>,
}

/// The two keys a verified acknowledgement bound, promoted together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewAgentKeys<'a> {
    /// The new CURVE public key, Z85.
    pub curve: &'a str,
    /// The new Ed25519 signing public key, hex.
    pub signing: &'a str,
}

/// An entry of an agent's event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEvent {
    pub id: String,
    pub agent_id: String,
    pub at: UnixMillis,
    pub event_type: String,
    pub request_id: Option<String>,
    /// JSON.
    pub details: Option<String>,
}

record!(RotationRecord in "curve_rotations" {
    id, agent_id, reason, nonce, status, failure_reason, requested_at, requested_by,
    requested_by_name, deadline_at, acknowledged_at, completed_at, new_public_key, request_id,
    new_signing_public_key,
});

record!(AgentEvent in "agent_events" { id, agent_id, at, event_type, request_id, details });

impl AgentEvent {
    pub(crate) async fn insert(
        &self,
        tx: &mut Transaction<'static, Any>,
    ) -> Result<(), StoreError> {
        let statement = if crate::order::is_postgres(tx) {
            // `seq` is assigned after the commit (`order.rs`); the notification, sent at the
            // commit, wakes this agent's live streams on every replica. Part of the one
            // statement (its `FROM`), so it costs no round trip of its own.
            sql::<Self>(
                "INSERT INTO {table} ({cols}) SELECT $1, $2, $3, $4, $5, $6
                 FROM (SELECT pg_notify($7, $2)) AS announce",
            )
        } else {
            sql::<Self>(&format!(
                "INSERT INTO {{table}} ({{cols}}, seq) VALUES ($1, $2, $3, $4, $5, $6, {})",
                crate::order::sqlite_seq_value(Self::TABLE)
            ))
        };
        let query = sqlx::query(statement)
            .bind(&self.id)
            .bind(&self.agent_id)
            .bind(self.at)
            .bind(&self.event_type)
            .bind(&self.request_id)
            .bind(&self.details);
        let query = if crate::order::is_postgres(tx) { query.bind(EVENTS_CHANNEL) } else { query };
        query.execute(&mut **tx).await?;
        Ok(())
    }
}

impl Store {
    /// Records a rotation request with its event and audit record. A second request while one
    /// is pending is refused with [`StoreError::RotationInFlight`] naming the first.
    pub async fn create_rotation(
        &self,
        rotation: &RotationRecord,
        event: &AgentEvent,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(sql::<RotationRecord>(
            "INSERT INTO {table} ({cols})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        ))
        .bind(&rotation.id)
        .bind(&rotation.agent_id)
        .bind(&rotation.reason)
        .bind(&rotation.nonce)
        .bind(&rotation.status)
        .bind(&rotation.failure_reason)
        .bind(rotation.requested_at)
        .bind(&rotation.requested_by)
        .bind(&rotation.requested_by_name)
        .bind(rotation.deadline_at)
        .bind(rotation.acknowledged_at)
        .bind(rotation.completed_at)
        .bind(&rotation.new_public_key)
        .bind(&rotation.request_id)
        .bind(&rotation.new_signing_public_key)
        .execute(&mut *tx)
        .await;
        if let Err(err) = inserted {
            tx.rollback().await?;
            if StoreError::is_unique_violation(&err) {
                let pending = self.pending_rotation(&rotation.agent_id).await?;
                return Err(StoreError::RotationInFlight(
                    pending.map(|r| r.id).unwrap_or_default(),
                ));
            }
            return Err(err.into());
        }
        event.insert(&mut tx).await?;
        audit.commit_with(tx).await
    }

    pub async fn rotation(&self, id: &str) -> Result<Option<RotationRecord>, StoreError> {
        self.get(id).await
    }

    pub async fn pending_rotation(
        &self,
        agent_id: &str,
    ) -> Result<Option<RotationRecord>, StoreError> {
        self.fetch_optional(
            sqlx::query(sql::<RotationRecord>(
                "SELECT {cols} FROM {table} WHERE agent_id = $1 AND status = 'pending'",
            ))
            .bind(agent_id),
        )
        .await
    }

    /// Every rotation still waiting for its acknowledgement (at most one per agent).
    pub async fn pending_rotations(&self) -> Result<Vec<RotationRecord>, StoreError> {
        self.fetch_all(sqlx::query(sql::<RotationRecord>(
            "SELECT {cols} FROM {table} WHERE status = 'pending'",
        )))
        .await
    }

    /// Pending rotations whose deadline has passed at `now`.
    pub async fn overdue_rotations(
        &self,
        now: UnixMillis,
    ) -> Result<Vec<RotationRecord>, StoreError> {
        self.fetch_all(
            sqlx::query(sql::<RotationRecord>(
                "SELECT {cols} FROM {table} WHERE status = 'pending' AND deadline_at <= $1",
            ))
            .bind(now),
        )
        .await
    }

    /// Ends a pending rotation as failed with `reason`. Returns the record, or `None` when it
    /// was no longer pending (someone else ended it first).
    pub async fn fail_rotation(
        &self,
        id: &str,
        reason: &str,
        now: UnixMillis,
        event: &AgentEvent,
        audit: &AuditEntry,
    ) -> Result<Option<RotationRecord>, StoreError> {
        let query = sqlx::query(sql::<RotationRecord>(
            "UPDATE {table} SET status = 'failed', failure_reason = $2, completed_at = $3
             WHERE id = $1 AND status = 'pending' RETURNING {cols}",
        ))
        .bind(id)
        .bind(reason)
        .bind(now);
        self.update_audited(query, std::slice::from_ref(event), audit).await
    }

    /// Promotes verified new keys: the rotation ends `promoted`, the agent's current CURVE key
    /// becomes its previous one (still accepted until the agent is seen on the new one), the new
    /// CURVE key becomes current and the new signing key replaces the old one outright (the old
    /// one verifies nothing after this), all in one transaction with the events and the audit
    /// record.
    pub async fn promote_rotation(
        &self,
        id: &str,
        new_keys: &NewAgentKeys<'_>,
        now: UnixMillis,
        events: &[AgentEvent],
        audit: &AuditEntry,
    ) -> Result<Option<RotationRecord>, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sql::<RotationRecord>(
            "UPDATE {table} SET status = 'promoted', acknowledged_at = $2, completed_at = $2,
                 new_public_key = $3, new_signing_public_key = $4
             WHERE id = $1 AND status = 'pending' RETURNING {cols}",
        ))
        .bind(id)
        .bind(now)
        .bind(new_keys.curve)
        .bind(new_keys.signing)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(rotation) = rows::one::<RotationRecord>(row)? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let updated = sqlx::query(
            "UPDATE agents SET previous_curve_public_key = curve_public_key, curve_public_key = $2,
                 signing_public_key = $3, signing_key_rotated_at = $4
             WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(&rotation.agent_id)
        .bind(new_keys.curve)
        .bind(new_keys.signing)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match updated {
            Ok(result) if result.rows_affected() == 1 => {}
            Ok(_) => {
                tx.rollback().await?;
                return Err(StoreError::AlreadyRevoked(rotation.agent_id));
            }
            Err(err) if StoreError::is_unique_violation(&err) => {
                tx.rollback().await?;
                return Err(StoreError::CurveKeyTaken);
            }
            Err(err) => return Err(err.into()),
        }
        if let Err(refusal) =
            crate::agents::bind_curve_key(&mut tx, new_keys.curve, &rotation.agent_id, now).await
        {
            tx.rollback().await?;
            return Err(refusal);
        }
        for event in events {
            event.insert(&mut tx).await?;
        }
        audit.commit_with(tx).await?;
        Ok(Some(rotation))
    }

    /// The agent was seen on its new key: its previous key stops being accepted. Returns whether
    /// there was a previous key to retire.
    pub async fn retire_previous_key(
        &self,
        agent_id: &str,
        current_key: &str,
        event: &AgentEvent,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let result = sqlx::query(
            "UPDATE agents SET previous_curve_public_key = NULL
             WHERE id = $1 AND curve_public_key = $2 AND previous_curve_public_key IS NOT NULL",
        )
        .bind(agent_id)
        .bind(current_key)
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        event.insert(&mut tx).await?;
        audit.commit_with(tx).await?;
        Ok(true)
    }

    /// The request id of the agent's most recent promoted rotation.
    pub async fn latest_promoted_rotation(
        &self,
        agent_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT id FROM curve_rotations WHERE agent_id = $1 AND status = 'promoted'
             ORDER BY completed_at DESC LIMIT 1",
        )
        .bind(agent_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    pub async fn append_event(&self, event: &AgentEvent) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        event.insert(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One page of an agent's events in the order they committed (`seq`), after the event
    /// whose id is `page.after`.
    pub async fn list_events(
        &self,
        agent_id: &str,
        page: &PageRequest,
    ) -> Result<PageSlice<AgentEvent>, StoreError> {
        self.page_by_seq(page, "agent_id = $3", |q| q.bind(agent_id)).await
    }

    /// Where a stream resuming after the event `after` (an id) starts: that event's `seq`
    /// (see [`Store::events_after`]).
    pub async fn event_seq(&self, after: Option<&str>) -> Result<i64, StoreError> {
        self.seq_of::<AgentEvent>(after).await
    }

    /// Up to `limit` of the agent's events numbered after `seq`, in order: what a live stream
    /// reads each time it is woken.
    pub async fn events_after(
        &self,
        agent_id: &str,
        seq: i64,
        limit: u32,
    ) -> Result<Vec<Sequenced<AgentEvent>>, StoreError> {
        self.after_seq(seq, limit, "agent_id = $3", |q| q.bind(agent_id)).await
    }
}
