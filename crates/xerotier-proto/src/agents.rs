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
    pub join_key: String,
    pub registration_name: String,
    /// The agent's CURVE public key, Z85 (40 characters).
    pub curve_public_key: String,
    /// The agent's Ed25519 public key, hex (64 characters).
    pub signing_public_key: String,
    pub manifest: CapabilityManifest,
    /// How often the agent renews its lease, in milliseconds.
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
    pub manifest_hash: String,
    pub manifest_version: u64,
    pub tool_count: usize,
    pub workspace_count: usize,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
    pub revoked_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AgentQuery {
    pub limit: Option<u32>,
    pub after: Option<String>,
    /// Include revoked agents.
    #[serde(default)]
    pub include_revoked: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeAgentRequest {
    pub reason: Option<String>,
}
