//! Executing one operation, wave by wave, through the existing services, so every
//! per-credential guarantee holds: each rotation and revocation is audited and evented by its
//! own service, and a revocation returns (counts as done) only once every replica applied it.
//!
//! The executor holds the operation's runner lease while it works and renews it between a
//! wave's batches of starts and while it waits; when the lease is lost (another replica took it
//! over after this one stalled) it stops at once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use xerotier_core::UnixMillis;
use xerotier_proto::operations::SKIPPED_OFFLINE;
use xerotier_proto::status::{
    AgentStatus, OperationKind, OperationStatus, RotationStatus, TargetStatus,
};
use xerotier_store::{Backend, OperationRecord, OperationTargetRecord, Outcome, TargetInFlight};

use super::service::OperationService;
use crate::audit::{AuditContext, Change, Target};
use crate::fleet::agents::AgentService;
use crate::fleet::join_keys::JoinKeyService;
use crate::fleet::rotation::RotationService;
use crate::service_error::ServiceError;

/// How long a runner's claim on an operation lasts without renewal. A router killed mid-way
/// leaves its operations to another (or its restarted self) this long after its last renewal;
/// a router that stops cleanly gives them up at once.
pub const LEASE_MS: i64 = 5_000;
/// How often rotations in flight are read while a wave waits for them.
const POLL: Duration = Duration::from_millis(100);
/// How often the lease is renewed while the runner works: each renewal is a durable write,
/// and once per target it was a fifth of a fleet rotation's writes. A tenth of the lease.
const RENEW_EVERY_MS: i64 = LEASE_MS / 10;

/// How many of a wave's targets are started at once. One at a time, a start's few durable
/// writes made a wave of 500 take 20–30 s to request under load (BENCHMARKS, 10k runs); on
/// PostgreSQL concurrent commits share their flushes: 8, half of its pool, so API requests
/// and the rest of the router still get connections. SQLite's writes take turns, and
/// concurrent writers wait in its busy handler's sleeps: there, one at a time was faster
/// (BENCHMARKS, emergency fleet rotation, A/B of 2026-12-03).
fn starts_at_once(backend: Backend) -> usize {
    match backend {
        Backend::Postgres => 8,
        Backend::Sqlite => 1,
    }
}

/// The operation as last renewed, and when.
struct Lease {
    op: OperationRecord,
    renewed_at: UnixMillis,
}

/// Everything an execution uses.
#[derive(Debug, Clone)]
pub struct Executor {
    pub operations: OperationService,
    pub rotations: RotationService,
    pub agents: AgentService,
    pub join_keys: JoinKeyService,
    /// This replica, as the lease names it.
    pub replica_id: String,
}

/// Why an execution stopped before the operation ended.
enum Stop {
    /// The router is stopping: the lease is given up for the next start.
    Shutdown,
    /// Another runner holds the operation now.
    LeaseLost,
}

type Step<T> = Result<T, StepError>;

enum StepError {
    Stop(Stop),
    Service(ServiceError),
}

impl From<ServiceError> for StepError {
    fn from(err: ServiceError) -> Self {
        StepError::Service(err)
    }
}

impl From<xerotier_store::StoreError> for StepError {
    fn from(err: xerotier_store::StoreError) -> Self {
        StepError::Service(err.into())
    }
}

impl Executor {
    fn now(&self) -> UnixMillis {
        self.operations.clock.now_millis()
    }

    /// Takes the lease of `id` if it is free; the operation as claimed.
    pub async fn claim(&self, id: &str) -> Result<Option<OperationRecord>, ServiceError> {
        let now = self.now();
        Ok(self.operations.store.claim_operation(id, &self.replica_id, now, now + LEASE_MS).await?)
    }

    /// Runs the claimed operation until it ends, halts, the router stops or the lease is lost.
    pub async fn run(&self, id: &str, shutdown: &CancellationToken) {
        match self.execute(id, shutdown).await {
            Ok(()) => {}
            Err(StepError::Stop(Stop::Shutdown)) => {
                if let Err(err) =
                    self.operations.store.release_operation(id, &self.replica_id).await
                {
                    tracing::warn!(operation = %id, error = %err, "could not release the operation's lease");
                }
                tracing::info!(operation = %id, "router stopping: operation left for the next runner");
            }
            Err(StepError::Stop(Stop::LeaseLost)) => {
                tracing::warn!(operation = %id, "operation lease lost: another runner has it");
            }
            // Retried at the runner's next tick (the lease runs out, or is renewed by it).
            Err(StepError::Service(err)) => {
                tracing::warn!(operation = %id, error = %err, "operation step failed; will retry");
            }
        }
    }

    /// Renews the lease when it was last renewed [`RENEW_EVERY_MS`] ago or more; the
    /// operation as last read.
    async fn renew_if_due(
        &self,
        lease: &mut Lease,
        shutdown: &CancellationToken,
    ) -> Step<OperationRecord> {
        if shutdown.is_cancelled() {
            return Err(StepError::Stop(Stop::Shutdown));
        }
        if self.now() - lease.renewed_at >= RENEW_EVERY_MS {
            lease.op = self.renew(&lease.op.id, shutdown).await?;
            lease.renewed_at = self.now();
        }
        Ok(lease.op.clone())
    }

    /// Renews the lease; the operation as it is now.
    async fn renew(&self, id: &str, shutdown: &CancellationToken) -> Step<OperationRecord> {
        if shutdown.is_cancelled() {
            return Err(StepError::Stop(Stop::Shutdown));
        }
        self.claim(id).await?.ok_or(StepError::Stop(Stop::LeaseLost))
    }

    async fn execute(&self, id: &str, shutdown: &CancellationToken) -> Step<()> {
        loop {
            let op = self.renew(id, shutdown).await?;
            let targets = self.operations.store.operation_targets(id).await?;
            let status = OperationStatus::parse(&op.status);
            if status == Some(OperationStatus::Cancelled) {
                // Rotations already requested end by themselves; record them, then finish.
                self.wait_in_flight(&op, shutdown).await?;
                return self.finish(&op, OperationStatus::Cancelled, "operation.end").await;
            }
            if status != Some(OperationStatus::Running) {
                return Ok(());
            }
            if targets.iter().any(|t| t.status == TargetStatus::Running.as_str()) {
                // Taken over mid-wave (a restart): that wave ends before the next one starts.
                self.wait_in_flight(&op, shutdown).await?;
                let op = self.renew(id, shutdown).await?;
                if op.status == OperationStatus::Running.as_str() && over_threshold(&op) {
                    return self.finish(&op, OperationStatus::Halted, "operation.halt").await;
                }
                continue;
            }
            let Some(wave) = next_wave(&targets) else {
                // Nothing left to start: wait for what is in flight, then end.
                self.wait_in_flight(&op, shutdown).await?;
                let op = self.renew(id, shutdown).await?;
                if op.status != OperationStatus::Running.as_str() {
                    continue;
                }
                if over_threshold(&op) {
                    return self.finish(&op, OperationStatus::Halted, "operation.halt").await;
                }
                return self.finish(&op, OperationStatus::Completed, "operation.end").await;
            };
            self.operations.store.set_operation_wave(id, i64::from(wave), self.now()).await?;
            let mut lease = Lease { op: self.renew(id, shutdown).await?, renewed_at: self.now() };
            let to_start: Vec<&OperationTargetRecord> =
                targets.iter().filter(|t| t.wave == i64::from(wave) && startable(t)).collect();
            let at_once = starts_at_once(self.operations.store.backend());
            for batch in to_start.chunks(at_once) {
                // A cancel needs no renewal to take effect: it cancels the pending targets in
                // the store, and a start claims its target only from pending.
                let op = self.renew_if_due(&mut lease, shutdown).await?;
                if op.status != OperationStatus::Running.as_str() {
                    // Cancelled (or halted elsewhere): stop before the next batch.
                    break;
                }
                // Every start of the batch runs to its end before an error stops the wave: a
                // target claimed but not requested is started again by the next attempt.
                let started =
                    futures::future::join_all(batch.iter().map(|t| self.start_target(&op, t)))
                        .await;
                started.into_iter().collect::<Step<Vec<()>>>()?;
            }
            let op = self.renew(id, shutdown).await?;
            self.wait_in_flight(&op, shutdown).await?;
            let op = self.renew(id, shutdown).await?;
            if op.status == OperationStatus::Running.as_str() && over_threshold(&op) {
                return self.finish(&op, OperationStatus::Halted, "operation.halt").await;
            }
        }
    }

    /// Moves the operation from running (or an unfinished cancel) to `to`, with its record.
    async fn finish(
        &self,
        op: &OperationRecord,
        to: OperationStatus,
        action: &'static str,
    ) -> Step<()> {
        let context = OperationService::context_of(op);
        let details = serde_json::json!({
            "status": to, "kind": op.kind, "target_count": op.target_count,
            "succeeded": op.succeeded_count, "failed": op.failed_count,
            "skipped": op.skipped_count, "cancelled": op.cancelled_count,
        });
        let change =
            Change::new(action, Target { kind: "operation", id: Some(&op.id), name: None })
                .reason(Some(&op.reason))
                .details(details);
        // The runner acts here, for the operator who created the operation.
        let entry = self.operations.audit.entry(
            &AuditContext { correlation_id: None, ..context },
            &change,
            Outcome::Success,
        );
        let finish = to != OperationStatus::Halted;
        self.operations
            .store
            .transition_operation(
                &op.id,
                &op.status,
                to.as_str(),
                self.now(),
                finish,
                false,
                false,
                &entry,
            )
            .await?;
        tracing::warn!(operation = %op.id, status = %to, succeeded = op.succeeded_count, failed = op.failed_count, skipped = op.skipped_count, "operation {}", to);
        Ok(())
    }

    /// Sets one target's end.
    async fn end_target(
        &self,
        op: &OperationRecord,
        target: &OperationTargetRecord,
        status: TargetStatus,
        reason: Option<&str>,
    ) -> Step<()> {
        let now = self.now();
        self.operations
            .store
            .set_operation_target(
                &op.id,
                &target.target_id,
                &["pending", "running"],
                status.as_str(),
                reason,
                None,
                Some(now),
                now,
            )
            .await?;
        Ok(())
    }

    /// Starts one target: a rotation is requested (and waited for with its wave); a
    /// revocation is done (it returns once in force everywhere).
    async fn start_target(&self, op: &OperationRecord, target: &OperationTargetRecord) -> Step<()> {
        let now = self.now();
        let claimed = self
            .operations
            .store
            .set_operation_target(
                &op.id,
                &target.target_id,
                &["pending", "running"],
                TargetStatus::Running.as_str(),
                None,
                None,
                None,
                now,
            )
            .await?;
        if !claimed {
            return Ok(());
        }
        let context = OperationService::context_of(op);
        let id = target.target_id.as_str();
        match OperationKind::parse(&op.kind) {
            Some(OperationKind::CurveRotate) => self.rotate(op, target, &context).await,
            Some(OperationKind::RevokeJoinKeys) => {
                let outcome = self.join_keys.revoke(&context, id, Some(&op.reason)).await;
                self.record_revocation(op, target, outcome.map(|_| ())).await
            }
            Some(OperationKind::RevokeAgents) => {
                let outcome = self.agents.revoke_credentials(&context, id, Some(&op.reason)).await;
                self.record_revocation(op, target, outcome.map(|_| ())).await
            }
            None => self.end_target(op, target, TargetStatus::Failed, Some("unknown kind")).await,
        }
    }

    async fn record_revocation(
        &self,
        op: &OperationRecord,
        target: &OperationTargetRecord,
        outcome: Result<(), ServiceError>,
    ) -> Step<()> {
        let (status, reason) = match outcome {
            Ok(()) => (TargetStatus::Succeeded, None),
            // Nothing left to take away: someone (or something) already did.
            Err(ServiceError::AlreadyRevoked(_) | ServiceError::JoinKeyRevoked(_)) => {
                (TargetStatus::Skipped, Some("already revoked".to_string()))
            }
            Err(ServiceError::JoinKeyUsed(_)) => {
                (TargetStatus::Skipped, Some("consumed meanwhile".to_string()))
            }
            Err(ServiceError::JoinKeyExpired(_)) => {
                (TargetStatus::Skipped, Some("expired meanwhile".to_string()))
            }
            Err(ServiceError::NotFound(_)) => (TargetStatus::Skipped, Some("gone".to_string())),
            Err(err @ (ServiceError::StoreUnavailable(_) | ServiceError::Internal(_))) => {
                // Not this target's fault: left running, retried by the next attempt.
                return Err(StepError::Service(err));
            }
            Err(err) => (TargetStatus::Failed, Some(err.to_string())),
        };
        self.end_target(op, target, status, reason.as_deref()).await
    }

    /// Requests the agent's rotation, unless it cannot take one now (offline, revoked,
    /// quarantined, waiting for approval: skipped).
    async fn rotate(
        &self,
        op: &OperationRecord,
        target: &OperationTargetRecord,
        context: &AuditContext,
    ) -> Step<()> {
        let id = target.target_id.as_str();
        let agent = match self.agents.status(id).await {
            Ok(agent) => agent,
            Err(ServiceError::NotFound(_)) => {
                return self.end_target(op, target, TargetStatus::Skipped, Some("gone")).await;
            }
            Err(err) => return Err(err.into()),
        };
        let skip = match agent.status {
            AgentStatus::Revoked => Some("revoked"),
            AgentStatus::Quarantined => Some("quarantined"),
            // No live session, and not heard within its lease renewals.
            AgentStatus::Disconnected => Some(SKIPPED_OFFLINE),
            AgentStatus::Active if agent.record.approval != "approved" => Some("not approved"),
            AgentStatus::Active => None,
        };
        if let Some(reason) = skip {
            return self.end_target(op, target, TargetStatus::Skipped, Some(reason)).await;
        }
        let request_id = match self.rotations.request(context, id, Some(&op.reason)).await {
            Ok(rotation) => rotation.id,
            // A rotation already in flight (an operator's, or ours before a restart): its end
            // is this target's.
            Err(ServiceError::RotationInFlight(request_id)) => request_id,
            Err(err @ (ServiceError::StoreUnavailable(_) | ServiceError::Internal(_))) => {
                return Err(err.into());
            }
            Err(err) => {
                let reason = err.to_string();
                return self.end_target(op, target, TargetStatus::Failed, Some(&reason)).await;
            }
        };
        let now = self.now();
        self.operations
            .store
            .set_operation_target(
                &op.id,
                id,
                &["running"],
                TargetStatus::Running.as_str(),
                None,
                Some(&request_id),
                None,
                now,
            )
            .await?;
        Ok(())
    }

    /// Waits until no target of the operation has a rotation in flight, recording each end.
    /// Reads the running targets with their rotations' states in one query per poll.
    async fn wait_in_flight(&self, op: &OperationRecord, shutdown: &CancellationToken) -> Step<()> {
        let mut lease = Lease { op: op.clone(), renewed_at: self.now() };
        loop {
            let in_flight = self.operations.store.operation_targets_in_flight(&op.id).await?;
            let mut waiting = false;
            for TargetInFlight { target, rotation_status, rotation_failure_reason } in &in_flight {
                // A wave's end is up to 500 durable writes: the lease is kept through them (it
                // ran out during them under load, and another replica took the operation over).
                self.renew_if_due(&mut lease, shutdown).await?;
                if target.rotation_request_id.is_none() {
                    // Started before a crash, never requested (or not recorded): start again
                    // (an in-flight rotation is adopted).
                    if op.status == OperationStatus::Running.as_str() {
                        self.start_target(op, target).await?;
                        waiting = true;
                    } else {
                        self.end_target(
                            op,
                            target,
                            TargetStatus::Cancelled,
                            Some("operation cancelled"),
                        )
                        .await?;
                    }
                    continue;
                }
                match rotation_status.as_deref().map(RotationStatus::parse) {
                    Some(Some(RotationStatus::Promoted)) => {
                        self.end_target(op, target, TargetStatus::Succeeded, None).await?;
                    }
                    Some(Some(RotationStatus::Failed)) => {
                        let reason = rotation_failure_reason.as_deref().unwrap_or("failed");
                        self.end_target(op, target, TargetStatus::Failed, Some(reason)).await?;
                    }
                    Some(_) => waiting = true,
                    None => {
                        self.end_target(
                            op,
                            target,
                            TargetStatus::Failed,
                            Some("rotation record missing"),
                        )
                        .await?;
                    }
                }
            }
            if !waiting {
                return Ok(());
            }
            tokio::select! {
                () = shutdown.cancelled() => return Err(StepError::Stop(Stop::Shutdown)),
                () = tokio::time::sleep(POLL) => {}
            }
            self.renew_if_due(&mut lease, shutdown).await?;
        }
    }
}

/// The lowest wave with a target still to start.
fn next_wave(targets: &[OperationTargetRecord]) -> Option<u32> {
    targets.iter().filter(|t| startable(t)).map(|t| u32::try_from(t.wave).unwrap_or(u32::MAX)).min()
}

/// Pending, or running without a rotation request recorded (started before a crash).
fn startable(target: &OperationTargetRecord) -> bool {
    target.status == TargetStatus::Pending.as_str()
        || (target.status == TargetStatus::Running.as_str() && target.rotation_request_id.is_none())
}

/// More failures since creation (or the last resume) than the operation tolerates.
fn over_threshold(op: &OperationRecord) -> bool {
    op.failed_count - op.failure_baseline > op.max_failures
}
