//! The router mesh key rollout as the store records it (SPEC §9): each agent's durable
//! acknowledgement of the key set it holds, the serving key it was last seen on, and the
//! nonces of signed key fetches. Every replica reads progress from here, so all answer alike.

use sqlx::Row;
use sqlx::any::AnyRow;
use xerotier_core::UnixMillis;

use crate::rows::{Column, Record, sql};
use crate::{Store, StoreError};

/// What one agent has told the router about the router's mesh keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterKeyAck {
    pub agent_id: String,
    /// The kids the agent holds, in its order (empty until it first acknowledged).
    pub kids: Vec<String>,
    pub acked_at: UnixMillis,
    /// The router key the agent's latest hello came in on.
    pub seen_kid: Option<String>,
    pub seen_at: Option<UnixMillis>,
}

impl Record for RouterKeyAck {
    const TABLE: &'static str = "router_key_acks";
    const COLUMNS: &'static str = "agent_id, kids, acked_at, seen_kid, seen_at";

    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let kids: String = row.try_get("kids")?;
        Ok(Self {
            agent_id: Column::read(row, "agent_id")?,
            kids: kids.split_whitespace().map(str::to_string).collect(),
            acked_at: Column::read(row, "acked_at")?,
            seen_kid: Column::read(row, "seen_kid")?,
            seen_at: Column::read(row, "seen_at")?,
        })
    }
}

impl Store {
    /// Records that `agent_id` saved `kids` durably (replaces what it acknowledged before).
    pub async fn record_router_key_ack(
        &self,
        agent_id: &str,
        kids: &[String],
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO router_key_acks (agent_id, kids, acked_at) VALUES ($1, $2, $3)
             ON CONFLICT (agent_id) DO UPDATE SET kids = excluded.kids, acked_at = excluded.acked_at",
        )
        .bind(agent_id)
        .bind(kids.join(" "))
        .bind(at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records that `agent_id` said hello on the router key `kid`.
    pub async fn record_router_key_seen(
        &self,
        agent_id: &str,
        kid: &str,
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO router_key_acks (agent_id, kids, acked_at, seen_kid, seen_at)
             VALUES ($1, '', 0, $2, $3)
             ON CONFLICT (agent_id) DO UPDATE SET seen_kid = excluded.seen_kid, seen_at = excluded.seen_at",
        )
        .bind(agent_id)
        .bind(kid)
        .bind(at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// One agent's record, if it ever acknowledged or was seen.
    pub async fn router_key_ack(&self, agent_id: &str) -> Result<Option<RouterKeyAck>, StoreError> {
        self.fetch_optional(
            sqlx::query(sql::<RouterKeyAck>("SELECT {cols} FROM {table} WHERE agent_id = $1"))
                .bind(agent_id),
        )
        .await
    }

    /// Every agent's record, by agent id.
    pub async fn router_key_acks(&self) -> Result<Vec<RouterKeyAck>, StoreError> {
        self.fetch_all(sqlx::query(sql::<RouterKeyAck>(
            "SELECT {cols} FROM {table} ORDER BY agent_id",
        )))
        .await
    }

    /// Spends a fetch nonce: true when it was not seen since `forget_before` (it is then kept
    /// until it leaves the window); false for a replay. Older nonces are forgotten first: a
    /// request that old is refused by its timestamp before its nonce is looked at.
    pub async fn spend_router_key_nonce(
        &self,
        agent_id: &str,
        nonce: &str,
        at: UnixMillis,
        forget_before: UnixMillis,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM router_key_fetch_nonces WHERE at < $1")
            .bind(forget_before)
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO router_key_fetch_nonces (nonce, agent_id, at) VALUES ($1, $2, $3)
             ON CONFLICT (nonce) DO NOTHING RETURNING nonce",
        )
        .bind(nonce)
        .bind(agent_id)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(inserted.is_some())
    }
}
