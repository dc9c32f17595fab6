//! Workspace credentials: what an agent reports after a reload, and the fleet-wide ages served
//! by `GET /v1/management/credentials`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One credential file as a reload found it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CredentialFileReport {
    /// The file name under `credentials_dir` (a workspace's `credentials_ref`).
    pub credentials_ref: String,
    /// Whether this reload read it. When false, `error` says why and the previous good
    /// version (if any, described by the other fields) stays in use.
    pub ok: bool,
    /// SHA-256 of the version in use, hex; none if no good version was ever read.
    pub sha256: Option<String>,
    /// Counts the distinct contents in use since the agent started (1 = the first).
    pub generation: u64,
    /// Modification time of the version in use, Unix milliseconds.
    pub mtime_ms: Option<i64>,
    pub error: Option<String>,
    /// The expiry the version in use carries, Unix milliseconds, when the XEM could read one
    /// (a kubeconfig client certificate's notAfter, a JWT's `exp`, an AWS credentials file's
    /// expiration). Absent from reports of older XEMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
}

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReloadReport {
    /// `startup`, `sighup` or `watch`.
    pub trigger: String,
    /// True when every file was read.
    pub ok: bool,
    pub files: Vec<CredentialFileReport>,
}

/// One workspace credential file on one agent, with its age against the routine cadence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CredentialView {
    pub agent_id: String,
    pub credentials_ref: String,
    /// SHA-256 of the version in use (never the content).
    pub sha256: Option<String>,
    pub generation: u64,
    /// When the version in use was written (its file's mtime).
    pub last_changed_at: Option<String>,
    pub age_days: Option<u64>,
    /// `ok`, `due` (within 7 days of the cadence), `overdue`, or `unknown` (never read).
    pub rotation: String,
    pub cadence_days: u64,
    /// False when the agent's latest reload refused the file (`error` says why); the version
    /// described here stays in use.
    pub reload_ok: bool,
    pub error: Option<String>,
    pub reported_at: String,
    /// When the version in use expires, if its content says so and the agent could read it
    /// (a kubeconfig client certificate's notAfter, a JWT's `exp`, an AWS credentials file's
    /// expiration), RFC 3339.
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CredentialList {
    pub credentials: Vec<CredentialView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CredentialQuery {
    /// Only this agent's files.
    #[param(pattern = "^agt_[0-9a-hjkmnp-tv-z]{26}$")]
    pub agent_id: Option<String>,
}
