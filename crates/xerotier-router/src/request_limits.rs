//! Limits on what one caller can make the router do: the settings ([`RequestLimits`]) and a
//! token bucket per source address ([`SourceLimiter`], on the injected clock's milliseconds;
//! nothing here reads a clock), used for failed authentications (`auth.rs`) and for the audit
//! records of refused enrollments (`fleet/enroll_attempts.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;

use xerotier_core::UnixMillis;

/// The request limits the router enforces (flags `--auth-failures-per-minute`,
/// `--auth-failure-burst`, `--max-event-streams-per-key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Failed authentications a source address may make per minute, sustained; past its
    /// burst and this rate, its requests to authenticated routes are refused with 429
    /// (`too_many_auth_failures`) before any key is looked at.
    pub auth_failures_per_minute: u32,
    /// Failed authentications a source address may make at once.
    pub auth_failure_burst: u32,
    /// Live event streams (SSE) one API key may hold open at once on this router.
    pub event_streams_per_key: u32,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self { auth_failures_per_minute: 60, auth_failure_burst: 50, event_streams_per_key: 8 }
    }
}

/// Sources tracked at once; beyond it, full (idle) buckets are forgotten first.
const MAX_SOURCES: usize = 10_000;
/// One token is `UNIT` units; a bucket gains `per_minute` units a millisecond.
const UNIT: i64 = 60_000;

/// The rate-limit key of a request: the peer's IP (any port). Behind a reverse proxy every
/// client shares the proxy's address.
pub fn source_of(peer: Option<SocketAddr>) -> String {
    match peer {
        Some(peer) => peer.ip().to_string(),
        None => "unknown".to_string(),
    }
}

/// [`source_of`] an address recorded as text (`ip:port`), or the text as given.
pub fn source_of_text(client_addr: Option<&str>) -> String {
    match client_addr.map(|addr| (addr, addr.parse::<SocketAddr>())) {
        Some((_, Ok(peer))) => source_of(Some(peer)),
        Some((addr, Err(_))) => addr.to_string(),
        None => source_of(None),
    }
}

/// A token bucket per source: `burst` at once, `per_minute` sustained. A clock that goes
/// back never mints tokens.
#[derive(Debug)]
pub struct SourceLimiter {
    per_minute: i64,
    capacity: i64,
    buckets: HashMap<String, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    units: i64,
    at: UnixMillis,
}

impl SourceLimiter {
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            per_minute: i64::from(per_minute),
            capacity: i64::from(burst.max(1)) * UNIT,
            buckets: HashMap::new(),
        }
    }

    /// `bucket`'s units at `now`.
    fn refilled(&self, bucket: Bucket, now: UnixMillis) -> i64 {
        refill(bucket, now, self.per_minute, self.capacity)
    }

    /// Takes one token from `source`'s bucket; false when it has none left. When every
    /// tracked source still holds a partly used bucket, a new source gets none.
    pub fn admit(&mut self, source: &str, now: UnixMillis) -> bool {
        let (per_minute, capacity) = (self.per_minute, self.capacity);
        if !self.buckets.contains_key(source) && self.buckets.len() >= MAX_SOURCES {
            // Forget sources whose bucket is full again: they lose nothing by it.
            self.buckets.retain(|_, b| refill(*b, now, per_minute, capacity) < capacity);
            if self.buckets.len() >= MAX_SOURCES {
                return false;
            }
        }
        let bucket =
            self.buckets.entry(source.to_string()).or_insert(Bucket { units: capacity, at: now });
        let units = refill(*bucket, now, per_minute, capacity);
        bucket.at = now.max(bucket.at);
        if units < UNIT {
            bucket.units = units;
            return false;
        }
        bucket.units = units - UNIT;
        true
    }

    /// How long until `source` has a token again, in milliseconds; `None` when it has one
    /// now (an unknown source has a full bucket).
    pub fn wait_millis(&self, source: &str, now: UnixMillis) -> Option<i64> {
        let bucket = self.buckets.get(source)?;
        let units = self.refilled(*bucket, now);
        if units >= UNIT {
            return None;
        }
        let missing = UNIT - units;
        Some(match self.per_minute {
            0 => i64::MAX,
            rate => (missing + rate - 1) / rate,
        })
    }

    /// Sources tracked now.
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }
}

fn refill(bucket: Bucket, now: UnixMillis, per_minute: i64, capacity: i64) -> i64 {
    let elapsed = now.saturating_sub(bucket.at).max(0);
    bucket.units.saturating_add(elapsed.saturating_mul(per_minute)).min(capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut limiter = SourceLimiter::new(10, 20);
        let admitted = (0..200).filter(|_| limiter.admit("10.0.0.1", 1_000)).count();
        assert_eq!(admitted, 20, "a flood gets the burst only");
        assert!(limiter.admit("10.0.0.2", 1_000), "another source has its own bucket");
        assert!(!limiter.admit("10.0.0.1", 1_000 + 5_999));
        assert!(limiter.admit("10.0.0.1", 1_000 + 6_000), "one per 6 s after that");
        assert!(!limiter.admit("10.0.0.1", 1_000 + 6_000));
        let later = 1_000 + 6_000 + 60_000;
        let refilled = (0..200).filter(|_| limiter.admit("10.0.0.1", later)).count();
        assert_eq!(refilled, 10, "a quiet minute gives ten more");
        // A clock that goes back never mints tokens.
        assert!(!limiter.admit("10.0.0.1", 0));
    }

    #[test]
    fn the_wait_is_until_the_next_token() {
        let mut limiter = SourceLimiter::new(60, 2);
        assert_eq!(limiter.wait_millis("a", 0), None, "unknown: a full bucket");
        assert!(limiter.admit("a", 0));
        assert_eq!(limiter.wait_millis("a", 0), None, "one left");
        assert!(limiter.admit("a", 0));
        assert_eq!(limiter.wait_millis("a", 0), Some(1_000), "60 a minute: one a second");
        assert_eq!(limiter.wait_millis("a", 400), Some(600));
        assert_eq!(limiter.wait_millis("a", 1_000), None);
        let mut stopped = SourceLimiter::new(0, 1);
        assert!(stopped.admit("a", 0));
        assert_eq!(stopped.wait_millis("a", 1_000_000), Some(i64::MAX), "no refill at all");
    }

    #[test]
    fn the_source_is_the_peer_ip_whatever_the_port() {
        assert_eq!(source_of_text(Some("127.0.0.1:5000")), "127.0.0.1");
        assert_eq!(source_of_text(Some("[::1]:5000")), "::1");
        assert_eq!(source_of_text(Some("odd")), "odd");
        assert_eq!(source_of_text(None), "unknown");
        assert_eq!(source_of(Some("[::1]:5000".parse().unwrap())), "::1");
    }

    #[test]
    fn many_sources_cannot_grow_the_table_without_bound() {
        let mut limiter = SourceLimiter::new(10, 20);
        for i in 0..MAX_SOURCES {
            assert!(limiter.admit(&format!("s{i}"), 0));
        }
        assert!(!limiter.admit("one-too-many", 0), "every bucket in use: refused");
        assert!(limiter.admit("one-too-many", 60_000), "once idle buckets refill, room again");
        assert!(limiter.sources() <= MAX_SOURCES);
    }
}
