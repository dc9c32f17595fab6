//! Containment: `pause-exec` / `resume-exec` stop and restart dispatch to an agent, or to one
//! workspace on it. In-flight work finishes; queued work waits and runs after the resume.

use xerotier_core::SharedClock;
use xerotier_proto::agents::CapabilityManifest;
use xerotier_store::{PauseRecord, Store};

use super::ExecService;
use crate::agent_events::EventLog;
use crate::audit::{AuditContext, AuditLog, Change, Target};
use crate::service_error::ServiceError;
use crate::validate;

#[derive(Debug, Clone)]
pub struct PauseService {
    store: Store,
    clock: SharedClock,
    audit: AuditLog,
    events: EventLog,
    exec: ExecService,
}

impl PauseService {
    pub fn new(
        store: Store,
        clock: SharedClock,
        audit: AuditLog,
        events: EventLog,
        exec: ExecService,
    ) -> Self {
        Self { store, clock, audit, events, exec }
    }

    /// The pauses in force on an agent.
    pub async fn list(&self, agent_id: &str) -> Result<Vec<PauseRecord>, ServiceError> {
        Ok(self.store.exec_pauses(Some(agent_id)).await?)
    }

    /// Stops dispatch to the agent (or one workspace on it). Idempotent: pausing what is
    /// already paused changes nothing and records nothing.
    pub async fn pause(
        &self,
        context: &AuditContext,
        agent_id: &str,
        workspace: Option<&str>,
        reason: Option<&str>,
    ) -> Result<PauseRecord, ServiceError> {
        let reason = validate::reason(reason)?;
        validate::optional(workspace, |w| validate::name(w, "workspace"))?;
        self.check_target(agent_id, workspace).await?;
        let pause = PauseRecord {
            agent_id: agent_id.to_string(),
            workspace: workspace.map(str::to_string),
            paused_at: self.clock.now_millis(),
            paused_by: context.actor_key_id().map(str::to_string),
            reason: reason.map(str::to_string),
        };
        let target = Target { kind: "agent", id: Some(agent_id), name: None };
        let change = Change::new("agent.pause_exec", target)
            .reason(reason)
            .details(serde_json::json!({ "workspace": workspace }));
        let (record, created) =
            self.audit
                .audited(context, change, |entry| async move {
                    self.store.pause_exec(&pause, &entry).await
                })
                .await?;
        if created {
            tracing::warn!(%agent_id, workspace = workspace.unwrap_or("*"), actor = %context.actor_label(), "dispatch paused");
            let details = serde_json::json!({ "workspace": workspace, "by": context.actor_key_id(), "reason": reason });
            self.events
                .append(agent_id, "exec_paused", context.request_id.as_deref(), details)
                .await;
        }
        Ok(record)
    }

    /// Resumes dispatch; answers with the pauses still in force on the agent.
    pub async fn resume(
        &self,
        context: &AuditContext,
        agent_id: &str,
        workspace: Option<&str>,
        reason: Option<&str>,
    ) -> Result<Vec<PauseRecord>, ServiceError> {
        let reason = validate::reason(reason)?;
        validate::optional(workspace, |w| validate::name(w, "workspace"))?;
        if self.store.agent(agent_id).await?.is_none() {
            return Err(ServiceError::NotFound(format!("agent {agent_id}")));
        }
        let target = Target { kind: "agent", id: Some(agent_id), name: None };
        let change = Change::new("agent.resume_exec", target)
            .reason(reason)
            .details(serde_json::json!({ "workspace": workspace }));
        self.audit
            .audited(context, change, |entry| async move {
                self.store.resume_exec(agent_id, workspace, &entry).await
            })
            .await?;
        tracing::info!(%agent_id, workspace = workspace.unwrap_or("*"), actor = %context.actor_label(), "dispatch resumed");
        let details = serde_json::json!({ "workspace": workspace, "by": context.actor_key_id() });
        self.events.append(agent_id, "exec_resumed", context.request_id.as_deref(), details).await;
        self.exec.wake();
        self.list(agent_id).await
    }

    /// The agent must exist and be live; a named workspace must be one it declares, so that a
    /// typo is an error rather than a pause that contains nothing.
    async fn check_target(
        &self,
        agent_id: &str,
        workspace: Option<&str>,
    ) -> Result<(), ServiceError> {
        let agent = self
            .store
            .agent(agent_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("agent {agent_id}")))?;
        if agent.revoked_at.is_some() {
            return Err(ServiceError::AlreadyRevoked(format!("agent {agent_id}")));
        }
        if let Some(workspace) = workspace {
            let manifest: CapabilityManifest =
                serde_json::from_str(&agent.manifest).unwrap_or_default();
            if !manifest.workspaces.iter().any(|w| w.id == workspace) {
                return Err(ServiceError::WorkspaceNotFound(format!(
                    "{workspace} (on agent {agent_id})"
                )));
            }
        }
        Ok(())
    }
}
