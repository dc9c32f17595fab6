//! Extractors whose rejections speak the JSON error envelope.

use std::net::SocketAddr;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Extensions, StatusCode};
use serde::de::DeserializeOwned;

use super::request_id::RequestIds;
use crate::audit::{Actor, AuditContext};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::service_error::ServiceError;

/// `axum::Json`, with malformed, oversized or mistyped bodies answered in the error envelope.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(crate::http::MAX_BODY_BYTES),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(
            "send the body as JSON with `Content-Type: application/json`".into(),
        ),
        _ => {
            ApiError::Service(ServiceError::Invalid { message: rejection.body_text(), param: None })
        }
    }
}

/// `axum::extract::Query`, with bad parameters answered in the error envelope.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| QueryParams(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::Service(ServiceError::Invalid {
                    message: rejection.body_text(),
                    param: None,
                })
            })
    }
}

/// Who asked and under which request id: what every audit record needs.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The router's id of the request (see `request_id`).
    pub request_id: Option<String>,
    /// The client's own `X-Request-ID`, when it was a valid label.
    pub correlation_id: Option<String>,
    pub client_addr: Option<String>,
}

impl RequestContext {
    pub fn from_http(extensions: &Extensions) -> Self {
        let ids = extensions.get::<RequestIds>();
        let client_addr =
            extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.to_string());
        Self {
            request_id: ids.map(|ids| ids.request_id.clone()),
            correlation_id: ids.and_then(|ids| ids.correlation_id.clone()),
            client_addr,
        }
    }

    /// The audit context of this request made by `actor` (None: nobody authenticated).
    pub fn audit(self, actor: Option<Actor>) -> AuditContext {
        let Self { request_id, correlation_id, client_addr } = self;
        AuditContext { actor, request_id, correlation_id, client_addr }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_http(&parts.extensions))
    }
}

/// An optional JSON body: absent when the request has no `Content-Type` (an empty POST).
impl<S, T> axum::extract::OptionalFromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if !req.headers().contains_key(axum::http::header::CONTENT_TYPE) {
            return Ok(None);
        }
        <JsonBody<T> as FromRequest<S>>::from_request(req, state).await.map(Some)
    }
}

/// The audit context of an authenticated request: the caller (set by the auth middleware),
/// the request id and the peer address.
impl<S: Send + Sync> FromRequestParts<S> for AuditContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let actor = parts.extensions.get::<Principal>().map(Principal::actor);
        Ok(RequestContext::from_http(&parts.extensions).audit(actor))
    }
}

/// The authenticated caller, as the auth middleware left it. Only routes behind that
/// middleware take it; anywhere else it is refused as a missing key.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or(ApiError::MissingApiKey)
    }
}
