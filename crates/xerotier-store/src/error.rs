#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("an active API key named {0:?} already exists")]
    NameTaken(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} is already revoked")]
    AlreadyRevoked(String),
    #[error("unsupported database URL {0:?}: expected sqlite:… or postgres://…")]
    UnsupportedUrl(String),
    #[error("migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
        matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
    }
}
