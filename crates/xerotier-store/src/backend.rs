use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Connection, Executor, Transaction};
use xerotier_core::{Clock, SystemClock};

use crate::StoreError;
use crate::migrate::run_migrations;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The file behind a `sqlite:` URL, if it names one (not `:memory:`).
pub fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(path))
}

/// Hides every password in a database URL before it reaches an error message, a log or a
/// `Debug`: the one in the user info (`user:password@`) and any query parameter that carries
/// one (`password=`, `sslpassword=`, and any other whose name says password, secret or token).
/// A URL too odd to parse keeps only its scheme.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // `sqlite:path` and the like carry no user info; their query is still checked.
        return redact_query(url);
    };
    let (scheme, rest) = (&url[..scheme_end], &url[scheme_end + 3..]);
    let (before_query, query) = match rest.find('?') {
        Some(q) => (&rest[..q], Some(&rest[q..])),
        None => (rest, None),
    };
    let mut out = format!("{scheme}://");
    match before_query.rfind('@') {
        Some(at) => {
            let userinfo = &before_query[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***@")),
                None => out.push_str(&format!("{userinfo}@")),
            }
            out.push_str(&before_query[at + 1..]);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        out.push_str(&redact_query(query));
    }
    out
}

/// Replaces the value of every secret-bearing parameter of the `?…` part of `text`.
fn redact_query(text: &str) -> String {
    let Some(q) = text.find('?') else { return text.to_string() };
    let (head, query) = (&text[..q], &text[q + 1..]);
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if is_secret_param(name) => format!("{name}=***"),
            _ => param.to_string(),
        })
        .collect();
    format!("{head}?{}", params.join("&"))
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "secret", "token"].iter().any(|word| name.contains(word))
}

/// Makes the SQLite file behind `url` (and its `-wal`/`-shm`, which SQLite creates with the
/// database file's permission bits) readable by its owner only: created 0600 when the URL asks
/// for creation (`mode=rwc`) and it does not exist yet, narrowed to 0600 when an older router
/// left it wider.
fn restrict_sqlite_files(url: &str) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let Some(db) = sqlite_path(url) else { return Ok(()) };
    let io = |source| StoreError::File { path: db.clone(), source };
    if !db.exists() && url.contains("mode=rwc") {
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&db) {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(io(err)),
        }
    }
    for path in [db.clone(), suffixed(&db, "-wal"), suffixed(&db, "-shm")] {
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.permissions().mode() & 0o077 != 0
        {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|source| StoreError::File { path: path.clone(), source })?;
        }
    }
    Ok(())
}

fn suffixed(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    std::path::PathBuf::from(name)
}

/// A pooled connection idle at least this long is pinged before it is used again.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// How every pool of the store connects: `max_connections` at most, pinged only after idling,
/// and on SQLite with the pragmas durability and concurrency rely on.
fn pool_options(backend: Backend, max_connections: u32) -> AnyPoolOptions {
    let pool_options = AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // sqlx pings every connection it hands out, a round trip before every query (on
        // PostgreSQL one over the network). Only one that sat idle a while is pinged here:
        // that is the one a restarted or failed-over server has dropped, and it is replaced
        // before use as before; a connection in steady use shows a failure on its query.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        });
    match backend {
        Backend::Sqlite => pool_options.after_connect(|conn, _meta| {
            Box::pin(async move {
                // WAL lets readers proceed during a write; FULL sync because a revocation
                // that was acknowledged must survive power loss.
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                Ok(())
            })
        }),
        Backend::Postgres => pool_options,
    }
}

/// The durable state of one router (or of several sharing a PostgreSQL database).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: crate::listen::ListenUrl,
}

impl Store {
    /// Opens (creating if needed) the SQLite file at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Self, StoreError> {
        Self::connect(&format!("sqlite://{}?mode=rwc", path.display())).await
    }

    /// Connects to `sqlite:…` or `postgres://…` and applies pending migrations: the production
    /// entry, and the one place the store is handed the wall clock ([`SystemClock`], which
    /// only dates the migrations it applies). Everything else takes its time from the caller.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_clock(url, &SystemClock).await
    }

    /// [`Store::connect`] with the clock that dates applied migrations chosen by the caller.
    pub async fn connect_with_clock(url: &str, clock: &dyn Clock) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        if backend == Backend::Sqlite {
            restrict_sqlite_files(url)?;
        }
        let options = AnyConnectOptions::from_str(url)?;
        let max = match backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        };
        let pool = pool_options(backend, max).connect_with(options).await?;
        let store = Self { pool, backend, url: crate::listen::ListenUrl::new(url) };
        run_migrations(&store, clock).await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The same database through a pool of its own of at most `max_connections`, for work
    /// that must not queue behind the main pool's (a replica's lease renewal: a renewal that
    /// waits for a connection under load fences the replica). Connects on first use. On
    /// SQLite, where one router owns the store and nothing is fenced, the same pool.
    pub fn with_own_pool(&self, max_connections: u32) -> Result<Store, StoreError> {
        if self.backend == Backend::Sqlite {
            return Ok(self.clone());
        }
        let options = AnyConnectOptions::from_str(self.url.as_str())?;
        let pool = pool_options(self.backend, max_connections).connect_lazy_with(options);
        Ok(Self { pool, backend: self.backend, url: self.url.clone() })
    }

    pub(crate) fn listen_url(&self) -> &crate::listen::ListenUrl {
        &self.url
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a write transaction. On SQLite it takes the write lock up front (`BEGIN
    /// IMMEDIATE`) so that a read-then-write inside it cannot fail to upgrade; on PostgreSQL row
    /// locks and constraints do that work.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_is_chosen_by_scheme() {
        assert_eq!(Backend::from_url("sqlite:///x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::from_url("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert!(Backend::from_url("mysql://u@h/db").is_err());
    }

    #[test]
    fn sqlite_path_is_taken_from_the_url() {
        assert_eq!(sqlite_path("sqlite:///var/x.db?mode=rwc"), Some("/var/x.db".into()));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://h/db"), None);
    }

    #[test]
    fn password_never_appears_in_redacted_url() {
        assert_eq!(redact_url("postgres://u:hunter2@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("sqlite:///x.db"), "sqlite:///x.db");
        let cases = [
            ("postgres://u:hun@ter2@h/db", "postgres://u:***@h/db"),
            ("postgres://h/db?user=u&password=hunter2", "postgres://h/db?user=u&password=***"),
            (
                "postgresql://u@h/db?sslmode=verify-full&sslpassword=hunter2&PASSWORD=hunter2",
                "postgresql://u@h/db?sslmode=verify-full&sslpassword=***&PASSWORD=***",
            ),
            ("postgres://u:hunter2@h/db?password=hunter2", "postgres://u:***@h/db?password=***"),
            (
                "postgres://h/db?options=a@b&auth_token=hunter2",
                "postgres://h/db?options=a@b&auth_token=***",
            ),
            ("sqlite:x.db?password=hunter2", "sqlite:x.db?password=***"),
            ("not a url hunter2", "not a url hunter2"),
        ];
        for (url, redacted) in cases {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
        assert!(!redact_url("postgres://u:hunter2@h/db?x=1").contains("hunter2"));
    }
}
