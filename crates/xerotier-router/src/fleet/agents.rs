//! The fleet view and agent containment.

use std::sync::Arc;

use xerotier_core::{SharedClock, UnixMillis};
use xerotier_proto::status::AgentStatus;
use xerotier_store::{AgentRecord, Outcome, PageRequest, PageSlice, Store, WorkspaceDecision};

use super::rotation::RotationService;
use crate::agent_events::EventLog;
use crate::audit::{AuditContext, AuditLog, Change, Target};
use crate::exec::ExecService;
use crate::mesh_link::MeshLink;
use crate::service_error::ServiceError;
use crate::validate;

/// An agent as of a given time: its record, its latest lease renewal (stored or buffered here)
/// and the status those make.
#[derive(Debug, Clone)]
pub struct Agent {
    pub record: AgentRecord,
    pub last_heartbeat_at: Option<UnixMillis>,
    pub status: AgentStatus,
    /// What was decided about each workspace it declared (read for one agent, not listings).
    pub workspaces: Option<Vec<WorkspaceDecision>>,
    /// Its current CURVE key's age (read for one live agent, not listings).
    pub curve_key: Option<CurveKeyAge>,
}

/// When an agent's current CURVE key became current, and how old it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurveKeyAge {
    /// Enrollment, or the promotion of its latest completed rotation.
    pub since: UnixMillis,
    /// The promotion of its latest completed rotation, if it was ever rotated.
    pub rotated_at: Option<UnixMillis>,
    pub age_ms: i64,
}

impl Agent {
    pub fn at(record: AgentRecord, pending_heartbeat: Option<UnixMillis>, now: UnixMillis) -> Self {
        let last = match (record.last_heartbeat_at, pending_heartbeat) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let status = if record.revoked_at.is_some() {
            AgentStatus::Revoked
        } else if record.quarantined_at.is_some() {
            AgentStatus::Quarantined
        } else if last.is_some_and(|at| {
            now - at <= MISSED_LEASES_BEFORE_DISCONNECTED * record.lease_interval_ms
        }) {
            AgentStatus::Active
        } else {
            AgentStatus::Disconnected
        };
        Self { record, last_heartbeat_at: last, status, workspaces: None, curve_key: None }
    }
}

/// An agent whose last lease renewal is older than this many intervals is `disconnected`.
const MISSED_LEASES_BEFORE_DISCONNECTED: i64 = 3;

#[derive(Debug, Clone)]
pub struct AgentService {
    store: Store,
    clock: SharedClock,
    audit: AuditLog,
    link: Arc<MeshLink>,
    events: EventLog,
    rotations: RotationService,
    exec: ExecService,
}

impl AgentService {
    pub fn new(
        store: Store,
        clock: SharedClock,
        audit: AuditLog,
        link: Arc<MeshLink>,
        events: EventLog,
        rotations: RotationService,
        exec: ExecService,
    ) -> Self {
        Self { store, clock, audit, link, events, rotations, exec }
    }

    fn as_of_now(&self, mut record: AgentRecord) -> Agent {
        let pending = self.link.pending_heartbeat_at(&record.id);
        // A renewal buffered here and newer than the stored one: the session is on this
        // replica, whatever the store says yet.
        if pending.is_some_and(|at| record.last_heartbeat_at.is_none_or(|stored| stored < at)) {
            record.replica_id = Some(self.link.replica_id.clone());
        }
        Agent::at(record, pending, self.clock.now_millis())
    }

    pub async fn list(
        &self,
        page: &PageRequest,
        include_revoked: bool,
    ) -> Result<PageSlice<Agent>, ServiceError> {
        let slice = self.store.list_agents(page, include_revoked).await?;
        Ok(slice.map(|a| self.as_of_now(a)))
    }

    pub async fn get(&self, id: &str) -> Result<Agent, ServiceError> {
        let record = self
            .store
            .agent(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("agent {id}")))?;
        let workspaces = self.store.agent_workspaces(id).await?;
        // The same reading as the posture report's CURVE key row (store `posture_curve_keys`).
        let now = self.clock.now_millis();
        let curve_key =
            self.store.posture_curve_keys(Some(id)).await?.into_iter().next().map(|key| {
                let since = key.rotated_at.unwrap_or(key.enrolled_at);
                CurveKeyAge { since, rotated_at: key.rotated_at, age_ms: (now - since).max(0) }
            });
        Ok(Agent { workspaces: Some(workspaces), curve_key, ..self.as_of_now(record) })
    }

    /// The agent's record and status as of now, without what [`AgentService::get`] reads
    /// beside it (workspaces, the CURVE key's age): one read, for a runner deciding whether
    /// the agent can be rotated.
    pub async fn status(&self, id: &str) -> Result<Agent, ServiceError> {
        let record = self
            .store
            .agent(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("agent {id}")))?;
        Ok(self.as_of_now(record))
    }

    /// Revokes the agent's keys: removed from the allow-list (its live session's next frame is
    /// refused), told so over the mesh, and unable to reconnect. It needs a new join key.
    pub async fn revoke_credentials(
        &self,
        context: &AuditContext,
        id: &str,
        reason: Option<&str>,
    ) -> Result<Agent, ServiceError> {
        let reason = validate::reason(reason)?;
        let now = self.clock.now_millis();
        let target = Target { kind: "agent", id: Some(id), name: None };
        let change = Change::new("agent.revoke_credentials", target).reason(reason);
        let record = self
            .audit
            .audited(context, change, |entry| async move {
                self.store.revoke_agent(id, now, context.actor_key_id(), reason, &entry).await
            })
            .await?;
        // Cut first, then tell: from here on no frame of this agent reaches the application.
        let removed = self.link.allow.remove_agent(id);
        self.link.end_session(id, reason.unwrap_or("credentials revoked by an operator"));
        tracing::warn!(agent_id = %id, keys_removed = removed, actor = %context.actor_label(), "agent credentials revoked");
        self.events
            .append(
                id,
                "credentials_revoked",
                context.request_id.as_deref(),
                serde_json::json!({ "by": context.actor_key_id(), "reason": reason }),
            )
            .await;
        self.rotations.on_revoked(id).await?;
        self.exec.on_agent_removed(id, "its credentials were revoked").await?;
        Ok(self.as_of_now(record))
    }

    /// Two live sessions on the agent's key (its identity copied to another host): no
    /// dispatch from now on, an event and an audit record, until an operator revokes its
    /// credentials or releases it. False if it already was (nothing is written).
    pub async fn quarantine(&self, id: &str, sessions: usize) -> Result<bool, ServiceError> {
        let now = self.clock.now_millis();
        let reason = "two live sessions on one agent key (identity copied to another host?)";
        let details = serde_json::json!({ "reason": reason, "sessions_seen": sessions });
        let event = self.events.event(id, "quarantined", None, details.clone());
        let target = Target { kind: "agent", id: Some(id), name: None };
        let change = Change::new("agent.quarantine", target).reason(Some(reason)).details(details);
        let entry = self.audit.entry(&AuditContext::default(), &change, Outcome::Success);
        let quarantined = self.store.quarantine_agent(id, now, reason, &event, &entry).await?;
        if quarantined.is_none() {
            return Ok(false);
        }
        self.events.written();
        self.exec.reload_served(id).await?;
        tracing::error!(agent_id = %id, sessions, "agent QUARANTINED: two live sessions on its key; revoke its credentials or release it");
        Ok(true)
    }

    /// Lifts a quarantine (the operator found the second session benign and stopped it).
    pub async fn release_quarantine(
        &self,
        context: &AuditContext,
        id: &str,
        reason: Option<&str>,
    ) -> Result<Agent, ServiceError> {
        let reason = validate::reason(reason)?;
        let target = Target { kind: "agent", id: Some(id), name: None };
        let change = Change::new("agent.release_quarantine", target).reason(reason);
        let record = self
            .audit
            .audited(context, change, |entry| async move {
                self.store.release_quarantine(id, &entry).await
            })
            .await?;
        let details = serde_json::json!({ "by": context.actor_key_id(), "reason": reason });
        self.events.append(id, "quarantine_released", context.request_id.as_deref(), details).await;
        self.exec.reload_served(id).await?;
        tracing::warn!(agent_id = %id, actor = %context.actor_label(), "quarantine released");
        Ok(self.as_of_now(record))
    }
}
