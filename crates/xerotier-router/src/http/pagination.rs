use xerotier_proto::Page;
use xerotier_proto::page::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use xerotier_store::{PageRequest, PageSlice};

use crate::service_error::ServiceError;
use crate::validate;

/// `?limit=&after=` of a listing whose items have ids with `id_prefix` (`key_`, `agt_`, …):
/// `limit` 1-500, and `after` one of those ids (the previous page's `next_after`).
pub fn page_request(
    limit: Option<u32>,
    after: Option<String>,
    id_prefix: &str,
) -> Result<PageRequest, ServiceError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if limit == 0 || limit > MAX_PAGE_LIMIT {
        return Err(ServiceError::invalid(
            format!("limit must be between 1 and {MAX_PAGE_LIMIT}"),
            "limit",
        ));
    }
    validate::optional(after.as_deref(), |a| validate::id(id_prefix, a, "after"))?;
    Ok(PageRequest { limit, after })
}

/// Turns a store slice into an API page whose cursor is the last item's id.
pub fn into_page<T, V>(
    slice: PageSlice<T>,
    id_of: impl Fn(&T) -> String,
    view: impl Fn(T) -> V,
) -> Page<V> {
    let next_after = if slice.has_more { slice.items.last().map(&id_of) } else { None };
    Page { has_more: slice.has_more, next_after, data: slice.items.into_iter().map(view).collect() }
}
