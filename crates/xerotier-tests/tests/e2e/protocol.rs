//! The HTTP contract: the error envelope for bad input, `X-Request-ID` everywhere, OpenAPI.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Api, Resp, Router, backends, xeroctl};

const KEYS: &str = "/v1/management/api-keys";

async fn post_raw(router: &Router, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Resp {
    let mut builder =
        router.api().request(Method::POST, path).bearer_auth(router.admin_key()).body(body);
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    Api::send(builder).await
}

/// Only the bootstrap key exists, and no create was ever recorded as a success.
async fn assert_nothing_created(router: &Router) {
    let keys = router.all_keys().await;
    assert_eq!(keys.len(), 1, "[{}] only the bootstrap key: {keys:?}", router.backend);
    assert!(router.audit("action=api_key.create&outcome=success").await.is_empty());
}

#[tokio::test]
async fn bad_input_gets_the_error_envelope() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let json_type = Some("application/json");

        // Over the body limit (96 KiB).
        let big = json!({ "name": "a".repeat(100 * 1024), "scopes": ["execution"] }).to_string();
        let resp = post_raw(&router, KEYS, json_type, big.into_bytes()).await;
        resp.assert_error(413, "payload_too_large");
        // Just under it is parsed (and refused for the name, not the size).
        let fits = json!({ "name": "a".repeat(60 * 1024), "scopes": ["execution"] }).to_string();
        let resp = post_raw(&router, KEYS, json_type, fits.into_bytes()).await;
        resp.assert_error(400, "invalid_request");
        // Oversized bodies on the other mutations too.
        let keyid = router.create_key("target", &["execution"]).await.id;
        let big_reason = json!({ "reason": "r".repeat(100 * 1024) }).to_string();
        let resp = post_raw(
            &router,
            &format!("{KEYS}/{keyid}/revoke"),
            json_type,
            big_reason.into_bytes(),
        )
        .await;
        resp.assert_error(413, "payload_too_large");
        assert_eq!(router.show_key(&keyid).await["status"], "active");

        // Malformed JSON, unknown fields, wrong types.
        for body in [
            "{",
            "not json",
            "",
            "[]",
            r#"{"name":"x","scopes":["execution"],"admin":true}"#,
            r#"{"name":"x"}"#,
            r#"{"name":7,"scopes":["execution"]}"#,
            r#"{"name":"x","scopes":"execution"}"#,
        ] {
            let resp = post_raw(&router, KEYS, json_type, body.as_bytes().to_vec()).await;
            assert!(resp.status == 400, "{body:?} -> {} {}", resp.status, resp.text);
            resp.assert_error(400, "invalid_request");
        }
        let resp = post_raw(
            &router,
            &format!("{KEYS}/{keyid}/rotate"),
            json_type,
            br#"{"grace":"24h"}"#.to_vec(),
        )
        .await;
        resp.assert_error(400, "invalid_request");

        // No content type / a wrong one on create.
        let body = json!({ "name": "x", "scopes": ["execution"] }).to_string();
        post_raw(&router, KEYS, None, body.clone().into_bytes())
            .await
            .assert_error(415, "unsupported_media_type");
        post_raw(&router, KEYS, Some("text/plain"), body.into_bytes())
            .await
            .assert_error(415, "unsupported_media_type");

        // Bad scopes.
        for scopes in [json!(["admin"]), json!([]), json!(["execution", "root"])] {
            let resp = router.post_json(KEYS, &json!({ "name": "x", "scopes": scopes })).await;
            resp.assert_error(400, "invalid_request");
        }

        // Bad names name the parameter.
        let too_long = "n".repeat(129);
        for name in ["", "has space", "slash/name", "émoji", too_long.as_str(), "semi;colon"] {
            let resp =
                router.post_json(KEYS, &json!({ "name": name, "scopes": ["execution"] })).await;
            resp.assert_error(400, "invalid_request");
            assert_eq!(resp.json()["error"]["param"], "name", "{name:?}: {}", resp.text);
        }

        // Bad pagination.
        for query in ["limit=0", "limit=501", "limit=-1", "limit=abc"] {
            let resp = router.api().get(&format!("{KEYS}?{query}"), Some(router.admin_key())).await;
            resp.assert_error(400, "invalid_request");
            let resp = router
                .api()
                .get(&format!("/v1/management/audit?{query}"), Some(router.admin_key()))
                .await;
            resp.assert_error(400, "invalid_request");
        }
        let resp = router.api().get(&format!("{KEYS}?limit=0"), Some(router.admin_key())).await;
        assert_eq!(resp.json()["error"]["param"], "limit");
        let cli = xeroctl(&router, &["keys", "--limit", "0"]).failure();
        assert!(cli.stderr.contains("limit"), "{}", cli.stderr);
        let resp = router
            .api()
            .get("/v1/management/audit?since=yesterday", Some(router.admin_key()))
            .await;
        resp.assert_error(400, "invalid_request");

        // The CLI refuses a bad scope itself, clearly, and sends nothing.
        let cli = xeroctl(&router, &["keys", "create", "--scope", "admin", "--name", "cli-admin"])
            .failure();
        assert!(
            cli.stderr.contains("admin") && cli.stderr.contains("execution, management"),
            "a clear error naming the bad scope and the valid ones: {}",
            cli.stderr
        );
        assert!(cli.stdout.is_empty(), "{}", cli.stdout);
        let cli = xeroctl(&router, &["keys", "create", "--name", "cli-noscope"]).failure();
        assert!(cli.stderr.contains("--scope"), "{}", cli.stderr);

        // Nothing of all that created a key (besides `target`).
        let keys = router.all_keys().await;
        assert_eq!(keys.len(), 2, "[{}] bootstrap and target only: {keys:?}", backend.name);
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_envelope() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let api = router.api();
        for path in ["/nope", "/v1", "/v1/management/api-keys/x/y/z", "/v1/exec/nothing-here"] {
            let resp = api.get(path, Some(router.admin_key())).await;
            resp.assert_error(404, "not_found");
        }
        let resp = api
            .get(&format!("{KEYS}/key_00000000000000000000000000"), Some(router.admin_key()))
            .await;
        resp.assert_error(404, "not_found");
        for (method, path) in [
            (Method::DELETE, KEYS),
            (Method::PUT, "/healthz"),
            (Method::POST, "/v1/exec/tools"),
            (Method::GET, "/v1/management/api-keys/key_00000000000000000000000000/revoke"),
            (Method::PATCH, "/metrics"),
        ] {
            let resp =
                Api::send(api.request(method.clone(), path).bearer_auth(router.admin_key())).await;
            assert_eq!(resp.status, 405, "{method} {path}: {}", resp.text);
            resp.assert_error(405, "method_not_allowed");
        }
        assert_nothing_created(&router).await;
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let api = router.api();
        let admin = Some(router.admin_key());
        let answers = vec![
            api.get("/healthz", None).await,
            api.get("/metrics", None).await,
            api.get("/v1/openapi.json", None).await,
            api.get("/v1/exec/tools", admin).await,
            api.get("/v1/exec/tools", None).await,
            api.get("/v1/exec/tools", Some("garbage")).await,
            api.get(KEYS, admin).await,
            api.get("/nowhere", None).await,
            Api::send(api.request(Method::DELETE, KEYS)).await,
            api.post(KEYS, admin, &json!({ "name": "rid", "scopes": ["execution"] })).await,
            api.post(KEYS, admin, &json!({ "name": "rid", "scopes": ["execution"] })).await,
            api.post(KEYS, admin, &json!({ "bogus": 1 })).await,
            post_raw(&router, KEYS, Some("application/json"), vec![b' '; 100 * 1024]).await,
        ];
        let mut ids = Vec::new();
        for resp in &answers {
            let id = resp.request_id();
            assert!(!id.is_empty(), "{}", resp.status);
            ids.push(id);
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), answers.len(), "request ids are unique: {ids:?}");

        assert!(ids.iter().all(|id| id.starts_with("req_")), "the router's own ids: {ids:?}");

        // A request id chosen by the client is kept as the correlation id and comes back in
        // X-Correlation-ID, on success and on error; X-Request-ID is still the router's own.
        for (path, key) in
            [("/healthz", None), ("/v1/exec/tools", admin), ("/v1/exec/tools", None), ("/x", None)]
        {
            let resp = Api::send(
                crate::harness::with_key(api.request(Method::GET, path), key)
                    .header("x-request-id", "client-chosen-42"),
            )
            .await;
            assert!(resp.request_id().starts_with("req_"), "{path} -> {}", resp.status);
            assert_eq!(
                resp.headers.get("x-correlation-id").and_then(|v| v.to_str().ok()),
                Some("client-chosen-42"),
                "{path} -> {}",
                resp.status
            );
        }
    }
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let resp = router.api().get("/v1/openapi.json", None).await;
        resp.assert_status(200);
        assert!(
            resp.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json")),
            "{:?}",
            resp.headers
        );
        let doc: Value = resp.json();
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
        assert!(doc["info"]["title"].is_string());
        let paths = doc["paths"].as_object().expect("paths");
        let expected = [
            ("/v1/management/api-keys", &["get", "post"][..]),
            ("/v1/management/api-keys/{id}", &["get"]),
            ("/v1/management/api-keys/{id}/revoke", &["post"]),
            ("/v1/management/api-keys/{id}/rotate", &["post"]),
            ("/v1/management/audit", &["get"]),
            ("/v1/management/join-keys", &["get", "post"]),
            ("/v1/management/join-keys/{id}", &["get"]),
            ("/v1/management/join-keys/{id}/revoke", &["post"]),
            ("/v1/enroll", &["post"]),
            ("/v1/management/agents", &["get"]),
            ("/v1/management/agents/{id}", &["get"]),
            ("/v1/management/agents/{id}/revoke-credentials", &["post"]),
            ("/v1/management/agents/{id}/curve-rotate", &["post"]),
            ("/v1/management/agents/{id}/curve-rotations/{request_id}", &["get"]),
            ("/v1/management/agents/{id}/events", &["get"]),
            ("/v1/management/agents/{id}/pause-exec", &["post"]),
            ("/v1/management/agents/{id}/resume-exec", &["post"]),
            ("/v1/management/agents/{id}/pauses", &["get"]),
            ("/v1/management/credentials", &["get"]),
            ("/v1/management/webhooks/deliveries/{id}/retry", &["post"]),
            ("/v1/exec/tools", &["get"]),
            ("/v1/exec/tools/{name}", &["get"]),
            ("/v1/exec/invocations", &["get", "post"]),
            ("/v1/exec/invocations/{id}", &["get"]),
            ("/v1/exec/invocations/{id}/cancel", &["post"]),
            ("/v1/exec/invocations/{id}/output", &["get"]),
            ("/healthz", &["get"]),
            ("/metrics", &["get"]),
            ("/v1/openapi.json", &["get"]),
        ];
        for (path, methods) in expected {
            let item =
                paths.get(path).unwrap_or_else(|| panic!("{path} missing from {:?}", paths.keys()));
            for method in methods {
                assert!(item.get(*method).is_some(), "{method} {path} missing: {item}");
            }
        }
        // Authenticated routes declare the bearer scheme.
        assert!(
            doc["components"]["securitySchemes"]["api_key"]["scheme"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
        );
        assert!(paths["/v1/exec/tools"]["get"]["security"].is_array());
        for (path, method) in [
            ("/v1/management/join-keys", "post"),
            ("/v1/management/agents/{id}/revoke-credentials", "post"),
        ] {
            assert!(paths[path][method]["security"].is_array(), "{method} {path} needs a key");
        }
        // The output stream says what it streams and how to resume it.
        let output = &paths["/v1/exec/invocations/{id}/output"]["get"];
        assert!(output["responses"]["200"]["content"]["text/event-stream"].is_object(), "{output}");
        let params = output["parameters"].as_array().unwrap();
        for name in ["id", "Last-Event-ID", "after"] {
            assert!(params.iter().any(|p| p["name"] == name), "{name} documented: {output}");
        }
        // Enrollment takes no API key: the join key is the credential.
        assert!(paths["/v1/enroll"]["post"].get("security").is_none(), "{}", paths["/v1/enroll"]);
        assert!(paths["/v1/enroll"]["post"]["requestBody"].is_object());
        // The document needs no key, and is the same on every call.
        let again = router.api().get("/v1/openapi.json", Some("garbage")).await;
        again.assert_status(200);
        assert_eq!(again.json(), doc);
    }
}
