use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Roles an agent can enroll with.
pub const AGENT_ROLES: [&str; 2] = ["inference", "execution"];

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinKeyRequest {
    pub name: String,
    pub region: Option<String>,
    /// The mesh address agents connect to, `tcp://host:port` [default: the router's].
    pub router_addr: Option<String>,
    /// Lifetime in seconds [default and maximum: the router's configuration].
    pub ttl_seconds: Option<u64>,
    /// `inference` or `execution` [default: the router's default role].
    pub agent_role: Option<String>,
    /// The workspaces an agent enrolled with this key serves at once; whatever else it declares
    /// waits for approval [default: none — the key grants nothing by itself].
    #[serde(default)]
    pub workspaces: Option<Vec<String>>,
    /// The whole agent waits for an operator's approval (no work, no rotation) [default: false].
    #[serde(default)]
    pub require_approval: Option<bool>,
}

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
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JoinKeyQuery {
    pub limit: Option<u32>,
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
