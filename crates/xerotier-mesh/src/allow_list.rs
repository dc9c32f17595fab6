use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// CURVE public keys allowed on the mesh, each mapped to its agent id. Shared by the ZAP thread
/// (handshakes), the I/O thread (every message) and the router (enroll, revoke, rotate).
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    inner: Arc<RwLock<Entries>>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Bumped by every local `allow`, so a refresh can keep what was added while it read.
    generation: u64,
    keys: HashMap<[u8; 32], (String, u64)>,
}

impl AllowList {
    fn read(&self) -> RwLockReadGuard<'_, Entries> {
        self.inner.read()
    }

    fn write(&self) -> RwLockWriteGuard<'_, Entries> {
        self.inner.write()
    }

    pub fn agent_for(&self, key: &[u8; 32]) -> Option<String> {
        self.read().keys.get(key).map(|(agent, _)| agent.clone())
    }

    pub fn allow(&self, key: [u8; 32], agent_id: &str) {
        let mut entries = self.write();
        entries.generation += 1;
        let generation = entries.generation;
        entries.keys.insert(key, (agent_id.to_string(), generation));
    }

    pub fn contains_agent(&self, agent_id: &str) -> bool {
        self.read().keys.values().any(|(agent, _)| agent == agent_id)
    }

    /// Removes every key of `agent_id`; returns how many were removed.
    pub fn remove_agent(&self, agent_id: &str) -> usize {
        let mut entries = self.write();
        let before = entries.keys.len();
        entries.keys.retain(|_, (agent, _)| agent != agent_id);
        before - entries.keys.len()
    }

    pub fn remove_key(&self, key: &[u8; 32]) {
        self.write().keys.remove(key);
    }

    /// Where a refresh starts: pass it to [`Self::replace_all`].
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// Replaces the list with `fresh` (read from the store), keeping keys allowed locally after
    /// `since` (they may have committed after the store was read).
    pub fn replace_all(&self, fresh: impl IntoIterator<Item = ([u8; 32], String)>, since: u64) {
        let mut entries = self.write();
        let mut keys: HashMap<_, _> = fresh.into_iter().map(|(k, a)| (k, (a, 0))).collect();
        for (key, (agent, generation)) in &entries.keys {
            if *generation > since {
                keys.insert(*key, (agent.clone(), *generation));
            }
        }
        entries.keys = keys;
    }

    pub fn len(&self) -> usize {
        self.read().keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_remove_and_replace() {
        let list = AllowList::default();
        list.allow([1; 32], "agt_a");
        list.allow([2; 32], "agt_a");
        list.allow([3; 32], "agt_b");
        assert_eq!(list.agent_for(&[3; 32]).as_deref(), Some("agt_b"));
        assert_eq!(list.remove_agent("agt_a"), 2);
        assert_eq!(list.agent_for(&[1; 32]), None);
        let since = list.generation();
        list.allow([4; 32], "agt_d"); // enrolled while the refresh was reading the store
        list.replace_all([([9; 32], "agt_c".to_string())], since);
        assert_eq!(list.len(), 2);
        assert_eq!(list.agent_for(&[3; 32]), None, "gone from the store: removed");
        assert_eq!(
            list.agent_for(&[4; 32]).as_deref(),
            Some("agt_d"),
            "added during the refresh: kept"
        );
        list.replace_all([([9; 32], "agt_c".to_string())], list.generation());
        assert_eq!(list.agent_for(&[4; 32]), None);
    }
}
