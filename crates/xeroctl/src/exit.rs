//! Exit statuses: the one place where an outcome becomes a number. The table is printed by
//! `xeroctl --help` and documented in README.md ("Exit codes"); scripts rely on it, so a code
//! never changes meaning.

use crate::client::ApiError;

/// The command did what it was asked.
pub const SUCCESS: u8 = 0;
/// Anything not listed below; with `exec invoke --wait`/`exec watch`, the tool failed; with
/// `curve-rotate --wait`, the rotation failed.
pub const FAILURE: u8 = 1;
/// Usage: an unknown flag, a missing or malformed value, a missing API key (clap's own code).
pub const USAGE: u8 = 2;
/// The router refused the request (HTTP 400, 409, 413, 429, …: invalid, already revoked, name
/// taken, not paused, …).
pub const REFUSED: u8 = 3;
/// What the command names does not exist (HTTP 404, or no active key with that name).
pub const NOT_FOUND: u8 = 4;
/// The API key is missing, invalid, expired or revoked (401), or lacks the scope (403).
pub const UNAUTHORIZED: u8 = 5;
/// The router could not be reached, did not answer in time, failed TLS verification, or
/// answered 5xx (`no_agent_available`, store unavailable): retrying later may succeed.
pub const UNAVAILABLE: u8 = 6;
/// An irreversible or fleet-wide command was not confirmed: the operator answered no, or there
/// was no terminal to ask on and no `--yes`. Nothing was sent.
pub const NOT_CONFIRMED: u8 = 7;
/// Stopped waiting (`--wait-timeout`) while the invocation or rotation still runs.
pub const STILL_RUNNING: u8 = 8;
/// `credentials --check`: a listed credential is overdue or expired.
pub const POSTURE_FAILING: u8 = 9;
/// A fleet-wide operation (`xeroctl operations … --follow`, a fleet `curve-rotate`, a
/// blast-radius revocation) ended halted (more failures than `--max-failures`), cancelled or
/// failed; its table says which targets.
pub const OPERATION_INCOMPLETE: u8 = 10;
/// With `exec invoke --wait`/`exec watch`: the agent killed the tool at its timeout (like
/// coreutils `timeout`).
pub const TOOL_TIMED_OUT: u8 = 124;
/// With `exec invoke --wait`/`exec watch`: the invocation was cancelled, or following it was
/// interrupted (Ctrl-C), like a shell's status for SIGINT.
pub const CANCELLED: u8 = 130;

/// The table as `--help` prints it.
pub const TABLE: &str = "\
Exit codes (README.md, \"Exit codes\"):
  0    success
  1    other error; with --wait: the tool or rotation failed
  2    usage: bad flag or value, no API key
  3    refused by the router (HTTP 4xx: invalid, conflict, already revoked, ...)
  4    not found (HTTP 404, or no active key with that name)
  5    unauthorized or forbidden (HTTP 401/403)
  6    router unreachable, TLS failure, timeout, or HTTP 5xx (retry later)
  7    not confirmed: answered no, or no terminal and no --yes (nothing was sent)
  8    still running: --wait-timeout passed, the work goes on
  9    credentials --check: a credential is overdue or expired
  10   a fleet-wide operation halted, was cancelled or failed (see its table)
  124  the tool timed out (exec invoke --wait, exec watch)
  130  cancelled, or interrupted (Ctrl-C)";

/// A failure whose class the exit status says; the message is what the operator reads.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotConfirmed(String),
    #[error("{0}")]
    Unavailable(String),
    /// A router refusal with advice on what to do about it.
    #[error("{api}\nhint: {hint}")]
    Hinted { api: ApiError, hint: String },
    /// The outcome was already reported; only the status is left to give.
    #[error("exit status {0}")]
    Exit(u8),
}

/// A usage error: the command line (or configuration) cannot work as given.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    CliError::Usage(message.into()).into()
}

pub fn not_found(message: impl Into<String>) -> anyhow::Error {
    CliError::NotFound(message.into()).into()
}

/// The router's refusal `api`, with a hint for the operator.
pub fn hinted(api: &ApiError, hint: impl Into<String>) -> anyhow::Error {
    CliError::Hinted { api: api.clone(), hint: hint.into() }.into()
}

/// The status of an HTTP refusal.
pub fn for_status(status: u16) -> u8 {
    match status {
        401 | 403 => UNAUTHORIZED,
        404 => NOT_FOUND,
        500..=599 => UNAVAILABLE,
        _ => REFUSED,
    }
}

/// The status `xeroctl` ends with after `err`: the first cause in its chain that has a class.
pub fn code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(api) = cause.downcast_ref::<ApiError>() {
            return for_status(api.status);
        }
        if let Some(cli) = cause.downcast_ref::<CliError>() {
            return match cli {
                CliError::Usage(_) => USAGE,
                CliError::NotFound(_) => NOT_FOUND,
                CliError::NotConfirmed(_) => NOT_CONFIRMED,
                CliError::Unavailable(_) => UNAVAILABLE,
                CliError::Hinted { api, .. } => for_status(api.status),
                CliError::Exit(code) => *code,
            };
        }
    }
    FAILURE
}

/// Whether `err` was already reported (only the status is left to give).
pub fn is_reported(err: &anyhow::Error) -> bool {
    matches!(err.downcast_ref::<CliError>(), Some(CliError::Exit(_)))
}

#[cfg(test)]
mod tests {

    use super::*;

    fn api(status: u16) -> anyhow::Error {
        ApiError {
            status,
            code: "x".into(),
            message: "m".into(),
            param: None,
            request_id: "-".into(),
        }
        .into()
    }

    #[test]
    fn router_refusals_map_by_status() {
        assert_eq!(code(&api(400)), REFUSED);
        assert_eq!(code(&api(409)), REFUSED);
        assert_eq!(code(&api(429)), REFUSED);
        assert_eq!(code(&api(404)), NOT_FOUND);
        assert_eq!(code(&api(401)), UNAUTHORIZED);
        assert_eq!(code(&api(403)), UNAUTHORIZED);
        assert_eq!(code(&api(500)), UNAVAILABLE);
        assert_eq!(code(&api(503)), UNAVAILABLE);
    }

    #[test]
    fn the_class_survives_context_and_hints() {
        assert_eq!(code(&api(404).context("showing the key")), NOT_FOUND);
        let hint = ApiError {
            status: 409,
            code: "not_paused".into(),
            message: "m".into(),
            param: None,
            request_id: "-".into(),
        };
        assert_eq!(code(&hinted(&hint, "do this")), REFUSED);
        assert_eq!(code(&usage("bad").context("parsing")), USAGE);
    }

    #[test]
    fn local_outcomes_have_their_own_codes() {
        assert_eq!(code(&usage("--grace soon")), USAGE);
        assert_eq!(code(&not_found("no key named x")), NOT_FOUND);
        assert_eq!(code(&CliError::NotConfirmed("no".into()).into()), NOT_CONFIRMED);
        assert_eq!(code(&CliError::Unavailable("down".into()).into()), UNAVAILABLE);
        assert_eq!(code(&CliError::Exit(STILL_RUNNING).into()), STILL_RUNNING);
        assert_eq!(code(&anyhow::anyhow!("anything else")), FAILURE);
    }

    #[test]
    fn every_code_is_distinct_and_in_the_table() {
        let all = [
            SUCCESS,
            FAILURE,
            USAGE,
            REFUSED,
            NOT_FOUND,
            UNAUTHORIZED,
            UNAVAILABLE,
            NOT_CONFIRMED,
            STILL_RUNNING,
            POSTURE_FAILING,
            OPERATION_INCOMPLETE,
            TOOL_TIMED_OUT,
            CANCELLED,
        ];
        let distinct: std::collections::BTreeSet<u8> = all.into_iter().collect();
        assert_eq!(distinct.len(), all.len());
        for code in all {
            assert!(
                TABLE.lines().any(|l| l.trim_start().starts_with(&format!("{code} "))),
                "{code} is missing from the table"
            );
        }
    }
}
