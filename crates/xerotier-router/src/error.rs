//! The one place where failures become HTTP statuses and the JSON error envelope.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use xerotier_proto::{ErrorCode, ErrorEnvelope, Scope};
use xerotier_store::{SqlxError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no API key: send `Authorization: Bearer xero_…`")]
    MissingApiKey,
    #[error("the API key is invalid, expired or revoked")]
    InvalidApiKey,
    #[error("this API key lacks the `{0}` scope")]
    ScopeInsufficient(Scope),
    #[error("{0} not found")]
    NotFound(String),
    #[error("an active API key named {0:?} already exists; revoke it or choose another name")]
    NameTaken(String),
    #[error("{0} is already revoked")]
    AlreadyRevoked(String),
    #[error("{message}")]
    InvalidRequest { message: String, param: Option<String> },
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
    #[error("request body larger than the {0} byte limit")]
    PayloadTooLarge(usize),
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("the state store is unavailable; retry")]
    StoreUnavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: &str) -> Self {
        ApiError::InvalidRequest { message: message.into(), param: Some(param.to_string()) }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::MissingApiKey => ErrorCode::MissingApiKey,
            ApiError::InvalidApiKey => ErrorCode::InvalidApiKey,
            ApiError::ScopeInsufficient(_) => ErrorCode::ScopeInsufficient,
            ApiError::NotFound(_) | ApiError::NoRoute(_) => ErrorCode::NotFound,
            ApiError::NameTaken(_) => ErrorCode::NameTaken,
            ApiError::AlreadyRevoked(_) => ErrorCode::AlreadyRevoked,
            ApiError::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            ApiError::JoinKeyInvalid(_) => ErrorCode::JoinKeyInvalid,
            ApiError::JoinKeyExpired(_) => ErrorCode::JoinKeyExpired,
            ApiError::JoinKeyUsed(_) => ErrorCode::JoinKeyUsed,
            ApiError::JoinKeyRevoked(_) => ErrorCode::JoinKeyRevoked,
            ApiError::RegistrationNameTaken(_) => ErrorCode::RegistrationNameTaken,
            ApiError::CurveKeyTaken => ErrorCode::CurveKeyTaken,
            ApiError::RotationInFlight(_) => ErrorCode::RotationInFlight,
            ApiError::InvalidArguments { .. } => ErrorCode::InvalidArguments,
            ApiError::ToolNotFound(_) => ErrorCode::ToolNotFound,
            ApiError::WorkspaceNotFound(_) => ErrorCode::WorkspaceNotFound,
            ApiError::NoAgentAvailable(_) => ErrorCode::NoAgentAvailable,
            ApiError::InvocationFinished(_) => ErrorCode::InvocationFinished,
            ApiError::NotPaused(_) => ErrorCode::NotPaused,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::StoreUnavailable(_) => ErrorCode::StoreUnavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.code() {
            ErrorCode::MissingApiKey
            | ErrorCode::InvalidApiKey
            | ErrorCode::JoinKeyInvalid
            | ErrorCode::JoinKeyExpired
            | ErrorCode::JoinKeyRevoked => StatusCode::UNAUTHORIZED,
            ErrorCode::JoinKeyUsed
            | ErrorCode::RegistrationNameTaken
            | ErrorCode::CurveKeyTaken
            | ErrorCode::RotationInFlight
            | ErrorCode::InvocationFinished
            | ErrorCode::NotPaused => StatusCode::CONFLICT,
            ErrorCode::ScopeInsufficient => StatusCode::FORBIDDEN,
            ErrorCode::NotFound | ErrorCode::ToolNotFound | ErrorCode::WorkspaceNotFound => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::NoAgentAvailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NameTaken | ErrorCode::AlreadyRevoked => StatusCode::CONFLICT,
            ErrorCode::InvalidRequest | ErrorCode::InvalidArguments => StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ApiError {
    /// The code a store error will answer with, for audit records of failed attempts.
    pub fn from_store_ref(err: &StoreError) -> &'static str {
        match err {
            StoreError::NameTaken(_) => ErrorCode::NameTaken,
            StoreError::AgentNameTaken(_) => ErrorCode::RegistrationNameTaken,
            StoreError::CurveKeyTaken => ErrorCode::CurveKeyTaken,
            StoreError::RotationInFlight(_) => ErrorCode::RotationInFlight,
            StoreError::JoinKeyUsed(_) => ErrorCode::JoinKeyUsed,
            StoreError::JoinKeyRevoked(_) => ErrorCode::JoinKeyRevoked,
            StoreError::JoinKeyExpired(_) => ErrorCode::JoinKeyExpired,
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::NotPaused(_) => ErrorCode::NotPaused,
            StoreError::AlreadyRevoked(_) => ErrorCode::AlreadyRevoked,
            StoreError::Database(e) if is_unavailable(e) => ErrorCode::StoreUnavailable,
            _ => ErrorCode::Internal,
        }
        .as_str()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NameTaken(name) => ApiError::NameTaken(name),
            StoreError::AgentNameTaken(name) => ApiError::RegistrationNameTaken(name),
            StoreError::CurveKeyTaken => ApiError::CurveKeyTaken,
            StoreError::RotationInFlight(id) => ApiError::RotationInFlight(id),
            StoreError::JoinKeyUsed(id) => ApiError::JoinKeyUsed(id),
            StoreError::JoinKeyRevoked(id) => ApiError::JoinKeyRevoked(id),
            StoreError::JoinKeyExpired(id) => ApiError::JoinKeyExpired(id),
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::NotPaused(what) => {
                ApiError::NotPaused(format!("there is no {what} to lift"))
            }
            StoreError::AlreadyRevoked(what) => ApiError::AlreadyRevoked(what),
            StoreError::Database(sqlx_err) if is_unavailable(&sqlx_err) => {
                ApiError::StoreUnavailable(StoreError::Database(sqlx_err))
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

fn is_unavailable(err: &SqlxError) -> bool {
    matches!(err, SqlxError::PoolTimedOut | SqlxError::PoolClosed | SqlxError::Io(_))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(source) => {
                tracing::error!(error = %format!("{source:#}"), "internal error");
                self.to_string()
            }
            ApiError::StoreUnavailable(source) => {
                tracing::warn!(error = %source, "store unavailable");
                self.to_string()
            }
            _ => self.to_string(),
        };
        let param = match &self {
            ApiError::InvalidRequest { param, .. } => param.clone(),
            ApiError::InvalidArguments { param, .. } => Some(param.clone()),
            _ => None,
        };
        let body = ErrorEnvelope::new(self.code(), message, param);
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
