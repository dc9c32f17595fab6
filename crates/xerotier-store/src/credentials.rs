use xerotier_core::UnixMillis;

use crate::rows::{record, sql};
use crate::{Store, StoreError};

/// One workspace credential file on one agent, as its latest reload found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialState {
    pub agent_id: String,
    pub credentials_ref: String,
    /// Of the version in use; none if no good version was ever read.
    pub sha256: Option<String>,
    pub generation: i64,
    /// When the version in use was written (the file's mtime).
    pub mtime_ms: Option<UnixMillis>,
    /// Whether the latest reload read it (false: `error` says why; the version above stays).
    pub ok: bool,
    pub error: Option<String>,
    pub reported_at: UnixMillis,
    /// The expiry the file itself carries, when the XEM could read one (short-lived
    /// credentials: a certificate's notAfter, a JWT's `exp`, an AWS expiration).
    pub expires_at: Option<UnixMillis>,
}

record!(CredentialState in "agent_credentials" {
    agent_id, credentials_ref, sha256, generation, mtime_ms, ok, error, reported_at, expires_at,
});

impl Store {
    /// Replaces what is known of the agent's credential files with its latest report. A report
    /// older than the stored one (delivered late) changes nothing.
    pub async fn record_credential_report(
        &self,
        agent_id: &str,
        states: &[CredentialState],
        reported_at: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let newer = sqlx::query(
            "SELECT 1 AS newer FROM agent_credentials WHERE agent_id = $1 AND reported_at > $2",
        )
        .bind(agent_id)
        .bind(reported_at)
        .fetch_optional(&mut *tx)
        .await?;
        if newer.is_some() {
            tx.rollback().await?;
            return Ok(());
        }
        sqlx::query("DELETE FROM agent_credentials WHERE agent_id = $1")
            .bind(agent_id)
            .execute(&mut *tx)
            .await?;
        for state in states {
            sqlx::query(sql::<CredentialState>(
                "INSERT INTO {table} ({cols}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            ))
            .bind(agent_id)
            .bind(&state.credentials_ref)
            .bind(&state.sha256)
            .bind(state.generation)
            .bind(state.mtime_ms)
            .bind(i64::from(state.ok))
            .bind(&state.error)
            .bind(reported_at)
            .bind(state.expires_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The credential files of every live agent (or of one), by agent then file.
    pub async fn credential_states(
        &self,
        agent_id: Option<&str>,
    ) -> Result<Vec<CredentialState>, StoreError> {
        self.fetch_all(
            sqlx::query(sql::<CredentialState>(
                "SELECT {cols} FROM {table}
                 WHERE agent_id IN (SELECT id FROM agents WHERE revoked_at IS NULL)
                   AND ($1 IS NULL OR agent_id = $1)
                 ORDER BY agent_id, credentials_ref",
            ))
            .bind(agent_id),
        )
        .await
    }
}
