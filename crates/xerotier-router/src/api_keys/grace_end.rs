//! Ending a rotated key's grace window: now (a revocation of the previous value, in force on
//! every replica when the call returns), or once the previous value has been unused for a
//! while (checked in the background from the flushed evidence, and audited when it happens).

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use xerotier_core::{UnixMillis, format_rfc3339};
use xerotier_proto::api_keys::{EndGraceRequest, GraceEnd, MAX_WHEN_QUIET_SECONDS};
use xerotier_store::{ApiKeyRecord, Backend, StoreError};

use super::{ApiKey, ApiKeyService};
use crate::audit::{AuditContext, Change, Target};
use crate::service_error::ServiceError;
use crate::validate;

/// How often counted uses are flushed and scheduled ends checked.
pub const GRACE_WATCH_PERIOD: Duration = Duration::from_secs(1);

/// What an end-grace request did (or would do) and the key after it.
#[derive(Debug, Clone)]
pub struct GraceEndOutcome {
    pub state: GraceEnd,
    pub dry_run: bool,
    pub key: ApiKey,
}

impl ApiKeyService {
    /// Ends key `id`'s grace window now, or schedules its end for when the previous value has
    /// been unused for `when_quiet_seconds` (at once if it already has). A key with no open
    /// window is refused (`NoGraceWindow`). `dry_run` says what would happen and changes
    /// nothing.
    pub async fn end_grace(
        &self,
        context: &AuditContext,
        id: &str,
        request: EndGraceRequest,
    ) -> Result<GraceEndOutcome, ServiceError> {
        let reason = validate::reason(request.reason.as_deref())?;
        let quiet_ms = match request.when_quiet_seconds {
            None => None,
            Some(secs) if secs == 0 || secs > MAX_WHEN_QUIET_SECONDS => {
                return Err(ServiceError::invalid(
                    format!("when_quiet_seconds must be between 1 and {MAX_WHEN_QUIET_SECONDS}"),
                    "when_quiet_seconds",
                ));
            }
            Some(secs) => Some(i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000)),
        };
        // This replica's latest uses first, so that "already quiet" is judged on them.
        self.grace_uses.flush(&self.store).await?;
        let now = self.clock.now_millis();
        let record = self.get_record(id).await?;
        if record.revoked_at.is_some() {
            return Err(ServiceError::AlreadyRevoked(id.to_string()));
        }
        if !grace_open(&record, now) {
            return Err(ServiceError::NoGraceWindow(id.to_string()));
        }
        let ends_now = quiet_ms.is_none_or(|quiet| self.is_quiet(&record, quiet, now));
        let state = if ends_now { GraceEnd::Ended } else { GraceEnd::Waiting };
        if request.dry_run {
            return Ok(GraceEndOutcome { state, dry_run: true, key: ApiKey::at(record, now) });
        }
        let details = serde_json::json!({
            "trigger": if quiet_ms.is_some() { "already_quiet" } else { "request" },
            "when_quiet_seconds": request.when_quiet_seconds,
            "grace_uses": record.grace_uses,
            "grace_last_used_at": record.grace_last_used_at.map(format_rfc3339),
        });
        let target = Target { kind: "api_key", id: Some(id), name: Some(&record.name) };
        let key = match (state, quiet_ms) {
            (GraceEnd::Waiting, Some(quiet)) => {
                let change = Change::new("api_key.end_grace_scheduled", target)
                    .reason(reason)
                    .details(details);
                self.audit
                    .audited(context, change, |entry| async move {
                        self.store.schedule_api_key_grace_end(id, now, quiet, &entry).await
                    })
                    .await?
            }
            _ => {
                let change =
                    Change::new("api_key.end_grace", target).reason(reason).details(details);
                self.audit
                    .audited(context, change, |entry| async move {
                        let result = self.store.end_api_key_grace(id, now, false, &entry).await;
                        // Before answering, whatever the result: it must hold on the next request.
                        self.cache.invalidate(id);
                        result
                    })
                    .await?
            }
        };
        tracing::info!(key_id = %id, state = ?state, actor = %context.actor_label(), "api key grace end");
        Ok(GraceEndOutcome { state, dry_run: false, key: self.as_of_now(key) })
    }

    /// Whether the previous value of `record` has been unused for `quiet_ms` at `now`: since
    /// its last counted use, or since the rotation if it was never used. On PostgreSQL other
    /// replicas' uses reach the store up to one flush period late, so the quiet period is
    /// judged one period longer there (never ending the window on a value still in use).
    fn is_quiet(&self, record: &ApiKeyRecord, quiet_ms: i64, now: UnixMillis) -> bool {
        let margin = match self.store.backend() {
            Backend::Sqlite => 0,
            Backend::Postgres => i64::try_from(GRACE_WATCH_PERIOD.as_millis()).unwrap_or(0),
        };
        let since = record.grace_last_used_at.max(record.rotated_at).unwrap_or(now);
        now.saturating_sub(since) >= quiet_ms.saturating_add(margin)
    }

    /// Flushes the counted uses of previous values every [`GRACE_WATCH_PERIOD`] and ends the
    /// grace windows whose scheduled quiet period has passed, until `shutdown`; then flushes
    /// once more (before the store closes).
    pub fn spawn_grace_watch(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let keys = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(GRACE_WATCH_PERIOD);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    _ = interval.tick() => {}
                }
                if let Err(err) = keys.grace_uses.flush(&keys.store).await {
                    tracing::warn!(error = %err, "could not record grace-window uses; retrying");
                }
                if let Err(err) = keys.end_quiet_graces().await {
                    tracing::warn!(error = %err, "could not check scheduled grace ends");
                }
            }
            if let Err(err) = keys.grace_uses.flush(&keys.store).await {
                tracing::warn!(error = %err, "grace-window uses lost at shutdown");
            }
        })
    }

    /// Ends every scheduled grace window whose previous value has been quiet long enough. The
    /// end is conditional in the store, so of several replicas checking at once one ends it
    /// and the others change (and record) nothing.
    async fn end_quiet_graces(&self) -> Result<(), StoreError> {
        let now = self.clock.now_millis();
        for record in self.store.api_keys_ending_grace_when_quiet(now).await? {
            let Some(quiet_ms) = record.grace_end_quiet_ms else { continue };
            if !self.is_quiet(&record, quiet_ms, now) {
                continue;
            }
            let id = record.id.as_str();
            let target = Target { kind: "api_key", id: Some(id), name: Some(&record.name) };
            let details = serde_json::json!({
                "trigger": "when_quiet",
                "when_quiet_seconds": quiet_ms / 1000,
                "requested_at": record.grace_end_requested_at.map(format_rfc3339),
                "grace_uses": record.grace_uses,
                "grace_last_used_at": record.grace_last_used_at.map(format_rfc3339),
            });
            let change = Change::new("api_key.end_grace", target).details(details);
            let ended = self
                .audit
                .audited_refusal_to_caller(&AuditContext::default(), &change, |entry| async move {
                    let result = self.store.end_api_key_grace(id, now, true, &entry).await;
                    self.cache.invalidate(id);
                    result
                })
                .await;
            match ended {
                Ok(_) => tracing::info!(key_id = %id, "grace window ended: previous value quiet"),
                // Rotated, revoked or ended elsewhere meanwhile: nothing left to do.
                Err(StoreError::NoGraceWindow(_) | StoreError::AlreadyRevoked(_)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// Whether the value from before `record`'s last rotation is still accepted at `now`.
fn grace_open(record: &ApiKeyRecord, now: UnixMillis) -> bool {
    record.previous_verifier.is_some() && record.previous_valid_until.is_some_and(|u| now < u)
}
