//! Tool execution: the HTTP bodies of `/v1/exec/*`, what agents report about invocations and
//! workspace credentials, and the containment (pause) views.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Each of an invocation's output streams is kept up to this many bytes; more is dropped and
/// the truncation is marked.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// The risk classes a tool declares.
pub const RISKS: [&str; 4] = ["read", "write", "destructive", "irreversible"];

/// Where an invocation stands. `queued` until an agent starts it (it may already be on its way
/// to one: see `agent_id`), then `running`, then one of the four terminal states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvocationStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl InvocationStatus {
    pub const ALL: [InvocationStatus; 6] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

/// What an agent reports when an invocation ends (also the terminal part of the HTTP view).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationResult {
    pub invocation_id: String,
    /// One of the terminal statuses.
    pub status: InvocationStatus,
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Why it failed without an exit code (tool missing, credential unreadable, …).
    pub error: Option<String>,
    /// Unix milliseconds on the agent's clock.
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    /// The generation of the workspace credential the invocation ran with (0: none).
    pub credential_generation: u64,
}

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

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A tool some online agent offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolSummary {
    pub name: String,
    pub description: String,
    /// `read`, `write`, `destructive` or `irreversible`.
    pub risk: String,
    pub timeout_seconds: u64,
    /// Workspaces in which some online agent can run it.
    pub workspaces: Vec<String>,
    /// How many online agents offer it.
    pub agents: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ToolList {
    pub tools: Vec<ToolSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolOffer {
    pub agent_id: String,
    pub agent_name: String,
    pub workspaces: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolDetail {
    pub name: String,
    pub description: String,
    pub risk: String,
    pub timeout_seconds: u64,
    /// The JSON schema its arguments are validated against.
    #[schema(value_type = Object)]
    pub args_schema: serde_json::Value,
    pub offered_by: Vec<ToolOffer>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeRequest {
    pub workspace: String,
    pub tool: String,
    /// Arguments, a JSON object validated against the tool's schema [default: {}].
    #[serde(default)]
    #[schema(value_type = Object)]
    pub args: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InvocationView {
    pub id: String,
    pub status: InvocationStatus,
    pub tool: String,
    pub workspace: String,
    #[schema(value_type = Object)]
    pub args: serde_json::Value,
    /// The agent it was dispatched to.
    pub agent_id: Option<String>,
    pub created_at: String,
    /// The API key id that asked for it.
    pub created_by: Option<String>,
    pub dispatched_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub error: Option<String>,
    /// Generation of the workspace credential it ran with.
    pub credential_generation: Option<u64>,
    pub cancel_requested: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvocationQuery {
    pub limit: Option<u32>,
    pub after: Option<String>,
    /// Only invocations in this status.
    pub status: Option<String>,
    pub agent_id: Option<String>,
    pub workspace: Option<String>,
    pub tool: Option<String>,
}

/// `POST /v1/management/agents/{id}/pause-exec` and `…/resume-exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseExecRequest {
    /// Only this workspace on the agent [default: all of its workspaces].
    pub workspace: Option<String>,
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
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CredentialList {
    pub credentials: Vec<CredentialView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CredentialQuery {
    /// Only this agent's files.
    pub agent_id: Option<String>,
}
