use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecordView {
    pub id: String,
    pub at: String,
    pub actor_key_id: Option<String>,
    pub actor_name: Option<String>,
    /// For example `api_key.create`, `api_key.rotate`, `api_key.revoke`, `api_key.bootstrap`.
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub target_name: Option<String>,
    pub reason: Option<String>,
    /// The router's id of the request that caused the record (`req_…`, the `X-Request-ID` it
    /// answered with): unique per request, never chosen by the client.
    pub request_id: Option<String>,
    /// What the client sent as `X-Request-ID` (at most 128 characters of `[A-Za-z0-9._-]`;
    /// anything else is dropped): the client's own label, not unique and not verified.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// `success`, `denied` or `failed`.
    pub outcome: String,
    pub client_addr: Option<String>,
    pub details: Option<serde_json::Value>,
}

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    Success,
    Denied,
    Failed,
}

/// Filters for `GET /v1/management/audit`, combined with `limit`/`after`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// At most this many items (1-500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Only records after this id: the previous page's `next_after`.
    #[param(pattern = "^aud_[0-9a-hjkmnp-tv-z]{26}$")]
    pub after: Option<String>,
    /// Such as `api_key.create`.
    #[param(pattern = "^[a-z0-9_.]{1,64}$")]
    pub action: Option<String>,
    /// The API key (or join key, for enrollments) that acted.
    #[param(pattern = "^(key|jk)_[0-9a-hjkmnp-tv-z]{26}$")]
    pub actor_key_id: Option<String>,
    /// The id of what was acted on.
    #[param(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub target_id: Option<String>,
    #[param(value_type = Option<AuditOutcome>, inline)]
    pub outcome: Option<String>,
    /// The router's request id (`req_…`).
    #[param(pattern = "^req_[0-9a-hjkmnp-tv-z]{26}$")]
    pub request_id: Option<String>,
    /// The `X-Request-ID` a client sent (its own label).
    #[param(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub correlation_id: Option<String>,
    /// Lower bound on `at` (inclusive), RFC 3339 (`Z` or a numeric offset).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Upper bound on `at` (exclusive), RFC 3339.
    #[param(format = DateTime)]
    pub until: Option<String>,
}
