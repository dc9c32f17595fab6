use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// What an agent offers: published at enrollment and with every lease renewal (by hash).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CapabilityManifest {
    pub version: u64,
    #[serde(default)]
    pub tools: Vec<ManifestTool>,
    #[serde(default)]
    pub workspaces: Vec<ManifestWorkspace>,
}

impl CapabilityManifest {
    /// SHA-256 of the tool definitions alone, hex: what a workspace grant is pinned to, so a
    /// changed definition needs approval again.
    pub fn definitions_hash(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(serde_json::to_vec(&self.tools).unwrap_or_default()))
    }

    pub fn declares_workspace(&self, workspace: &str) -> bool {
        self.workspaces.iter().any(|w| w.id == workspace)
    }

    /// SHA-256 of the manifest's canonical JSON (fields in declaration order), hex. Agents and
    /// the router compute it the same way, so a lease renewal's hash names one manifest.
    pub fn hash(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(serde_json::to_vec(self).unwrap_or_default()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ManifestTool {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `read`, `write`, `destructive` or `irreversible`.
    #[serde(default)]
    pub risk: String,
    #[serde(default)]
    pub timeout_seconds: u64,
    /// The JSON schema (a strict subset, see `schema`) the arguments must match.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub args_schema: serde_json::Value,
}

impl ManifestTool {
    /// SHA-256 of this one definition, hex: tells variants of a tool apart.
    pub fn definition_hash(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(serde_json::to_vec(self).unwrap_or_default()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ManifestWorkspace {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub credentials_ref: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The join key token (a JWT) the operator handed to this host.
    #[schema(pattern = "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$")]
    pub join_key: String,
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub registration_name: String,
    /// The agent's CURVE public key, Z85 (40 characters).
    #[schema(pattern = "^[0-9a-zA-Z.:+=^!/*?&<>()\\[\\]{}@%$#-]{40}$")]
    pub curve_public_key: String,
    /// The agent's Ed25519 public key, hex (64 characters).
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub signing_public_key: String,
    pub manifest: CapabilityManifest,
    /// How often the agent renews its lease, in milliseconds [default: 10000].
    #[schema(minimum = 100, maximum = 600000)]
    pub lease_renewal_interval_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnrollResponse {
    pub agent_id: String,
    /// Mesh address to connect to, `tcp://host:port`.
    pub mesh_addr: String,
    /// The router's CURVE public key, Z85.
    pub router_curve_key: String,
    pub role: String,
    pub region: Option<String>,
    /// The mesh address of every live router replica (the one above included), to fail over
    /// to when the agent's replica stops answering. Absent from routers that predate replicas.
    #[serde(default)]
    pub mesh_addrs: Vec<String>,
    /// The router mesh keys to accept, in the order to try them (`router_curve_key` is among
    /// them): both while a mesh key rotation is under way (SPEC §9). Absent from routers that
    /// predate router key rotation.
    #[serde(default)]
    pub router_mesh_keys: Vec<crate::mesh::RouterMeshKey>,
    /// Ids of router mesh keys rotated away within the overlap window: a join key minted
    /// before the rotation pins one of them and still enrolls.
    #[serde(default)]
    pub retired_router_mesh_kids: Vec<String>,
}

/// The domain of a signed router key fetch: a signature over it can never be mistaken for any
/// other the agent's signing key makes (rotation acknowledgements have their own).
pub const ROUTER_KEYS_FETCH_DOMAIN: &str = "xerotier-router-keys-fetch-v1";

/// `POST /v1/agents/router-keys`: an enrolled agent none of whose router mesh keys works any
/// more (it was offline for a whole mesh key rotation) asks for the current ones, signed with
/// its Ed25519 signing key instead of a join key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouterKeysRequest {
    /// `agt_…`.
    #[schema(pattern = "^agt_[0-9a-hjkmnp-tv-z]{26}$")]
    pub agent_id: String,
    /// Unix milliseconds when signed; refused more than 5 minutes from the router's clock.
    pub timestamp_ms: i64,
    /// 32 lowercase hex digits, never used twice.
    #[schema(pattern = "^[0-9a-f]{32}$")]
    pub nonce: String,
    /// The router mesh key id the agent holds (`mks-…`).
    #[schema(pattern = "^mks-[0-9a-f]{16}$")]
    pub kid: String,
    /// Ed25519 over [`router_keys_signing_input`], 128 lowercase hex digits.
    #[schema(pattern = "^[0-9a-f]{128}$")]
    pub signature: String,
}

/// What the agent signs for a [`RouterKeysRequest`]: the domain and every field, one a line
/// (none may contain a newline: each has a fixed format the router checks first).
pub fn router_keys_signing_input(
    agent_id: &str,
    timestamp_ms: i64,
    nonce: &str,
    kid: &str,
) -> Vec<u8> {
    format!("{ROUTER_KEYS_FETCH_DOMAIN}\n{agent_id}\n{timestamp_ms}\n{nonce}\n{kid}").into_bytes()
}

/// The answer to a [`RouterKeysRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RouterKeysResponse {
    /// The router mesh keys to accept, in the order to try them.
    pub keys: Vec<crate::mesh::RouterMeshKey>,
    /// The TLS CAs to trust for the router's HTTPS (`sha256:<hex>`), when the router has a CA
    /// of its own; as `Frame::RouterKeys` carries them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_ca_pins: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    pub id: String,
    pub name: String,
    /// `active` (lease fresh), `disconnected` (lease missed) or `revoked`.
    pub status: crate::status::AgentStatus,
    pub role: String,
    pub region: Option<String>,
    pub enrolled_at: String,
    pub join_key_id: String,
    pub last_heartbeat_at: Option<String>,
    pub lease_renewal_interval_ms: u64,
    /// SHA-256 fingerprint of the CURVE public key, hex, first 16 bytes.
    pub curve_key_fingerprint: String,
    pub curve_public_key: String,
    /// SHA-256 fingerprint of its Ed25519 signing public key (the key that proves its
    /// rotation acknowledgements), hex, first 16 bytes. It changes with every promoted CURVE
    /// rotation.
    #[serde(default)]
    pub signing_key_fingerprint: String,
    /// When its signing key was last replaced by a promoted rotation (RFC 3339); null while it
    /// is the key it enrolled with.
    #[serde(default)]
    pub signing_key_rotated_at: Option<String>,
    pub manifest_hash: String,
    pub manifest_version: u64,
    pub tool_count: usize,
    pub workspace_count: usize,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
    pub revoked_reason: Option<String>,
    /// `pending` while its join key's approval requirement waits for an operator.
    pub approval: crate::status::AgentApproval,
    /// The router replica holding its mesh session (as of its last stored lease renewal);
    /// `null` when none does (never connected, or its replica died and it has not come back).
    #[serde(default)]
    pub replica_id: Option<String>,
    /// When its current CURVE key became current: the promotion of its latest completed
    /// rotation, or its enrollment (shown for one live agent, not in listings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve_key_since: Option<String>,
    /// The promotion time of its latest completed CURVE rotation; null if never rotated
    /// (shown for one live agent, not in listings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve_key_rotated_at: Option<String>,
    /// Age of its current CURVE key in seconds (shown for one live agent, not in listings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve_key_age_seconds: Option<u64>,
    /// Each declared workspace and what was decided about it (shown for one agent, not in
    /// listings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspaces: Option<Vec<AgentWorkspaceView>>,
}

/// A workspace an agent declared, and what was decided about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentWorkspaceView {
    pub workspace: String,
    pub state: crate::status::WorkspaceState,
    /// SHA-256 of the tool definitions the state holds for.
    pub definitions_hash: String,
    pub since: String,
    pub decided_at: Option<String>,
    /// An API key id, or the join key whose grant it is.
    pub decided_by: Option<String>,
    /// `join_key`, `operator` or `manifest` (declared; nothing decided yet).
    pub source: String,
}

/// A workspace an agent declared beyond what it was granted, waiting for an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CandidateView {
    pub agent_id: String,
    pub agent_name: String,
    /// `pending` when the whole agent waits for approval.
    pub agent_approval: crate::status::AgentApproval,
    pub workspace: String,
    /// SHA-256 of the tool definitions below.
    pub definitions_hash: String,
    /// The tool definitions it would run there.
    #[schema(value_type = Object)]
    pub tools: serde_json::Value,
    pub since: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CandidateList {
    pub candidates: Vec<CandidateView>,
}

/// `…/candidates/approve`, `…/candidates/reject` and `…/grants/withdraw`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideWorkspaceRequest {
    /// Only this workspace [default: every one the decision applies to].
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub workspace: Option<String>,
    /// Recorded in the audit log (at most 1024 characters, no NUL).
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    pub reason: Option<String>,
}

/// `…/grants/withdraw`: the workspace is required.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawGrantRequest {
    /// The granted workspace to withdraw.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub workspace: String,
    /// Recorded in the audit log (at most 1024 characters, no NUL).
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    pub reason: Option<String>,
}

/// What a decision changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DecisionView {
    pub agent_id: String,
    pub approval: Option<crate::status::AgentApproval>,
    pub workspaces: Vec<AgentWorkspaceView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AgentQuery {
    /// At most this many items (1-500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Only agents after this id: the previous page's `next_after`.
    #[param(pattern = "^agt_[0-9a-hjkmnp-tv-z]{26}$")]
    pub after: Option<String>,
    /// Include revoked agents.
    #[serde(default)]
    pub include_revoked: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeAgentRequest {
    /// Recorded in the audit log (at most 1024 characters, no NUL).
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    pub reason: Option<String>,
}
