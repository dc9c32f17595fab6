//! Operations as the API shows them.

use xerotier_core::format_rfc3339;
use xerotier_proto::operations::{OperationPlanView, OperationTargetView, OperationView};
use xerotier_proto::status::{OperationKind, OperationStatus, TargetStatus};
use xerotier_store::OperationTargetRecord;

use super::service::{Operation, Plan};

fn count(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

pub fn plan(plan: Plan) -> OperationPlanView {
    let wave_count = plan.wave_count();
    OperationPlanView {
        dry_run: true,
        kind: plan.kind,
        selector: plan.selector,
        reason: plan.reason,
        wave_size: plan.wave_size,
        max_failures: plan.max_failures,
        wave_count,
        target_count: u32::try_from(plan.targets.len()).unwrap_or(u32::MAX),
        targets: plan
            .targets
            .into_iter()
            .map(|t| OperationTargetView {
                target_id: t.id,
                target_name: t.name,
                wave: t.wave,
                status: TargetStatus::Pending,
                reason: None,
                rotation_request_id: None,
                finished_at: None,
            })
            .collect(),
    }
}

fn target(t: OperationTargetRecord) -> OperationTargetView {
    OperationTargetView {
        target_id: t.target_id,
        target_name: t.target_name,
        wave: count(t.wave),
        // The store only ever holds the six; an unknown one reads as still to do.
        status: TargetStatus::parse(&t.status).unwrap_or(TargetStatus::Pending),
        reason: t.result_reason,
        rotation_request_id: t.rotation_request_id,
        finished_at: t.finished_at.map(format_rfc3339),
    }
}

pub fn operation(op: Operation) -> OperationView {
    let r = op.record;
    let ended = r.succeeded_count + r.failed_count + r.skipped_count + r.cancelled_count;
    OperationView {
        kind: OperationKind::parse(&r.kind).unwrap_or(OperationKind::CurveRotate),
        selector: serde_json::from_str(&r.selector).unwrap_or_default(),
        status: OperationStatus::parse(&r.status).unwrap_or(OperationStatus::Failed),
        requested_by: r.requested_by,
        wave_size: count(r.wave_size),
        max_failures: count(r.max_failures),
        wave_count: count(r.wave_count),
        current_wave: count(r.current_wave),
        target_count: count(r.target_count),
        succeeded: count(r.succeeded_count),
        failed: count(r.failed_count),
        skipped: count(r.skipped_count),
        cancelled: count(r.cancelled_count),
        remaining: count(r.target_count - ended),
        created_at: format_rfc3339(r.created_at),
        updated_at: format_rfc3339(r.updated_at),
        finished_at: r.finished_at.map(format_rfc3339),
        targets: op.targets.map(|ts| ts.into_iter().map(target).collect()),
        id: r.id,
        reason: r.reason,
    }
}
