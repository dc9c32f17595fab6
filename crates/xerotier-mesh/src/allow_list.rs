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
    /// Every key this list ever mapped, to the agent it mapped it to; kept after the key is
    /// removed (rotation retirement, revocation), so a key can never be re-mapped to another
    /// agent in this process's life. The store's `agent_curve_keys` says the same durably.
    owners: HashMap<[u8; 32], String>,
}

impl Entries {
    /// Whether `key` may map to `agent_id`: it never mapped to any other agent.
    fn may_map(&self, key: &[u8; 32], agent_id: &str) -> bool {
        self.owners.get(key).is_none_or(|owner| owner == agent_id)
    }
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

    /// Maps `key` to `agent_id`. Refused (and logged) if the key ever mapped to another agent:
    /// returns whether the key is now allowed for `agent_id`.
    pub fn allow(&self, key: [u8; 32], agent_id: &str) -> bool {
        let mut entries = self.write();
        if !entries.may_map(&key, agent_id) {
            let owner = entries.owners.get(&key).cloned().unwrap_or_default();
            drop(entries);
            tracing::error!(
                %agent_id,
                owner = %owner,
                "refused to map a CURVE key already used by another agent onto this one"
            );
            return false;
        }
        entries.generation += 1;
        let generation = entries.generation;
        entries.owners.insert(key, agent_id.to_string());
        entries.keys.insert(key, (agent_id.to_string(), generation));
        true
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

    /// Makes `keys` exactly the keys of `agent_id` (read from the store), in one step: a frame
    /// checked meanwhile sees either the old set or the new one, never neither. A key that ever
    /// mapped to another agent is left out (and logged). Returns how many keys it now has.
    pub fn set_agent_keys(&self, agent_id: &str, keys: &[[u8; 32]]) -> usize {
        let mut entries = self.write();
        entries.keys.retain(|key, (agent, _)| agent != agent_id || keys.contains(key));
        let mut refused = 0usize;
        for key in keys {
            if !entries.may_map(key, agent_id) {
                refused += 1;
                continue;
            }
            if entries.keys.contains_key(key) {
                continue;
            }
            entries.generation += 1;
            let generation = entries.generation;
            entries.owners.insert(*key, agent_id.to_string());
            entries.keys.insert(*key, (agent_id.to_string(), generation));
        }
        let now = entries.keys.values().filter(|(agent, _)| agent == agent_id).count();
        drop(entries);
        if refused > 0 {
            tracing::error!(%agent_id, refused, "left out CURVE keys already used by another agent");
        }
        now
    }

    /// Allows nothing (a fenced replica): every handshake and message is refused until the
    /// list is loaded again.
    pub fn clear(&self) {
        self.write().keys.clear();
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
    /// A key that ever mapped to another agent is left out (and logged), whatever the store says.
    pub fn replace_all(&self, fresh: impl IntoIterator<Item = ([u8; 32], String)>, since: u64) {
        let mut entries = self.write();
        let mut keys: HashMap<[u8; 32], (String, u64)> = HashMap::new();
        let mut refused = 0usize;
        for (key, agent) in fresh {
            if !entries.may_map(&key, &agent) || keys.get(&key).is_some_and(|(a, _)| *a != agent) {
                refused += 1;
                continue;
            }
            keys.insert(key, (agent, 0));
        }
        for (key, (agent, generation)) in &entries.keys {
            if *generation > since && keys.get(key).is_none_or(|(a, _)| a == agent) {
                keys.insert(*key, (agent.clone(), *generation));
            }
        }
        for (key, (agent, _)) in &keys {
            entries.owners.entry(*key).or_insert_with(|| agent.clone());
        }
        entries.keys = keys;
        drop(entries);
        if refused > 0 {
            tracing::error!(
                refused,
                "allow-list refresh: left out CURVE keys already used by another agent"
            );
        }
    }

    pub fn len(&self) -> usize {
        self.read().keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().keys.is_empty()
    }
}

#[cfg(test)]
mod set_agent_keys_tests {
    use super::*;

    #[test]
    fn an_agents_keys_are_replaced_whole_and_a_foreign_key_is_never_taken() {
        let list = AllowList::default();
        assert!(list.allow([1; 32], "agt_a"));
        assert!(list.allow([9; 32], "agt_b"));
        assert_eq!(list.set_agent_keys("agt_a", &[[1; 32], [2; 32]]), 2);
        assert_eq!(list.agent_for(&[2; 32]).as_deref(), Some("agt_a"));
        assert_eq!(list.set_agent_keys("agt_a", &[[2; 32], [9; 32]]), 1, "agt_b's key refused");
        assert_eq!(list.agent_for(&[1; 32]), None, "the retired key is gone");
        assert_eq!(list.agent_for(&[9; 32]).as_deref(), Some("agt_b"));
        assert_eq!(list.set_agent_keys("agt_a", &[]), 0);
        assert!(!list.contains_agent("agt_a"));
        assert!(list.contains_agent("agt_b"));
        list.clear();
        assert!(list.is_empty());
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

    #[test]
    fn a_key_never_maps_to_a_second_agent() {
        let list = AllowList::default();
        assert!(list.allow([1; 32], "agt_a"));
        assert!(list.allow([1; 32], "agt_a"), "the same mapping again is fine");
        assert!(!list.allow([1; 32], "agt_b"), "a live key is not re-mapped");
        assert_eq!(list.agent_for(&[1; 32]).as_deref(), Some("agt_a"));
        // Retired (rotation) or revoked: gone from the list, still never re-mapped.
        list.remove_key(&[1; 32]);
        assert!(!list.allow([1; 32], "agt_b"), "a retired key is not re-mapped");
        assert_eq!(list.agent_for(&[1; 32]), None);
        assert!(list.allow([2; 32], "agt_c"));
        assert_eq!(list.remove_agent("agt_c"), 1);
        assert!(!list.allow([2; 32], "agt_b"), "a revoked agent's key is not re-mapped");
        // Nor by a refresh from a store that says otherwise.
        list.replace_all([([2; 32], "agt_b".to_string()), ([3; 32], "agt_d".to_string())], 0);
        assert_eq!(list.agent_for(&[2; 32]), None);
        assert_eq!(list.agent_for(&[3; 32]).as_deref(), Some("agt_d"));
        list.replace_all([([3; 32], "agt_e".to_string())], list.generation());
        assert_eq!(list.agent_for(&[3; 32]), None, "a refresh cannot re-map its own keys either");
    }
}
