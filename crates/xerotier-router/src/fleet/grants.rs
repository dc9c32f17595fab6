//! What agents may serve: candidates (workspaces declared beyond a grant, or with new tool
//! definitions, and agents whose join key requires approval) and the operator's decisions.

use xerotier_core::SharedClock;
use xerotier_store::{AgentRecord, CANDIDATE, Decision, Store, WorkspaceDecision};

use crate::agent_events::EventLog;
use crate::audit::{AuditContext, AuditLog, Change, Target};
use crate::exec::ExecService;
use crate::service_error::ServiceError;
use crate::validate;

/// A candidate workspace, with the agent it belongs to.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub agent: AgentRecord,
    pub decision: WorkspaceDecision,
}

/// What a decision changed: the agent (its approval may have changed) and the workspaces.
#[derive(Debug, Clone)]
pub struct Decided {
    pub agent: AgentRecord,
    pub workspaces: Vec<WorkspaceDecision>,
}

#[derive(Debug, Clone)]
pub struct GrantService {
    store: Store,
    clock: SharedClock,
    audit: AuditLog,
    events: EventLog,
    exec: ExecService,
}

impl GrantService {
    pub fn new(
        store: Store,
        clock: SharedClock,
        audit: AuditLog,
        events: EventLog,
        exec: ExecService,
    ) -> Self {
        Self { store, clock, audit, events, exec }
    }

    /// Every candidate workspace of every live agent, and the workspaces of agents that wait
    /// for approval as a whole.
    pub async fn candidates(&self) -> Result<Vec<Candidate>, ServiceError> {
        let mut candidates = Vec::new();
        let mut agents: Vec<AgentRecord> = Vec::new();
        for decision in self.store.workspaces_in_state(CANDIDATE).await? {
            let agent = match agents.iter().find(|a| a.id == decision.agent_id) {
                Some(agent) => agent.clone(),
                None => match self.store.agent(&decision.agent_id).await? {
                    Some(agent) => {
                        agents.push(agent.clone());
                        agent
                    }
                    None => continue,
                },
            };
            candidates.push(Candidate { agent, decision });
        }
        // An agent whose join key requires approval waits as a whole: each workspace it
        // declared is shown with it, whatever its grant says.
        for agent in self.store.pending_agents().await? {
            for decision in self.store.agent_workspaces(&agent.id).await? {
                let listed = candidates
                    .iter()
                    .any(|c| c.agent.id == agent.id && c.decision.workspace == decision.workspace);
                if !listed {
                    candidates.push(Candidate { agent: agent.clone(), decision });
                }
            }
        }
        candidates.sort_by(|a, b| {
            (&a.agent.id, &a.decision.workspace).cmp(&(&b.agent.id, &b.decision.workspace))
        });
        Ok(candidates)
    }

    /// `approve`: candidates (or rejected / withdrawn workspaces) are granted for the tool
    /// definitions they were declared with, and a pending agent is approved. `reject`: the
    /// candidates are refused (and a pending agent, when no workspace is named). `withdraw`: a
    /// granted workspace is taken back; `workspace` is required. Audited; the agent's offer here
    /// changes at once, and every replica's within one refresh.
    pub async fn decide(
        &self,
        context: &AuditContext,
        agent_id: &str,
        workspace: Option<&str>,
        decision: Decision,
        reason: Option<&str>,
    ) -> Result<Decided, ServiceError> {
        let reason = validate::reason(reason)?;
        validate::optional(workspace, |w| validate::name(w, "workspace"))?;
        if decision == Decision::Withdraw && workspace.is_none() {
            return Err(ServiceError::invalid("name the workspace to withdraw", "workspace"));
        }
        if self.store.agent(agent_id).await?.is_none() {
            return Err(ServiceError::NotFound(format!("agent {agent_id}")));
        }
        let action = match decision {
            Decision::Approve => "agent.candidate_approve",
            Decision::Reject => "agent.candidate_reject",
            Decision::Withdraw => "agent.grant_withdraw",
        };
        let now = self.clock.now_millis();
        let target = Target { kind: "agent", id: Some(agent_id), name: None };
        let change = Change::new(action, target)
            .reason(reason)
            .details(serde_json::json!({ "workspace": workspace }));
        let by = context.actor_key_id();
        let workspaces = self
            .audit
            .audited(context, change, |entry| async move {
                self.store.decide_workspaces(agent_id, workspace, decision, by, now, &entry).await
            })
            .await?;
        let event = match decision {
            Decision::Approve => "workspace_approved",
            Decision::Reject => "workspace_rejected",
            Decision::Withdraw => "grant_withdrawn",
        };
        let details = serde_json::json!({
            "workspaces": workspaces.iter().map(|w| &w.workspace).collect::<Vec<_>>(),
            "by": by, "reason": reason,
        });
        self.events.append(agent_id, event, context.request_id.as_deref(), details).await;
        tracing::warn!(%agent_id, action, workspace = workspace.unwrap_or("*"), actor = %context.actor_label(), "workspace decision");
        self.exec.reload_served(agent_id).await?;
        let agent = self
            .store
            .agent(agent_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("agent {agent_id}")))?;
        Ok(Decided { agent, workspaces })
    }
}
