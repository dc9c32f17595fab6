//! Record builders shared by the store's conformance suites (each suite is its own crate and
//! uses some of them).

#![allow(dead_code)] // each test crate uses a subset

use xerotier_store::{
    AgentEvent, AgentRecord, AuditEntry, JoinKeyRecord, NewAgentKeys, RotationRecord,
};

/// The new signing key every test promotion binds (hex; the store keeps what it is given).
pub const NEW_SIGNING_KEY: &str =
    "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";

/// The keys a promotion of CURVE key `curve` binds.
pub fn new_keys(curve: &str) -> NewAgentKeys<'_> {
    NewAgentKeys { curve, signing: NEW_SIGNING_KEY }
}

pub fn join_key(id: &str) -> JoinKeyRecord {
    JoinKeyRecord {
        id: id.into(),
        name: "n".into(),
        region: None,
        role: "execution".into(),
        router_addr: "tcp://r:1".into(),
        created_at: 0,
        created_by: None,
        expires_at: 1_000_000,
        consumed_at: None,
        consumed_by_agent: None,
        revoked_at: None,
        revoked_by: None,
        revoked_reason: None,
        grant_workspaces: None,
        require_approval: false,
        signing_kid: None,
    }
}

pub fn agent(id: &str, name: &str, jk: &str, curve: &str) -> AgentRecord {
    AgentRecord {
        id: id.into(),
        name: name.into(),
        role: "execution".into(),
        region: None,
        join_key_id: jk.into(),
        enrolled_at: 1,
        curve_public_key: curve.into(),
        signing_public_key: "ab".repeat(32),
        manifest: "{}".into(),
        manifest_hash: "h".into(),
        manifest_version: 1,
        lease_interval_ms: 1000,
        last_heartbeat_at: None,
        revoked_at: None,
        revoked_by: None,
        revoked_reason: None,
        previous_curve_public_key: None,
        approval: "approved".into(),
        quarantined_at: None,
        quarantine_reason: None,
        replica_id: None,
        replica_since: None,
        signing_key_rotated_at: None,
    }
}

pub fn audit(id: &str) -> AuditEntry {
    AuditEntry {
        id: id.into(),
        at: 1,
        actor_key_id: None,
        actor_name: None,
        action: "test".into(),
        target_type: None,
        target_id: None,
        target_name: None,
        reason: None,
        request_id: None,
        correlation_id: None,
        outcome: "success".into(),
        client_addr: None,
        details: None,
    }
}

pub fn rotation(id: &str, agent_id: &str) -> RotationRecord {
    RotationRecord {
        id: id.into(),
        agent_id: agent_id.into(),
        reason: "suspected leak".into(),
        nonce: format!("nonce-{id}"),
        status: "pending".into(),
        failure_reason: None,
        requested_at: 10,
        requested_by: None,
        requested_by_name: None,
        deadline_at: 100_000,
        acknowledged_at: None,
        completed_at: None,
        new_public_key: None,
        request_id: None,
        new_signing_public_key: None,
    }
}

pub fn event(id: &str, agent_id: &str) -> AgentEvent {
    AgentEvent {
        id: id.into(),
        agent_id: agent_id.into(),
        at: 10,
        event_type: "x".into(),
        request_id: None,
        details: None,
    }
}
