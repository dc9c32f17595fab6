//! The kinds of credential the posture report judges.

use std::fmt;
use std::str::FromStr;

use crate::PolicyError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CredentialKind {
    /// A caller's key for the HTTP API.
    ApiKey,
    /// An agent's data-plane identity on the CURVE mesh.
    CurveKey,
    /// A credential file on an agent host.
    WorkspaceCredential,
    /// A single-use enrollment token, while unconsumed.
    JoinKey,
    /// The router's own keys (mesh CURVE key, join-key signing key, TLS CA). The policy knows
    /// the kind already; the report lists them once they are stored as credentials.
    RouterKey,
}

impl CredentialKind {
    pub const ALL: [CredentialKind; 5] = [
        CredentialKind::ApiKey,
        CredentialKind::CurveKey,
        CredentialKind::WorkspaceCredential,
        CredentialKind::JoinKey,
        CredentialKind::RouterKey,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "api_key",
            CredentialKind::CurveKey => "curve_key",
            CredentialKind::WorkspaceCredential => "workspace_credential",
            CredentialKind::JoinKey => "join_key",
            CredentialKind::RouterKey => "router_key",
        }
    }

    /// Whether a credential of this kind belongs to one agent (its transitions are also agent
    /// events).
    pub fn agent_bound(self) -> bool {
        matches!(self, CredentialKind::CurveKey | CredentialKind::WorkspaceCredential)
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CredentialKind {
    type Err = PolicyError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        CredentialKind::ALL
            .into_iter()
            .find(|k| k.as_str() == value)
            .ok_or_else(|| PolicyError::Kind { value: value.to_string() })
    }
}
