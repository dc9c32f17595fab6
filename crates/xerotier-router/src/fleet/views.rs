//! How the fleet's records appear in the API.

use secrecy::ExposeSecret;
use xerotier_core::format_rfc3339;
use xerotier_credentials::{fingerprint, parse_curve_public};
use xerotier_proto::agents::{
    AgentView, AgentWorkspaceView, CandidateView, CapabilityManifest, DecisionView,
};
use xerotier_proto::events::AgentEventView;
use xerotier_proto::join_keys::{IssuedJoinKey, JoinKeyView};
use xerotier_proto::rotation::RotationView;
use xerotier_proto::status::{AgentApproval, RotationStatus, WorkspaceState};
use xerotier_store::{AgentEvent, RotationRecord, WorkspaceDecision};

use super::agents::Agent;
use super::grants::{Candidate, Decided};
use super::join_keys::{IssuedJoin, JoinKey};

pub fn agent(agent: Agent) -> AgentView {
    let Agent { record, last_heartbeat_at, status, workspaces, curve_key } = agent;
    let manifest: CapabilityManifest = serde_json::from_str(&record.manifest).unwrap_or_default();
    let curve_key_fingerprint =
        parse_curve_public(&record.curve_public_key).map(|k| fingerprint(&k)).unwrap_or_default();
    AgentView {
        status,
        enrolled_at: format_rfc3339(record.enrolled_at),
        last_heartbeat_at: last_heartbeat_at.map(format_rfc3339),
        lease_renewal_interval_ms: u64::try_from(record.lease_interval_ms).unwrap_or(0),
        curve_key_fingerprint,
        signing_key_fingerprint: super::rotation::signing_fingerprint(&record.signing_public_key)
            .unwrap_or_default(),
        signing_key_rotated_at: record.signing_key_rotated_at.map(format_rfc3339),
        manifest_version: u64::try_from(record.manifest_version).unwrap_or(0),
        tool_count: manifest.tools.len(),
        workspace_count: manifest.workspaces.len(),
        revoked_at: record.revoked_at.map(format_rfc3339),
        id: record.id,
        name: record.name,
        role: record.role,
        region: record.region,
        join_key_id: record.join_key_id,
        curve_public_key: record.curve_public_key,
        manifest_hash: record.manifest_hash,
        revoked_by: record.revoked_by,
        revoked_reason: record.revoked_reason,
        replica_id: record.replica_id,
        curve_key_since: curve_key.map(|k| format_rfc3339(k.since)),
        curve_key_rotated_at: curve_key.and_then(|k| k.rotated_at).map(format_rfc3339),
        curve_key_age_seconds: curve_key.map(|k| u64::try_from(k.age_ms / 1000).unwrap_or(0)),
        approval: AgentApproval::parse(&record.approval).unwrap_or(AgentApproval::Pending),
        workspaces: workspaces.map(|w| w.into_iter().map(agent_workspace).collect()),
    }
}

pub fn agent_workspace(decision: WorkspaceDecision) -> AgentWorkspaceView {
    AgentWorkspaceView {
        // Only the four states are ever written; anything else would not be served.
        state: WorkspaceState::parse(&decision.state).unwrap_or(WorkspaceState::Candidate),
        since: format_rfc3339(decision.since),
        decided_at: decision.decided_at.map(format_rfc3339),
        workspace: decision.workspace,
        definitions_hash: decision.definitions_hash,
        decided_by: decision.decided_by,
        source: decision.source,
    }
}

pub fn join_key(key: JoinKey) -> JoinKeyView {
    let JoinKey { record, state } = key;
    JoinKeyView {
        workspaces: record.grant_workspaces.as_deref().and_then(|g| serde_json::from_str(g).ok()),
        require_approval: record.require_approval,
        state,
        created_at: format_rfc3339(record.created_at),
        expires_at: format_rfc3339(record.expires_at),
        used_at: record.consumed_at.map(format_rfc3339),
        revoked_at: record.revoked_at.map(format_rfc3339),
        id: record.id,
        name: record.name,
        region: record.region,
        role: record.role,
        router_addr: record.router_addr,
        created_by: record.created_by,
        used_by_agent: record.consumed_by_agent,
        revoked_by: record.revoked_by,
        revoked_reason: record.revoked_reason,
    }
}

pub fn issued_join_key(issued: IssuedJoin) -> IssuedJoinKey {
    IssuedJoinKey {
        token: issued.token.expose_secret().to_string(),
        join_key: join_key(issued.key),
    }
}

/// Where to watch an agent's rotations: its events stream.
pub fn monitor_path(agent_id: &str) -> String {
    format!("/v1/management/agents/{agent_id}/events")
}

pub fn rotation(r: RotationRecord) -> RotationView {
    RotationView {
        monitor: monitor_path(&r.agent_id),
        new_key_fingerprint: r
            .new_public_key
            .as_deref()
            .and_then(|k| parse_curve_public(k).ok())
            .map(|k| fingerprint(&k)),
        requested_at: format_rfc3339(r.requested_at),
        deadline_at: format_rfc3339(r.deadline_at),
        acknowledged_at: r.acknowledged_at.map(format_rfc3339),
        completed_at: r.completed_at.map(format_rfc3339),
        // The store only ever writes the three statuses; an unknown one would be a pending
        // rotation's row read mid-migration, shown as pending rather than invented as an end.
        status: RotationStatus::parse(&r.status).unwrap_or(RotationStatus::Pending),
        request_id: r.id,
        agent_id: r.agent_id,
        reason: r.reason,
        failure_reason: r.failure_reason,
        requested_by: r.requested_by,
    }
}

pub fn event(event: AgentEvent) -> AgentEventView {
    AgentEventView {
        at: format_rfc3339(event.at),
        details: event.details.as_deref().and_then(|d| serde_json::from_str(d).ok()),
        id: event.id,
        agent_id: event.agent_id,
        event_type: event.event_type,
        request_id: event.request_id,
    }
}

pub fn candidate(candidate: Candidate) -> CandidateView {
    let Candidate { agent, decision } = candidate;
    CandidateView {
        agent_approval: AgentApproval::parse(&agent.approval).unwrap_or(AgentApproval::Pending),
        agent_id: agent.id,
        agent_name: agent.name,
        tools: serde_json::from_str(&decision.tools).unwrap_or(serde_json::Value::Null),
        since: format_rfc3339(decision.since),
        workspace: decision.workspace,
        definitions_hash: decision.definitions_hash,
    }
}

pub fn decision(decided: Decided) -> DecisionView {
    let Decided { agent, workspaces } = decided;
    DecisionView {
        approval: AgentApproval::parse(&agent.approval),
        agent_id: agent.id,
        workspaces: workspaces.into_iter().map(agent_workspace).collect(),
    }
}
