//! Containment pauses: `pause-exec`, `resume-exec` and the pauses in force.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/management/agents/{id}/pause-exec` and `…/resume-exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseExecRequest {
    /// Only this workspace on the agent [default: all of its workspaces].
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub workspace: Option<String>,
    /// Recorded in the audit log (at most 1024 characters, no NUL).
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PauseView {
    pub agent_id: String,
    /// None: the whole agent.
    pub workspace: Option<String>,
    pub paused_at: String,
    pub paused_by: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PauseList {
    pub pauses: Vec<PauseView>,
}
