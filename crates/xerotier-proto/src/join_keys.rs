use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Roles an agent can enroll with.
pub const AGENT_ROLES: [&str; 2] = ["inference", "execution"];

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinKeyRequest {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub name: String,
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub region: Option<String>,
    /// The mesh address agents connect to, `tcp://host:port` [default: the router's].
    #[schema(
        pattern = "^tcp://[A-Za-z0-9.:\\[\\]-]{1,253}:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
    )]
    pub router_addr: Option<String>,
    /// Lifetime in seconds [default and maximum: the router's configuration; the document's
    /// `maximum` is this router's].
    #[schema(minimum = 1)]
    pub ttl_seconds: Option<u64>,
    /// [default: the router's default role].
    #[schema(value_type = Option<AgentRole>)]
    pub agent_role: Option<String>,
    /// The workspaces an agent enrolled with this key serves at once (at most 100; repeats
    /// count once); whatever else it declares waits for approval [default: none — the key
    /// grants nothing by itself].
    #[serde(default)]
    #[schema(value_type = Option<Vec<GrantedWorkspace>>, max_items = 100)]
    pub workspaces: Option<Vec<String>>,
    /// The whole agent waits for an operator's approval (no work, no rotation) [default: false].
    #[serde(default)]
    pub require_approval: Option<bool>,
}

/// The roles an agent can enroll with ([`AGENT_ROLES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentRole {
    Inference,
    Execution,
}

/// A workspace a join key grants.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(value_type = String, pattern = "^[A-Za-z0-9._-]{1,128}$")]
pub struct GrantedWorkspace(pub String);

/// A join key as listings show it: never the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JoinKeyView {
    pub id: String,
    pub name: String,
    pub region: Option<String>,
    pub role: String,
    pub router_addr: String,
    /// `active`, `used`, `expired` or `revoked`.
    pub state: crate::status::JoinKeyState,
    pub created_at: String,
    pub created_by: Option<String>,
    pub expires_at: String,
    pub used_at: Option<String>,
    pub used_by_agent: Option<String>,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
    pub revoked_reason: Option<String>,
    /// The workspaces it grants; none: it grants nothing by itself.
    pub workspaces: Option<Vec<String>>,
    pub require_approval: bool,
}

/// The one answer that carries the token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuedJoinKey {
    pub join_key: JoinKeyView,
    /// A JWT (EdDSA) to hand to one XEM host; single use.
    pub token: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeJoinKeyRequest {
    /// Recorded in the audit log (at most 1024 characters, no NUL).
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JoinKeyQuery {
    /// At most this many items (1-500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Only join keys after this id: the previous page's `next_after`.
    #[param(pattern = "^jk_[0-9a-hjkmnp-tv-z]{26}$")]
    pub after: Option<String>,
    /// Include used, expired and revoked keys.
    #[serde(default)]
    pub include_terminal: bool,
}

/// Claims of a join key token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinKeyClaims {
    pub iss: String,
    pub aud: String,
    /// The join key id, `jk_…`.
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    pub name: String,
    pub region: Option<String>,
    pub role: String,
    /// Mesh address, `tcp://host:port`.
    pub router_addr: String,
    /// The router's CURVE public key, Z85.
    pub router_curve_key: String,
    /// The grant it carries (informational for the agent; the router decides from its store).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_approval: bool,
    /// `sha256:<hex>` of the router's TLS CA: the agent enrolls over HTTPS trusting that CA
    /// alone. Absent only from a router serving plain HTTP (`--insecure-http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
}

pub const JOIN_KEY_ISSUER: &str = "xerotier-router";
pub const JOIN_KEY_AUDIENCE: &str = "xerotier-enroll";
