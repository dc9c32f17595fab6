//! Extractors whose rejections speak the JSON error envelope.

use std::net::SocketAddr;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::request_id::RequestIds;
use crate::audit::{Actor, AuditContext};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::service_error::ServiceError;

/// A JSON body, with malformed, oversized or mistyped bodies answered in the error envelope
/// (`param` names the field at fault). Numbers are read as JSON Schema reads them: `5.0` is the
/// integer 5, so a body the document calls valid is never refused for how it spells one.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        decode(json_value(req, state).await?).map(JsonBody)
    }
}

async fn json_value<S: Send + Sync>(req: Request, state: &S) -> Result<Value, ApiError> {
    axum::Json::<Value>::from_request(req, state)
        .await
        .map(|axum::Json(value)| value)
        .map_err(json_rejection)
}

fn decode<T: DeserializeOwned>(mut value: Value) -> Result<T, ApiError> {
    // Every request body is an object (serde would read a struct from an array too).
    if !value.is_object() {
        return Err(ApiError::Service(ServiceError::Invalid {
            message: "the body must be a JSON object".into(),
            param: None,
        }));
    }
    integral_numbers_as_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|err| {
        // A missing or unknown field is named by the error, not by its path (its parent's).
        let inner = err.inner().to_string();
        let field = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|prefix| inner.strip_prefix(prefix))
            .and_then(|rest| rest.split('`').next());
        let path = err.path().to_string();
        let param = match (path.as_str(), field) {
            (".", None) => None,
            (".", Some(field)) => Some(field.to_string()),
            (path, Some(field)) => Some(format!("{path}.{field}")),
            (path, None) => Some(path.to_string()),
        };
        ApiError::Service(ServiceError::Invalid {
            message: format!("the body does not fit the request: {err}"),
            param,
        })
    })
}

/// `5.0` becomes `5` (JSON has one number type; JSON Schema calls an integral number an
/// integer), throughout the value.
fn integral_numbers_as_integers(value: &mut Value) {
    match value {
        Value::Number(number) => {
            if let Some(float) = number.as_f64().filter(|_| number.is_f64())
                && float.fract() == 0.0
            {
                // In range, an integral float converts exactly; beyond, it stays a float.
                if (0.0..18_446_744_073_709_551_616.0).contains(&float) {
                    *number = (float as u64).into();
                } else if (-9_223_372_036_854_775_808.0..0.0).contains(&float) {
                    *number = (float as i64).into();
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
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

/// An optional JSON body: absent when the request has no `Content-Type` (an empty POST) or
/// the body is `null`.
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
        match json_value(req, state).await? {
            Value::Null => Ok(None),
            value => decode(value).map(|body| Some(JsonBody(body))),
        }
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

/// Where a live stream (SSE) resumes: the `Last-Event-ID` header, else the `after` parameter.
/// An empty header means none, as in the SSE specification.
pub fn resume_point(headers: &HeaderMap, after: Option<String>) -> Option<String> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .or(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        count: u64,
        #[serde(default)]
        offset: Option<i64>,
    }

    #[test]
    fn integral_floats_are_integers_and_fractions_are_not() {
        let body: Body = decode(serde_json::json!({ "count": 99.0, "offset": -3.0 })).unwrap();
        assert_eq!((body.count, body.offset), (99, Some(-3)));
        let err = decode::<Body>(serde_json::json!({ "count": 99.5 })).unwrap_err();
        assert!(
            matches!(err, ApiError::Service(ServiceError::Invalid { param: Some(ref p), .. }) if p == "count"),
            "{err:?}"
        );
        let err = decode::<Body>(serde_json::json!({ "count": 1e30 })).unwrap_err();
        assert!(err.to_string().contains("count"), "{err}");
        let err = decode::<Body>(serde_json::json!({ "count": 1, "extra": 2 })).unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
        // serde reads a struct from an array; a body is an object all the same.
        let err = decode::<Body>(serde_json::json!([1, null])).unwrap_err();
        assert!(err.to_string().contains("object"), "{err}");
    }
}
