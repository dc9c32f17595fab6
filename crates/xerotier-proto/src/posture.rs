//! The credential posture report, `GET /v1/management/credentials`: one row per credential of
//! every kind, judged against the rotation policy (SPEC 3.6, a compliance profile, overrides).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One credential and its standing against its rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostureRow {
    /// `api_key`, `curve_key`, `workspace_credential` or `join_key`.
    pub kind: String,
    /// API key id, agent id (its CURVE key), `agent_id:credentials_ref`, or join key id.
    pub id: String,
    pub name: String,
    /// The agent holding it, or the API key that created it (none for the bootstrap key).
    pub owner: Option<String>,
    pub agent_id: Option<String>,
    pub region: Option<String>,
    pub created_at: String,
    pub last_rotated_at: Option<String>,
    /// API keys' last authenticated use; null where not tracked.
    pub last_used_at: Option<String>,
    /// The credential's own expiry (an API key's TTL, a join key's TTL, a workspace file's
    /// certificate/JWT/STS expiry).
    pub expires_at: Option<String>,
    /// Since creation or the last rotation.
    pub age_seconds: i64,
    /// The rule's routine max age (join keys: longest unconsumed); null: none, or judged by
    /// its own expiry.
    pub max_age_seconds: Option<i64>,
    /// When it becomes overdue (or expires); null without a limit.
    pub due_at: Option<String>,
    /// `ok`, `due_soon`, `overdue` or `expired`.
    pub state: String,
    /// Where the limit came from: `default`, `override`, `<profile> <requirement>`, or
    /// `expiry` (judged by its own expiry).
    pub rule: String,
    /// Why: a regime requirement, `delegated (<profile> <requirement>): <cryptoperiod_ref>`,
    /// `override` or `default`.
    pub basis: String,
    /// How soon it must be replaced after a suspected leak (0: at once).
    pub emergency_deadline_seconds: i64,
    /// Workspace credentials: the file under `credentials_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<String>,
    /// Workspace credentials: SHA-256 of the version in use (never the content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Workspace credentials: distinct contents in use since the agent started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Workspace credentials: false when the latest reload refused the file (`error` says
    /// why; the version described stays in use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload_ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Workspace credentials: when the agent last reported the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<String>,
}

/// The rule one kind is judged by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostureRule {
    pub kind: String,
    pub max_age_seconds: Option<i64>,
    pub emergency_deadline_seconds: i64,
    pub rule: String,
    pub basis: String,
}

/// The whole report: not paged, so that it is one consistent judgement at one instant (sorted
/// worst first, the order paging by id could not keep); filters narrow it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PostureReport {
    /// The instant every row was judged at.
    pub now: String,
    /// The profile judged by (the configured one, or the `profile` previewed); null: none.
    pub profile: Option<String>,
    pub due_soon_seconds: i64,
    pub rules: Vec<PostureRule>,
    /// Worst state first (`expired`, `overdue`, `due_soon`, `ok`), then by due date.
    pub credentials: Vec<PostureRow>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PostureQuery {
    /// Only this kind.
    #[param(pattern = "^(api_key|curve_key|workspace_credential|join_key|router_key)$")]
    pub kind: Option<String>,
    /// Only rows in this state.
    #[param(pattern = "^(ok|due_soon|overdue|expired)$")]
    pub state: Option<String>,
    /// Only this agent's credentials (its CURVE key and workspace files).
    #[param(pattern = "^agt_[0-9a-hjkmnp-tv-z]{26}$")]
    pub agent_id: Option<String>,
    /// Only credentials in this region (agents' and join keys').
    #[param(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub region: Option<String>,
    /// Judge against this profile (plus the deployment's overrides) instead of the configured
    /// one: a preview, nothing changes.
    #[param(pattern = "^(pci-dss-4|hipaa|fedramp-moderate|fedramp-high|cis-cloud)$")]
    pub profile: Option<String>,
}
