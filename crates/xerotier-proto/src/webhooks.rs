//! Outbound webhooks for security events: what is configured, and each delivery.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::status::WebhookDeliveryStatus;

/// A delivery id: `del_` and 26 characters of lowercase Crockford base32.
pub const DELIVERY_ID: &str = "^del_[0-9a-hjkmnp-tv-z]{26}$";
/// A webhook name as configured.
pub const WEBHOOK_NAME: &str = "^[a-z0-9-]{1,64}$";

/// A webhook from the router's config file. Never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    /// 1-64 characters of `a-z`, `0-9` and `-`.
    pub name: String,
    /// The receiver's URL, with any user info and query replaced by `redacted`.
    pub url: String,
    /// The event types it gets (`rotation.failed`, `agent.credentials_revoked`,
    /// `agent.quarantined`, `enrollment.denied`, `credential.overdue`, `credential.expired`,
    /// `router_key.phase_changed`),
    /// or `["*"]` for all.
    pub events: Vec<String>,
}

/// The configured webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    pub data: Vec<WebhookView>,
}

/// One delivery of one security event to one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookDeliveryView {
    /// `del_…`, also sent as `X-Xerotier-Delivery` (receivers de-duplicate by it).
    pub id: String,
    pub webhook: String,
    /// `sev_…`, the event's id (also in the body).
    pub event_id: String,
    pub event_type: String,
    pub status: WebhookDeliveryStatus,
    pub attempts: i64,
    /// The receiver's last HTTP status, if it answered.
    pub last_status_code: Option<i64>,
    /// What went wrong last, at most 200 characters (a short excerpt, never the whole body).
    pub last_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: the next attempt (pending), or when it settled.
    pub next_attempt_at: String,
    /// RFC 3339, once delivered.
    pub delivered_at: Option<String>,
}

/// Filters for `GET /v1/management/webhooks/deliveries`, combined with `limit`/`after`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WebhookDeliveryQuery {
    /// At most this many items (1-500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Only deliveries after this id: the previous page's `next_after`.
    #[param(pattern = "^del_[0-9a-hjkmnp-tv-z]{26}$")]
    pub after: Option<String>,
    /// Only this webhook's.
    #[param(pattern = "^[a-z0-9-]{1,64}$")]
    pub webhook: Option<String>,
    #[param(value_type = Option<WebhookDeliveryStatus>, inline)]
    pub status: Option<String>,
}

/// `POST /v1/management/webhooks/deliveries/{id}/retry`: put a settled (delivered or failed)
/// delivery back to pending, attempted at once with a fresh attempt count.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryDeliveryRequest {
    /// Recorded in the audit log (at most 1024 characters, no NUL).
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    pub reason: Option<String>,
    /// Check the retry as it would be made (the same refusals) and answer the delivery as it
    /// is; change nothing, audit nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// The answer to a retry: the delivery after it (or, with `dry_run`, as it is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RetryDeliveryResponse {
    pub delivery: WebhookDeliveryView,
    /// True when nothing was changed (the request asked for a dry run).
    pub dry_run: bool,
}
