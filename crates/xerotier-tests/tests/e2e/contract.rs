//! An exact contract (issue 10): the OpenAPI document states every answer and every format, and
//! the router keeps to it. `scripts/api-contract.sh` fuzzes the whole of it with schemathesis;
//! these tests pin what that run found, from the attacker's side (odd, malformed and oversized
//! input is a 4xx in the envelope, never a 5xx) and from the document's (checked mechanically).

use reqwest::Method;
use serde_json::{Value, json};
use xerotier_proto::formats;

use crate::fleet_harness::{AgentKeys, enroll_body};
use crate::harness::{Api, Resp, Router, backends, with_key};

const KEYS: &str = "/v1/management/api-keys";

/// A refusal in the envelope, naming `param`.
fn assert_invalid(resp: &Resp, param: &str) {
    resp.assert_error(400, "invalid_request");
    assert_eq!(resp.json()["error"]["param"], json!(param), "{}", resp.text);
}

async fn get(router: &Router, path: &str) -> Resp {
    router.api().get(path, Some(router.admin_key())).await
}

#[tokio::test]
async fn filters_and_cursors_out_of_their_format_are_refused_not_matched() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let admin = router.admin_key_id().await;
        for (path, param) in [
            ("/v1/management/api-keys?limit=0", "limit"),
            ("/v1/management/api-keys?limit=501", "limit"),
            ("/v1/management/api-keys?after=zzz", "after"),
            ("/v1/management/api-keys?after=", "after"),
            ("/v1/management/api-keys?after=agt_01m8sbce9k2rcej9fhvv8jg3pq", "after"),
            ("/v1/management/api-keys?name=a%20b", "name"),
            ("/v1/management/agents?after=key_01m8sbce9k2rcej9fhvv8jg3pq", "after"),
            ("/v1/management/join-keys?after=jk_x", "after"),
            ("/v1/management/audit?actor_key_id=key_x", "actor_key_id"),
            ("/v1/management/audit?request_id=abc", "request_id"),
            ("/v1/management/audit?correlation_id=", "correlation_id"),
            ("/v1/management/audit?target_id=a%00b", "target_id"),
            ("/v1/management/audit?action=Api-Key", "action"),
            ("/v1/management/audit?since=2026-01-01%2000:00:00Z", "since"),
            ("/v1/management/audit?until=2026-01-01T00:00:00", "until"),
            ("/v1/management/audit?since=2026-02-30T00:00:00Z", "since"),
            ("/v1/exec/invocations?agent_id=agt_", "agent_id"),
            ("/v1/exec/invocations?tool=Kubectl", "tool"),
            ("/v1/exec/invocations?workspace=-prod", "workspace"),
            ("/v1/management/credentials?agent_id=x", "agent_id"),
            ("/v1/management/agents/agt_01m8sbce9k2rcej9fhvv8jg3pq/events?after=aud_x", "after"),
        ] {
            let resp = get(&router, path).await;
            assert_invalid(&resp, param);
        }
        // What has the format is a filter, matching or not.
        let page = get(&router, &format!("/v1/management/audit?actor_key_id={admin}")).await;
        page.assert_status(200);
        let none = "/v1/management/audit?actor_key_id=key_01m8sbce9k2rcej9fhvv8jg3pq";
        assert_eq!(get(&router, none).await.json()["data"], json!([]));
        // Every RFC 3339 date-time JSON Schema accepts, offsets and years before 1970 included.
        for since in
            ["1969-12-31T19:00:00.5-05:00", "0001-01-01t00:00:00z", "2026-01-01T00:00:00%2B14:00"]
        {
            let resp = get(&router, &format!("/v1/management/audit?since={since}")).await;
            resp.assert_status(200);
        }
        let first = get(&router, "/v1/management/api-keys?limit=1").await.json();
        let after = first["data"][0]["id"].as_str().unwrap().to_string();
        get(&router, &format!("/v1/management/api-keys?after={after}")).await.assert_status(200);
    }
}

#[tokio::test]
async fn bodies_are_read_as_json_schema_reads_them() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        // An integral number is an integer, however it is spelled.
        let body = json!({ "name": "floaty", "scopes": ["execution"], "expires_in_seconds": 99.0 });
        router.post_json(KEYS, &body).await.assert_status(201);
        let body =
            json!({ "name": "fraction", "scopes": ["execution"], "expires_in_seconds": 9.5 });
        assert_invalid(&router.post_json(KEYS, &body).await, "expires_in_seconds");
        let body = json!({ "name": "none", "scopes": [] });
        assert_invalid(&router.post_json(KEYS, &body).await, "scopes");
        // An optional body may be absent, `null` or `{}`.
        let key = router.create_key("optional-bodies", &["execution"]).await;
        let rotate = format!("{KEYS}/{}/rotate", key.id);
        let resp = Api::send(
            with_key(
                router
                    .api()
                    .request(Method::POST, &rotate)
                    .header("content-type", "application/json"),
                Some(router.admin_key()),
            )
            .body("null"),
        )
        .await;
        resp.assert_status(200);
        let resp = Api::send(with_key(
            router.api().request(Method::POST, &rotate),
            Some(router.admin_key()),
        ))
        .await;
        resp.assert_status(200);
        // A required body is not optional: without a Content-Type, 415 in the envelope.
        let resp =
            Api::send(with_key(router.api().request(Method::POST, KEYS), Some(router.admin_key())))
                .await;
        resp.assert_error(415, "unsupported_media_type");
        // A body is an object: serde would read a struct from an array.
        let pause = "/v1/management/agents/agt_01m8sbce9k2rcej9fhvv8jg3pq/pause-exec";
        router.post_json(pause, &json!([null, null])).await.assert_error(400, "invalid_request");
        // Withdrawing a grant names its workspace.
        let withdraw = "/v1/management/agents/agt_01m8sbce9k2rcej9fhvv8jg3pq/grants/withdraw";
        assert_invalid(&router.post_json(withdraw, &json!({})).await, "workspace");
        router
            .post_json(withdraw, &json!({ "workspace": "prod" }))
            .await
            .assert_error(404, "not_found");
    }
}

#[tokio::test]
async fn reasons_and_names_that_no_column_holds_are_refused_on_both_backends() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let key = router.create_key("reasons", &["execution"]).await;
        let revoke = format!("{KEYS}/{}/revoke", key.id);
        // NUL: PostgreSQL cannot store it, so it is a 400 everywhere rather than a 500 there.
        assert_invalid(&router.post_json(&revoke, &json!({ "reason": "a\u{0}b" })).await, "reason");
        // Reasons are counted in characters, as the document's maxLength counts them.
        let too_long = "é".repeat(1025);
        assert_invalid(&router.post_json(&revoke, &json!({ "reason": too_long })).await, "reason");
        let longest = "é".repeat(1024);
        let resp = router.post_json(&revoke, &json!({ "reason": longest })).await;
        resp.assert_status(200);
        assert_eq!(resp.json()["revoked_reason"], json!(longest));
        // Mesh addresses: a port is 1-65535 written plainly.
        for addr in ["tcp://h:05555", "tcp://h:+5555", "tcp://h:65536", "tcp://h:0"] {
            let body = json!({ "name": "addr", "router_addr": addr });
            let resp = router.post_json("/v1/management/join-keys", &body).await;
            assert_invalid(&resp, "router_addr");
        }
        // Pausing names a workspace or none; an empty one is not "all of them".
        let pause = "/v1/management/agents/agt_01m8sbce9k2rcej9fhvv8jg3pq/pause-exec";
        assert_invalid(&router.post_json(pause, &json!({ "workspace": "" })).await, "workspace");
        let approve = "/v1/management/agents/agt_01m8sbce9k2rcej9fhvv8jg3pq/candidates/approve";
        assert_invalid(&router.post_json(approve, &json!({ "workspace": "" })).await, "workspace");
    }
}

#[tokio::test]
async fn a_malformed_invocation_is_the_callers_mistake_not_an_outage() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        // No agent is online: a well-formed request is 503 no_agent_available (retryable), but
        // a malformed one is a 400 that no retry will cure.
        let path = "/v1/exec/invocations";
        let resp = router.post_json(path, &json!({ "tool": "", "workspace": "" })).await;
        assert_invalid(&resp, "tool");
        let resp = router.post_json(path, &json!({ "tool": "ok", "workspace": "Prod X" })).await;
        assert_invalid(&resp, "workspace");
        let resp = router.post_json(path, &json!({ "tool": "ok", "workspace": "prod" })).await;
        resp.assert_error(503, "no_agent_available");
    }
}

#[tokio::test]
async fn enrollment_judges_the_join_key_before_anything_else() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        // A stranger's malformed request learns nothing but that its join key is no good.
        let body = json!({
            "join_key": "a.b.c", "registration_name": "x y", "curve_public_key": "short",
            "signing_public_key": "zz", "manifest": { "version": 1.0 },
        });
        router.post_enroll(&body).await.assert_error(401, "join_key_invalid");
        // With a real join key, the keys must have their exact formats (no stray whitespace).
        let join = router.mint_join_key("formats").await;
        let keys = AgentKeys::fresh();
        let mut body = enroll_body(&join.token, "formats", &keys);
        body["signing_public_key"] = json!(format!(" {}", keys.signing.public_hex()));
        assert_invalid(&router.post_enroll(&body).await, "signing_public_key");
    }
}

#[tokio::test]
async fn odd_input_never_gets_a_server_error() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let api = router.api();
        let admin = Some(router.admin_key());
        let huge =
            format!("{{\"name\":\"{}\",\"scopes\":[\"execution\"]}}", "x".repeat(100 * 1024));
        let cases: Vec<(Method, &str, Option<&str>, Option<String>)> = vec![
            (Method::POST, KEYS, Some("text/plain"), Some("{}".into())),
            (Method::POST, KEYS, Some("application/json"), Some("\u{0}".into())),
            (Method::POST, KEYS, Some("application/json"), Some(huge)),
            (Method::POST, KEYS, Some("application/json"), Some("[1,2]".into())),
            (Method::POST, KEYS, Some("application/json"), Some("{\"name\":\"\\ud800\"}".into())),
            (
                Method::POST,
                "/v1/enroll",
                Some("application/json"),
                Some("{\"join_key\":1e999}".into()),
            ),
            (Method::GET, "/v1/management/audit?limit=1e3", None, None),
            (Method::GET, "/v1/management/audit?since=%F0%9F%92%A5", None, None),
            (Method::GET, "/v1/management/api-keys/%00", None, None),
            (Method::GET, "/v1/exec/invocations/inv_%00", None, None),
            (Method::POST, "/v1/exec/invocations/inv_%00/cancel", None, None),
            (Method::GET, "/v1/management/agents/agt_%00/events", None, None),
            (
                Method::POST,
                "/v1/management/api-keys/key_%00/rotate",
                Some("application/json"),
                Some("{\"grace_seconds\":-1}".into()),
            ),
            (
                Method::POST,
                "/v1/management/join-keys",
                Some("application/json"),
                Some("{\"name\":\"t\",\"ttl_seconds\":18446744073709551616}".into()),
            ),
        ];
        for (method, path, content_type, body) in cases {
            let mut request = with_key(api.request(method.clone(), path), admin);
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            if let Some(body) = body {
                request = request.body(body);
            }
            let resp = Api::send(request).await;
            assert!(
                (400..500).contains(&resp.status),
                "{method} {path}: {} {}",
                resp.status,
                resp.text
            );
            let envelope = resp.json();
            assert!(envelope["error"]["code"].is_string(), "{method} {path}: {}", resp.text);
        }
        // A path id out of its format is judged after the key: a stranger gets 401, not 404.
        let resp = api.get("/v1/management/api-keys/%00", None).await;
        resp.assert_error(401, "missing_api_key");
        let resp = api.get("/v1/management/api-keys/nope", admin).await;
        resp.assert_error(404, "not_found");
    }
}

/// Every operation of the document, with its path and method.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            all.push((path.clone(), method.clone(), operation.clone()));
        }
    }
    all
}

/// The schema a `$ref` names, or the schema itself.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

fn states_a_format(schema: &Value) -> bool {
    schema.get("pattern").is_some()
        || schema.get("enum").is_some()
        || schema.get("format").is_some()
}

fn is_string(schema: &Value) -> bool {
    schema["type"] == "string"
        || schema["type"].as_array().is_some_and(|t| t.contains(&json!("string")))
}

#[tokio::test]
async fn the_document_states_every_answer_and_every_format() {
    let backend = backends().await.remove(0);
    let router = Router::start(&backend).await;
    let doc = router.api().get("/v1/openapi.json", None).await.json();
    let envelope = json!({ "$ref": "#/components/schemas/ErrorEnvelope" });
    let mut problems = Vec::new();
    for (path, method, operation) in operations(&doc) {
        let at = format!("{} {path}", method.to_uppercase());
        let responses = &operation["responses"];
        let error_schema =
            |status: &str| responses[status]["content"]["application/json"]["schema"].clone();
        let secured = operation["security"].as_array().is_some_and(|s| !s.is_empty());
        if secured {
            for status in ["401", "403", "429"] {
                if error_schema(status) != envelope {
                    problems.push(format!("{at}: no {status} with the error envelope"));
                }
            }
            let scope = if path.starts_with("/v1/exec/") { "execution" } else { "management" };
            if !responses["403"]["description"].as_str().unwrap_or("").contains(scope) {
                problems.push(format!("{at}: the 403 does not name the {scope} scope"));
            }
        } else if path.starts_with("/v1/management/") || path.starts_with("/v1/exec/") {
            problems.push(format!("{at}: not secured"));
        }
        if operation.get("requestBody").is_some() {
            for status in ["400", "413", "415"] {
                if error_schema(status) != envelope {
                    problems.push(format!("{at}: a body, but no {status}"));
                }
            }
        }
        for (status, response) in responses.as_object().unwrap() {
            if response["headers"].get("X-Request-ID").is_none() {
                problems.push(format!("{at}: {status} does not state X-Request-ID"));
            }
        }
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            let name = parameter["name"].as_str().unwrap();
            let schema = &parameter["schema"];
            let location = parameter["in"].as_str().unwrap();
            if location == "query" && error_schema("400") != envelope {
                problems.push(format!("{at}: query parameters, but no 400"));
            }
            let after_pattern = schema["pattern"].as_str().unwrap_or("");
            match (location, name) {
                ("query", "limit")
                    if schema["minimum"] != json!(1) || schema["maximum"] != json!(500) =>
                {
                    problems.push(format!("{at}: limit without bounds 1-500: {schema}"));
                }
                // Listings page by id; an output stream resumes at an output cursor.
                ("query", "after")
                    if after_pattern != formats::OUTPUT_CURSOR
                        && (!after_pattern.starts_with('^')
                            || !after_pattern.ends_with("{26}$")) =>
                {
                    problems.push(format!("{at}: after without an id format: {schema}"));
                }
                _ => {}
            }
            if is_string(schema) && !states_a_format(schema) {
                problems.push(format!("{at}: {name} is a string of no stated format"));
            }
            if parameter["in"] == "path" && schema["pattern"].is_null() {
                problems.push(format!("{at}: path parameter {name} without a pattern"));
            }
            if parameter["in"] == "path" && error_schema("404") != envelope {
                problems.push(format!("{at}: a path parameter, but no 404"));
            }
        }
        if let Some(body) = operation.get("requestBody") {
            let schema = resolve(&doc, &body["content"]["application/json"]["schema"]);
            let schema = schema["oneOf"]
                .as_array()
                .and_then(|one| one.iter().find(|s| s["type"] != "null"))
                .map_or(schema, |s| resolve(&doc, s));
            for (field, property) in schema["properties"].as_object().into_iter().flatten() {
                let property = resolve(&doc, property);
                if is_string(property) && !states_a_format(property) {
                    problems
                        .push(format!("{at}: body field {field} is a string of no stated format"));
                }
            }
        }
    }
    // Optional bodies are optional; required ones are required.
    for (path, required) in [
        ("/v1/management/api-keys/{id}/revoke", false),
        ("/v1/management/api-keys/{id}/rotate", false),
        ("/v1/management/agents/{id}/curve-rotate", false),
        ("/v1/management/agents/{id}/pause-exec", false),
        ("/v1/management/webhooks/deliveries/{id}/retry", false),
        ("/v1/management/agents/{id}/grants/withdraw", true),
        ("/v1/management/api-keys", true),
        ("/v1/exec/invocations", true),
        ("/v1/enroll", true),
    ] {
        let stated = doc["paths"][path]["post"]["requestBody"]["required"] == json!(true);
        if stated != required {
            problems.push(format!("POST {path}: body required is {stated}, should be {required}"));
        }
    }
    // The formats on the request types are the ones the router applies.
    let schemas = &doc["components"]["schemas"];
    for (schema, field, format) in [
        ("CreateApiKeyRequest", "name", formats::NAME),
        ("CreateJoinKeyRequest", "name", formats::NAME),
        ("CreateJoinKeyRequest", "router_addr", formats::MESH_ADDR),
        ("EnrollRequest", "join_key", formats::JOIN_TOKEN),
        ("EnrollRequest", "curve_public_key", formats::CURVE_PUBLIC_KEY),
        ("EnrollRequest", "signing_public_key", formats::SIGNING_PUBLIC_KEY),
        ("InvokeRequest", "tool", formats::CATALOG_NAME),
        ("InvokeRequest", "workspace", formats::CATALOG_NAME),
        ("RevokeApiKeyRequest", "reason", formats::TEXT),
        ("RetryDeliveryRequest", "reason", formats::TEXT),
        ("WithdrawGrantRequest", "workspace", formats::NAME),
    ] {
        let stated = &schemas[schema]["properties"][field]["pattern"];
        if stated != &json!(format) {
            problems
                .push(format!("{schema}.{field}: pattern {stated}, the router checks {format}"));
        }
    }
    // Links name their operation as OpenAPI spells it (utoipa 5.5 writes `operation_id`).
    let text = doc.to_string();
    // Every reference resolves.
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        if doc["components"]["schemas"].get(name).is_none() {
            problems.push(format!("a reference to {name}, which is not in the document"));
        }
    }
    if text.contains("\"operation_id\"") || !text.contains("\"operationId\"") {
        problems.push("links do not say operationId".into());
    }
    // This router's own bound.
    let ttl = &schemas["CreateJoinKeyRequest"]["properties"]["ttl_seconds"];
    if ttl["maximum"] != json!(86_400) || ttl["minimum"] != json!(1) {
        problems.push(format!("ttl_seconds bounds are not 1-86400 (the default maximum): {ttl}"));
    }
    assert!(problems.is_empty(), "the document misses:\n{}", problems.join("\n"));
}
