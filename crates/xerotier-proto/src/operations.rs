//! Fleet-wide emergency operations: a CURVE rotation of many agents in waves, and blast-radius
//! revocations of join keys and agents. The plan (the exact targets) is fixed at creation.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::status::{OperationKind, OperationStatus, TargetStatus};

pub const DEFAULT_WAVE_SIZE: u32 = 10;
pub const MAX_WAVE_SIZE: u32 = 500;
pub const DEFAULT_MAX_FAILURES: u32 = 0;
pub const MAX_MAX_FAILURES: u32 = 10_000;
/// Most agent ids an `agents` selector may list.
pub const MAX_SELECTOR_AGENTS: usize = 1_000;
/// Most targets one operation may have.
pub const MAX_TARGETS: usize = 10_000;
/// A target's reason when it was skipped because its agent was offline.
pub const SKIPPED_OFFLINE: &str = "offline";

/// What an operation acts on. Which fields apply depends on `kind`:
/// `curve_rotate`: exactly one of `all` (true), `region`, `role`, `agents`;
/// `revoke_join_keys`: `all_unconsumed` (true), with optional `name_prefix` and `region`;
/// `revoke_agents`: exactly one of `enrolled_via`, `minted_by`, `region`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationSelector {
    /// `curve_rotate`: every live agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
    /// Agents (or, with `revoke_join_keys`, join keys) of this region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub region: Option<String>,
    /// `curve_rotate`: agents of this role (`inference` or `execution`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(inference|execution)$")]
    pub role: Option<String>,
    /// `curve_rotate`: these agents (at most 1000 ids, `agt_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 1000, min_items = 1)]
    pub agents: Option<Vec<String>>,
    /// `revoke_join_keys`: every unconsumed, unexpired, unrevoked join key (must be true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_unconsumed: Option<bool>,
    /// `revoke_join_keys`: only keys whose name starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub name_prefix: Option<String>,
    /// `revoke_agents`: live agents enrolled with this join key (`jk_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^jk_[0-9a-hjkmnp-tv-z]{26}$")]
    pub enrolled_via: Option<String>,
    /// `revoke_agents`: live agents enrolled with any join key minted by this API key (`key_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^key_[0-9a-hjkmnp-tv-z]{26}$")]
    pub minted_by: Option<String>,
}

/// `POST /v1/management/operations`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOperationRequest {
    pub kind: OperationKind,
    pub selector: OperationSelector,
    /// Why, for the audit log (1-1024 characters, not blank, no NUL). Mandatory.
    #[schema(min_length = 1, max_length = 1024, pattern = "^[^\\x00]*$")]
    pub reason: String,
    /// Targets per wave (1-500, default 10).
    #[schema(minimum = 1, maximum = 500)]
    #[serde(default)]
    pub wave_size: Option<u32>,
    /// Failures tolerated (since creation or the last resume) before the operation halts
    /// after its current wave (0-10000, default 0).
    #[schema(minimum = 0, maximum = 10000)]
    #[serde(default)]
    pub max_failures: Option<u32>,
    /// Only answer the plan; write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /v1/management/operations/{id}/resume`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeOperationRequest {
    /// Re-try the targets that failed (they are left failed otherwise).
    #[serde(default)]
    pub retry_failed: bool,
}

/// `?limit=&after=` on the list of operations.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OperationQuery {
    /// At most this many items (1-500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Only operations after this id: the previous page's `next_after`.
    #[param(pattern = "^op_[0-9a-hjkmnp-tv-z]{26}$")]
    pub after: Option<String>,
}

/// One target of a plan and its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OperationTargetView {
    /// `agt_…` or `jk_…`.
    pub target_id: String,
    pub target_name: Option<String>,
    /// 1-based.
    pub wave: u32,
    pub status: TargetStatus,
    /// Why it failed or was skipped (`offline`, `acknowledgement timeout`, …).
    pub reason: Option<String>,
    /// `curve_rotate`: the rotation request, for `GET …/curve-rotations/{request_id}`.
    pub rotation_request_id: Option<String>,
    pub finished_at: Option<String>,
}

/// What an operation would do: answered by a dry run, which writes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OperationPlanView {
    /// Always true.
    pub dry_run: bool,
    pub kind: OperationKind,
    pub selector: OperationSelector,
    pub reason: String,
    pub wave_size: u32,
    pub max_failures: u32,
    pub wave_count: u32,
    pub target_count: u32,
    pub targets: Vec<OperationTargetView>,
}

/// An operation and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OperationView {
    pub id: String,
    pub kind: OperationKind,
    pub selector: OperationSelector,
    pub reason: String,
    pub status: OperationStatus,
    pub requested_by: Option<String>,
    pub wave_size: u32,
    pub max_failures: u32,
    pub wave_count: u32,
    /// The wave being (or last) executed; 0 before the first.
    pub current_wave: u32,
    pub target_count: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub skipped: u32,
    pub cancelled: u32,
    /// Targets not yet ended (pending or running).
    pub remaining: u32,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    /// The plan and each target's result (on `GET …/{id}` and on creation; not in listings).
    pub targets: Option<Vec<OperationTargetView>>,
}
