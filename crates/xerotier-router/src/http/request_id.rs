//! Request ids, outermost of all middleware.
//!
//! Every request gets an id the router makes (`req_…`, time-ordered, from the injected clock
//! and entropy): it is the `X-Request-ID` of the answer, the `request_id` of every audit record
//! and event the request writes, and it is unique, whatever the client sends. A client's own
//! `X-Request-ID` is kept only when it is a plain label (at most
//! [`MAX_CORRELATION_ID_LEN`] characters of `[A-Za-z0-9._-]`): as the request's *correlation
//! id*, recorded apart (`correlation_id`) and echoed in `X-Correlation-ID`. Anything else is
//! dropped, so an oversized or forged id reaches neither the audit log nor the logs, and no
//! client can make its records carry another request's id.

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use xerotier_core::{IdGenerator, IdKind};
use xerotier_proto::REQUEST_ID_HEADER;

/// The response header that echoes a client's accepted `X-Request-ID`.
pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";
/// The longest client `X-Request-ID` kept as a correlation id.
pub const MAX_CORRELATION_ID_LEN: usize = 128;

/// The ids of one request, as an extension.
#[derive(Debug, Clone)]
pub struct RequestIds {
    /// The router's id, `req_…`.
    pub request_id: String,
    /// The client's `X-Request-ID`, when it is a valid label.
    pub correlation_id: Option<String>,
}

/// Whether a client's `X-Request-ID` is kept: 1 to 128 characters of `[A-Za-z0-9._-]`.
pub fn is_valid_correlation_id(text: &str) -> bool {
    (1..=MAX_CORRELATION_ID_LEN).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Gives the request its id and keeps the client's label, if valid; sets both on the answer.
pub async fn assign(State(ids): State<IdGenerator>, mut req: Request, next: Next) -> Response {
    let header = HeaderName::from_static(REQUEST_ID_HEADER);
    let correlation_id = req
        .headers()
        .get(&header)
        .and_then(|v| v.to_str().ok())
        .filter(|text| is_valid_correlation_id(text))
        .map(str::to_string);
    let request_id = ids.next(IdKind::Request);
    // An id the router made is ASCII base32: always a valid header value.
    let request_value = HeaderValue::from_str(&request_id).ok();
    // Whatever reads the header downstream sees the router's id, never the client's.
    req.headers_mut().remove(&header);
    if let Some(value) = &request_value {
        req.headers_mut().insert(header.clone(), value.clone());
    }
    req.extensions_mut().insert(RequestIds { request_id, correlation_id: correlation_id.clone() });
    let mut response = next.run(req).await;
    if let Some(value) = request_value {
        response.headers_mut().insert(header, value);
    }
    if let Some(value) = correlation_id.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(HeaderName::from_static(CORRELATION_ID_HEADER), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_labels_are_kept() {
        for ok in ["a", "client-chosen-42", "e2e.create_0001", "A-Z.a_z-0.9", &"x".repeat(128)] {
            assert!(is_valid_correlation_id(ok), "{ok:?}");
        }
        let too_long = "x".repeat(129);
        for bad in ["", too_long.as_str(), "has space", "semi;colon", "slash/", "é", "a\tb", "{}"]
        {
            assert!(!is_valid_correlation_id(bad), "{bad:?}");
        }
    }
}
