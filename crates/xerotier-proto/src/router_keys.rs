//! The router's own keys and their phased rotation (SPEC §9), as
//! `GET /v1/management/router/keys` and `POST /v1/management/router/keys/{kind}/rotation`
//! show them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Phases a request may ask for.
pub const PHASE_PATTERN: &str = "^(init|update_clients|update_servers|standby|rollback)$";
/// Kinds in a path (`join-signing` is accepted for `join_signing`).
pub const KIND_PATTERN: &str = "^(mesh|join_signing|join-signing|tls)$";

/// One router key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RouterKeyView {
    /// `mesh`, `join_signing` or `tls`.
    pub kind: String,
    /// `mks-`, `jks-` or `tls-` and 16 lowercase hex digits of the fingerprint.
    #[schema(pattern = "^(mks|jks|tls)-[0-9a-f]{16}$")]
    pub kid: String,
    /// SHA-256 of the public key, first 16 bytes, lowercase hex.
    #[schema(pattern = "^[0-9a-f]{32}$")]
    pub fingerprint: String,
    /// `current` (in force), `next` (being rotated in) or `verify_only` (still accepted).
    #[schema(pattern = "^(current|next|verify_only)$")]
    pub state: String,
    /// RFC 3339.
    pub created_at: String,
    /// Seconds since it was created.
    pub age_seconds: i64,
    /// When it became current (RFC 3339).
    pub activated_at: Option<String>,
    /// TLS only: the CA certificate (PEM), for clients to trust (`xeroctl router ca-bundle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// How far the fleet has moved in the current phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RouterKeyProgressView {
    /// Clients (agents) that have moved.
    pub moved: u64,
    /// Clients that must move before the next phase may begin.
    pub total: u64,
    /// Whether the next phase may begin now.
    pub ready: bool,
}

/// One kind of router key and its rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RouterKeyKindView {
    /// `mesh`, `join_signing` or `tls`.
    pub kind: String,
    /// `standby` (no rotation in progress), `init`, `update_clients` or `update_servers`.
    #[schema(pattern = "^(standby|init|update_clients|update_servers)$")]
    pub phase: String,
    /// The phases that may follow (`rollback` included where allowed); empty when the kind
    /// cannot rotate in this version.
    pub next_phases: Vec<String>,
    /// The rotation in progress, or the last one (`rkr_…`).
    pub rotation_id: Option<String>,
    /// The last rotation's outcome (`completed`, `rolled_back`), when it ended.
    pub last_outcome: Option<String>,
    pub progress: Option<RouterKeyProgressView>,
    /// Why this kind cannot rotate in this version (TLS), if it cannot.
    pub unavailable: Option<String>,
    pub keys: Vec<RouterKeyView>,
}

/// `GET /v1/management/router/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RouterKeysView {
    /// `mesh`, `join_signing`, `tls`, in this order.
    pub kinds: Vec<RouterKeyKindView>,
}

/// `POST /v1/management/router/keys/{kind}/rotation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRouterKeyRequest {
    /// The phase to enter: `init`, `update_clients`, `update_servers`, `standby` (complete) or
    /// `rollback`, in that order (`rollback` from any phase before `standby`).
    #[schema(pattern = "^(init|update_clients|update_servers|standby|rollback)$")]
    pub phase: String,
    /// Move on although not every client has moved (stragglers must re-enroll or fetch the
    /// keys over HTTPS).
    #[serde(default)]
    pub force: bool,
    /// Only say what would happen; write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Why, for the audit log (at most 1024 characters, no NUL).
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    pub reason: Option<String>,
}

/// The answer to a phase change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RouterKeyRotationView {
    /// Whether the phase changed (false for a dry run).
    pub applied: bool,
    pub from: String,
    pub to: String,
    /// What the change does (or would do).
    pub effects: Vec<String>,
    /// The kind as it is now.
    pub status: RouterKeyKindView,
}
