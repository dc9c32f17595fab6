//! Per-agent limits on inbound frames, decided in the router loop before a frame is queued, so
//! a flooding agent costs O(1) per frame and nothing else: a token bucket for control frames and
//! one for invocation output, a flood detector that silences an agent for a cool-down, and the
//! hello window that makes repeated hellos one `connected` event.
//!
//! Time is the injected clock's milliseconds; nothing here reads a clock itself.

use xerotier_core::UnixMillis;

use crate::mesh_link::FleetSettings;

/// Repeated hellos within this long of the last announced one are one `connected` event.
pub const HELLO_WINDOW_MS: i64 = 5_000;
/// Hellos on a new session (routing id) are announced within a window up to this many times
/// in all: a restarted XEM, or one reconnecting on its promoted key, is still a `connected`
/// event, and an agent reconnecting in a loop is a handful per window, not one per reconnect.
pub const HELLO_ANNOUNCEMENTS_PER_WINDOW: u32 = 5;

/// Tokens are counted in thousandths of a frame, so refill is exact integer arithmetic:
/// `rate` frames per second is `rate` milli-tokens per millisecond.
const MILLI: u64 = 1_000;

/// A token bucket: `burst` frames at once, `rate` frames per second sustained.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Milli-tokens available.
    tokens: u64,
    /// Milli-tokens the bucket holds at most.
    capacity: u64,
    /// Frames per second (= milli-tokens per millisecond).
    rate: u64,
    last_ms: UnixMillis,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: UnixMillis) -> Self {
        let capacity = u64::from(burst.max(1)) * MILLI;
        Self { tokens: capacity, capacity, rate: u64::from(rate), last_ms: now }
    }

    /// Takes one frame's token if there is one. A clock that went backwards refills nothing.
    pub fn try_take(&mut self, now: UnixMillis) -> bool {
        let elapsed = u64::try_from(now.saturating_sub(self.last_ms)).unwrap_or(0);
        if elapsed > 0 {
            let refill = elapsed.saturating_mul(self.rate);
            self.tokens = self.tokens.saturating_add(refill).min(self.capacity);
            self.last_ms = now;
        }
        if self.tokens >= MILLI {
            self.tokens -= MILLI;
            true
        } else {
            false
        }
    }
}

/// The limits every agent gets, from [`FleetSettings`].
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    pub rate: u32,
    pub burst: u32,
    pub output_rate: u32,
    pub output_burst: u32,
    /// More control frames than this dropped within `flood_window_ms` silences the agent.
    pub flood_drops: u32,
    pub flood_window_ms: i64,
    pub cooldown_ms: i64,
}

impl FrameLimits {
    pub fn from_settings(settings: &FleetSettings) -> Self {
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            rate: settings.mesh_agent_frames_per_second,
            burst: settings.mesh_agent_frame_burst,
            output_rate: settings.mesh_agent_output_frames_per_second,
            output_burst: settings.mesh_agent_output_frame_burst,
            flood_drops: settings.mesh_flood_drops,
            flood_window_ms: ms(settings.mesh_flood_window_ms),
            cooldown_ms: ms(settings.mesh_flood_cooldown_ms),
        }
    }
}

/// Which bucket a frame draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameClass {
    /// Everything but invocation output: counted towards the flood disconnect.
    Control,
    /// `InvocationOutput`: its own, larger bucket; over it a chunk is dropped (the result
    /// carries the whole output), never counted towards the flood disconnect.
    Output,
}

/// What the router loop does with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Queue it; `resync` when it is the first frame after a cool-down (the agent's session,
    /// offer and pending rotation are re-established from it).
    Accept { resync: bool },
    /// Drop it, counted under this reason.
    Drop(&'static str),
    /// Drop it and silence the agent: it dropped `dropped` frames within `window_ms`.
    Disconnect { dropped: u64, window_ms: i64 },
}

/// One agent's limiter state, owned by the router loop.
#[derive(Debug, Clone)]
pub struct AgentLimiter {
    control: TokenBucket,
    output: TokenBucket,
    /// Start of the current flood window and the control frames dropped in it.
    window_start: UnixMillis,
    window_drops: u64,
    /// Frames are dropped until then.
    cooldown_until: Option<UnixMillis>,
}

impl AgentLimiter {
    pub fn new(limits: &FrameLimits, now: UnixMillis) -> Self {
        Self {
            control: TokenBucket::new(limits.rate, limits.burst, now),
            output: TokenBucket::new(limits.output_rate, limits.output_burst, now),
            window_start: now,
            window_drops: 0,
            cooldown_until: None,
        }
    }

    pub fn check(&mut self, limits: &FrameLimits, class: FrameClass, now: UnixMillis) -> Verdict {
        let mut resync = false;
        if let Some(until) = self.cooldown_until {
            if now < until {
                return Verdict::Drop("flood_cooldown");
            }
            // Served again, with full buckets.
            *self = Self::new(limits, now);
            resync = true;
        }
        let bucket = match class {
            FrameClass::Control => &mut self.control,
            FrameClass::Output => &mut self.output,
        };
        if bucket.try_take(now) {
            return Verdict::Accept { resync };
        }
        if class == FrameClass::Output {
            return Verdict::Drop("rate_limited");
        }
        if now.saturating_sub(self.window_start) >= limits.flood_window_ms {
            self.window_start = now;
            self.window_drops = 0;
        }
        self.window_drops += 1;
        if self.window_drops > u64::from(limits.flood_drops) {
            let dropped = self.window_drops;
            let window_ms = now.saturating_sub(self.window_start);
            self.cooldown_until = Some(now.saturating_add(limits.cooldown_ms));
            return Verdict::Disconnect { dropped, window_ms };
        }
        Verdict::Drop("rate_limited")
    }
}

/// What one hello does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloAction {
    /// Record a `connected` event and an info log line.
    pub announce: bool,
    /// Re-send pending rotation instructions or promotion and reload the agent's offer.
    pub resync: bool,
    /// Hellos since the last announced one that were not announced.
    pub repeated: u64,
}

/// One agent's hellos: one announcement per [`HELLO_WINDOW_MS`] (a few more for new sessions,
/// [`HELLO_ANNOUNCEMENTS_PER_WINDOW`] in all), and one resync per window unless the routing id
/// changed (a real reconnect).
#[derive(Debug, Clone, Default)]
pub struct HelloWindow {
    /// When the current window began (its first announcement) and how many it made.
    announced_at: Option<UnixMillis>,
    announced: u32,
    resynced_at: Option<UnixMillis>,
    routing_id: Option<Vec<u8>>,
    repeated: u64,
}

impl HelloWindow {
    pub fn on_hello(&mut self, routing_id: &[u8], now: UnixMillis) -> HelloAction {
        let elapsed = |at: Option<UnixMillis>| at.is_none_or(|at| now - at >= HELLO_WINDOW_MS);
        let new_route = self.routing_id.as_deref() != Some(routing_id);
        let resync = new_route || elapsed(self.resynced_at);
        let new_window = elapsed(self.announced_at);
        let announce = new_window || (new_route && self.announced < HELLO_ANNOUNCEMENTS_PER_WINDOW);
        let repeated = if announce {
            if new_window {
                self.announced_at = Some(now);
                self.announced = 0;
            }
            self.announced += 1;
            std::mem::take(&mut self.repeated)
        } else {
            self.repeated += 1;
            0
        };
        if resync {
            self.resynced_at = Some(now);
        }
        if new_route {
            self.routing_id = Some(routing_id.to_vec());
        }
        HelloAction { announce, resync, repeated }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use xerotier_core::{Clock, ManualClock};

    use super::*;

    const T0: i64 = 1_700_000_000_000;

    fn limits() -> FrameLimits {
        FrameLimits {
            rate: 200,
            burst: 400,
            output_rate: 4_000,
            output_burst: 16_384,
            flood_drops: 1_000,
            flood_window_ms: 10_000,
            cooldown_ms: 30_000,
        }
    }

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let clock = Arc::new(ManualClock::new(T0));
        let mut bucket = TokenBucket::new(200, 400, clock.now_millis());
        let taken = (0..1_000).filter(|_| bucket.try_take(clock.now_millis())).count();
        assert_eq!(taken, 400, "a full bucket gives its burst at once");
        clock.advance_millis(5);
        assert!(bucket.try_take(clock.now_millis()), "5 ms at 200/s is one frame");
        assert!(!bucket.try_take(clock.now_millis()));
        clock.advance_secs(1);
        let taken = (0..1_000).filter(|_| bucket.try_take(clock.now_millis())).count();
        assert_eq!(taken, 200, "one second refills `rate` frames");
        clock.advance_secs(3_600);
        let taken = (0..1_000).filter(|_| bucket.try_take(clock.now_millis())).count();
        assert_eq!(taken, 400, "never more than the burst");
    }

    #[test]
    fn bucket_refills_nothing_when_the_clock_goes_back() {
        let clock = Arc::new(ManualClock::new(T0));
        let mut bucket = TokenBucket::new(10, 1, clock.now_millis());
        assert!(bucket.try_take(clock.now_millis()));
        clock.advance_millis(-60_000);
        assert!(!bucket.try_take(clock.now_millis()));
        clock.set(T0 + 100);
        assert!(bucket.try_take(clock.now_millis()));
    }

    #[test]
    fn an_honest_agent_renewing_and_streaming_is_never_limited() {
        // Renewals every 100 ms (the XEM's minimum), 20 invocations started and finished every
        // second, and 20 concurrent tools streaming 64 KiB each in 80-byte lines, for a minute.
        let clock = Arc::new(ManualClock::new(T0));
        let limits = limits();
        let mut limiter = AgentLimiter::new(&limits, clock.now_millis());
        for _ in 0..60 {
            for tick in 0..10 {
                let now = clock.now_millis();
                assert_eq!(
                    limiter.check(&limits, FrameClass::Control, now),
                    Verdict::Accept { resync: false }
                );
                let per_tick = if tick == 0 { 40 } else { 0 };
                for _ in 0..per_tick {
                    assert!(matches!(
                        limiter.check(&limits, FrameClass::Control, now),
                        Verdict::Accept { .. }
                    ));
                }
                clock.advance_millis(100);
            }
        }
        // Then the 20 tools all print their whole 64 KiB of stdout at once in 80-byte lines,
        // and keep streaming 2 000 chunks a second for a minute.
        let burst = 20 * 64 * 1024 / 80;
        let now = clock.now_millis();
        for _ in 0..burst {
            assert!(matches!(
                limiter.check(&limits, FrameClass::Output, now),
                Verdict::Accept { .. }
            ));
        }
        for _ in 0..600 {
            clock.advance_millis(100);
            for _ in 0..200 {
                assert!(matches!(
                    limiter.check(&limits, FrameClass::Output, clock.now_millis()),
                    Verdict::Accept { .. }
                ));
            }
        }
    }

    #[test]
    fn a_flooder_is_silenced_for_the_cool_down_then_served_again() {
        let clock = Arc::new(ManualClock::new(T0));
        let limits = limits();
        let mut limiter = AgentLimiter::new(&limits, clock.now_millis());
        let mut verdicts = Vec::new();
        for _ in 0..1_500 {
            verdicts.push(limiter.check(&limits, FrameClass::Control, clock.now_millis()));
        }
        let accepted = verdicts.iter().filter(|v| matches!(v, Verdict::Accept { .. })).count();
        assert_eq!(accepted, 400);
        let disconnects: Vec<usize> = verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| matches!(v, Verdict::Disconnect { .. }))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(disconnects, vec![1_400], "one disconnect, after 1 000 dropped frames");
        assert_eq!(verdicts[1_400], Verdict::Disconnect { dropped: 1_001, window_ms: 0 });
        assert!(verdicts[1_401..].iter().all(|v| *v == Verdict::Drop("flood_cooldown")));
        // Output frames are dropped too while it cools down.
        assert_eq!(
            limiter.check(&limits, FrameClass::Output, clock.now_millis()),
            Verdict::Drop("flood_cooldown")
        );
        clock.advance_millis(29_999);
        assert_eq!(
            limiter.check(&limits, FrameClass::Control, clock.now_millis()),
            Verdict::Drop("flood_cooldown")
        );
        clock.advance_millis(1);
        assert_eq!(
            limiter.check(&limits, FrameClass::Control, clock.now_millis()),
            Verdict::Accept { resync: true },
            "served again after the cool-down, resynchronised once"
        );
        assert_eq!(
            limiter.check(&limits, FrameClass::Control, clock.now_millis()),
            Verdict::Accept { resync: false }
        );
    }

    #[test]
    fn drops_spread_over_windows_do_not_disconnect() {
        // 300 frames a second for a minute: 100 a second over the rate, 1 000 per 10 s window
        // at most, which is the limit, not past it.
        let clock = Arc::new(ManualClock::new(T0));
        let limits = limits();
        let mut limiter = AgentLimiter::new(&limits, clock.now_millis());
        let mut dropped = 0;
        for _ in 0..60 {
            for _ in 0..300 {
                match limiter.check(&limits, FrameClass::Control, clock.now_millis()) {
                    Verdict::Accept { .. } => {}
                    Verdict::Drop(reason) => {
                        assert_eq!(reason, "rate_limited");
                        dropped += 1;
                    }
                    Verdict::Disconnect { .. } => panic!("disconnected at the sustained limit"),
                }
            }
            clock.advance_secs(1);
        }
        assert!(dropped > 0);
    }

    #[test]
    fn output_frames_never_disconnect() {
        let clock = Arc::new(ManualClock::new(T0));
        let limits = limits();
        let mut limiter = AgentLimiter::new(&limits, clock.now_millis());
        for _ in 0..100_000 {
            let verdict = limiter.check(&limits, FrameClass::Output, clock.now_millis());
            assert!(matches!(verdict, Verdict::Accept { .. } | Verdict::Drop("rate_limited")));
        }
        assert!(matches!(
            limiter.check(&limits, FrameClass::Control, clock.now_millis()),
            Verdict::Accept { .. }
        ));
    }

    #[test]
    fn repeated_hellos_in_the_window_are_one_announcement() {
        let clock = Arc::new(ManualClock::new(T0));
        let mut window = HelloWindow::default();
        let first = window.on_hello(b"route-1", clock.now_millis());
        assert_eq!(first, HelloAction { announce: true, resync: true, repeated: 0 });
        for _ in 0..20_000 {
            clock.advance_millis(0);
            let again = window.on_hello(b"route-1", clock.now_millis());
            assert_eq!(again, HelloAction { announce: false, resync: false, repeated: 0 });
        }
        clock.advance_millis(HELLO_WINDOW_MS - 1);
        assert!(!window.on_hello(b"route-1", clock.now_millis()).announce);
        clock.advance_millis(1);
        let next = window.on_hello(b"route-1", clock.now_millis());
        assert_eq!(next, HelloAction { announce: true, resync: true, repeated: 20_001 });
    }

    #[test]
    fn a_reconnect_in_the_window_is_announced_and_resyncs_a_few_times_at_most() {
        let clock = Arc::new(ManualClock::new(T0));
        let mut window = HelloWindow::default();
        assert!(window.on_hello(b"route-1", clock.now_millis()).announce);
        clock.advance_millis(1_000);
        // The XEM restarted (or reconnected on a promoted key): a new routing id.
        let restarted = window.on_hello(b"route-2", clock.now_millis());
        assert_eq!(restarted, HelloAction { announce: true, resync: true, repeated: 0 });
        let repeated = window.on_hello(b"route-2", clock.now_millis());
        assert_eq!(repeated, HelloAction { announce: false, resync: false, repeated: 0 });
        // Reconnecting in a loop: every new session resyncs, five in all are announced.
        for route in 3..=5u32 {
            let again = window.on_hello(&route.to_be_bytes(), clock.now_millis());
            assert!(again.announce);
        }
        for route in 6..100u32 {
            let again = window.on_hello(&route.to_be_bytes(), clock.now_millis());
            assert_eq!(again, HelloAction { announce: false, resync: true, repeated: 0 });
        }
        // The window is counted from its first announcement.
        clock.advance_millis(HELLO_WINDOW_MS - 1_000);
        let later = window.on_hello(&99u32.to_be_bytes(), clock.now_millis());
        // Same session, resynced 4 s ago: announced (new window), not resynced.
        assert_eq!(later, HelloAction { announce: true, resync: false, repeated: 94 });
    }
}
