//! The posture monitor: at start and every `posture_interval_ms`, judges every credential,
//! sets the gauges, and announces each credential's move into `due_soon`, `overdue` or
//! `expired` with one audit record (actor: the router) and, for agent-bound kinds, one agent
//! event. Exactly once fleet-wide: the announced state lives in the store and each transition
//! is claimed by a conditional upsert committed with its record, so several replicas (or a
//! restarted one) judging the same credential write one record between them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use xerotier_core::format_rfc3339;
use xerotier_posture::{CredentialKind, PostureState};
use xerotier_store::{Outcome, PostureTransition, Store};

use super::service::{PostureFilter, PostureRow, PostureService};
use crate::agent_events::EventLog;
use crate::audit::{AuditContext, AuditLog, Change, Target};
use crate::metrics::Metrics;
use crate::service_error::ServiceError;

#[derive(Debug, Clone)]
pub struct PostureMonitor {
    pub posture: PostureService,
    pub store: Store,
    pub audit: AuditLog,
    pub events: EventLog,
    pub metrics: Metrics,
}

/// Runs the monitor until `shutdown`: once at start, then every `interval`.
pub fn spawn(
    monitor: PostureMonitor,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(err) = monitor.run_once().await {
                tracing::warn!(error = %err, "credential posture run failed; next run retries");
            }
        }
    })
}

impl PostureMonitor {
    /// One run: the gauges, then the transitions. Returns how many transitions it announced.
    pub async fn run_once(&self) -> Result<usize, ServiceError> {
        let report = self.posture.report(&PostureFilter::default()).await?;
        self.set_gauges(&report.rows);
        let announced: HashMap<(String, String), String> = self
            .store
            .announced_states()
            .await?
            .into_iter()
            .map(|a| ((a.kind, a.credential_id), a.state))
            .collect();
        let mut present = HashSet::new();
        let mut written = 0;
        for row in &report.rows {
            let key = (row.kind.as_str().to_string(), row.id.clone());
            let state = row.judgement.state;
            let last = announced.get(&key).map_or("ok", String::as_str);
            present.insert(key);
            if last == state.as_str() {
                continue;
            }
            if self.store.claim_posture_transition(&self.transition(row, report.now)).await?
                && state != PostureState::Ok
            {
                written += 1;
                if row.kind.agent_bound() {
                    self.events.written();
                }
            }
        }
        // Credentials gone since (revoked, consumed, expired out of the report): forget them.
        for (kind, id) in announced.keys().filter(|k| !present.contains(*k)) {
            self.store.forget_posture(kind, id).await?;
        }
        Ok(written)
    }

    fn set_gauges(&self, rows: &[PostureRow]) {
        let kinds = [
            CredentialKind::ApiKey,
            CredentialKind::CurveKey,
            CredentialKind::WorkspaceCredential,
            CredentialKind::JoinKey,
        ];
        let mut counts = Vec::new();
        let mut oldest = Vec::new();
        for kind in kinds {
            for state in PostureState::ALL {
                let n =
                    rows.iter().filter(|r| r.kind == kind && r.judgement.state == state).count();
                counts.push((kind.as_str(), state.as_str(), i64::try_from(n).unwrap_or(i64::MAX)));
            }
            let age = rows.iter().filter(|r| r.kind == kind).map(|r| r.judgement.age_ms).max();
            oldest.push((kind.as_str(), age.unwrap_or(0) / 1000));
        }
        self.metrics.set_posture(&counts, &oldest);
    }

    /// The claim for `row`'s current state: with its record and event unless it is back to ok.
    fn transition(&self, row: &PostureRow, now: i64) -> PostureTransition {
        let state = row.judgement.state;
        let announce = match state {
            PostureState::Ok => None,
            PostureState::DueSoon => Some(("credential.due_soon", "credential_due_soon")),
            PostureState::Overdue => Some(("credential.overdue", "credential_overdue")),
            PostureState::Expired => Some(("credential.expired", "credential_expired")),
        };
        let details = json!({
            "state": state.as_str(),
            "age_seconds": row.judgement.age_ms / 1000,
            "max_age_seconds": row.rule.max_age_ms.map(|ms| ms / 1000),
            "due_at": row.judgement.due_at.map(format_rfc3339),
            "rule": if row.judgement.by_expiry { "expiry" } else { row.rule.name.as_str() },
            "agent_id": row.agent_id,
        });
        let (audit, event) = match announce {
            None => (None, None),
            Some((action, event_type)) => {
                let change = Change::new(
                    action,
                    Target { kind: row.kind.as_str(), id: Some(&row.id), name: Some(&row.name) },
                )
                .details(details.clone());
                // The router's own action: no API key acted (like bootstrap).
                let audit = self.audit.entry(&AuditContext::default(), &change, Outcome::Success);
                let event = row
                    .agent_id
                    .as_deref()
                    .filter(|_| row.kind.agent_bound())
                    .map(|agent| self.events.event(agent, event_type, None, details));
                (Some(audit), event)
            }
        };
        PostureTransition {
            kind: row.kind.as_str().to_string(),
            credential_id: row.id.clone(),
            state: state.as_str().to_string(),
            at: now,
            audit,
            event,
        }
    }
}
