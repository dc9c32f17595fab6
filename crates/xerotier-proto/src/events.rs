//! An agent's event log: `GET /v1/management/agents/{id}/events`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One entry of an agent's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentEventView {
    pub id: String,
    pub agent_id: String,
    pub at: String,
    /// e.g. `enrolled`, `connected`, `rotation_requested`, `rotation_acknowledged`,
    /// `rotation_promoted`, `rotation_failed`, `rotation_completed`, `credentials_revoked`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub request_id: Option<String>,
    pub details: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// At most this many items (1-500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Only events after this id: the previous page's `next_after`.
    #[param(pattern = "^evt_[0-9a-hjkmnp-tv-z]{26}$")]
    pub after: Option<String>,
}
