//! Request hygiene (issue 10, item 3): what a client sends never grows `/metrics`, request ids
//! are the router's own (a client's `X-Request-ID` is only a bounded correlation label), live
//! event streams end with their key and are capped per key, and failed authentications are
//! rate-limited per source address.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Api, Router, backends, with_key, xeroctl};

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
