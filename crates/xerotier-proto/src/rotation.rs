//! CURVE key rotation: the request, its view and the reasons a rotation can fail.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const DEFAULT_ROTATION_REASON: &str = "scheduled";

/// The failure reasons a rotation can end with; exactly one is recorded.
pub const FAILURE_ACK_TIMEOUT: &str = "acknowledgement timeout";
pub const FAILURE_SIGNATURE_MISMATCH: &str = "signature mismatch";
pub const FAILURE_REVOKED_AGENT: &str = "revoked agent";

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CurveRotateRequest {
    /// Recorded in the audit log [default: scheduled] (at most 1024 characters, no NUL).
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    pub reason: Option<String>,
}

/// A CURVE rotation request and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RotationView {
    pub request_id: String,
    pub agent_id: String,
    pub status: crate::status::RotationStatus,
    pub reason: String,
    /// With `failed`: `acknowledgement timeout`, `signature mismatch` or `revoked agent`.
    pub failure_reason: Option<String>,
    pub requested_at: String,
    pub requested_by: Option<String>,
    pub deadline_at: String,
    pub acknowledged_at: Option<String>,
    pub completed_at: Option<String>,
    /// Fingerprint of the promoted key.
    pub new_key_fingerprint: Option<String>,
    /// Where to watch it: the agent's events stream.
    pub monitor: String,
}
