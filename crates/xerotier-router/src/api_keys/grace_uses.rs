//! Uses of rotated keys' previous values, counted in memory on the authentication path and
//! added to the store by a background flush (about once a second, and at shutdown): the hot
//! path takes one short lock only when a previous value is presented, and never writes the
//! database. The store adds each flush atomically, so the counts of several replicas sum.

use std::collections::HashMap;
use std::net::SocketAddr;

use parking_lot::Mutex;
use xerotier_core::UnixMillis;
use xerotier_store::{GraceUses, Store, StoreError};

/// Distinct keys held between flushes at most: a bound on memory if the store is unreachable
/// for long (rotated keys in their grace window are few).
const MAX_PENDING_KEYS: usize = 10_000;

#[derive(Debug, Default)]
pub struct GraceUseCounter {
    pending: Mutex<HashMap<String, GraceUses, foldhash::fast::RandomState>>,
}

impl GraceUseCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one authenticated use of key `key_id`'s previous value (of the rotation made at
    /// `rotated_at`) at `at`, from `from` (the peer address of the connection: behind a
    /// proxy, the proxy's).
    pub fn note(
        &self,
        key_id: &str,
        rotated_at: UnixMillis,
        at: UnixMillis,
        from: Option<SocketAddr>,
    ) {
        let from = from.map(|addr| addr.ip().to_string());
        let mut pending = self.pending.lock();
        match pending.get_mut(key_id) {
            // A use of a newer rotation's previous value replaces the older rotation's count.
            Some(uses) if uses.rotated_at == rotated_at => {
                uses.count = uses.count.saturating_add(1);
                if at >= uses.last_at {
                    uses.last_at = at;
                    uses.last_from = from;
                }
            }
            Some(uses) if uses.rotated_at > rotated_at => {}
            _ => {
                if pending.len() >= MAX_PENDING_KEYS && !pending.contains_key(key_id) {
                    tracing::warn!(%key_id, "grace-window use not counted: too many keys pending a flush");
                    return;
                }
                pending.insert(
                    key_id.to_string(),
                    GraceUses {
                        key_id: key_id.to_string(),
                        rotated_at,
                        count: 1,
                        last_at: at,
                        last_from: from,
                    },
                );
            }
        }
    }

    /// Adds what was counted since the last flush to the store. On failure the counts are
    /// kept for the next flush (merged with what was counted meanwhile).
    pub async fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let taken: Vec<GraceUses> = {
            let mut pending = self.pending.lock();
            if pending.is_empty() {
                return Ok(());
            }
            pending.drain().map(|(_, uses)| uses).collect()
        };
        let result = store.add_grace_uses(&taken).await;
        if result.is_err() {
            // Some may have been written before the failure; counting them twice is the lesser
            // evil than losing evidence, and the next rotation resets the count anyway.
            for uses in taken {
                self.put_back(uses);
            }
        }
        result
    }

    fn put_back(&self, uses: GraceUses) {
        let mut pending = self.pending.lock();
        match pending.get_mut(&uses.key_id) {
            Some(newer) if newer.rotated_at == uses.rotated_at => {
                newer.count = newer.count.saturating_add(uses.count);
                if uses.last_at > newer.last_at {
                    newer.last_at = uses.last_at;
                    newer.last_from = uses.last_from;
                }
            }
            Some(_) => {}
            None => {
                pending.insert(uses.key_id.clone(), uses);
            }
        }
    }

    #[cfg(test)]
    fn pending(&self, key_id: &str) -> Option<GraceUses> {
        self.pending.lock().get(key_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Option<SocketAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn uses_are_counted_with_the_latest_time_and_address() {
        let counter = GraceUseCounter::new();
        counter.note("key_a", 100, 1_000, addr("10.0.0.1:5000"));
        counter.note("key_a", 100, 3_000, addr("10.0.0.2:5000"));
        // Out of order: the count grows, the latest use stays.
        counter.note("key_a", 100, 2_000, addr("10.0.0.3:5000"));
        let uses = counter.pending("key_a").unwrap();
        assert_eq!((uses.count, uses.last_at), (3, 3_000));
        assert_eq!(uses.last_from.as_deref(), Some("10.0.0.2"));
    }

    #[test]
    fn a_newer_rotation_replaces_an_older_ones_count() {
        let counter = GraceUseCounter::new();
        counter.note("key_a", 100, 1_000, None);
        counter.note("key_a", 200, 2_000, None);
        counter.note("key_a", 100, 3_000, None);
        let uses = counter.pending("key_a").unwrap();
        assert_eq!((uses.rotated_at, uses.count, uses.last_at), (200, 1, 2_000));
    }
}
