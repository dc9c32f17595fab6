//! Workspace credentials: what an agent reports after a reload (judged by the posture report,
//! `posture.rs`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
