#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("an active API key named {0:?} already exists")]
    NameTaken(String),
    #[error("a live agent is already registered as {0:?}")]
    AgentNameTaken(String),
    #[error("this CURVE public key is already registered")]
    CurveKeyTaken,
    #[error("join key {0} was already used")]
    JoinKeyUsed(String),
    #[error("join key {0} was revoked")]
    JoinKeyRevoked(String),
    #[error("join key {0} has expired")]
    JoinKeyExpired(String),
    #[error("rotation {0} is already in flight for this agent")]
    RotationInFlight(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("there is no {0} to lift")]
    NotPaused(String),
    #[error("{0} is already revoked")]
    AlreadyRevoked(String),
    #[error("{0} is the last usable API key with the management scope")]
    LastManagementKey(String),
    #[error("{0} has no open grace window")]
    NoGraceWindow(String),
    /// A router key rotation that cannot happen from where the store is (another in
    /// progress, a phase that moved meanwhile).
    #[error("{0}")]
    RouterKeyConflict(String),
    #[error("unsupported database URL {0:?}: expected sqlite:… or postgres://…")]
    UnsupportedUrl(String),
    #[error("migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
    #[error("database file {path}: {source}")]
    File { path: std::path::PathBuf, source: std::io::Error },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
        matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
    }

    /// Which unique index a violation hit, by index name (both backends report it in the
    /// message: PostgreSQL names the constraint, SQLite the columns).
    pub(crate) fn violated(err: &sqlx::Error, index: &str, columns: &str) -> bool {
        match err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                let message = db.message();
                db.constraint() == Some(index)
                    || message.contains(index)
                    || message.contains(columns)
            }
            _ => false,
        }
    }
}
