//! Several replicas on one database: the registry with its leases, and the signals one replica
//! leaves for the others.
//!
//! A signal is a row written in the transaction of the change it announces (an audited
//! credential change: [`AuditEntry::insert`] writes it), so no change commits without it. On
//! PostgreSQL the same transaction sends `NOTIFY xerotier_signals`, delivered at commit; a
//! replica that missed it finds the row when it next reads past its cursor. Signals take their
//! `seq` from a counter row whose lock is held until the commit, so they become visible in
//! `seq` order: a reader's cursor never passes a signal that commits later.
//!
//! Leases are judged by the database's clock (`db_now`), never a replica's.

use sqlx::{Any, Row, Transaction};
use xerotier_core::UnixMillis;

use crate::rows::{Record, all, record};
use crate::{AuditEntry, Backend, Store, StoreError};

/// The PostgreSQL channel signals are announced on; the payload is the signal's `seq`.
pub const SIGNAL_CHANNEL: &str = "xerotier_signals";
/// The PostgreSQL channel that wakes every replica's dispatch.
pub const DISPATCH_CHANNEL: &str = "xerotier_dispatch";
/// The PostgreSQL channel a replica announces what it applied on (payload: its id), so a
/// revoke waiting for every replica wakes at once.
pub const ACK_CHANNEL: &str = "xerotier_acks";

/// What a signal asks other replicas to re-read, by the kind of the audited target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalKind {
    /// An API key changed: drop it from key caches.
    ApiKey,
    /// An agent changed (revoked, rotated, promoted, retired, granted, paused, quarantined):
    /// re-read its keys, what it may serve, and what it must be told.
    Agent,
    /// A join key changed.
    JoinKey,
    /// An invocation was cancelled: the replica holding its agent tells the agent.
    Invocation,
    /// A router key's rotation moved (subject: the kind, or the key id it concerns): every
    /// replica re-reads that kind's keys and reconciles.
    RouterKey,
}

impl SignalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::ApiKey => "api_key",
            SignalKind::Agent => "agent",
            SignalKind::JoinKey => "join_key",
            SignalKind::Invocation => "invocation",
            SignalKind::RouterKey => "router_key",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            SignalKind::ApiKey,
            SignalKind::Agent,
            SignalKind::JoinKey,
            SignalKind::Invocation,
            SignalKind::RouterKey,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// One change other replicas must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub seq: i64,
    /// Unknown kinds (written by a newer replica) are kept as `None` and skipped.
    pub kind: Option<SignalKind>,
    pub subject: String,
    pub at: UnixMillis,
}

/// A replica as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRecord {
    pub id: String,
    pub https_url: String,
    pub mesh_addr: String,
    pub started_at: UnixMillis,
    /// Database time of the last renewal.
    pub heartbeat_at: UnixMillis,
    /// Database time the lease ends; past it the replica serves nothing authenticated.
    pub lease_expires_at: UnixMillis,
    pub applied_seq: i64,
    pub sessions: i64,
    pub stopped_at: Option<UnixMillis>,
}

record!(ReplicaRecord in "router_replicas" {
    id, https_url, mesh_addr, started_at, heartbeat_at, lease_expires_at, applied_seq, sessions,
    stopped_at,
});

/// What a replica states when it registers.
#[derive(Debug, Clone)]
pub struct NewReplica {
    pub id: String,
    pub https_url: String,
    pub mesh_addr: String,
    pub started_at: UnixMillis,
}

/// The answer to a lease renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed: the lease ends `lease_ms` after this, by the database's clock.
    Renewed,
    /// The lease had run out and signals committed since `applied_seq`: catch up first.
    MustCatchUp,
    /// No such replica (forgotten after a long absence): register again.
    Unknown,
}

impl Backend {
    /// The database's own clock in Unix milliseconds, as an SQL expression.
    fn db_now(self) -> &'static str {
        match self {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS BIGINT)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }
}

/// Writes the signal an audited change owes the other replicas, in the change's transaction.
pub(crate) async fn signal_for(
    tx: &mut Transaction<'static, Any>,
    entry: &AuditEntry,
) -> Result<(), StoreError> {
    // A posture notice (`credential.due_soon`, …) takes nothing away: no replica acts on it.
    if entry.outcome != "success" || entry.action.starts_with("credential.") {
        return Ok(());
    }
    let kind = match entry.target_type.as_deref() {
        Some("api_key") => SignalKind::ApiKey,
        Some("agent") => SignalKind::Agent,
        Some("join_key") => SignalKind::JoinKey,
        Some("router_key") => SignalKind::RouterKey,
        // Only a cancel needs another replica (the one holding the agent); a creation is its
        // own durable row, picked up by dispatch.
        Some("invocation") if entry.action == "invocation.cancel" => SignalKind::Invocation,
        _ => return Ok(()),
    };
    let Some(subject) = entry.target_id.as_deref() else { return Ok(()) };
    write_signal(tx, kind, subject, entry.at).await
}

/// Appends one signal in `tx` (and, on PostgreSQL, its `NOTIFY`, sent at commit).
pub(crate) async fn write_signal(
    tx: &mut Transaction<'static, Any>,
    kind: SignalKind,
    subject: &str,
    at: UnixMillis,
) -> Result<(), StoreError> {
    // The counter row stays locked until this transaction ends, so the next signal's
    // transaction commits after this one: `seq` order is commit order.
    let row = sqlx::query(
        "UPDATE sequence_counters SET value = value + 1 WHERE name = 'signals' RETURNING value",
    )
    .fetch_one(&mut **tx)
    .await?;
    let seq: i64 = row.try_get("value")?;
    sqlx::query("INSERT INTO replica_signals (seq, kind, subject, at) VALUES ($1, $2, $3, $4)")
        .bind(seq)
        .bind(kind.as_str())
        .bind(subject)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    notify_at_commit(tx, SIGNAL_CHANNEL, &seq.to_string()).await
}

/// `NOTIFY channel, payload` in `tx` (PostgreSQL; nothing on SQLite): delivered when `tx`
/// commits, never on a rollback.
pub(crate) async fn notify_at_commit(
    tx: &mut Transaction<'static, Any>,
    channel: &str,
    payload: &str,
) -> Result<(), StoreError> {
    if crate::order::is_postgres(tx) {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

impl Store {
    /// Wakes other replicas' dispatch (PostgreSQL; nothing on SQLite): an invocation was
    /// queued that only their agents can take. The invocation row is what counts; a lost
    /// notification leaves it to their next dispatch pass.
    pub async fn notify_dispatch(&self) -> Result<(), StoreError> {
        self.notify(DISPATCH_CHANNEL).await
    }

    /// An empty notification on `channel` (PostgreSQL; nothing on SQLite, whose one router
    /// wakes its own tasks).
    pub(crate) async fn notify(&self, channel: &str) -> Result<(), StoreError> {
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, '')").bind(channel).execute(self.pool()).await?;
        }
        Ok(())
    }

    /// The database's clock, in Unix milliseconds.
    pub async fn db_now(&self) -> Result<UnixMillis, StoreError> {
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {} AS now", self.backend().db_now())))
                .fetch_one(self.pool())
                .await?;
        Ok(row.try_get("now")?)
    }

    /// The `seq` of the last committed signal (0 when none).
    pub async fn latest_signal_seq(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT value FROM sequence_counters WHERE name = 'signals'")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("value")?)
    }

    /// Signals after `seq`, oldest first, at most `limit`.
    pub async fn signals_after(&self, seq: i64, limit: u32) -> Result<Vec<Signal>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, subject, at FROM replica_signals WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Signal {
                    seq: row.try_get("seq")?,
                    kind: SignalKind::parse(row.try_get::<String, _>("kind")?.as_str()),
                    subject: row.try_get("subject")?,
                    at: row.try_get("at")?,
                })
            })
            .collect()
    }

    /// Registers a replica with a lease of `lease_ms`, having applied signals up to
    /// `applied_seq` (read before it loaded its state). Returns the database time.
    pub async fn register_replica(
        &self,
        replica: &NewReplica,
        applied_seq: i64,
        lease_ms: i64,
    ) -> Result<UnixMillis, StoreError> {
        let now = self.backend().db_now();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO router_replicas
                 (id, https_url, mesh_addr, started_at, heartbeat_at, lease_expires_at, applied_seq)
             VALUES ($1, $2, $3, $4, {now}, {now} + $5, $6)
             RETURNING heartbeat_at"
        )))
        .bind(&replica.id)
        .bind(&replica.https_url)
        .bind(&replica.mesh_addr)
        .bind(replica.started_at)
        .bind(lease_ms)
        .bind(applied_seq)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("heartbeat_at")?)
    }

    /// Renews a replica's lease and records what it has applied. A lease that already ran out
    /// is renewed only if no signal committed after `applied_seq`: a replica that was cut off
    /// must catch up before it serves again, so a revoke that counted it as fenced holds.
    pub async fn renew_replica(
        &self,
        id: &str,
        applied_seq: i64,
        sessions: i64,
        lease_ms: i64,
    ) -> Result<Renewal, StoreError> {
        let now = self.backend().db_now();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE router_replicas
                SET heartbeat_at = {now}, lease_expires_at = {now} + $3,
                    applied_seq = CASE WHEN applied_seq > $2 THEN applied_seq ELSE $2 END,
                    sessions = $4, stopped_at = NULL
              WHERE id = $1
                AND (lease_expires_at > {now}
                     OR $2 >= (SELECT value FROM sequence_counters WHERE name = 'signals'))
              RETURNING heartbeat_at"
        )))
        .bind(id)
        .bind(applied_seq)
        .bind(lease_ms)
        .bind(sessions)
        .fetch_optional(self.pool())
        .await?;
        if row.is_some() {
            return Ok(Renewal::Renewed);
        }
        let known = sqlx::query("SELECT 1 AS one FROM router_replicas WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(if known.is_some() { Renewal::MustCatchUp } else { Renewal::Unknown })
    }

    /// Records that replica `id` has acted on every signal up to `applied_seq`.
    pub async fn acknowledge_signals(&self, id: &str, applied_seq: i64) -> Result<(), StoreError> {
        let statement = match self.backend() {
            Backend::Sqlite => {
                "UPDATE router_replicas SET applied_seq = $2 WHERE id = $1 AND applied_seq < $2"
            }
            // One round trip: the update and its announcement (sent at commit).
            Backend::Postgres => {
                "WITH acked AS (
                     UPDATE router_replicas SET applied_seq = $2
                      WHERE id = $1 AND applied_seq < $2 RETURNING id)
                 SELECT pg_notify('xerotier_acks', id) FROM acked"
            }
        };
        sqlx::query(statement).bind(id).bind(applied_seq).execute(self.pool()).await?;
        Ok(())
    }

    /// Replicas whose lease is live and that have not applied signal `seq` yet. On PostgreSQL
    /// the rows are read `FOR SHARE`, so a renewal in flight is waited for and seen.
    pub async fn replicas_behind(&self, seq: i64) -> Result<Vec<String>, StoreError> {
        let now = self.backend().db_now();
        let lock = match self.backend() {
            Backend::Postgres => " FOR SHARE",
            Backend::Sqlite => "",
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM router_replicas
              WHERE stopped_at IS NULL AND lease_expires_at > {now} AND applied_seq < $1{lock}"
        )))
        .bind(seq)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|row| Ok(row.try_get("id")?)).collect()
    }

    /// Every registered replica, newest first.
    pub async fn list_replicas(&self) -> Result<Vec<ReplicaRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM router_replicas ORDER BY started_at DESC, id DESC",
            ReplicaRecord::COLUMNS
        )))
        .fetch_all(self.pool())
        .await?;
        all(&rows)
    }

    /// A replica that stops cleanly says so: it no longer holds anything up.
    pub async fn mark_replica_stopped(&self, id: &str) -> Result<(), StoreError> {
        let now = self.backend().db_now();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE router_replicas SET stopped_at = {now}, lease_expires_at = {now} WHERE id = $1"
        )))
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets replicas stopped or expired for longer than `older_than_ms` (database time).
    pub async fn prune_replicas(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        let now = self.backend().db_now();
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM router_replicas WHERE lease_expires_at < {now} - $1"
        )))
        .bind(older_than_ms)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes signals every live replica has applied and older than `keep_ms`.
    pub async fn prune_signals(&self, keep_ms: i64, now: UnixMillis) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM replica_signals
              WHERE at < $1
                AND seq <= COALESCE((SELECT MIN(applied_seq) FROM router_replicas
                                      WHERE stopped_at IS NULL), seq)",
        )
        .bind(now - keep_ms)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }
}
