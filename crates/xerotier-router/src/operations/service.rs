//! Fleet-wide operations, the domain side: validating a request, fixing its plan, creating,
//! listing, cancelling and resuming. Execution is `executor.rs`'s, driven by the runner.

use xerotier_core::{IdGenerator, IdKind, SharedClock};
use xerotier_proto::operations::{
    CreateOperationRequest, DEFAULT_MAX_FAILURES, DEFAULT_WAVE_SIZE, MAX_MAX_FAILURES,
    MAX_SELECTOR_AGENTS, MAX_TARGETS, MAX_WAVE_SIZE, OperationSelector,
};
use xerotier_proto::status::{OperationKind, OperationStatus, TargetStatus};
use xerotier_store::{
    OperationRecord, OperationTargetRecord, Outcome, PageRequest, PageSlice, Store,
};

use crate::audit::{Actor, AuditContext, AuditLog, Change, Target};
use crate::fleet::join_keys::validate_role;
use crate::service_error::ServiceError;
use crate::validate;

/// One target of a plan, before anything runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTarget {
    pub id: String,
    pub name: Option<String>,
    /// 1-based.
    pub wave: u32,
}

/// A validated request and its exact targets.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: OperationKind,
    pub selector: OperationSelector,
    pub reason: String,
    pub wave_size: u32,
    pub max_failures: u32,
    pub targets: Vec<PlannedTarget>,
}

impl Plan {
    pub fn wave_count(&self) -> u32 {
        self.targets.last().map_or(0, |t| t.wave)
    }
}

/// An operation with its plan's state (targets only when read one at a time).
#[derive(Debug, Clone)]
pub struct Operation {
    pub record: OperationRecord,
    pub targets: Option<Vec<OperationTargetRecord>>,
}

/// What a creation answers: the plan of a dry run, or the operation.
#[derive(Debug)]
pub enum Created {
    DryRun(Plan),
    Started(Operation),
}

#[derive(Debug, Clone)]
pub struct OperationService {
    pub(crate) store: Store,
    pub(crate) clock: SharedClock,
    ids: IdGenerator,
    pub(crate) audit: AuditLog,
}

impl OperationService {
    pub fn new(store: Store, clock: SharedClock, ids: IdGenerator, audit: AuditLog) -> Self {
        Self { store, clock, ids, audit }
    }

    /// Validates `request` and computes its targets; writes nothing.
    pub async fn plan(&self, request: &CreateOperationRequest) -> Result<Plan, ServiceError> {
        let reason = validate::reason(Some(&request.reason))?
            .ok_or_else(|| ServiceError::invalid("a reason is required", "reason"))?
            .to_string();
        let wave_size = request.wave_size.unwrap_or(DEFAULT_WAVE_SIZE);
        if !(1..=MAX_WAVE_SIZE).contains(&wave_size) {
            return Err(ServiceError::invalid(
                format!("wave_size must be between 1 and {MAX_WAVE_SIZE}"),
                "wave_size",
            ));
        }
        let max_failures = request.max_failures.unwrap_or(DEFAULT_MAX_FAILURES);
        if max_failures > MAX_MAX_FAILURES {
            return Err(ServiceError::invalid(
                format!("max_failures must be between 0 and {MAX_MAX_FAILURES}"),
                "max_failures",
            ));
        }
        let selector = &request.selector;
        check_selector(request.kind, selector)?;
        let picked = self.select(request.kind, selector).await?;
        if picked.is_empty() {
            return Err(ServiceError::NothingSelected(format!(
                "the selector matches nothing to {}: no operation was created",
                match request.kind {
                    OperationKind::CurveRotate => "rotate",
                    _ => "revoke",
                }
            )));
        }
        if picked.len() > MAX_TARGETS {
            return Err(ServiceError::invalid(
                format!(
                    "the selector matches {} targets; one operation takes at most {MAX_TARGETS}: narrow it (by region, say)",
                    picked.len()
                ),
                "selector",
            ));
        }
        let targets = picked
            .into_iter()
            .enumerate()
            .map(|(position, (id, name))| PlannedTarget {
                id,
                name,
                wave: u32::try_from(position).unwrap_or(u32::MAX) / wave_size + 1,
            })
            .collect();
        Ok(Plan {
            kind: request.kind,
            selector: selector.clone(),
            reason,
            wave_size,
            max_failures,
            targets,
        })
    }

    /// The targets `selector` picks now, in id order: (id, name).
    async fn select(
        &self,
        kind: OperationKind,
        selector: &OperationSelector,
    ) -> Result<Vec<(String, Option<String>)>, ServiceError> {
        let agents = match kind {
            OperationKind::RevokeJoinKeys => {
                let keys = self.store.usable_join_keys(self.clock.now_millis()).await?;
                return Ok(keys
                    .into_iter()
                    .filter(|k| {
                        selector.name_prefix.as_ref().is_none_or(|p| k.name.starts_with(p.as_str()))
                            && selector.region.as_ref().is_none_or(|r| k.region.as_ref() == Some(r))
                    })
                    .map(|k| (k.id, Some(k.name)))
                    .collect());
            }
            OperationKind::CurveRotate => {
                if let Some(ids) = &selector.agents {
                    let mut picked: Vec<(String, Option<String>)> = Vec::new();
                    for id in ids {
                        if picked.iter().any(|(p, _)| p == id) {
                            continue;
                        }
                        match self.store.agent(id).await? {
                            Some(agent) if agent.revoked_at.is_none() => {
                                picked.push((agent.id, Some(agent.name)))
                            }
                            _ => {
                                return Err(ServiceError::invalid(
                                    format!("selector.agents: {id} is not a live agent"),
                                    "selector.agents",
                                ));
                            }
                        }
                    }
                    picked.sort();
                    return Ok(picked);
                }
                self.store
                    .live_agents()
                    .await?
                    .into_iter()
                    .filter(|a| {
                        selector.region.as_ref().is_none_or(|r| a.region.as_ref() == Some(r))
                            && selector.role.as_ref().is_none_or(|r| &a.role == r)
                    })
                    .collect::<Vec<_>>()
            }
            OperationKind::RevokeAgents => match (&selector.enrolled_via, &selector.minted_by) {
                (_, Some(key_id)) => self.store.live_agents_minted_by(key_id).await?,
                (Some(join_key), _) => self
                    .store
                    .live_agents()
                    .await?
                    .into_iter()
                    .filter(|a| &a.join_key_id == join_key)
                    .collect(),
                (None, None) => self
                    .store
                    .live_agents()
                    .await?
                    .into_iter()
                    .filter(|a| a.region.as_ref() == selector.region.as_ref())
                    .collect(),
            },
        };
        Ok(agents.into_iter().map(|a| (a.id, Some(a.name))).collect())
    }

    /// `POST /v1/management/operations`: the plan (dry run: nothing written, not even an
    /// audit record), or the operation created with its plan and its `operation.create` record.
    pub async fn create(
        &self,
        context: &AuditContext,
        request: CreateOperationRequest,
    ) -> Result<Created, ServiceError> {
        let plan = self.plan(&request).await?;
        if request.dry_run {
            return Ok(Created::DryRun(plan));
        }
        let now = self.clock.now_millis();
        let id = self.ids.next(IdKind::Operation);
        let selector = serde_json::to_string(&plan.selector).map_err(ServiceError::internal)?;
        let record = OperationRecord {
            id: id.clone(),
            kind: plan.kind.as_str().into(),
            selector,
            reason: plan.reason.clone(),
            requested_by: context.actor.as_ref().map(|a| a.key_id.clone()),
            requested_by_name: context.actor.as_ref().map(|a| a.name.clone()),
            request_id: context.request_id.clone(),
            status: OperationStatus::Running.as_str().into(),
            wave_size: i64::from(plan.wave_size),
            max_failures: i64::from(plan.max_failures),
            wave_count: i64::from(plan.wave_count()),
            target_count: i64::try_from(plan.targets.len()).unwrap_or(i64::MAX),
            succeeded_count: 0,
            failed_count: 0,
            skipped_count: 0,
            cancelled_count: 0,
            failure_baseline: 0,
            current_wave: 0,
            created_at: now,
            updated_at: now,
            finished_at: None,
            lease_owner: None,
            lease_expires_at: None,
        };
        let targets: Vec<OperationTargetRecord> = plan
            .targets
            .iter()
            .enumerate()
            .map(|(position, t)| OperationTargetRecord {
                operation_id: id.clone(),
                target_id: t.id.clone(),
                target_name: t.name.clone(),
                position: i64::try_from(position).unwrap_or(i64::MAX),
                wave: i64::from(t.wave),
                status: TargetStatus::Pending.as_str().into(),
                result_reason: None,
                rotation_request_id: None,
                finished_at: None,
            })
            .collect();
        let target = Target { kind: "operation", id: Some(&id), name: None };
        let change = Change::new("operation.create", target)
            .creating()
            .reason(Some(&plan.reason))
            .details(serde_json::json!({
                "kind": plan.kind, "selector": plan.selector, "wave_size": plan.wave_size,
                "max_failures": plan.max_failures, "wave_count": plan.wave_count(),
                "target_count": plan.targets.len(),
            }));
        let (created, planned) = (&record, &targets);
        self.audit
            .audited(context, change, |entry| async move {
                self.store.create_operation(created, planned, &entry).await
            })
            .await?;
        tracing::warn!(operation = %id, kind = %plan.kind, targets = plan.targets.len(), actor = %context.actor_label(), "fleet-wide operation created");
        Ok(Created::Started(Operation { record, targets: Some(targets) }))
    }

    pub async fn list(&self, page: &PageRequest) -> Result<PageSlice<Operation>, ServiceError> {
        let slice = self.store.list_operations(page).await?;
        Ok(slice.map(|record| Operation { record, targets: None }))
    }

    pub async fn get(&self, id: &str) -> Result<Operation, ServiceError> {
        let record = self
            .store
            .operation(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("operation {id}")))?;
        let targets = self.store.operation_targets(id).await?;
        Ok(Operation { record, targets: Some(targets) })
    }

    /// Stops before the next target: pending targets are cancelled; rotations in flight end
    /// by themselves (the runner records them, then finishes the operation). A halted
    /// operation is cancelled at once. Anything else is a 409.
    pub async fn cancel(
        &self,
        context: &AuditContext,
        id: &str,
    ) -> Result<Operation, ServiceError> {
        let current = self.get(id).await?.record;
        let (from, finish) = match OperationStatus::parse(&current.status) {
            Some(OperationStatus::Running) => (OperationStatus::Running, false),
            Some(OperationStatus::Halted) => (OperationStatus::Halted, true),
            _ => {
                return Err(ServiceError::OperationState(format!(
                    "operation {id} is {}: only a running or halted operation can be cancelled",
                    current.status
                )));
            }
        };
        let entry = self.audit.entry(
            context,
            &Change::new(
                "operation.cancel",
                Target { kind: "operation", id: Some(id), name: None },
            )
            .details(serde_json::json!({ "from": from })),
            Outcome::Success,
        );
        let now = self.clock.now_millis();
        let to = OperationStatus::Cancelled.as_str();
        let changed = self
            .store
            .transition_operation(id, from.as_str(), to, now, finish, true, false, &entry)
            .await?;
        let Some(record) = changed else {
            return Err(ServiceError::OperationState(format!(
                "operation {id} changed meanwhile; read it again"
            )));
        };
        tracing::warn!(operation = %id, actor = %context.actor_label(), "operation cancelled");
        Ok(Operation { record, targets: Some(self.store.operation_targets(id).await?) })
    }

    /// A halted operation goes on with its remaining targets; failed ones stay failed unless
    /// `retry_failed`. Failures count towards `max_failures` afresh from here.
    pub async fn resume(
        &self,
        context: &AuditContext,
        id: &str,
        retry_failed: bool,
    ) -> Result<Operation, ServiceError> {
        let current = self.get(id).await?.record;
        if OperationStatus::parse(&current.status) != Some(OperationStatus::Halted) {
            return Err(ServiceError::OperationState(format!(
                "operation {id} is {}: only a halted operation can be resumed",
                current.status
            )));
        }
        let entry = self.audit.entry(
            context,
            &Change::new(
                "operation.resume",
                Target { kind: "operation", id: Some(id), name: None },
            )
            .details(serde_json::json!({ "retry_failed": retry_failed })),
            Outcome::Success,
        );
        let now = self.clock.now_millis();
        let changed = self
            .store
            .transition_operation(
                id,
                OperationStatus::Halted.as_str(),
                OperationStatus::Running.as_str(),
                now,
                false,
                false,
                retry_failed,
                &entry,
            )
            .await?;
        let Some(record) = changed else {
            return Err(ServiceError::OperationState(format!(
                "operation {id} changed meanwhile; read it again"
            )));
        };
        tracing::warn!(operation = %id, retry_failed, actor = %context.actor_label(), "operation resumed");
        Ok(Operation { record, targets: Some(self.store.operation_targets(id).await?) })
    }

    /// The context of what the runner does for an operation: in the name of the operator who
    /// created it, under the creating request's id, with the operation's id as correlation id
    /// so every per-credential record names the operation it belongs to.
    pub(crate) fn context_of(record: &OperationRecord) -> AuditContext {
        AuditContext {
            actor: record.requested_by.as_ref().map(|key_id| Actor {
                key_id: key_id.clone(),
                name: record.requested_by_name.clone().unwrap_or_default(),
            }),
            request_id: record.request_id.clone(),
            correlation_id: Some(record.id.clone()),
            client_addr: None,
        }
    }
}

/// The selector's fields that `kind` takes, each in its format; exactly one choice where the
/// kind needs one.
fn check_selector(kind: OperationKind, s: &OperationSelector) -> Result<(), ServiceError> {
    let not_for = |field: &str| {
        ServiceError::invalid(
            format!("selector.{field} does not apply to {kind}"),
            &format!("selector.{field}"),
        )
    };
    if let Some(region) = &s.region {
        validate::name(region, "selector.region")?;
    }
    match kind {
        OperationKind::CurveRotate => {
            for (field, set) in [
                ("all_unconsumed", s.all_unconsumed.is_some()),
                ("name_prefix", s.name_prefix.is_some()),
                ("enrolled_via", s.enrolled_via.is_some()),
                ("minted_by", s.minted_by.is_some()),
            ] {
                if set {
                    return Err(not_for(field));
                }
            }
            if s.all == Some(false) {
                return Err(ServiceError::invalid("selector.all must be true", "selector.all"));
            }
            if let Some(role) = &s.role {
                validate_role(role).map_err(|_| {
                    ServiceError::invalid(
                        "selector.role must be inference or execution",
                        "selector.role",
                    )
                })?;
            }
            if let Some(agents) = &s.agents {
                if agents.is_empty() || agents.len() > MAX_SELECTOR_AGENTS {
                    return Err(ServiceError::invalid(
                        format!("selector.agents must list 1-{MAX_SELECTOR_AGENTS} agent ids"),
                        "selector.agents",
                    ));
                }
                for id in agents {
                    validate::id("agt_", id, "selector.agents")?;
                }
            }
            let chosen =
                [s.all.is_some(), s.region.is_some(), s.role.is_some(), s.agents.is_some()];
            exactly_one(
                &chosen,
                "curve_rotate takes exactly one of selector.all, selector.region, selector.role, selector.agents",
            )
        }
        OperationKind::RevokeJoinKeys => {
            for (field, set) in [
                ("all", s.all.is_some()),
                ("role", s.role.is_some()),
                ("agents", s.agents.is_some()),
                ("enrolled_via", s.enrolled_via.is_some()),
                ("minted_by", s.minted_by.is_some()),
            ] {
                if set {
                    return Err(not_for(field));
                }
            }
            if s.all_unconsumed != Some(true) {
                return Err(ServiceError::invalid(
                    "revoke_join_keys needs selector.all_unconsumed: true (narrowed by name_prefix and region)",
                    "selector.all_unconsumed",
                ));
            }
            if let Some(prefix) = &s.name_prefix {
                validate::name(prefix, "selector.name_prefix")?;
            }
            Ok(())
        }
        OperationKind::RevokeAgents => {
            for (field, set) in [
                ("all", s.all.is_some()),
                ("role", s.role.is_some()),
                ("agents", s.agents.is_some()),
                ("all_unconsumed", s.all_unconsumed.is_some()),
                ("name_prefix", s.name_prefix.is_some()),
            ] {
                if set {
                    return Err(not_for(field));
                }
            }
            if let Some(id) = &s.enrolled_via {
                validate::id("jk_", id, "selector.enrolled_via")?;
            }
            if let Some(id) = &s.minted_by {
                validate::id("key_", id, "selector.minted_by")?;
            }
            let chosen = [s.enrolled_via.is_some(), s.minted_by.is_some(), s.region.is_some()];
            exactly_one(
                &chosen,
                "revoke_agents takes exactly one of selector.enrolled_via, selector.minted_by, selector.region",
            )
        }
    }
}

fn exactly_one(chosen: &[bool], message: &str) -> Result<(), ServiceError> {
    if chosen.iter().filter(|c| **c).count() == 1 {
        Ok(())
    } else {
        Err(ServiceError::invalid(message, "selector"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(json: serde_json::Value) -> OperationSelector {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn selectors_take_exactly_their_kinds_fields() {
        let ok = [
            (OperationKind::CurveRotate, serde_json::json!({ "all": true })),
            (OperationKind::CurveRotate, serde_json::json!({ "region": "eu-1" })),
            (OperationKind::CurveRotate, serde_json::json!({ "role": "execution" })),
            (
                OperationKind::CurveRotate,
                serde_json::json!({ "agents": ["agt_01m8sbce9k2rcej9fhvv8jg3pq"] }),
            ),
            (OperationKind::RevokeJoinKeys, serde_json::json!({ "all_unconsumed": true })),
            (
                OperationKind::RevokeJoinKeys,
                serde_json::json!({ "all_unconsumed": true, "name_prefix": "batch-", "region": "r" }),
            ),
            (
                OperationKind::RevokeAgents,
                serde_json::json!({ "enrolled_via": "jk_01m8sbce9k2rcej9fhvv8jg3pq" }),
            ),
            (
                OperationKind::RevokeAgents,
                serde_json::json!({ "minted_by": "key_01m8sbce9k2rcej9fhvv8jg3pq" }),
            ),
            (OperationKind::RevokeAgents, serde_json::json!({ "region": "eu-1" })),
        ];
        for (kind, json) in ok {
            assert!(check_selector(kind, &selector(json.clone())).is_ok(), "{kind} {json}");
        }
        let bad = [
            (OperationKind::CurveRotate, serde_json::json!({})),
            (OperationKind::CurveRotate, serde_json::json!({ "all": false })),
            (OperationKind::CurveRotate, serde_json::json!({ "all": true, "region": "r" })),
            (OperationKind::CurveRotate, serde_json::json!({ "role": "admin" })),
            (OperationKind::CurveRotate, serde_json::json!({ "agents": [] })),
            (OperationKind::CurveRotate, serde_json::json!({ "agents": ["agt_nope"] })),
            (OperationKind::CurveRotate, serde_json::json!({ "region": "no spaces" })),
            (OperationKind::CurveRotate, serde_json::json!({ "all": true, "minted_by": "key_x" })),
            (OperationKind::RevokeJoinKeys, serde_json::json!({})),
            (OperationKind::RevokeJoinKeys, serde_json::json!({ "all_unconsumed": false })),
            (
                OperationKind::RevokeJoinKeys,
                serde_json::json!({ "all_unconsumed": true, "name_prefix": "a/b" }),
            ),
            (OperationKind::RevokeAgents, serde_json::json!({})),
            (OperationKind::RevokeAgents, serde_json::json!({ "enrolled_via": "jk_bad" })),
            (
                OperationKind::RevokeAgents,
                serde_json::json!({ "minted_by": "agt_01m8sbce9k2rcej9fhvv8jg3pq" }),
            ),
            (
                OperationKind::RevokeAgents,
                serde_json::json!({ "region": "r", "enrolled_via": "jk_01m8sbce9k2rcej9fhvv8jg3pq" }),
            ),
        ];
        for (kind, json) in bad {
            assert!(check_selector(kind, &selector(json.clone())).is_err(), "{kind} {json}");
        }
        let many: Vec<String> =
            (0..=MAX_SELECTOR_AGENTS).map(|_| "agt_01m8sbce9k2rcej9fhvv8jg3pq".into()).collect();
        let oversized = OperationSelector { agents: Some(many), ..Default::default() };
        assert!(check_selector(OperationKind::CurveRotate, &oversized).is_err());
    }
}
