use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Scopes;

/// An API key as every endpoint shows it: never the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub scopes: Scopes,
    /// `active`, `expired` or `revoked`.
    pub status: crate::status::ApiKeyStatus,
    pub created_at: String,
    pub created_by: Option<String>,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub rotated_at: Option<String>,
    /// Until when the value that was current before the last rotation is still accepted.
    pub previous_value_valid_until: Option<String>,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
    pub revoked_reason: Option<String>,
    /// Authenticated uses of the previous value since the last rotation, added up across
    /// replicas (each flushes its count about once a second).
    #[serde(default)]
    pub grace_uses: u64,
    /// When the previous value was last used (RFC 3339).
    #[serde(default)]
    pub grace_last_used_at: Option<String>,
    /// The client address of that use as the router saw it: behind a proxy, the proxy's.
    #[serde(default)]
    pub grace_last_used_from: Option<String>,
    /// When an end of the grace window is scheduled (`end-grace --when-quiet`): the previous
    /// value stops working once it has been unused this long.
    #[serde(default)]
    pub grace_end_when_quiet_seconds: Option<u64>,
    /// When that end was requested (RFC 3339).
    #[serde(default)]
    pub grace_end_requested_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// Unique among active keys.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub name: String,
    /// At least one; repeats count once.
    #[schema(value_type = Vec<crate::Scope>, min_items = 1)]
    pub scopes: Scopes,
    /// Lifetime in seconds (at most ten years); absent means the key does not expire.
    #[schema(minimum = 1, maximum = 315360000)]
    pub expires_in_seconds: Option<u64>,
}

/// The one answer that carries the key's value. It cannot be shown again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuedApiKey {
    pub key: ApiKeyView,
    pub value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateApiKeyRequest {
    /// How long the old value keeps working, in seconds (default 86400; 0 ends it at once;
    /// at most ten years).
    #[schema(minimum = 0, maximum = 315360000)]
    pub grace_seconds: Option<u64>,
    /// Recorded in the audit log (at most 1024 characters, no NUL).
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeApiKeyRequest {
    /// Recorded in the audit log (at most 1024 characters, no NUL).
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    pub reason: Option<String>,
    /// Revoke even the key this request is authenticated with, or the last active key with
    /// the `management` scope (refused otherwise: `self_revoke`, `last_management_key`).
    #[serde(default)]
    pub allow_lockout: bool,
}

/// Ends a rotated key's grace window: now, or once the previous value has been unused for
/// `when_quiet_seconds`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndGraceRequest {
    /// End the window once the previous value has been unused this long (1 s to 30 days);
    /// absent: end it now.
    #[schema(minimum = 1, maximum = 2592000)]
    pub when_quiet_seconds: Option<u64>,
    /// Say what would happen and change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Recorded in the audit log (at most 1024 characters, no NUL).
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    pub reason: Option<String>,
}

/// What an end-grace request did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GraceEnd {
    /// The previous value is refused from now on, on every replica.
    Ended,
    /// The end is scheduled: it happens once the previous value has been unused long enough.
    Waiting,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EndGraceResponse {
    /// `ended` or `waiting`: with `dry_run`, what would be.
    pub state: GraceEnd,
    pub dry_run: bool,
    /// The key after the request (with `dry_run`, unchanged).
    pub key: ApiKeyView,
}

/// The longest quiet period an end of grace can wait for: 30 days.
pub const MAX_WHEN_QUIET_SECONDS: u64 = 30 * 24 * 60 * 60;
pub const DEFAULT_ROTATE_GRACE_SECONDS: u64 = 24 * 60 * 60;
pub const MAX_KEY_NAME_LEN: usize = 128;
/// The longest lifetime of a key and the longest grace window of a rotated value: ten years.
pub const MAX_LIFETIME_SECONDS: u64 = 10 * 365 * 24 * 60 * 60;
