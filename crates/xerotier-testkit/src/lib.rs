//! Databases for tests: every test gets a fresh SQLite file and, when PostgreSQL is configured,
//! a fresh PostgreSQL database, so that one test body runs against both backends.
//!
//! PostgreSQL is found through `XEROTIER_TEST_POSTGRES_URL` (an admin URL such as
//! `postgres://postgres@127.0.0.1:55432/postgres`). Without it the PostgreSQL half is skipped
//! with a loud message, unless `XEROTIER_REQUIRE_POSTGRES=1` (set by CI), which makes it fail.
//!
//! [`per_backend!`] writes one test body once and makes it two tests, `name::sqlite` and
//! `name::postgres`, so that a failure on one backend never hides the other.

use std::path::PathBuf;

pub const POSTGRES_URL_ENV: &str = "XEROTIER_TEST_POSTGRES_URL";
pub const REQUIRE_POSTGRES_ENV: &str = "XEROTIER_REQUIRE_POSTGRES";

/// One fresh database. Dropping it removes it.
#[derive(Debug)]
pub struct TestDb {
    pub backend: &'static str,
    url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("tempdir: {e}")));
        let path: PathBuf = dir.path().join("store.db");
        Self {
            backend: "sqlite",
            url: format!("sqlite://{}?mode=rwc", path.display()),
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A fresh PostgreSQL database, or `None` (with a warning) when none is configured.
    pub async fn postgres() -> Option<Self> {
        let Ok(admin_url) = std::env::var(POSTGRES_URL_ENV) else {
            if std::env::var(REQUIRE_POSTGRES_ENV).as_deref() == Ok("1") {
                fail(&format!("{REQUIRE_POSTGRES_ENV}=1 but {POSTGRES_URL_ENV} is not set"));
            }
            eprintln!(
                "WARNING: PostgreSQL half of this test SKIPPED: set {POSTGRES_URL_ENV} to run it"
            );
            return None;
        };
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        admin_execute(&admin_url, &format!("CREATE DATABASE {name}")).await;
        let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin_url);
        Some(Self {
            backend: "postgres",
            url: format!("{base}/{name}"),
            cleanup: Cleanup::Postgres { admin_url, name },
        })
    }

    /// SQLite always, PostgreSQL when configured.
    pub async fn all() -> Vec<Self> {
        let mut dbs = vec![Self::sqlite()];
        dbs.extend(Self::postgres().await);
        dbs
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, name } = &self.cleanup {
            let (admin_url, sql) =
                (admin_url.clone(), format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            // Drop may run inside a runtime; do the async work on a thread of its own.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(admin_execute(&admin_url, &sql));
                }
            })
            .join();
        }
    }
}

async fn admin_execute(admin_url: &str, sql: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| fail(&format!("cannot reach PostgreSQL at {admin_url}: {e}")));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| fail(&format!("{sql}: {e}")));
    let _ = conn.close().await;
}

#[allow(clippy::panic)] // test support: a broken test environment must stop the test
fn fail(message: &str) -> ! {
    panic!("{message}")
}

/// One test body, two tests: `mod $name { async fn sqlite(); async fn postgres() }`, each on a
/// fresh database of its own. `$open` turns the [`TestDb`] into what the body tests (it is
/// awaited: `async fn(&TestDb) -> T`); the body sees the database as `$db` (for
/// `$db.backend` in messages) and that subject as `$subject`. The PostgreSQL test follows the
/// policy of [`TestDb::postgres`]: skipped with a warning when none is configured, failed
/// when `XEROTIER_REQUIRE_POSTGRES=1`.
///
/// ```ignore
/// per_backend!(migrations_are_idempotent, open, |db, store| {
///     assert_eq!(store.schema_version().await.unwrap(), 5, "{}", db.backend);
/// });
/// ```
#[macro_export]
macro_rules! per_backend {
    ($name:ident, $open:path, |$db:ident, $subject:pat_param| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($db: $crate::TestDb) {
                #[allow(clippy::let_unit_value)]
                let $subject = $open(&$db).await;
                $body
            }

            #[tokio::test]
            async fn sqlite() {
                run($crate::TestDb::sqlite()).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(db) = $crate::TestDb::postgres().await {
                    run(db).await;
                }
            }
        }
    };
}
