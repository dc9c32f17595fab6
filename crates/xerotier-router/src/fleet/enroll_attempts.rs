//! Refused enrollment attempts (SPEC 6.1): each is audited as `agent.enroll`, outcome `denied`,
//! with the join key the token names (a label read without trusting the token), a short stable
//! reason and the peer address; records are rate-limited per source IP (a token bucket on the
//! injected clock), so a flood of bad attempts cannot fill the log. What the limit drops is
//! counted (`xerotier_router_enroll_denied_unrecorded_total`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use xerotier_core::{SharedClock, UnixMillis};
use xerotier_store::Outcome;

use crate::audit::{AuditContext, AuditLog, Change, Target};
use crate::metrics::Metrics;

/// Records a minute per source, sustained.
pub const RECORDS_PER_MINUTE: i64 = 10;
/// Records a source may write at once before the sustained rate applies.
pub const BURST: i64 = 20;
/// Sources tracked at once; beyond it, full (idle) buckets are forgotten first.
const MAX_SOURCES: usize = 10_000;

/// One token is `UNIT` units; a bucket gains `RECORDS_PER_MINUTE * UNIT / 60_000` units a ms.
const UNIT: i64 = 60_000;
const CAPACITY: i64 = BURST * UNIT;

/// One refused attempt, as the record describes it.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    /// The join key the token names: only a label (see
    /// [`xerotier_credentials::unverified_join_key_id`]).
    pub join_key_id: Option<&'a str>,
    /// `expired`, `bad_signature`, `wrong_algorithm`, `used`, `revoked`, `unknown_key`,
    /// `name_taken`, `curve_key_taken`, `weak_key`, `malformed`, …
    pub reason: &'static str,
    /// The error code the caller was answered with.
    pub error_code: &'static str,
    /// The registration name asked for, when it is a valid name.
    pub registration_name: Option<&'a str>,
    /// The request field that was refused, if one was.
    pub param: Option<&'a str>,
    /// `Denied` for a refusal; `Failed` when the router could not answer (store down).
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub struct EnrollAttempts {
    audit: AuditLog,
    clock: SharedClock,
    metrics: Metrics,
    limiter: Arc<Mutex<Limiter>>,
}

impl EnrollAttempts {
    pub fn new(audit: AuditLog, clock: SharedClock, metrics: Metrics) -> Self {
        Self { audit, clock, metrics, limiter: Arc::new(Mutex::new(Limiter::default())) }
    }

    /// Audits `attempt`, unless its source has used up its share of records.
    pub async fn record(&self, context: &AuditContext, attempt: Attempt<'_>) {
        let source = source_of(context.client_addr.as_deref());
        let admitted = self.limiter.lock().admit(&source, self.clock.now_millis());
        if !admitted {
            self.metrics.enroll_denied_unrecorded();
            tracing::debug!(%source, reason = attempt.reason, "refused enrollment not recorded (rate limit)");
            return;
        }
        let target = Target { kind: "join_key", id: attempt.join_key_id, name: None };
        let change = Change::new("agent.enroll", target).reason(Some(attempt.reason)).details(
            serde_json::json!({
                "error": attempt.error_code,
                "registration_name": attempt.registration_name,
                "param": attempt.param,
            }),
        );
        tracing::info!(
            %source,
            join_key = attempt.join_key_id.unwrap_or("-"),
            reason = attempt.reason,
            "enrollment refused"
        );
        self.audit.record_attempt(context, &change, attempt.outcome).await;
    }
}

/// The rate-limit key: the peer's IP (any port), or the address text as given.
fn source_of(client_addr: Option<&str>) -> String {
    match client_addr {
        Some(addr) => match addr.parse::<SocketAddr>() {
            Ok(socket) => socket.ip().to_string(),
            Err(_) => addr.to_string(),
        },
        None => "unknown".to_string(),
    }
}

#[derive(Debug, Default)]
struct Limiter {
    buckets: HashMap<String, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    units: i64,
    at: UnixMillis,
}

impl Bucket {
    fn refilled(self, now: UnixMillis) -> i64 {
        let elapsed = now.saturating_sub(self.at).max(0);
        self.units.saturating_add(elapsed.saturating_mul(RECORDS_PER_MINUTE)).min(CAPACITY)
    }
}

impl Limiter {
    /// Takes one record's worth from `source`'s bucket; false when it has none left.
    fn admit(&mut self, source: &str, now: UnixMillis) -> bool {
        if !self.buckets.contains_key(source) && self.buckets.len() >= MAX_SOURCES {
            // Forget sources whose bucket is full again: they lose nothing by it.
            self.buckets.retain(|_, bucket| bucket.refilled(now) < CAPACITY);
            if self.buckets.len() >= MAX_SOURCES {
                return false;
            }
        }
        let bucket =
            self.buckets.entry(source.to_string()).or_insert(Bucket { units: CAPACITY, at: now });
        let units = bucket.refilled(now);
        bucket.at = now.max(bucket.at);
        if units < UNIT {
            bucket.units = units;
            return false;
        }
        bucket.units = units - UNIT;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_ten_a_minute() {
        let mut limiter = Limiter::default();
        let admitted = (0..200).filter(|_| limiter.admit("10.0.0.1", 1_000)).count();
        assert_eq!(admitted, BURST as usize, "a flood gets the burst only");
        assert!(limiter.admit("10.0.0.2", 1_000), "another source has its own bucket");
        assert!(!limiter.admit("10.0.0.1", 1_000 + 5_999));
        assert!(limiter.admit("10.0.0.1", 1_000 + 6_000), "one record per 6 s after that");
        assert!(!limiter.admit("10.0.0.1", 1_000 + 6_000));
        let later = 1_000 + 6_000 + 60_000;
        let refilled = (0..200).filter(|_| limiter.admit("10.0.0.1", later)).count();
        assert_eq!(refilled, 10, "a quiet minute gives ten more");
        // A clock that goes back never mints records.
        assert!(!limiter.admit("10.0.0.1", 0));
    }

    #[test]
    fn the_source_is_the_peer_ip_whatever_the_port() {
        assert_eq!(source_of(Some("127.0.0.1:5000")), "127.0.0.1");
        assert_eq!(source_of(Some("[::1]:5000")), "::1");
        assert_eq!(source_of(None), "unknown");
    }

    #[test]
    fn many_sources_cannot_grow_the_table_without_bound() {
        let mut limiter = Limiter::default();
        for i in 0..MAX_SOURCES {
            assert!(limiter.admit(&format!("s{i}"), 0));
        }
        assert!(!limiter.admit("one-too-many", 0), "every bucket in use: refused");
        assert!(limiter.admit("one-too-many", 60_000), "once idle buckets refill, room again");
        assert!(limiter.buckets.len() <= MAX_SOURCES);
    }
}
