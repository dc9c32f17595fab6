//! Refused enrollment attempts (SPEC 6.1): each is audited as `agent.enroll`, outcome `denied`,
//! with the join key the token names (a label read without trusting the token), a short stable
//! reason and the peer address; records are rate-limited per source IP (a token bucket on the
//! injected clock), so a flood of bad attempts cannot fill the log. What the limit drops is
//! counted (`xerotier_router_enroll_denied_unrecorded_total`).

use std::sync::Arc;

use parking_lot::Mutex;
use xerotier_core::SharedClock;
use xerotier_store::Outcome;

use crate::audit::{AuditContext, AuditLog, Change, Target};
use crate::metrics::Metrics;
use crate::request_limits::{SourceLimiter, source_of_text};

/// Records a minute per source, sustained.
pub const RECORDS_PER_MINUTE: u32 = 10;
/// Records a source may write at once before the sustained rate applies.
pub const BURST: u32 = 20;

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
    limiter: Arc<Mutex<SourceLimiter>>,
}

impl EnrollAttempts {
    pub fn new(audit: AuditLog, clock: SharedClock, metrics: Metrics) -> Self {
        let limiter = SourceLimiter::new(RECORDS_PER_MINUTE, BURST);
        Self { audit, clock, metrics, limiter: Arc::new(Mutex::new(limiter)) }
    }

    /// Audits `attempt`, unless its source has used up its share of records.
    pub async fn record(&self, context: &AuditContext, attempt: Attempt<'_>) {
        let source = source_of_text(context.client_addr.as_deref());
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
