//! Keyset pagination over time-ordered ids, written once for every listing.

use crate::rows::{AnyQuery, Record, sql};
use crate::{Store, StoreError};

/// Cursor pagination over time-ordered ids.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<String>,
}

/// Items of one page, and whether more follow.
#[derive(Debug, Clone)]
pub struct PageSlice<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

impl<T> PageSlice<T> {
    /// Takes rows fetched with `LIMIT limit + 1` and trims the probe row.
    pub(crate) fn from_probe(mut rows: Vec<T>, limit: u32) -> Self {
        let limit = limit as usize;
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        Self { items: rows, has_more }
    }

    /// The same page with each item turned into something else.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> PageSlice<U> {
        PageSlice { items: self.items.into_iter().map(f).collect(), has_more: self.has_more }
    }
}

impl Store {
    /// One page of `T`'s table in id order: `SELECT {cols} FROM {table} WHERE id > $1 AND
    /// (filter) ORDER BY id LIMIT $2`, fetching one row more than asked to learn `has_more`.
    /// `$1` (the cursor) and `$2` (the limit) are bound here; `filter` numbers its own
    /// placeholders from `$3`, and `bind` binds them in that order.
    pub(crate) async fn page<'q, T: Record>(
        &self,
        page: &PageRequest,
        filter: &str,
        bind: impl FnOnce(AnyQuery<'q>) -> AnyQuery<'q>,
    ) -> Result<PageSlice<T>, StoreError> {
        let template = format!(
            "SELECT {{cols}} FROM {{table}} WHERE ($1 IS NULL OR id > $1) AND ({filter})
             ORDER BY id LIMIT $2"
        );
        let query =
            sqlx::query(sql::<T>(&template)).bind(&page.after).bind(i64::from(page.limit) + 1);
        let items = self.fetch_all(bind(query)).await?;
        Ok(PageSlice::from_probe(items, page.limit))
    }
}
