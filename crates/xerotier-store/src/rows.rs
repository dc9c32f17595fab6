//! Rows to records, written once.
//!
//! Every stored record type names its table and columns and says how one row becomes one
//! record ([`Record`], declared with [`record!`] so the column list and the field list cannot
//! drift apart). The skeletons every table shares are written here against it: SQL with the
//! column list filled in ([`sql`]), reading rows with sqlx errors turned into [`StoreError`]
//! ([`Store::fetch_optional`], [`Store::fetch_all`]), get one by id ([`Store::get`]), a
//! conditional `UPDATE … RETURNING` committed with its events and audit record
//! ([`Store::update_audited`]) and the soft revocation built on it ([`Store::revoke`]).
//! Keyset paging is in `page.rs`.

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};
use xerotier_core::UnixMillis;

use crate::{AgentEvent, AuditEntry, Store, StoreError};

/// A query over the `Any` driver, before it runs.
pub(crate) type AnyQuery<'q> = Query<'q, Any, AnyArguments>;

/// A record stored one per row of `TABLE`.
pub(crate) trait Record: Sized {
    const TABLE: &'static str;
    /// Comma-separated, in the order of the record's fields.
    const COLUMNS: &'static str;
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error>;
}

/// One column read into one field. Flags are stored as `0`/`1` BIGINT, the one boolean both
/// backends share.
pub(crate) trait Column: Sized {
    fn read(row: &AnyRow, name: &str) -> Result<Self, sqlx::Error>;
}

macro_rules! column_as_stored {
    ($($ty:ty),+) => {$(
        impl Column for $ty {
            fn read(row: &AnyRow, name: &str) -> Result<Self, sqlx::Error> {
                row.try_get(name)
            }
        }
    )+};
}

column_as_stored!(String, Option<String>, i64, Option<i64>);

impl Column for bool {
    fn read(row: &AnyRow, name: &str) -> Result<Self, sqlx::Error> {
        Ok(row.try_get::<i64, _>(name)? != 0)
    }
}

/// Declares a [`Record`] whose columns are named like its fields:
/// `record!(Type in "table" { field, … })`. Every field must be listed (the struct literal it
/// expands to would not compile otherwise), and the listed order is the column order.
macro_rules! record {
    ($ty:ident in $table:literal { $first:ident $(, $field:ident)* $(,)? }) => {
        impl $crate::rows::Record for $ty {
            const TABLE: &'static str = $table;
            const COLUMNS: &'static str =
                concat!(stringify!($first) $(, ", ", stringify!($field))*);

            fn from_row(row: &::sqlx::any::AnyRow) -> Result<Self, ::sqlx::Error> {
                Ok(Self {
                    $first: $crate::rows::Column::read(row, stringify!($first))?,
                    $($field: $crate::rows::Column::read(row, stringify!($field))?,)*
                })
            }
        }
    };
}
pub(crate) use record;

/// `template` with `{table}` and `{cols}` filled in for `T`.
pub(crate) fn sql<T: Record>(template: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(template.replace("{table}", T::TABLE).replace("{cols}", T::COLUMNS))
}

/// The record in `row`, if there is one.
pub(crate) fn one<T: Record>(row: Option<AnyRow>) -> Result<Option<T>, StoreError> {
    Ok(row.as_ref().map(T::from_row).transpose()?)
}

/// The records in `rows`, in order.
pub(crate) fn all<T: Record>(rows: &[AnyRow]) -> Result<Vec<T>, StoreError> {
    Ok(rows.iter().map(T::from_row).collect::<Result<Vec<_>, _>>()?)
}

/// What a table's revocation does besides setting `revoked_at`, `revoked_by` and
/// `revoked_reason` on an unrevoked row: more assignments (`also_set`, each starting `, `) and
/// more conditions (`only_if`, each starting ` AND `).
pub(crate) struct RevokeSql {
    pub also_set: &'static str,
    pub only_if: &'static str,
}

impl RevokeSql {
    pub(crate) const PLAIN: Self = Self { also_set: "", only_if: "" };
}

impl Store {
    /// Runs `query` on the pool: the one record it returns, if any.
    pub(crate) async fn fetch_optional<T: Record>(
        &self,
        query: AnyQuery<'_>,
    ) -> Result<Option<T>, StoreError> {
        one(query.fetch_optional(self.pool()).await?)
    }

    /// Runs `query` on the pool: every record it returns.
    pub(crate) async fn fetch_all<T: Record>(
        &self,
        query: AnyQuery<'_>,
    ) -> Result<Vec<T>, StoreError> {
        all(&query.fetch_all(self.pool()).await?)
    }

    /// The record of `T`'s table with this id.
    pub(crate) async fn get<T: Record>(&self, id: &str) -> Result<Option<T>, StoreError> {
        self.fetch_optional(
            sqlx::query(sql::<T>("SELECT {cols} FROM {table} WHERE id = $1")).bind(id),
        )
        .await
    }

    /// Runs one conditional `UPDATE … RETURNING {cols}` in a write transaction and, when its
    /// condition held, writes `events` and `audit` in that transaction before committing.
    /// `None` (and nothing written) when it changed no row.
    pub(crate) async fn update_audited<T: Record>(
        &self,
        query: AnyQuery<'_>,
        events: &[AgentEvent],
        audit: &AuditEntry,
    ) -> Result<Option<T>, StoreError> {
        let mut tx = self.begin_write().await?;
        let Some(row) = query.fetch_optional(&mut *tx).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        for event in events {
            event.insert(&mut tx).await?;
        }
        audit.commit_with(tx).await?;
        Ok(Some(T::from_row(&row)?))
    }

    /// Soft-revokes the unrevoked row `id` of `T`'s table, with its audit record. `None` when
    /// it was not revocable (already revoked, absent, or `extra.only_if` did not hold).
    pub(crate) async fn revoke<T: Record>(
        &self,
        id: &str,
        now: UnixMillis,
        revoked_by: Option<&str>,
        reason: Option<&str>,
        extra: RevokeSql,
        audit: &AuditEntry,
    ) -> Result<Option<T>, StoreError> {
        let RevokeSql { also_set, only_if } = extra;
        let template = format!(
            "UPDATE {{table}} SET revoked_at = $2, revoked_by = $3, revoked_reason = $4{also_set}
             WHERE id = $1 AND revoked_at IS NULL{only_if} RETURNING {{cols}}"
        );
        let query =
            sqlx::query(sql::<T>(&template)).bind(id).bind(now).bind(revoked_by).bind(reason);
        self.update_audited(query, &[], audit).await
    }

    /// Why a revocation of `id` changed nothing: it is already revoked, or there is no such
    /// row (`NotFound(what)`).
    pub(crate) async fn why_not_revocable<T: Record>(
        &self,
        id: &str,
        what: String,
    ) -> Result<StoreError, StoreError> {
        Ok(match self.get::<T>(id).await? {
            Some(_) => StoreError::AlreadyRevoked(id.to_string()),
            None => StoreError::NotFound(what),
        })
    }
}
