//! What the OpenAPI document says about many routes at once, said once here so that no route
//! can miss it: the answers every secured route can give (401, 403, 429), every route that reads
//! query parameters (400) or a body (400, 413, 415), the `X-Request-ID` on every response, and
//! the bounds that come from this router's configuration rather than from the code.
//!
//! The routes' own attributes say what is theirs (a 404, a 409, a 503); the formats of
//! parameters and fields are on the request types (`xerotier_proto`, `formats`).

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::{Schema, Type};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, ObjectBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder,
};

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams};
use axum::http::request::Parts;
use axum::response::IntoResponse;
use xerotier_proto::formats;

use super::MAX_BODY_BYTES;
use crate::AppState;
use crate::error::ApiError;
use crate::service_error::ServiceError;

/// Bounds the document states that come from the router's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub join_key_max_ttl_seconds: u64,
}

impl Limits {
    pub fn of(state: &AppState) -> Self {
        Self { join_key_max_ttl_seconds: state.link.settings.join_key_max_ttl_seconds }
    }
}

const RATE_LIMITED: &str = "This source address failed to authenticate too often \
                            (`too_many_auth_failures`); nothing was looked at. Retry after \
                            `Retry-After` seconds.";

/// Adds the common answers to every operation of `doc` and this router's bounds.
pub fn document(doc: &mut OpenApi, limits: &Limits) {
    for (path, item) in doc.paths.paths.iter_mut() {
        for operation in operations_mut(item) {
            if is_secured(operation) {
                document_auth(path, operation);
            }
            if reads_query(operation) {
                add_or_extend(
                    operation,
                    "400",
                    "A query parameter is unknown, malformed or out of its bounds \
                     (`invalid_request`; `param` names it when it is known).",
                );
            }
            if let Some(body) = &operation.request_body {
                let required = matches!(body.required, Some(utoipa::openapi::Required::True));
                add_or_extend(
                    operation,
                    "400",
                    "The body is not valid JSON, or does not fit the request schema (a missing \
                     or unknown field, a value out of its format or bounds) (`invalid_request`; \
                     `param` names the field when it is known).",
                );
                add_or_extend(
                    operation,
                    "413",
                    &format!(
                        "The body is larger than {MAX_BODY_BYTES} bytes (`payload_too_large`)."
                    ),
                );
                add_or_extend(
                    operation,
                    "415",
                    if required {
                        "The body is not sent as `Content-Type: application/json` \
                         (`unsupported_media_type`)."
                    } else {
                        "A body is sent, but not as `Content-Type: application/json` \
                         (`unsupported_media_type`). Without a `Content-Type` the body is \
                         absent and every field takes its default."
                    },
                );
            }
            if has_path_parameters(operation) {
                let not_found = if OUT_OF_FORMAT_IS_INVALID.contains(&path.as_str()) {
                    "Nothing has this id (`not_found`)."
                } else {
                    "Nothing has this id (an id out of its format names nothing either) \
                     (`not_found`)."
                };
                add_or_extend(operation, "404", not_found);
            }
            document_request_id(operation);
            document_path_formats(path, operation);
        }
    }
    bound_join_key_ttl(doc, limits.join_key_max_ttl_seconds);
    link_ids(doc);
}

/// The document as it is served. utoipa 5.5 writes a link's fields in snake case
/// (`operation_id`); OpenAPI spells them `operationId`, `operationRef`, `requestBody`.
pub fn served(doc: &OpenApi) -> serde_json::Value {
    let mut value = serde_json::to_value(doc).unwrap_or_default();
    let responses = value["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses"))
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let links = response.get_mut("links").and_then(serde_json::Value::as_object_mut);
        for link in links.into_iter().flat_map(|links| links.values_mut()) {
            let Some(link) = link.as_object_mut() else { continue };
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(field) = link.remove(snake) {
                    link.insert(camel.into(), field);
                }
            }
        }
    }
    value
}

/// Where an answer names the id an operation on `{id}` takes: listings (`data/0/id`), and
/// what creations answer. OpenAPI links, so a client (or a fuzzer's stateful phase) can follow
/// them.
const ID_SOURCES: [(&str, &str, &str, &str); 11] = [
    ("/v1/management/api-keys", "get", "200", "/data/0/id"),
    ("/v1/management/api-keys", "post", "201", "/key/id"),
    ("/v1/management/join-keys", "get", "200", "/data/0/id"),
    ("/v1/management/join-keys", "post", "201", "/join_key/id"),
    ("/v1/management/agents", "get", "200", "/data/0/id"),
    ("/v1/exec/invocations", "get", "200", "/data/0/id"),
    ("/v1/exec/invocations", "post", "202", "/id"),
    ("/v1/exec/tools", "get", "200", "/tools/0/name"),
    ("/v1/management/operations", "get", "200", "/data/0/id"),
    ("/v1/management/operations", "post", "202", "/id"),
    ("/v1/management/webhooks/deliveries", "get", "200", "/data/0/id"),
];

fn link_ids(doc: &mut OpenApi) {
    for (source, method, status, pointer) in ID_SOURCES {
        // The operations on one item of `source`: `{source}/{id}…` (or `{name}`).
        let mut targets = Vec::new();
        for (path, item) in &doc.paths.paths {
            let Some(rest) = path.strip_prefix(source) else { continue };
            let param = if rest.starts_with("/{id}") {
                "id"
            } else if rest.starts_with("/{name}") {
                "name"
            } else {
                continue;
            };
            for operation in [&item.get, &item.post].into_iter().flatten() {
                if let Some(id) = &operation.operation_id {
                    targets.push((id.clone(), param));
                }
            }
        }
        let Some(item) = doc.paths.paths.get_mut(source) else { continue };
        let operation = if method == "get" { item.get.as_mut() } else { item.post.as_mut() };
        let Some(operation) = operation else { continue };
        let Some(RefOr::T(response)) = operation.responses.responses.get_mut(status) else {
            continue;
        };
        for (operation_id, param) in targets {
            let link = LinkBuilder::new()
                .operation_id(operation_id.clone())
                .parameter(param, format!("$response.body#{pointer}"))
                .build();
            response.links.insert(operation_id, link.into());
        }
    }
    // A rotation request's state, from the request.
    let rotate = doc.paths.paths.get_mut("/v1/management/agents/{id}/curve-rotate");
    if let Some(RefOr::T(accepted)) = rotate
        .and_then(|item| item.post.as_mut())
        .and_then(|operation| operation.responses.responses.get_mut("202"))
    {
        let link = LinkBuilder::new()
            .operation_id("get_rotation")
            .parameter("id", "$request.path.id")
            .parameter("request_id", "$response.body#/request_id")
            .build();
        accepted.links.insert("get_rotation".into(), link.into());
    }
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

pub(crate) fn is_secured(operation: &Operation) -> bool {
    operation.security.as_ref().is_some_and(|s| !s.is_empty())
}

fn has_path_parameters(operation: &Operation) -> bool {
    operation
        .parameters
        .as_ref()
        .is_some_and(|ps| ps.iter().any(|p| p.parameter_in == ParameterIn::Path))
}

fn reads_query(operation: &Operation) -> bool {
    operation
        .parameters
        .as_ref()
        .is_some_and(|ps| ps.iter().any(|p| p.parameter_in == ParameterIn::Query))
}

/// The scope a route needs, from where it lives.
pub(crate) fn scope_of(path: &str) -> &'static str {
    if path.starts_with("/v1/exec/") { "execution" } else { "management" }
}

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorEnvelope"))).build(),
        )
        .build()
}

/// Adds `status` with `description`, or appends the description to the route's own.
fn add_or_extend(operation: &mut Operation, status: &str, description: &str) {
    match operation.responses.responses.get_mut(status) {
        Some(RefOr::T(own)) => {
            if !own.description.contains(description) {
                own.description = format!("{} Or: {description}", own.description);
            }
        }
        _ => {
            operation
                .responses
                .responses
                .insert(status.to_string(), error_response(description).into());
        }
    }
}

fn integer_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::Integer))
        .description(Some(description))
        .build()
}

fn string_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build()
}

/// 401 and 403 (with the scope this route needs) and the per-address limit's 429.
fn document_auth(path: &str, operation: &mut Operation) {
    add_or_extend(
        operation,
        "401",
        "No API key (`missing_api_key`), or one that is malformed, unknown, expired or revoked \
         (`invalid_api_key`). Counts as a failed authentication of this source address.",
    );
    if let Some(RefOr::T(response)) = operation.responses.responses.get_mut("401") {
        response
            .headers
            .insert("WWW-Authenticate".into(), string_header("`Bearer`: send an API key"));
    }
    let scope = scope_of(path);
    add_or_extend(
        operation,
        "403",
        &format!("The API key lacks the `{scope}` scope (`scope_insufficient`)."),
    );
    add_or_extend(
        operation,
        "503",
        "This replica lost its lease on the shared database and is fenced until it has caught \
         up (`replica_fenced`, `Retry-After`); another replica serves.",
    );
    let retry_after =
        integer_header("Seconds until this address may try again (`too_many_auth_failures`)");
    match operation.responses.responses.get_mut("429") {
        // The route has a 429 of its own (a per-key limit): both are documented.
        Some(RefOr::T(own)) => {
            own.description = format!("{} Or: {RATE_LIMITED}", own.description);
            own.headers.insert("Retry-After".into(), retry_after);
        }
        _ => {
            let response = ResponseBuilder::new()
                .description(RATE_LIMITED)
                .header("Retry-After", retry_after)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                        .build(),
                )
                .build();
            operation.responses.responses.insert("429".into(), response.into());
        }
    }
}

/// The formats of path parameters, by where they appear: the path prefix, the parameter, its
/// format and the check of it. The document states them ([`document`]); [`known_path_formats`]
/// applies them.
type PathFormat = (&'static str, &'static str, &'static str, fn(&str) -> bool);
const PATH_FORMATS: [PathFormat; 8] = [
    ("/v1/management/api-keys/", "id", formats::API_KEY_ID, |t| formats::is_id("key_", t)),
    ("/v1/management/join-keys/", "id", formats::JOIN_KEY_ID, |t| formats::is_id("jk_", t)),
    ("/v1/management/agents/", "id", formats::AGENT_ID, |t| formats::is_id("agt_", t)),
    ("/v1/management/agents/", "request_id", formats::ROTATION_ID, formats::is_rotation_id),
    ("/v1/exec/invocations/", "id", formats::INVOCATION_ID, |t| formats::is_id("inv_", t)),
    ("/v1/exec/tools/", "name", formats::CATALOG_NAME, formats::is_catalog_name),
    ("/v1/management/operations/", "id", formats::OPERATION_ID, |t| formats::is_id("op_", t)),
    ("/v1/management/webhooks/deliveries/", "id", xerotier_proto::webhooks::DELIVERY_ID, |t| {
        formats::is_id("del_", t)
    }),
];

fn path_format(path: &str, parameter: &str) -> Option<&'static PathFormat> {
    PATH_FORMATS.iter().find(|(prefix, name, _, _)| path.starts_with(prefix) && *name == parameter)
}

/// Routes whose service refuses a path id out of its format itself, because it records the
/// refusal (an invocation's cancel is audited, attempts at nothing included).
const REFUSED_BY_THE_SERVICE: [&str; 1] = ["/v1/exec/invocations/{id}/cancel"];

/// Routes whose service answers a path id out of its format as a malformed request (400
/// `invalid_request`, `param` `id`) rather than as nothing (404): an operator's action on one
/// resource, where a mistyped or pasted-wrong id should be told apart from an unknown one.
const OUT_OF_FORMAT_IS_INVALID: [&str; 1] = ["/v1/management/webhooks/deliveries/{id}/retry"];

/// A path id out of its format names nothing: 404, like an unknown id, before any handler or
/// store sees it (PostgreSQL would refuse a NUL in it with a server error). Called by the auth
/// middleware once the caller is authenticated (one middleware per request, not two), so an
/// unauthenticated caller learns nothing from it. `None`: the path may go on.
pub async fn refuse_malformed_path(parts: &mut Parts) -> Option<axum::response::Response> {
    let unknown = |what: String| ApiError::Service(ServiceError::NotFound(what)).into_response();
    let matched = parts.extensions.get::<MatchedPath>()?.clone();
    let Ok(params) = RawPathParams::from_request_parts(parts, &()).await else {
        return Some(unknown(format!("{}: a path that is not UTF-8", matched.as_str())));
    };
    if REFUSED_BY_THE_SERVICE.contains(&matched.as_str())
        || OUT_OF_FORMAT_IS_INVALID.contains(&matched.as_str())
    {
        return None;
    }
    for (name, value) in &params {
        if let Some((_, _, _, ok)) = path_format(matched.as_str(), name)
            && !ok(value)
        {
            return Some(unknown(format!("{name} {value:?}")));
        }
    }
    None
}

fn document_path_formats(path: &str, operation: &mut Operation) {
    let Some(parameters) = operation.parameters.as_mut() else { return };
    for parameter in parameters.iter_mut().filter(|p| p.parameter_in == ParameterIn::Path) {
        if let Some((_, _, format, _)) = path_format(path, &parameter.name) {
            parameter.schema =
                Some(ObjectBuilder::new().schema_type(Type::String).pattern(Some(*format)).into());
        }
    }
}

/// Every response carries the router's id of the request.
fn document_request_id(operation: &mut Operation) {
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            response.headers.insert(
                "X-Request-ID".into(),
                string_header("The router's id of this request (`req_…`)"),
            );
        }
    }
}

/// A join key lives at most as long as this router allows.
fn bound_join_key_ttl(doc: &mut OpenApi, max: u64) {
    let Some(components) = doc.components.as_mut() else { return };
    let Some(RefOr::T(Schema::Object(request))) =
        components.schemas.get_mut("CreateJoinKeyRequest")
    else {
        return;
    };
    if let Some(RefOr::T(Schema::Object(ttl))) = request.properties.get_mut("ttl_seconds") {
        ttl.maximum = Some(utoipa::Number::UInt(usize::try_from(max).unwrap_or(usize::MAX)));
    }
}
