//! What one replica knows of promoted CURVE keys not yet retired, kept consistent with what it
//! reads from the store while it also changes them itself (see [`PromotedKeys`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

/// A promoted key the agent has not been seen on yet: (request id, new key, old key).
pub(super) type Promoted = (String, [u8; 32], Option<[u8; 32]>);

/// Agents between promotion and first sight on the new key. This replica's own changes (a
/// promotion it made, a retirement, a revocation) are numbered per agent; what is read from the
/// store (on hello, on another replica's signal, in the safety net) is applied only if no own
/// change *to that agent* happened since the read began, so a read that raced a promotion here
/// cannot undo it, while another agent's change (thousands a minute in a fleet rotation) does
/// not void it. The change numbers are kept only while a read that began before them is in
/// flight.
#[derive(Debug, Default)]
pub(super) struct PromotedKeys(Mutex<PromotedInner>);

#[derive(Debug, Default)]
struct PromotedInner {
    entries: HashMap<String, Promoted>,
    /// The number of the latest change made here, and per agent, that of its own latest one.
    generation: u64,
    changed: HashMap<String, u64>,
    /// Reads in flight, by the generation they began at.
    reading: std::collections::BTreeMap<u64, usize>,
}

/// A read of the store in flight; dropping it (applied or not) lets old change numbers go.
pub(super) struct ReadTicket {
    keys: Arc<PromotedKeys>,
    generation: u64,
}

impl Drop for ReadTicket {
    fn drop(&mut self) {
        let mut inner = self.keys.0.lock();
        if let std::collections::btree_map::Entry::Occupied(mut reads) =
            inner.reading.entry(self.generation)
        {
            *reads.get_mut() -= 1;
            if *reads.get() == 0 {
                reads.remove();
            }
        }
        inner.prune();
    }
}

impl PromotedInner {
    /// A change made here to the agent's entry: numbered, and remembered for the reads that
    /// began before it (none in flight: nothing to remember).
    fn note_change(&mut self, agent_id: &str) {
        self.generation += 1;
        if !self.reading.is_empty() {
            self.changed.insert(agent_id.to_string(), self.generation);
        }
    }

    fn put(&mut self, agent_id: &str, promoted: Option<Promoted>) {
        match promoted {
            Some(promoted) => self.entries.insert(agent_id.to_string(), promoted),
            None => self.entries.remove(agent_id),
        };
    }

    /// Change numbers no read in flight can be older than are of no more use.
    fn prune(&mut self) {
        match self.reading.keys().next().copied() {
            None => self.changed.clear(),
            Some(oldest) => self.changed.retain(|_, at| *at > oldest),
        }
    }
}

impl PromotedKeys {
    pub(super) fn get(&self, agent_id: &str) -> Option<Promoted> {
        self.0.lock().entries.get(agent_id).cloned()
    }

    pub(super) fn set_here(&self, agent_id: &str, promoted: Option<Promoted>) {
        let mut inner = self.0.lock();
        inner.note_change(agent_id);
        inner.put(agent_id, promoted);
    }

    /// Removes the agent's entry only if it is still the one for `request_id` (a retirement
    /// must not drop the next rotation's promotion made meanwhile).
    pub(super) fn clear_if(&self, agent_id: &str, request_id: &str) {
        let mut inner = self.0.lock();
        if inner.entries.get(agent_id).is_some_and(|p| p.0 == request_id) {
            inner.note_change(agent_id);
            inner.put(agent_id, None);
        }
    }

    /// Where a read of the store starts.
    pub(super) fn ticket(self: &Arc<Self>) -> ReadTicket {
        let mut inner = self.0.lock();
        let generation = inner.generation;
        *inner.reading.entry(generation).or_default() += 1;
        ReadTicket { keys: self.clone(), generation }
    }

    /// What the store said, read since `ticket`; ignored if this replica changed that agent
    /// meanwhile (the change is newer than the read).
    pub(super) fn set_read(&self, ticket: &ReadTicket, agent_id: &str, promoted: Option<Promoted>) {
        let mut inner = self.0.lock();
        if inner.changed.get(agent_id).is_some_and(|at| *at > ticket.generation) {
            return;
        }
        inner.put(agent_id, promoted);
    }

    /// The agents this replica holds a promotion for.
    pub(super) fn agents(&self) -> HashSet<String> {
        self.0.lock().entries.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn promoted(request: &str, new: u8, old: u8) -> Option<Promoted> {
        Some((request.into(), [new; 32], Some([old; 32])))
    }

    #[test]
    fn a_read_that_raced_a_promotion_here_does_not_undo_it() {
        let keys = Arc::new(PromotedKeys::default());
        let ticket = keys.ticket();
        // The store was read before the promotion committed here...
        keys.set_here("agt_a", promoted("rot_1", 2, 1));
        // ...and its answer (no promotion) arrives after: it is ignored.
        keys.set_read(&ticket, "agt_a", None);
        drop(ticket);
        assert_eq!(keys.get("agt_a").map(|p| p.1), Some([2; 32]));
        // A read that began after every change here is applied.
        let ticket = keys.ticket();
        keys.set_read(&ticket, "agt_a", None);
        assert!(keys.get("agt_a").is_none());
        keys.set_read(&ticket, "agt_b", promoted("rot_2", 4, 3));
        assert!(keys.get("agt_b").is_some());
    }

    #[test]
    fn another_agents_change_does_not_void_a_read() {
        // In a fleet rotation promotions and retirements happen here many times a second; a
        // read of agent a (its hello here after a promotion on another replica) must still
        // count, or a's old key would stay accepted.
        let keys = Arc::new(PromotedKeys::default());
        let ticket = keys.ticket();
        keys.set_here("agt_b", promoted("rot_b", 6, 5));
        keys.clear_if("agt_b", "rot_b");
        keys.set_read(&ticket, "agt_a", promoted("rot_a", 2, 1));
        assert_eq!(keys.get("agt_a").map(|p| p.0), Some("rot_a".to_string()));
    }

    #[test]
    fn a_retirement_does_not_drop_the_next_rotations_promotion() {
        let keys = Arc::new(PromotedKeys::default());
        keys.set_here("agt_a", promoted("rot_1", 2, 1));
        // The retirement of rot_1 was committed, and rot_2 promoted before it was noted here.
        keys.set_here("agt_a", promoted("rot_2", 3, 2));
        keys.clear_if("agt_a", "rot_1");
        assert_eq!(keys.get("agt_a").map(|p| p.0), Some("rot_2".to_string()));
        keys.clear_if("agt_a", "rot_2");
        assert!(keys.get("agt_a").is_none());
    }

    #[test]
    fn change_numbers_are_kept_only_while_an_older_read_is_in_flight() {
        let keys = Arc::new(PromotedKeys::default());
        keys.set_here("agt_a", promoted("rot_1", 2, 1));
        assert!(keys.0.lock().changed.is_empty(), "no read in flight: nothing to remember");
        let first = keys.ticket();
        keys.set_here("agt_a", None);
        let second = keys.ticket();
        keys.set_here("agt_b", None);
        assert_eq!(keys.0.lock().changed.len(), 2);
        drop(first);
        // The second read began after a's change: only b's is still of use.
        assert_eq!(keys.0.lock().changed.keys().collect::<Vec<_>>(), vec!["agt_b"]);
        drop(second);
        let inner = keys.0.lock();
        assert!(inner.changed.is_empty() && inner.reading.is_empty());
    }
}
