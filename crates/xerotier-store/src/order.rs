//! The database's order of events and audit records (`seq`), and paging by it.
//!
//! Ids carry the writing router's clock and are made before the commit, so with several
//! replicas they order records neither by commit nor by one clock: a cursor compared by id
//! skips what a replica with a lagging clock wrote, or what committed after a later-made id.
//! `agent_events` and `audit_log` are listed and resumed by `seq` instead, which the database
//! assigns so that `seq` order is the order in which records become visible: a reader that has
//! seen `seq` n is never later shown a record numbered below n.
//!
//! - SQLite numbers a row in its `INSERT` (`MAX(seq) + 1`): one writer at a time holds the write
//!   lock from `BEGIN IMMEDIATE` to the commit, so insert order is commit order.
//! - PostgreSQL numbers rows late: they are inserted with `seq` NULL (invisible to readers) and
//!   numbered after they committed, by `xerotier_assign_seq` (migration 11), which readers call
//!   before they read. A counter row would be exact too, but its lock, held to each commit,
//!   would queue every audited write fleet-wide (invocation creation, on the hot path, among
//!   them) behind the previous one's WAL flush; late numbering costs writers nothing.
//!
//! Public ids stay what they are: a cursor given as an id is resolved to that record's `seq`.

use sqlx::{Any, Row, Transaction};

use crate::rows::{AnyQuery, Record, all, sql};
use crate::{Backend, PageRequest, PageSlice, Store, StoreError};

/// The PostgreSQL channel every event insert notifies (at its commit); the payload is the
/// agent id. Replicas listen and wake that agent's live streams.
pub const EVENTS_CHANNEL: &str = "xerotier_events";

/// A record and the place the database gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced<T> {
    pub seq: i64,
    pub record: T,
}

/// Whether `tx` runs on PostgreSQL (the other backend is SQLite).
pub(crate) fn is_postgres(tx: &mut Transaction<'static, Any>) -> bool {
    tx.backend_name() == "PostgreSQL"
}

/// What an `INSERT` into a sequenced `table` adds on SQLite: the `seq` column and its value,
/// the next number (the write lock is held, so nobody else numbers meanwhile). PostgreSQL
/// inserts leave `seq` NULL for [`Store::assign_seqs`].
pub(crate) fn sqlite_seq_value(table: &str) -> String {
    format!("(SELECT COALESCE(MAX(seq), 0) + 1 FROM {table})")
}

impl Store {
    /// Numbers the committed, unnumbered rows of `table` (PostgreSQL; SQLite numbered them as
    /// they were inserted). Every read by `seq` calls it first, so what committed before the
    /// read is in it. One round trip; it takes a lock only when there is something to number.
    pub(crate) async fn assign_seqs(&self, table: &str) -> Result<u64, StoreError> {
        if self.backend() != Backend::Postgres {
            return Ok(0);
        }
        let row = sqlx::query("SELECT xerotier_assign_seq($1) AS assigned")
            .bind(table)
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("assigned")?).unwrap_or(0))
    }

    /// Numbers what has committed unnumbered in both sequenced tables (PostgreSQL; nothing to
    /// do on SQLite). Readers number before they read, so this is not needed for exactness; a
    /// replica calls it every second so that rows nobody reads for a while (audit records) do
    /// not pile up into one large numbering at the next read.
    pub async fn number_pending(&self) -> Result<u64, StoreError> {
        let events = self.assign_seqs("agent_events").await?;
        Ok(events + self.assign_seqs("audit_log").await?)
    }

    /// One page of `T`'s table in `seq` order, after the record whose id is `page.after`. The
    /// same placeholders as [`Store::page`]: `$1` the cursor, `$2` the limit, `filter`'s own
    /// from `$3`. A cursor that names no record of the table (not one this API gave out)
    /// resumes after the last record whose id sorts before it.
    pub(crate) async fn page_by_seq<'q, T: Record>(
        &self,
        page: &PageRequest,
        filter: &str,
        bind: impl FnOnce(AnyQuery<'q>) -> AnyQuery<'q>,
    ) -> Result<PageSlice<T>, StoreError> {
        self.assign_seqs(T::TABLE).await?;
        let template = format!(
            "SELECT {{cols}} FROM {{table}}
             WHERE seq > COALESCE((SELECT seq FROM {{table}} WHERE id = $1),
                                  (SELECT MAX(seq) FROM {{table}} WHERE id < $1), 0)
               AND ({filter})
             ORDER BY seq LIMIT $2"
        );
        let query =
            sqlx::query(sql::<T>(&template)).bind(&page.after).bind(i64::from(page.limit) + 1);
        let items = self.fetch_all(bind(query)).await?;
        Ok(PageSlice::from_probe(items, page.limit))
    }

    /// Up to `limit` records of `T`'s table numbered after `seq`, in order, with their numbers.
    /// `$1` is `seq`, `$2` the limit; `filter` numbers its own placeholders from `$3`.
    pub(crate) async fn after_seq<'q, T: Record>(
        &self,
        seq: i64,
        limit: u32,
        filter: &str,
        bind: impl FnOnce(AnyQuery<'q>) -> AnyQuery<'q>,
    ) -> Result<Vec<Sequenced<T>>, StoreError> {
        self.assign_seqs(T::TABLE).await?;
        let template = format!(
            "SELECT {{cols}}, seq FROM {{table}} WHERE seq > $1 AND ({filter})
             ORDER BY seq LIMIT $2"
        );
        let query = sqlx::query(sql::<T>(&template)).bind(seq).bind(i64::from(limit));
        let rows = bind(query).fetch_all(self.pool()).await?;
        let records = all::<T>(&rows)?;
        rows.iter()
            .zip(records)
            .map(|(row, record)| Ok(Sequenced { seq: row.try_get("seq")?, record }))
            .collect()
    }

    /// The `seq` a cursor given as an id stands for: that record's, or, for an id that names
    /// no record of `T`'s table, the last one whose id sorts before it; 0 (the start) for
    /// none. Resolved once, so a stream's position cannot move as records are added.
    pub(crate) async fn seq_of<T: Record>(&self, after: Option<&str>) -> Result<i64, StoreError> {
        self.assign_seqs(T::TABLE).await?;
        let row = sqlx::query(sql::<T>(
            "SELECT COALESCE((SELECT seq FROM {table} WHERE id = $1),
                             (SELECT MAX(seq) FROM {table} WHERE id < $1), 0) AS seq",
        ))
        .bind(after)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("seq")?)
    }
}
