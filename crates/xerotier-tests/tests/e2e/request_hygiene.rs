//! Request hygiene (issue 10, item 3): what a client sends never grows `/metrics`, request ids
//! are the router's own (a client's `X-Request-ID` is only a bounded correlation label), live
//! event streams end with their key and are capped per key, and failed authentications are
//! rate-limited per source address.

use std::time::{Duration, Instant, SystemTime};

use reqwest::Method;
use serde_json::{Value, json};

use crate::fleet_harness::enroll;
use crate::harness::{Api, Issued, Router, RouterOptions, backends, eventually, with_key, xeroctl};

const KEYS: &str = "/v1/management/api-keys";

/// `/metrics`, as text.
async fn metrics_text(router: &Router) -> String {
    let resp = router.api().get("/metrics", None).await;
    resp.assert_status(200);
    resp.text
}

#[tokio::test]
async fn invented_methods_and_paths_never_grow_metrics() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let api = router.api();
        // Every label an honest client can produce, once, so that the flood below can only
        // add what it invents.
        for path in ["/nowhere", "/v1/exec/invocations/inv_warmup", "/healthz"] {
            api.get(path, None).await;
            Api::send(api.request(Method::from_bytes(b"WARMUP").unwrap(), path)).await;
        }
        // (Read twice: the first read registers `/metrics`' own series.)
        metrics_text(&router).await;
        let before = metrics_text(&router).await;

        // 300 requests, each with a method and a path of its own.
        for i in 0..300 {
            let method = Method::from_bytes(format!("INVENTED{i:03}").as_bytes()).unwrap();
            let path = match i % 3 {
                0 => format!("/random-{i:03}-path"),
                1 => format!("/v1/exec/invocations/inv_random{i:03}"),
                _ => "/healthz".to_string(),
            };
            let resp = Api::send(api.request(method, &path)).await;
            assert!(
                [401, 404, 405].contains(&resp.status),
                "INVENTED{i:03} {path}: {} {}",
                resp.status,
                resp.text
            );
        }
        let after = metrics_text(&router).await;
        assert!(
            !after.contains("INVENTED"),
            "[{}] a method became a label:\n{after}",
            backend.name
        );
        assert!(!after.contains("random"), "[{}] a path became a label:\n{after}", backend.name);
        assert!(after.contains(r#"method="other""#), "{after}");
        // Counters moved, no series was added: the size differs only by digits.
        let series = |text: &str| {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.rsplit_once(' ').map(|(name, _)| name.to_string()))
                .collect::<std::collections::BTreeSet<_>>()
        };
        let added: Vec<_> = series(&after).difference(&series(&before)).cloned().collect();
        assert!(added.is_empty(), "[{}] the flood added series: {added:#?}", backend.name);
        assert!(
            after.len() < before.len() + 1_024,
            "[{}] /metrics grew from {} to {} bytes",
            backend.name,
            before.len(),
            after.len()
        );
    }
}

/// The one audit record under the router's request id of `resp`.
async fn record_of(router: &Router, resp: &crate::harness::Resp) -> Value {
    let records = router.audit(&format!("request_id={}", resp.request_id())).await;
    assert_eq!(records.len(), 1, "[{}] {records:?}", router.backend);
    records[0].clone()
}

/// A `POST /v1/management/api-keys` with the admin key and this `X-Request-ID` header.
async fn create_key_with_request_id(
    router: &Router,
    name: &str,
    request_id: &str,
) -> crate::harness::Resp {
    let resp = Api::send(
        with_key(router.api().request(Method::POST, KEYS), Some(router.admin_key()))
            .header("x-request-id", request_id)
            .json(&json!({ "name": name, "scopes": ["execution"] })),
    )
    .await;
    resp.assert_status(201);
    resp
}

#[tokio::test]
async fn oversized_and_malformed_request_ids_are_replaced() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let huge = "x".repeat(380_000);
        let just_too_long = "y".repeat(129);
        let cases = [
            ("huge", huge.as_str()),
            ("too-long", just_too_long.as_str()),
            ("spaces", "two words"),
            ("markup", "<script>alert(1)</script>"),
            ("path", "../../etc/passwd"),
            ("quote", "a\"b"),
        ];
        for (name, sent) in cases {
            let resp = create_key_with_request_id(&router, name, sent).await;
            let id = resp.request_id();
            assert!(id.starts_with("req_") && id.len() <= 128, "[{name}] replaced: {id:?}");
            assert!(resp.headers.get("x-correlation-id").is_none(), "[{name}] not echoed");
            let record = record_of(&router, &resp).await;
            assert_eq!(record["request_id"], id.as_str(), "{record}");
            assert!(record["correlation_id"].is_null(), "[{name}] not kept: {record}");
            assert!(record.to_string().len() < 2_000, "[{name}] the record stays small");
        }
        // The longest label that is kept: exactly 128 characters of the allowed set.
        let longest = format!("{}._-", "A9z".repeat(125 / 3)) + &"q".repeat(128 - 126);
        assert_eq!(longest.len(), 128);
        let resp = create_key_with_request_id(&router, "longest", &longest).await;
        assert_eq!(resp.headers["x-correlation-id"], longest.as_str());
        assert_eq!(record_of(&router, &resp).await["correlation_id"], longest.as_str());
        // Nothing anywhere in the log holds the huge value.
        let all = router.audit("").await;
        assert!(
            all.iter().all(|r| r.to_string().len() < 4_000),
            "[{}] an oversized record: {}",
            backend.name,
            all.iter().map(|r| r.to_string().len()).max().unwrap_or(0)
        );
    }
}

#[tokio::test]
async fn a_client_cannot_make_its_records_carry_another_requests_id() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        // The honest operator's request, with a label of its own.
        let honest = create_key_with_request_id(&router, "honest", "ticket-4711").await;
        let honest_id = honest.request_id();
        // Another management key replays both the honest request id and the honest label.
        let other = router.create_key("other-operator", &["management"]).await;
        for forged in [honest_id.as_str(), "ticket-4711"] {
            let resp = Api::send(
                with_key(router.api().request(Method::POST, KEYS), Some(&other.value))
                    .header("x-request-id", forged)
                    .json(&json!({ "name": format!("forged-{forged}"), "scopes": ["execution"] })),
            )
            .await;
            resp.assert_status(201);
            assert_ne!(resp.request_id(), honest_id, "a fresh id, not the forged one");
        }
        // Under the honest request id: the honest record only.
        let records = router.audit(&format!("request_id={honest_id}")).await;
        assert_eq!(records.len(), 1, "[{}] {records:?}", backend.name);
        assert_eq!(records[0]["target_name"], "honest");
        assert_eq!(records[0]["correlation_id"], "ticket-4711");
        // The forgeries are found as what they are: labels, with the forger as the actor.
        let forged = router.audit(&format!("correlation_id={honest_id}")).await;
        assert_eq!(forged.len(), 1, "{forged:?}");
        assert_eq!(forged[0]["actor_key_id"], other.id.as_str());
        assert_ne!(forged[0]["request_id"], honest_id.as_str());
        let labelled = router.audit("correlation_id=ticket-4711").await;
        assert_eq!(labelled.len(), 2, "a label is not unique: {labelled:?}");
        let request_ids: std::collections::BTreeSet<_> =
            labelled.iter().map(|r| r["request_id"].as_str().unwrap().to_string()).collect();
        assert_eq!(request_ids.len(), 2, "two requests, two router ids: {labelled:?}");

        // xeroctl shows the correlation id and filters on it.
        let table = xeroctl(&router, &["audit", "--correlation-id", "ticket-4711"]).success();
        assert!(table.stdout.contains("CORRELATION"), "{}", table.stdout);
        assert_eq!(table.rows_with("ticket-4711").len(), 2, "{}", table.stdout);
        let json_out =
            xeroctl(&router, &["audit", "--request-id", &honest_id, "-o", "json"]).success().json();
        assert_eq!(json_out["data"][0]["correlation_id"], "ticket-4711", "{json_out}");
    }
}

// ---------------------------------------------------------------------------------------------
// Live event streams
// ---------------------------------------------------------------------------------------------

/// How soon a stream must end after its key stops authenticating.
const STREAM_END: Duration = Duration::from_secs(1);

/// An enrolled agent (no process behind it): something to stream the events of.
async fn some_agent(router: &Router) -> String {
    let join = router.mint_join_key("streamed").await;
    let (resp, _keys) = enroll(router, &join.token, "streamed").await;
    resp.assert_status(200);
    resp.json()["agent_id"].as_str().unwrap().to_string()
}

/// `GET …/events` with `Accept: text/event-stream` and `key`, through the harness's client.
async fn open_stream(router: &Router, agent_id: &str, key: &str) -> reqwest::Response {
    open_stream_on(router.api(), agent_id, key).await
}

async fn open_stream_on(api: &Api, agent_id: &str, key: &str) -> reqwest::Response {
    let path = format!("/v1/management/agents/{agent_id}/events");
    with_key(api.request(Method::GET, &path), Some(key))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("opening the events stream")
}

/// Opens a stream that must be accepted.
async fn open_live(router: &Router, agent_id: &str, key: &str) -> reqwest::Response {
    let response = open_stream(router, agent_id, key).await;
    assert_eq!(response.status().as_u16(), 200, "[{}] stream refused", router.backend);
    response
}

/// Reads `stream` until it ends (or breaks); when it did. Panics if it is still open at
/// `deadline`.
async fn end_of(stream: &mut reqwest::Response, deadline: Instant, what: &str) -> Instant {
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.chunk()).await {
            Err(_) => panic!("{what}: the stream is still open"),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None) | Err(_)) => return Instant::now(),
        }
    }
}

/// The stream stays open for `quiet` (nothing ends it early).
async fn still_open(stream: &mut reqwest::Response, quiet: Duration, what: &str) {
    let until = Instant::now() + quiet;
    loop {
        match tokio::time::timeout_at(until.into(), stream.chunk()).await {
            Err(_) => return,
            Ok(Ok(Some(_))) => continue,
            Ok(other) => panic!("{what}: the stream ended early: {other:?}"),
        }
    }
}

#[tokio::test]
async fn event_streams_end_within_a_second_of_their_keys_revocation_expiry_or_rotation() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let agent_id = some_agent(&router).await;
        let watcher = router.create_key("watcher", &["management"]).await;
        let bystander = router.create_key("bystander", &["management"]).await;

        // Revocation: the stream ends within a second of the revoke's answer; another key's
        // stream goes on.
        let mut revoked_stream = open_live(&router, &agent_id, &watcher.value).await;
        let mut other_stream = open_live(&router, &agent_id, &bystander.value).await;
        still_open(&mut revoked_stream, Duration::from_millis(600), "before the revoke").await;
        router.revoke_key(&watcher.id).await.assert_status(200);
        let revoked_at = Instant::now();
        let ended = end_of(&mut revoked_stream, revoked_at + STREAM_END, "revoked key").await;
        eprintln!("[{}] revoked key's stream ended after {:?}", backend.name, ended - revoked_at);
        still_open(&mut other_stream, Duration::from_millis(600), "another key's stream").await;
        // The revoked key cannot open a new one.
        open_stream(&router, &agent_id, &watcher.value).await;

        // Expiry: a key that expires in 2 s; its stream ends within a second of that.
        let created = router
            .post_json(
                KEYS,
                &json!({ "name": "short", "scopes": ["management"], "expires_in_seconds": 2 }),
            )
            .await;
        created.assert_status(201);
        let short = Issued::from_json(&created.json());
        let expires_at = humantime::parse_rfc3339(short.key["expires_at"].as_str().unwrap())
            .expect("expires_at is RFC 3339");
        let mut expiring = open_live(&router, &agent_id, &short.value).await;
        let until_expiry = expires_at.duration_since(SystemTime::now()).unwrap_or_default();
        end_of(&mut expiring, Instant::now() + until_expiry + STREAM_END, "expiry").await;
        let overshoot = SystemTime::now()
            .duration_since(expires_at)
            .unwrap_or_else(|_| panic!("[{}] the stream ended before the expiry", backend.name));
        eprintln!("[{}] expired key's stream ended {overshoot:?} after expiry", backend.name);

        // Rotation without grace: a stream opened with the old value ends; one opened with the
        // new value goes on.
        let rotated = router.create_key("rotated", &["management"]).await;
        let mut old_value_stream = open_live(&router, &agent_id, &rotated.value).await;
        let resp = router
            .post_json(&format!("{KEYS}/{}/rotate", rotated.id), &json!({ "grace_seconds": 0 }))
            .await;
        resp.assert_status(200);
        let rotated_at = Instant::now();
        let new_value = Issued::from_json(&resp.json()).value;
        let mut new_value_stream = open_live(&router, &agent_id, &new_value).await;
        end_of(&mut old_value_stream, rotated_at + STREAM_END, "old value after rotation").await;
        still_open(&mut new_value_stream, Duration::from_millis(600), "the new value").await;

        // Replicas: the stream is on one router, the revoke on the other.
        if !backend.is_sqlite() {
            let replica = router.replica().await;
            let remote = router.create_key("remote", &["management"]).await;
            let mut on_replica = open_live(&replica, &agent_id, &remote.value).await;
            still_open(&mut on_replica, Duration::from_millis(300), "replica stream").await;
            router.revoke_key(&remote.id).await.assert_status(200);
            let revoked_at = Instant::now();
            end_of(&mut on_replica, revoked_at + STREAM_END, "revoked on the other replica").await;
        }
        drop(other_stream);
        drop(new_value_stream);
    }
}

#[tokio::test]
async fn each_key_holds_a_bounded_number_of_event_streams() {
    for backend in backends().await {
        let options = RouterOptions {
            extra_args: vec!["--max-event-streams-per-key".into(), "2".into()],
            ..RouterOptions::default()
        };
        let router = Router::start_with(&backend, options).await;
        let agent_id = some_agent(&router).await;
        let greedy = router.create_key("greedy", &["management"]).await;

        // Twenty at once from one key: exactly two are served, the rest refused with 429.
        let mut racing = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (api, agent_id, key) =
                (router.api().clone(), agent_id.clone(), greedy.value.clone());
            racing.spawn(async move { open_stream_on(&api, &agent_id, &key).await });
        }
        let mut answers = racing.join_all().await;
        let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 2, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 18, "{statuses:?}");
        let refused_index = statuses.iter().position(|s| *s == 429).unwrap();
        let refused = answers.remove(refused_index);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "too_many_streams", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains('2'), "{body}");
        let mut open: Vec<reqwest::Response> =
            answers.into_iter().filter(|r| r.status().as_u16() == 200).collect();

        // Another key is not affected; JSON pages are not streams.
        let other = router.create_key("other", &["management"]).await;
        let _other_stream = open_live(&router, &agent_id, &other.value).await;
        router
            .api()
            .get(&format!("/v1/management/agents/{agent_id}/events"), Some(&greedy.value))
            .await
            .assert_status(200);

        // A closed stream gives its place back.
        drop(open.pop());
        let _reopened = eventually("a freed stream place", Duration::from_secs(30), || async {
            let response = open_stream(&router, &agent_id, &greedy.value).await;
            (response.status().as_u16() == 200).then_some(response)
        })
        .await;
        let again = open_stream(&router, &agent_id, &greedy.value).await;
        assert_eq!(again.status().as_u16(), 429, "the cap holds again");
    }
}

// ---------------------------------------------------------------------------------------------
// Failed authentications
// ---------------------------------------------------------------------------------------------

const TOOLS: &str = "/v1/exec/tools";

#[tokio::test]
async fn failed_authentications_are_rate_limited_per_source_address() {
    for backend in backends().await {
        let options = RouterOptions {
            extra_args: ["--auth-failure-burst", "5", "--auth-failures-per-minute", "30"]
                .map(String::from)
                .to_vec(),
            ..RouterOptions::default()
        };
        let router = Router::start_with(&backend, options).await;
        let api = router.api();
        let admin = router.admin_key().to_string();

        // Honest use is never limited.
        for _ in 0..20 {
            api.get(TOOLS, Some(&admin)).await.assert_status(200);
        }
        // Five failures of every kind are answered 401.
        let revoked = router.create_key("revoked", &["execution"]).await;
        router.revoke_key(&revoked.id).await.assert_status(200);
        // The admin key's id with a wrong secret (its last hex digit changed).
        let other_digit = if admin.ends_with('0') { '1' } else { '0' };
        let wrong_secret = format!("{}{other_digit}", &admin[..admin.len() - 1]);
        api.get(TOOLS, None).await.assert_error(401, "missing_api_key");
        for bad in ["garbage", "xero_abc_def", wrong_secret.as_str(), revoked.value.as_str()] {
            api.get(TOOLS, Some(bad)).await.assert_error(401, "invalid_api_key");
        }

        // The sixth is refused before any key is looked at: 429, Retry-After, a stable code.
        let refused = api.get(TOOLS, Some("garbage")).await;
        refused.assert_error(429, "too_many_auth_failures");
        let retry_after: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry_after), "30 a minute: a token every 2 s: {retry_after}");
        // A flood from this address: all refused, and none reaches authentication.
        for _ in 0..200 {
            api.get(TOOLS, Some(&wrong_secret)).await.assert_error(429, "too_many_auth_failures");
        }
        api.post(KEYS, None, &json!({ "name": "x", "scopes": ["execution"] }))
            .await
            .assert_error(429, "too_many_auth_failures");
        // While it lasts, a valid key from this address waits too (it is not even looked at).
        api.get(TOOLS, Some(&admin)).await.assert_error(429, "too_many_auth_failures");
        // Routes without an API key are not affected.
        api.get("/healthz", None).await.assert_status(200);
        let failures = r#"xerotier_router_auth_failures_total{reason="invalid_api_key"}"#;
        assert_eq!(router.metric(failures).await, 4.0, "[{}] only the 401s", backend.name);
        let missing = r#"xerotier_router_auth_failures_total{reason="missing_api_key"}"#;
        assert_eq!(router.metric(missing).await, 1.0);
        let limited = router.metric("xerotier_router_auth_rate_limited_total").await;
        assert!(limited >= 203.0, "[{}] refusals counted: {limited}", backend.name);

        // Once the bucket refills, the valid key works again; one more failure costs one
        // token, and the address waits again.
        eventually("the address to be served again", Duration::from_secs(10), || async {
            (api.get(TOOLS, Some(&admin)).await.status == 200).then_some(())
        })
        .await;
        assert!(!router.all_keys().await.iter().any(|k| k["name"] == "x"), "nothing created");
        api.get(TOOLS, Some("garbage")).await.assert_error(401, "invalid_api_key");
        api.get(TOOLS, Some("garbage")).await.assert_error(429, "too_many_auth_failures");
    }
}

#[tokio::test]
async fn the_openapi_document_states_the_new_refusals_and_fields() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        assert_documents_the_new_refusals(&router.api().get("/v1/openapi.json", None).await.json());
    }
}

fn assert_documents_the_new_refusals(doc: &Value) {
    let paths = doc["paths"].as_object().unwrap();
    // Every route that takes an API key can answer 429 too_many_auth_failures, with
    // Retry-After; the public ones do not.
    let mut secured = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let responses = &operation["responses"];
            if operation.get("security").is_some_and(|s| !s.as_array().unwrap().is_empty()) {
                secured += 1;
                let refusal = &responses["429"];
                let text = refusal["description"].as_str().unwrap_or_default();
                assert!(text.contains("too_many_auth_failures"), "{method} {path}: {refusal}");
                assert!(refusal["headers"]["Retry-After"].is_object(), "{method} {path}");
            } else {
                assert!(responses.get("429").is_none(), "{method} {path} takes no key");
            }
        }
    }
    assert!(secured > 20, "{secured} secured operations");
    // The events stream's own limit, and the lockout guard's codes.
    let events = &paths["/v1/management/agents/{id}/events"]["get"]["responses"]["429"];
    assert!(events["description"].as_str().unwrap().contains("too_many_streams"), "{events}");
    let revoke = &paths["/v1/management/api-keys/{id}/revoke"]["post"]["responses"]["409"];
    let text = revoke["description"].as_str().unwrap();
    assert!(text.contains("self_revoke") && text.contains("last_management_key"), "{text}");
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["RevokeApiKeyRequest"]["properties"]["allow_lockout"]["type"], "boolean");
    assert!(schemas["AuditRecordView"]["properties"]["correlation_id"].is_object());
    let description = doc["info"]["description"].as_str().unwrap();
    assert!(description.contains("X-Correlation-ID"), "{description}");
    // The invocation routes say who sees what.
    let get = &paths["/v1/exec/invocations/{id}"]["get"]["responses"]["404"]["description"];
    assert!(get.as_str().unwrap().contains("another key"), "{get}");
}
