//! Credential posture, without I/O: which rule applies to each credential kind (the default
//! table of SPEC 3.6, an optional compliance profile, the deployment's overrides; the stricter
//! wins and says where it came from), and what state one credential is in at a given instant.
//!
//! Times are Unix milliseconds handed in by the caller (its injected clock); nothing here reads
//! a clock.

mod duration;
mod judge;
mod kind;
mod policy;
mod profile;

pub use duration::{format_duration, parse_duration};
pub use judge::{Judgement, PostureState, Subject, judge};
pub use kind::CredentialKind;
pub use policy::{DEFAULT_DUE_SOON_MS, Overrides, Policy, PolicyConfig, Rule};
pub use profile::Profile;

/// Why a policy value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "invalid duration {value:?}: expected a positive whole number followed by s, m, h or d (e.g. 30s, 15m, 24h, 90d)"
    )]
    Duration { value: String },
    #[error("duration {value:?} is too long (at most 36500d)")]
    DurationTooLong { value: String },
    #[error(
        "unknown credential kind {value:?}: expected api_key, curve_key, workspace_credential, join_key or router_key"
    )]
    Kind { value: String },
    #[error(
        "unknown compliance profile {value:?}: expected pci-dss-4, hipaa, fedramp-moderate, fedramp-high or cis-cloud"
    )]
    Profile { value: String },
    #[error("unknown state {value:?}: expected ok, due_soon, overdue or expired")]
    State { value: String },
    #[error("join keys have no routine max age; set join_key_max_unconsumed instead")]
    JoinKeyMaxAge,
}

/// Milliseconds in one day.
pub const DAY_MS: i64 = 86_400_000;
/// Milliseconds in one hour.
pub const HOUR_MS: i64 = 3_600_000;
/// Milliseconds in one minute.
pub const MINUTE_MS: i64 = 60_000;
