use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Stable machine-readable error codes. Clients match on these; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No API key was presented.
    MissingApiKey,
    /// The key is malformed, unknown, expired or revoked. One code for all four so that a caller
    /// learns nothing about which keys exist.
    InvalidApiKey,
    ScopeInsufficient,
    NotFound,
    NameTaken,
    AlreadyRevoked,
    InvalidRequest,
    /// The join key is malformed, forged, of a refused algorithm, for another audience, or
    /// unknown to this router.
    JoinKeyInvalid,
    JoinKeyExpired,
    JoinKeyUsed,
    JoinKeyRevoked,
    RegistrationNameTaken,
    CurveKeyTaken,
    RotationInFlight,
    /// The arguments do not match the tool's schema (`param` is the path of the bad one).
    InvalidArguments,
    ToolNotFound,
    WorkspaceNotFound,
    /// No online, unpaused agent serves the tool in the workspace; retry later.
    NoAgentAvailable,
    InvocationFinished,
    NotPaused,
    /// The agent waits for an operator's approval (its join key requires it): no rotation.
    AgentNotApproved,
    /// This source address failed to authenticate too often: wait `Retry-After` seconds.
    TooManyAuthFailures,
    /// This API key holds as many live event streams as the router allows; close one.
    TooManyStreams,
    /// Refused: the request would revoke the API key it is authenticated with
    /// (`allow_lockout` overrides).
    SelfRevoke,
    /// Refused: the key is the last active one with the `management` scope
    /// (`allow_lockout` overrides).
    LastManagementKey,
    /// The API key has no open grace window (never rotated, ended, or expired): there is no
    /// previous value to end.
    NoGraceWindow,
    PayloadTooLarge,
    MethodNotAllowed,
    UnsupportedMediaType,
    StoreUnavailable,
    /// This replica lost its lease (cut off from the database) and serves nothing
    /// authenticated until it has caught up; retry, or use another replica.
    ReplicaFenced,
    /// A fleet-wide operation's selector is valid but matches nothing to act on.
    NothingSelected,
    /// The fleet-wide operation is not in a state that allows this (cancel a finished one,
    /// resume one that is not halted).
    OperationState,
    /// A webhook delivery is still pending (its attempts go on): there is nothing to retry.
    DeliveryPending,
    /// A webhook delivery is for a webhook the router's config no longer has: nothing to send
    /// it to until the webhook is configured again.
    WebhookNotConfigured,
    /// A signed agent request (`POST /v1/agents/router-keys`) was refused: unknown or revoked
    /// agent, bad signature, stale timestamp, replayed nonce, or a key id too old. One code
    /// for all, so the caller learns nothing about which.
    AgentRequestRefused,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MissingApiKey => "missing_api_key",
            ErrorCode::InvalidApiKey => "invalid_api_key",
            ErrorCode::ScopeInsufficient => "scope_insufficient",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::AlreadyRevoked => "already_revoked",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::JoinKeyInvalid => "join_key_invalid",
            ErrorCode::AgentRequestRefused => "agent_request_refused",
            ErrorCode::JoinKeyExpired => "join_key_expired",
            ErrorCode::JoinKeyUsed => "join_key_used",
            ErrorCode::JoinKeyRevoked => "join_key_revoked",
            ErrorCode::RegistrationNameTaken => "registration_name_taken",
            ErrorCode::CurveKeyTaken => "curve_key_taken",
            ErrorCode::RotationInFlight => "rotation_in_flight",
            ErrorCode::InvalidArguments => "invalid_arguments",
            ErrorCode::ToolNotFound => "tool_not_found",
            ErrorCode::WorkspaceNotFound => "workspace_not_found",
            ErrorCode::NoAgentAvailable => "no_agent_available",
            ErrorCode::InvocationFinished => "invocation_finished",
            ErrorCode::NotPaused => "not_paused",
            ErrorCode::AgentNotApproved => "agent_not_approved",
            ErrorCode::TooManyAuthFailures => "too_many_auth_failures",
            ErrorCode::TooManyStreams => "too_many_streams",
            ErrorCode::SelfRevoke => "self_revoke",
            ErrorCode::LastManagementKey => "last_management_key",
            ErrorCode::NoGraceWindow => "no_grace_window",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::ReplicaFenced => "replica_fenced",
            ErrorCode::NothingSelected => "nothing_selected",
            ErrorCode::OperationState => "operation_state",
            ErrorCode::DeliveryPending => "delivery_pending",
            ErrorCode::WebhookNotConfigured => "webhook_not_configured",
            ErrorCode::Internal => "internal_error",
        }
    }

    /// The coarse class shown in `error.type`.
    pub fn error_type(self) -> &'static str {
        match self {
            ErrorCode::MissingApiKey
            | ErrorCode::InvalidApiKey
            | ErrorCode::JoinKeyInvalid
            | ErrorCode::JoinKeyExpired
            | ErrorCode::JoinKeyRevoked
            | ErrorCode::AgentRequestRefused => "authentication_error",
            ErrorCode::JoinKeyUsed
            | ErrorCode::RegistrationNameTaken
            | ErrorCode::CurveKeyTaken
            | ErrorCode::RotationInFlight
            | ErrorCode::InvocationFinished
            | ErrorCode::NotPaused
            | ErrorCode::AgentNotApproved
            | ErrorCode::SelfRevoke
            | ErrorCode::LastManagementKey
            | ErrorCode::NoGraceWindow
            | ErrorCode::NothingSelected
            | ErrorCode::OperationState
            | ErrorCode::DeliveryPending
            | ErrorCode::WebhookNotConfigured => "conflict_error",
            ErrorCode::TooManyAuthFailures | ErrorCode::TooManyStreams => "rate_limit_error",
            ErrorCode::ScopeInsufficient => "permission_error",
            ErrorCode::NotFound | ErrorCode::ToolNotFound | ErrorCode::WorkspaceNotFound => {
                "not_found_error"
            }
            ErrorCode::NoAgentAvailable => "unavailable_error",
            ErrorCode::NameTaken | ErrorCode::AlreadyRevoked => "conflict_error",
            ErrorCode::InvalidRequest
            | ErrorCode::InvalidArguments
            | ErrorCode::PayloadTooLarge
            | ErrorCode::MethodNotAllowed
            | ErrorCode::UnsupportedMediaType => "invalid_request_error",
            ErrorCode::StoreUnavailable | ErrorCode::ReplicaFenced => "unavailable_error",
            ErrorCode::Internal => "api_error",
        }
    }
}

/// `{"error":{"message":…,"type":…,"code":…,"param":…}}`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub error_type: String,
    pub code: String,
    pub param: Option<String>,
}

impl ErrorEnvelope {
    pub fn new(code: ErrorCode, message: impl Into<String>, param: Option<String>) -> Self {
        Self {
            error: ErrorBody {
                message: message.into(),
                error_type: code.error_type().to_string(),
                code: code.as_str().to_string(),
                param,
            },
        }
    }
}
