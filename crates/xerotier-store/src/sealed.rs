//! Columns that hold sealed secrets. The store only keeps their text: sealing and opening are
//! the router's (`xerotier-seal`), under a master key the store never sees. What the store does
//! know is *where* they are, so that re-encrypting all of them (`xerotier-router rewrap`, and
//! sealing in place the values an older router wrote in clear) walks one list.

use sqlx::Row;

use crate::{Backend, Store, StoreError};

/// A table column of sealed secrets, and the column naming each row (unique).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedColumn {
    pub table: &'static str,
    pub key: &'static str,
    pub sealed: &'static str,
}

impl SealedColumn {
    /// The name a row's secret is sealed under (its associated data): table and row key, so a
    /// value copied to another row or table does not open.
    pub fn secret_name(&self, key: &str) -> String {
        format!("{}.{}", self.table, key)
    }
}

/// The router's own key material (mesh CURVE key, join-key signing key).
pub const ROUTER_SECRETS: SealedColumn =
    SealedColumn { table: "router_secrets", key: "name", sealed: "secret_hex" };

/// The router's rotatable keys (SPEC §9); a dropped key's secret is NULL and is skipped.
pub const ROUTER_KEYS: SealedColumn =
    SealedColumn { table: "router_keys", key: "kid", sealed: "secret_sealed" };

/// Every sealed column in the store: one line per table.
pub const SEALED_COLUMNS: &[SealedColumn] = &[ROUTER_SECRETS, ROUTER_KEYS];

/// One stored sealed (or not yet sealed) value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedValue {
    pub column: SealedColumn,
    pub key: String,
    /// The stored text. A secret until opened: never log it.
    pub text: String,
}

/// What a rewrite did to one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub column: SealedColumn,
    pub rows: usize,
    pub changed: usize,
}

/// A rewrite stopped: by the store, or by the caller's function (nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum RewriteError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Refused(E),
}

impl Store {
    /// Every value of `columns`, in key order.
    pub async fn sealed_values(
        &self,
        columns: &[SealedColumn],
    ) -> Result<Vec<SealedValue>, StoreError> {
        let mut values = Vec::new();
        for column in columns {
            let rows = sqlx::query(sqlx::AssertSqlSafe(select_sql(column, "")))
                .fetch_all(self.pool())
                .await?;
            for row in rows {
                values.push(SealedValue {
                    column: *column,
                    key: row.try_get(0)?,
                    text: row.try_get(1)?,
                });
            }
        }
        Ok(values)
    }

    /// In one write transaction: reads every value of `columns` (locked on PostgreSQL), asks
    /// `decide` for each one's new text (`None`: leave it), writes the new ones and commits.
    /// The first refusal from `decide` rolls everything back: all values change, or none.
    pub async fn rewrite_sealed<E, F>(
        &self,
        columns: &[SealedColumn],
        mut decide: F,
    ) -> Result<Vec<Rewritten>, RewriteError<E>>
    where
        E: std::error::Error + 'static,
        F: FnMut(&SealedValue) -> Result<Option<String>, E>,
    {
        let lock = match self.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        };
        let mut tx = self.begin_write().await?;
        let mut report = Vec::new();
        for column in columns {
            let rows = sqlx::query(sqlx::AssertSqlSafe(select_sql(column, lock)))
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::from)?;
            let mut done = Rewritten { column: *column, rows: rows.len(), changed: 0 };
            for row in rows {
                let value = SealedValue {
                    column: *column,
                    key: row.try_get(0).map_err(StoreError::from)?,
                    text: row.try_get(1).map_err(StoreError::from)?,
                };
                let Some(text) = decide(&value).map_err(RewriteError::Refused)? else { continue };
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE {} SET {} = $1 WHERE {} = $2",
                    column.table, column.sealed, column.key
                )))
                .bind(text)
                .bind(&value.key)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from)?;
                done.changed += 1;
            }
            report.push(done);
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(report)
    }
}

fn select_sql(column: &SealedColumn, suffix: &str) -> String {
    format!(
        "SELECT {key}, {sealed} FROM {table} WHERE {sealed} IS NOT NULL ORDER BY {key}{suffix}",
        key = column.key,
        sealed = column.sealed,
        table = column.table
    )
}
