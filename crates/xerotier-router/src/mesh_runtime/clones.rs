//! Clone detection: the same agent key on two live sessions at once (its identity files copied
//! to a second host).
//!
//! Every connection gets a routing id of its own, and a reconnect (XEM restart, router
//! restart, network blip) gets a new one while the old connection goes quiet for good. So one
//! key seen on a new routing id is normal; frames coming back from an *older* routing id after
//! a newer one spoke are not — except for a frame or two the old connection had in flight. Two
//! live processes keep coming back to each other's ids with every lease renewal.

use std::collections::VecDeque;

use xerotier_core::UnixMillis;

/// Returns to an older session within [`WINDOW_MS`] that make a clone.
pub const RETURNS_FOR_A_CLONE: usize = 3;
/// How far back returns count.
pub const WINDOW_MS: i64 = 60_000;
/// Routing ids remembered per agent (the newest).
const REMEMBERED: usize = 8;

/// One agent's recent sessions, as its frame task sees them in order.
#[derive(Debug, Default)]
pub struct CloneWatch {
    /// Routing ids, most recently *first seen* last.
    sessions: VecDeque<Vec<u8>>,
    /// The routing id of the previous frame.
    last: Option<Vec<u8>>,
    /// When a frame came back from an older session.
    returns: VecDeque<UnixMillis>,
}

impl CloneWatch {
    /// Notes one frame; true when it completes the evidence of two live sessions (then the
    /// evidence starts again, so a released agent that is still cloned is caught again).
    pub fn observe(&mut self, routing_id: &[u8], now: UnixMillis) -> bool {
        let switched = self.last.as_deref().is_some_and(|last| last != routing_id);
        let known = self.sessions.iter().position(|s| s.as_slice() == routing_id);
        match known {
            // Back to a session that a newer one had already replaced.
            Some(index) if switched && index + 1 < self.sessions.len() => {
                self.returns.push_back(now);
            }
            Some(_) => {}
            None => {
                self.sessions.push_back(routing_id.to_vec());
                if self.sessions.len() > REMEMBERED {
                    self.sessions.pop_front();
                }
            }
        }
        self.last = Some(routing_id.to_vec());
        while self.returns.front().is_some_and(|at| now - at > WINDOW_MS) {
            self.returns.pop_front();
        }
        if self.returns.len() >= RETURNS_FOR_A_CLONE {
            self.returns.clear();
            return true;
        }
        false
    }

    /// Distinct sessions seen recently (for the event's details).
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_restarts_and_a_stray_frame_are_not_a_clone() {
        let mut watch = CloneWatch::default();
        let mut now = 0;
        // Twenty restarts, each a new session, each renewing a few times.
        for session in 0u8..20 {
            for _ in 0..5 {
                now += 500;
                assert!(!watch.observe(&[session], now), "session {session}");
            }
        }
        // A blip: the old connection delivers one frame after the new one spoke.
        assert!(!watch.observe(&[20], now + 1));
        assert!(!watch.observe(&[19], now + 2));
        assert!(!watch.observe(&[20], now + 3));
        for step in 0..100 {
            assert!(!watch.observe(&[20], now + 10 + step));
        }
    }

    #[test]
    fn two_live_sessions_alternating_are_a_clone() {
        let mut watch = CloneWatch::default();
        let mut caught = None;
        for round in 0..10 {
            let now = round * 1_000;
            if watch.observe(b"host-a", now) || watch.observe(b"host-b", now + 500) {
                caught = Some(round);
                break;
            }
        }
        assert_eq!(caught, Some(3), "at the third return to the older session");
        assert_eq!(watch.sessions(), 2);
    }

    #[test]
    fn returns_spread_beyond_the_window_do_not_add_up() {
        let mut watch = CloneWatch::default();
        watch.observe(b"a", 0);
        watch.observe(b"b", 1);
        let mut now = 2;
        for _ in 0..10 {
            assert!(!watch.observe(b"a", now), "one return a window");
            assert!(!watch.observe(b"b", now + 1));
            now += WINDOW_MS;
        }
    }
}
