//! Invocations: where one stands, what an agent reports when it ends, and the HTTP bodies of
//! `/v1/exec/invocations`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Each of an invocation's output streams is kept up to this many bytes; more is dropped and
/// the truncation is marked.
/// Tool arguments, serialised, are refused beyond this by the router (`invalid_arguments`)
/// and, by default, by the XEM (its `max_argument_bytes`).
pub const MAX_ARGUMENT_BYTES: usize = 64 * 1024;
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

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

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeRequest {
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub workspace: String,
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
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
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InvocationQuery {
    /// At most this many items (1-500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Only invocations after this id: the previous page's `next_after`.
    #[param(pattern = "^inv_[0-9a-hjkmnp-tv-z]{26}$")]
    pub after: Option<String>,
    /// Only invocations in this status.
    #[param(value_type = Option<InvocationStatus>)]
    pub status: Option<String>,
    /// Only invocations dispatched to this agent.
    #[param(pattern = "^agt_[0-9a-hjkmnp-tv-z]{26}$")]
    pub agent_id: Option<String>,
    #[param(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub workspace: Option<String>,
    #[param(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub tool: Option<String>,
}

/// Where a reader of an invocation's output stands: how many bytes of each stream's text it
/// has read. It is the `id` of every event of `GET /v1/exec/invocations/{id}/output`, written
/// `<stdout bytes>:<stderr bytes>`, so `Last-Event-ID` (or `?after=`) resumes exactly there.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutputCursor {
    pub stdout: usize,
    pub stderr: usize,
}

impl std::fmt::Display for OutputCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.stdout, self.stderr)
    }
}

impl std::str::FromStr for OutputCursor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid =
            || format!("{text:?} is not an output cursor (<stdout bytes>:<stderr bytes>)");
        let (stdout, stderr) = text.split_once(':').ok_or_else(invalid)?;
        // Exactly the documented form: digits only (no sign, no spaces), at most 19 each.
        let digits = |s: &str| (1..=19).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(stdout) || !digits(stderr) {
            return Err(invalid());
        }
        Ok(Self {
            stdout: stdout.parse().map_err(|_| invalid())?,
            stderr: stderr.parse().map_err(|_| invalid())?,
        })
    }
}

/// Which output stream a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputStreamName {
    Stdout,
    Stderr,
}

/// The data of an `output` event: text the tool wrote, in order, never split inside a
/// character.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutputChunk {
    pub stream: OutputStreamName,
    pub text: String,
}

/// `GET /v1/exec/invocations/{id}/output`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OutputQuery {
    /// Resume after this event id (an output cursor, `<stdout bytes>:<stderr bytes>`), as
    /// `Last-Event-ID` does; the header wins when both are given [default: from the start].
    #[param(pattern = "^[0-9]{1,19}:[0-9]{1,19}$")]
    pub after: Option<String>,
}

#[cfg(test)]
mod output_cursor_tests {
    use super::OutputCursor;

    #[test]
    fn a_cursor_round_trips_through_its_event_id() {
        let cursor = OutputCursor { stdout: 1024, stderr: 7 };
        assert_eq!(cursor.to_string(), "1024:7");
        assert_eq!("1024:7".parse::<OutputCursor>(), Ok(cursor));
        assert_eq!("0:0".parse::<OutputCursor>(), Ok(OutputCursor::default()));
        let widest = "9999999999999999999:9999999999999999999";
        assert!(widest.parse::<OutputCursor>().is_ok(), "every value the pattern admits fits");
        for bad in
            ["", "12", "a:1", "1:-1", "1:2:3", "+1:2", " 1:2", "1:2 ", "12345678901234567890:0"]
        {
            assert!(bad.parse::<OutputCursor>().is_err(), "{bad:?}");
        }
    }
}
