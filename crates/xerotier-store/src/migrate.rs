use sqlx::Row;
use xerotier_core::Clock;

use crate::{Backend, Store, StoreError};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

/// Append-only: a released migration is never edited, only followed by a new one. Each has a
/// slot per backend; both point at one file in `migrations/common/` while the portable subset of
/// SQL suffices, and a backend gets its own file only where the dialects differ.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "api_keys_audit",
        sqlite: include_str!("../migrations/common/0001_api_keys_audit.sql"),
        postgres: include_str!("../migrations/common/0001_api_keys_audit.sql"),
    },
    Migration {
        version: 2,
        name: "join_keys_agents",
        sqlite: include_str!("../migrations/common/0002_join_keys_agents.sql"),
        postgres: include_str!("../migrations/common/0002_join_keys_agents.sql"),
    },
    Migration {
        version: 3,
        name: "rotations_events",
        sqlite: include_str!("../migrations/common/0003_rotations_events.sql"),
        postgres: include_str!("../migrations/common/0003_rotations_events.sql"),
    },
    Migration {
        version: 4,
        name: "invocations_pauses",
        sqlite: include_str!("../migrations/common/0004_invocations_pauses.sql"),
        postgres: include_str!("../migrations/common/0004_invocations_pauses.sql"),
    },
    Migration {
        version: 5,
        name: "agent_credentials",
        sqlite: include_str!("../migrations/common/0005_agent_credentials.sql"),
        postgres: include_str!("../migrations/common/0005_agent_credentials.sql"),
    },
    Migration {
        version: 6,
        name: "grants_candidates",
        sqlite: include_str!("../migrations/common/0006_grants_candidates.sql"),
        postgres: include_str!("../migrations/common/0006_grants_candidates.sql"),
    },
    Migration {
        version: 7,
        name: "agent_curve_keys",
        sqlite: include_str!("../migrations/common/0007_agent_curve_keys.sql"),
        postgres: include_str!("../migrations/common/0007_agent_curve_keys.sql"),
    },
    Migration {
        version: 8,
        name: "quarantine",
        sqlite: include_str!("../migrations/common/0008_quarantine.sql"),
        postgres: include_str!("../migrations/common/0008_quarantine.sql"),
    },
    Migration {
        version: 9,
        name: "request_hygiene",
        sqlite: include_str!("../migrations/common/0009_request_hygiene.sql"),
        postgres: include_str!("../migrations/common/0009_request_hygiene.sql"),
    },
    Migration {
        version: 10,
        name: "replicas_signals",
        sqlite: include_str!("../migrations/common/0010_replicas_signals.sql"),
        postgres: include_str!("../migrations/common/0010_replicas_signals.sql"),
    },
    Migration {
        version: 11,
        name: "event_order",
        sqlite: include_str!("../migrations/common/0011_event_order.sql"),
        // The shared columns, then PostgreSQL's late numbering (the dialects differ there).
        postgres: concat!(
            include_str!("../migrations/common/0011_event_order.sql"),
            include_str!("../migrations/postgres/0011_event_order.sql"),
        ),
    },
    Migration {
        version: 12,
        name: "agent_replica",
        sqlite: include_str!("../migrations/common/0012_agent_replica.sql"),
        postgres: include_str!("../migrations/common/0012_agent_replica.sql"),
    },
    Migration {
        version: 13,
        name: "credential_expiry",
        sqlite: include_str!("../migrations/common/0013_credential_expiry.sql"),
        postgres: include_str!("../migrations/common/0013_credential_expiry.sql"),
    },
    Migration {
        version: 14,
        name: "credential_posture",
        sqlite: include_str!("../migrations/common/0014_credential_posture.sql"),
        postgres: include_str!("../migrations/common/0014_credential_posture.sql"),
    },
    Migration {
        version: 15,
        name: "security_webhooks",
        sqlite: include_str!("../migrations/common/0015_security_webhooks.sql"),
        postgres: include_str!("../migrations/common/0015_security_webhooks.sql"),
    },
    Migration {
        version: 16,
        name: "operations",
        sqlite: include_str!("../migrations/common/0016_operations.sql"),
        postgres: include_str!("../migrations/common/0016_operations.sql"),
    },
    Migration {
        version: 17,
        name: "api_key_grace_evidence",
        sqlite: include_str!("../migrations/common/0017_api_key_grace_evidence.sql"),
        postgres: include_str!("../migrations/common/0017_api_key_grace_evidence.sql"),
    },
    Migration {
        version: 19,
        name: "agent_signing_rotation",
        sqlite: include_str!("../migrations/common/0019_agent_signing_rotation.sql"),
        postgres: include_str!("../migrations/common/0019_agent_signing_rotation.sql"),
    },
    Migration {
        version: 20,
        name: "router_keys",
        sqlite: include_str!("../migrations/common/0020_router_keys.sql"),
        postgres: include_str!("../migrations/common/0020_router_keys.sql"),
    },
    Migration {
        version: 21,
        name: "router_key_acks",
        sqlite: include_str!("../migrations/common/0021_router_key_acks.sql"),
        postgres: include_str!("../migrations/common/0021_router_key_acks.sql"),
    },
    Migration {
        version: 22,
        name: "operation_targets_status",
        sqlite: include_str!("../migrations/common/0022_operation_targets_status.sql"),
        postgres: include_str!("../migrations/common/0022_operation_targets_status.sql"),
    },
];

/// Applies each pending migration in its own write transaction. Several routers starting at
/// once against one PostgreSQL serialize on an advisory lock; on SQLite `BEGIN IMMEDIATE` does.
/// `clock` says when each was applied (recorded for people; no decision depends on it).
pub(crate) async fn run_migrations(store: &Store, clock: &dyn Clock) -> Result<(), StoreError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(store.pool())
    .await?;
    for migration in MIGRATIONS {
        let mut tx = store.begin_write().await?;
        if store.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7271)").execute(&mut *tx).await?;
        }
        let applied = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(migration.version)
            .fetch_optional(&mut *tx)
            .await?;
        if applied.is_some() {
            continue;
        }
        let sql = match store.backend() {
            Backend::Sqlite => migration.sqlite,
            Backend::Postgres => migration.postgres,
        };
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|source| StoreError::Migration { version: migration.version, source })?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(migration.version)
        .bind(migration.name)
        .bind(clock.now_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(version = migration.version, name = migration.name, "applied migration");
    }
    Ok(())
}

impl Store {
    /// The version this build migrates to.
    pub fn latest_schema_version() -> i64 {
        MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// The highest applied migration version.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get::<i64, _>("v")?)
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;
    use xerotier_core::ManualClock;
    use xerotier_testkit::{TestDb, per_backend};

    use super::*;

    /// A database at schema version 10, with events and audit records written (as before
    /// migration 11) in another order than their ids'; then opened, which applies 11.
    async fn upgraded_from_10(db: &TestDb) -> Store {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(db.url()).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE schema_migrations (
                version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let postgres = db.backend == "postgres";
        for migration in MIGRATIONS.iter().filter(|m| m.version <= 10) {
            let sql = if postgres { migration.postgres } else { migration.sqlite };
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, 0)",
            )
            .bind(migration.version)
            .bind(migration.name)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        for id in ["evt_3", "evt_1", "evt_2"] {
            sqlx::query(
                "INSERT INTO agent_events (id, agent_id, at, event_type) VALUES ($1, 'agt_1', 1, 'x')",
            )
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        for id in ["aud_2", "aud_1"] {
            sqlx::query(
                "INSERT INTO audit_log (id, at, action, outcome) VALUES ($1, 1, 'a', 'success')",
            )
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        conn.close().await.unwrap();
        Store::connect_with_clock(db.url(), &ManualClock::new(1)).await.unwrap()
    }

    // Records written before migration 11 are numbered in id order (one router's clock made
    // them, as the listings assumed); what is written after follows them.
    per_backend!(
        event_order_numbers_existing_records_in_id_order,
        upgraded_from_10,
        |db, store| {
            assert_eq!(store.schema_version().await.unwrap(), Store::latest_schema_version());
            let seq = |id: &'static str| {
                let store = store.clone();
                async move { store.event_seq(Some(id)).await.unwrap() }
            };
            assert_eq!((seq("evt_1").await, seq("evt_2").await, seq("evt_3").await), (1, 2, 3));
            store
                .append_event(&crate::AgentEvent {
                    id: "evt_0".into(),
                    agent_id: "agt_1".into(),
                    at: 2,
                    event_type: "x".into(),
                    request_id: None,
                    details: None,
                })
                .await
                .unwrap();
            assert_eq!(seq("evt_0").await, 4, "{}", db.backend);
            let page = crate::PageRequest { limit: 10, after: None };
            let audit = store.list_audit(&crate::AuditFilter::default(), &page).await.unwrap();
            let ids: Vec<&str> = audit.items.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(ids, ["aud_1", "aud_2"], "{}", db.backend);
        }
    );

    #[tokio::test]
    async fn migrations_record_the_injected_time() {
        let db = TestDb::sqlite();
        let store = Store::connect_with_clock(db.url(), &ManualClock::new(4_242)).await.unwrap();
        let rows = sqlx::query("SELECT applied_at FROM schema_migrations").fetch_all(store.pool());
        let applied: Vec<i64> =
            rows.await.unwrap().iter().map(|r| r.try_get("applied_at").unwrap()).collect();
        assert_eq!(applied.len(), MIGRATIONS.len());
        assert!(applied.iter().all(|at| *at == 4_242), "{applied:?}");
    }
}
