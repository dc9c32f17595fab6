//! A per-process cache of API key rows, so that authenticating does not cost a database read.
//!
//! Every change to a key reaches this cache before the change is acknowledged: on SQLite the
//! store belongs to this one router (see `server::lock_sqlite_store`), which makes the change and
//! invalidates first; on PostgreSQL a revoke returns only once every replica has applied its
//! signal (dropping the row here) or fenced itself, and a fenced replica clears the cache
//! (`replication`).
//!
//! Races: a reader that fetched a row before a change committed must not put that stale row
//! back after the change invalidated it. Each invalidation bumps a generation; a reader notes the
//! generation before it reads and only inserts if it is unchanged.

use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

use xerotier_store::ApiKeyRecord;

/// Rows kept at most; beyond this the cache is cleared (keys are few; this bounds memory).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
pub struct KeyCache {
    /// Read by every authenticated request, written only on changes: a read lock, so
    /// concurrent requests never wait on each other.
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    /// Shared rows: a hit costs a reference count, not a copy of every field.
    rows: HashMap<String, Arc<ApiKeyRecord>, foldhash::fast::RandomState>,
}

/// Proof of the generation a reader started at.
#[derive(Debug, Clone, Copy)]
pub struct ReadTicket(u64);

impl KeyCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached row, or a ticket to present with the row read from the store.
    pub fn get(&self, key_id: &str) -> Result<Arc<ApiKeyRecord>, ReadTicket> {
        let inner = self.inner.read();
        inner.rows.get(key_id).cloned().ok_or(ReadTicket(inner.generation))
    }

    pub fn insert(&self, ticket: ReadTicket, record: &Arc<ApiKeyRecord>) {
        let mut inner = self.inner.write();
        if inner.generation != ticket.0 {
            return;
        }
        if inner.rows.len() >= MAX_ENTRIES {
            inner.rows.clear();
        }
        inner.rows.insert(record.id.clone(), Arc::clone(record));
    }

    /// Forgets every row (a fenced replica may have missed changes).
    pub fn clear(&self) {
        let mut inner = self.inner.write();
        inner.generation += 1;
        inner.rows.clear();
    }

    /// Called after a change to `key_id` committed and before the change is acknowledged.
    pub fn invalidate(&self, key_id: &str) {
        let mut inner = self.inner.write();
        inner.generation += 1;
        inner.rows.remove(key_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, revoked: bool) -> ApiKeyRecord {
        ApiKeyRecord {
            id: id.into(),
            name: "n".into(),
            scopes: "execution".into(),
            verifier: "v".into(),
            previous_verifier: None,
            previous_valid_until: None,
            created_at: 0,
            created_by: None,
            expires_at: None,
            last_used_at: None,
            rotated_at: None,
            revoked_at: revoked.then_some(1),
            revoked_by: None,
            revoked_reason: None,
            grace_uses: 0,
            grace_last_used_at: None,
            grace_last_used_from: None,
            grace_end_quiet_ms: None,
            grace_end_requested_at: None,
        }
    }

    #[test]
    fn stale_read_is_not_cached_after_an_invalidation() {
        let cache = KeyCache::new();
        let ticket = cache.get("key_a").unwrap_err();
        // A revoke commits and invalidates while the reader holds the pre-revoke row.
        cache.invalidate("key_a");
        cache.insert(ticket, &Arc::new(record("key_a", false)));
        assert!(cache.get("key_a").is_err(), "the stale row must not be served");

        let ticket = cache.get("key_a").unwrap_err();
        cache.insert(ticket, &Arc::new(record("key_a", true)));
        assert!(cache.get("key_a").unwrap().revoked_at.is_some());
    }
}
