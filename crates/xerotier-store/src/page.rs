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
}
