//! What a service answers when it does not succeed: domain failures, with no HTTP in sight.
//! `error.rs` is the one place that turns them into statuses and the JSON envelope.

use xerotier_proto::ErrorCode;
use xerotier_store::{SqlxError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("an active API key named {0:?} already exists; revoke it or choose another name")]
    NameTaken(String),
    #[error("{0} is already revoked")]
    AlreadyRevoked(String),
    #[error("{message}")]
    Invalid { message: String, param: Option<String> },
    #[error("the join key is invalid: {0}")]
    JoinKeyInvalid(String),
    #[error("join key {0} has expired; ask for a new one")]
    JoinKeyExpired(String),
    #[error("join key {0} was already used; join keys are single-use")]
    JoinKeyUsed(String),
    #[error("join key {0} was revoked")]
    JoinKeyRevoked(String),
    #[error(
        "a live agent is already registered as {0:?}; choose another registration_name or revoke that agent"
    )]
    RegistrationNameTaken(String),
    #[error("this CURVE public key is already registered; generate a fresh key pair")]
    CurveKeyTaken,
    /// A signed agent request refused, whatever the reason (no oracle).
    #[error("the signed agent request was refused")]
    AgentRequestRefused,
    #[error(
        "rotation {0} is already in flight for this agent; wait for it to end (see the events stream)"
    )]
    RotationInFlight(String),
    #[error("{message}")]
    InvalidArguments { message: String, param: String },
    #[error("no online agent offers tool {0:?}; see `GET /v1/exec/tools`")]
    ToolNotFound(String),
    #[error("no online agent serves workspace {0}")]
    WorkspaceNotFound(String),
    #[error("no agent available: {0}; retry later")]
    NoAgentAvailable(String),
    #[error("{0}")]
    InvocationFinished(String),
    #[error("{0}")]
    NotPaused(String),
    #[error(
        "agent {0} waits for approval (its join key requires it); approve it with `xeroctl agents candidates {0} --approve`"
    )]
    AgentNotApproved(String),
    #[error(
        "this API key already holds {limit} live event streams on this router; close one \
         (or use another key) before opening another"
    )]
    TooManyStreams { limit: u32 },
    #[error(
        "refusing to revoke {0}: it is the API key this request is authenticated with, so you \
         would lock yourself out. Revoke it with another management key, or repeat with \
         --allow-lockout (API: \"allow_lockout\": true) if that is what you want"
    )]
    SelfRevoke(String),
    #[error(
        "refusing to revoke {0}: it is the last active API key with the management scope, so \
         nobody could manage the router afterwards. Create another one first (`xeroctl keys \
         create --scope management --name …`), or repeat with --allow-lockout (API: \
         \"allow_lockout\": true) if that is what you want"
    )]
    LastManagementKey(String),
    #[error(
        "API key {0} has no open grace window: it was not rotated with a grace, or the window \
         already ended or expired; nothing to end (`xeroctl keys show {0}`)"
    )]
    NoGraceWindow(String),
    #[error("{0}")]
    NothingSelected(String),
    #[error("{0}")]
    OperationState(String),
    #[error(
        "webhook delivery {0} is already pending: its attempts go on by themselves (see `xeroctl \
         webhooks deliveries --status pending`); only a delivered or failed delivery can be retried"
    )]
    DeliveryPending(String),
    #[error(
        "webhook delivery {delivery} is for webhook {webhook:?}, which the router's config no \
         longer has: add it back to the config file and reload (SIGHUP) before retrying \
         (`xeroctl webhooks` lists the configured ones)"
    )]
    WebhookNotConfigured { delivery: String, webhook: String },
    #[error("the state store is unavailable; retry")]
    StoreUnavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ServiceError {
    /// A request field that breaks an input rule.
    pub fn invalid(message: impl Into<String>, param: &str) -> Self {
        ServiceError::Invalid { message: message.into(), param: Some(param.to_string()) }
    }

    pub fn internal(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ServiceError::Internal(err.into())
    }

    /// The stable code clients match on (and audit records of failed attempts carry).
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::NotFound(_) => ErrorCode::NotFound,
            ServiceError::NameTaken(_) => ErrorCode::NameTaken,
            ServiceError::AlreadyRevoked(_) => ErrorCode::AlreadyRevoked,
            ServiceError::Invalid { .. } => ErrorCode::InvalidRequest,
            ServiceError::JoinKeyInvalid(_) => ErrorCode::JoinKeyInvalid,
            ServiceError::AgentRequestRefused => ErrorCode::AgentRequestRefused,
            ServiceError::JoinKeyExpired(_) => ErrorCode::JoinKeyExpired,
            ServiceError::JoinKeyUsed(_) => ErrorCode::JoinKeyUsed,
            ServiceError::JoinKeyRevoked(_) => ErrorCode::JoinKeyRevoked,
            ServiceError::RegistrationNameTaken(_) => ErrorCode::RegistrationNameTaken,
            ServiceError::CurveKeyTaken => ErrorCode::CurveKeyTaken,
            ServiceError::RotationInFlight(_) => ErrorCode::RotationInFlight,
            ServiceError::InvalidArguments { .. } => ErrorCode::InvalidArguments,
            ServiceError::ToolNotFound(_) => ErrorCode::ToolNotFound,
            ServiceError::WorkspaceNotFound(_) => ErrorCode::WorkspaceNotFound,
            ServiceError::NoAgentAvailable(_) => ErrorCode::NoAgentAvailable,
            ServiceError::InvocationFinished(_) => ErrorCode::InvocationFinished,
            ServiceError::NotPaused(_) => ErrorCode::NotPaused,
            ServiceError::AgentNotApproved(_) => ErrorCode::AgentNotApproved,
            ServiceError::TooManyStreams { .. } => ErrorCode::TooManyStreams,
            ServiceError::SelfRevoke(_) => ErrorCode::SelfRevoke,
            ServiceError::LastManagementKey(_) => ErrorCode::LastManagementKey,
            ServiceError::NoGraceWindow(_) => ErrorCode::NoGraceWindow,
            ServiceError::NothingSelected(_) => ErrorCode::NothingSelected,
            ServiceError::OperationState(_) => ErrorCode::OperationState,
            ServiceError::DeliveryPending(_) => ErrorCode::DeliveryPending,
            ServiceError::WebhookNotConfigured { .. } => ErrorCode::WebhookNotConfigured,
            ServiceError::StoreUnavailable(_) => ErrorCode::StoreUnavailable,
            ServiceError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NameTaken(name) => ServiceError::NameTaken(name),
            StoreError::AgentNameTaken(name) => ServiceError::RegistrationNameTaken(name),
            StoreError::CurveKeyTaken => ServiceError::CurveKeyTaken,
            StoreError::RotationInFlight(id) => ServiceError::RotationInFlight(id),
            StoreError::JoinKeyUsed(id) => ServiceError::JoinKeyUsed(id),
            StoreError::JoinKeyRevoked(id) => ServiceError::JoinKeyRevoked(id),
            StoreError::JoinKeyExpired(id) => ServiceError::JoinKeyExpired(id),
            StoreError::NotFound(what) => ServiceError::NotFound(what),
            StoreError::NotPaused(what) => {
                ServiceError::NotPaused(format!("there is no {what} to lift"))
            }
            StoreError::AlreadyRevoked(what) => ServiceError::AlreadyRevoked(what),
            StoreError::LastManagementKey(id) => ServiceError::LastManagementKey(id),
            StoreError::NoGraceWindow(id) => ServiceError::NoGraceWindow(id),
            StoreError::Database(sqlx_err) if is_unavailable(&sqlx_err) => {
                ServiceError::StoreUnavailable(StoreError::Database(sqlx_err))
            }
            other => ServiceError::Internal(Box::new(other)),
        }
    }
}

fn is_unavailable(err: &SqlxError) -> bool {
    matches!(err, SqlxError::PoolTimedOut | SqlxError::PoolClosed | SqlxError::Io(_))
}
