//! The one place where failures become HTTP statuses and the JSON error envelope.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use xerotier_proto::{ErrorCode, ErrorEnvelope, Scope};
use xerotier_store::StoreError;

use crate::service_error::ServiceError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// What a service answered.
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("no API key: send `Authorization: Bearer xero_…`")]
    MissingApiKey,
    #[error("the API key is invalid, expired or revoked")]
    InvalidApiKey,
    #[error("this API key lacks the `{0}` scope")]
    ScopeInsufficient(Scope),
    #[error("request body larger than the {0} byte limit")]
    PayloadTooLarge(usize),
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("no route for {0}")]
    NoRoute(String),
    #[error(
        "too many failed authentications from this address; retry after {retry_after_seconds} s \
         with a valid API key"
    )]
    TooManyAuthFailures { retry_after_seconds: u64 },
    #[error(
        "this router replica is cut off from the database and fenced until it catches up; \
         retry shortly, or through another replica"
    )]
    ReplicaFenced,
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::Service(err.into())
    }
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: &str) -> Self {
        ApiError::Service(ServiceError::invalid(message, param))
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Service(err) => err.code(),
            ApiError::MissingApiKey => ErrorCode::MissingApiKey,
            ApiError::InvalidApiKey => ErrorCode::InvalidApiKey,
            ApiError::ScopeInsufficient(_) => ErrorCode::ScopeInsufficient,
            ApiError::NoRoute(_) => ErrorCode::NotFound,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::TooManyAuthFailures { .. } => ErrorCode::TooManyAuthFailures,
            ApiError::ReplicaFenced => ErrorCode::ReplicaFenced,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.code() {
            ErrorCode::MissingApiKey
            | ErrorCode::InvalidApiKey
            | ErrorCode::JoinKeyInvalid
            | ErrorCode::JoinKeyExpired
            | ErrorCode::JoinKeyRevoked
            | ErrorCode::AgentRequestRefused => StatusCode::UNAUTHORIZED,
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
            | ErrorCode::WebhookNotConfigured => StatusCode::CONFLICT,
            ErrorCode::TooManyAuthFailures | ErrorCode::TooManyStreams => {
                StatusCode::TOO_MANY_REQUESTS
            }
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
            ErrorCode::StoreUnavailable | ErrorCode::ReplicaFenced => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Service(ServiceError::Internal(source)) => {
                tracing::error!(error = %source, "internal error");
                self.to_string()
            }
            ApiError::Service(ServiceError::StoreUnavailable(source)) => {
                tracing::warn!(error = %source, "store unavailable");
                self.to_string()
            }
            _ => self.to_string(),
        };
        let param = match &self {
            ApiError::Service(ServiceError::Invalid { param, .. }) => param.clone(),
            ApiError::Service(ServiceError::InvalidArguments { param, .. }) => Some(param.clone()),
            _ => None,
        };
        let body = ErrorEnvelope::new(self.code(), message, param);
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::TooManyAuthFailures { retry_after_seconds } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
        }
        if let ApiError::ReplicaFenced = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1u64));
        }
        response
    }
}
