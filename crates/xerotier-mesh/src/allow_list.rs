use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// CURVE public keys allowed on the mesh, each mapped to its agent id. Shared by the ZAP thread
/// (handshakes), the I/O thread (every message) and the router (enroll, revoke, rotate).
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    inner: Arc<RwLock<HashMap<[u8; 32], String>>>,
}

impl AllowList {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<[u8; 32], String>> {
        match self.inner.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<[u8; 32], String>> {
        match self.inner.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn agent_for(&self, key: &[u8; 32]) -> Option<String> {
        self.read().get(key).cloned()
    }

    pub fn allow(&self, key: [u8; 32], agent_id: &str) {
        self.write().insert(key, agent_id.to_string());
    }

    /// Removes every key of `agent_id`; returns how many were removed.
    pub fn remove_agent(&self, agent_id: &str) -> usize {
        let mut map = self.write();
        let before = map.len();
        map.retain(|_, agent| agent != agent_id);
        before - map.len()
    }

    pub fn remove_key(&self, key: &[u8; 32]) {
        self.write().remove(key);
    }

    /// Replaces the whole list (a refresh from the store).
    pub fn replace_all(&self, entries: impl IntoIterator<Item = ([u8; 32], String)>) {
        let fresh: HashMap<_, _> = entries.into_iter().collect();
        *self.write() = fresh;
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
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
        list.replace_all([([9; 32], "agt_c".to_string())]);
        assert_eq!(list.len(), 1);
        assert_eq!(list.agent_for(&[3; 32]), None);
    }
}
