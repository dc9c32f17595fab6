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

/// Filters for `GET /v1/management/audit`, combined with `limit`/`after`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub limit: Option<u32>,
    pub after: Option<String>,
    pub action: Option<String>,
    pub actor_key_id: Option<String>,
    pub target_id: Option<String>,
    pub outcome: Option<String>,
    /// The router's request id (`req_…`).
    pub request_id: Option<String>,
    /// The `X-Request-ID` a client sent (its own label).
    pub correlation_id: Option<String>,
    /// RFC 3339 lower bound on `at` (inclusive).
    pub since: Option<String>,
    /// RFC 3339 upper bound on `at` (exclusive).
    pub until: Option<String>,
}
