//! API key lifecycle: rotation with a grace window, unique names, and the audit trail of every
//! mutation.

use std::time::{Duration, SystemTime};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Api, Issued, Resp, Router, backends, xeroctl};

const KEYS: &str = "/v1/management/api-keys";

fn parse_time(text: &Value) -> SystemTime {
    let text = text.as_str().unwrap_or_else(|| panic!("a timestamp, got {text}"));
    humantime::parse_rfc3339_weak(text).unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
}

#[tokio::test]
async fn rotate_with_and_without_grace() {
    for backend in backends().await {
        let router = Router::start(&backend).await;

        // --grace 0s: the old value dies at once.
        let old =
            xeroctl(&router, &["keys", "create", "--scope", "execution", "--name", "rot-now"])
                .success()
                .issued_value();
        let rotated =
            xeroctl(&router, &["keys", "rotate", "--name", "rot-now", "--grace", "0s", "--yes"])
                .success();
        let new = rotated.issued_value();
        assert_ne!(old, new);
        assert!(rotated.stderr.contains("cannot be shown again"), "{}", rotated.stderr);
        assert_eq!(
            router.exec_status(&old).await,
            401,
            "[{}] old value after --grace 0s",
            backend.name
        );
        assert_eq!(router.exec_status(&new).await, 200, "[{}] new value", backend.name);
        // Same key, same id, new value.
        assert_eq!(old.split('_').nth(1), new.split('_').nth(1), "the key id is kept");

        // Default grace (24h): both values work, and the window is reported.
        let old =
            xeroctl(&router, &["keys", "create", "--scope", "execution", "--name", "rot-grace"])
                .success()
                .issued_value();
        let before = SystemTime::now();
        let rotated =
            xeroctl(&router, &["keys", "rotate", "--name", "rot-grace", "-o", "json"]).success();
        let body = rotated.json();
        let new = Issued::from_json(&body).value;
        let until = parse_time(&body["key"]["previous_value_valid_until"]);
        let day = Duration::from_secs(24 * 60 * 60);
        assert!(
            until >= before + day - Duration::from_secs(60)
                && until <= SystemTime::now() + day + Duration::from_secs(60),
            "previous value valid for 24h: {}",
            body["key"]
        );
        assert_eq!(
            router.exec_status(&old).await,
            200,
            "[{}] old value in the grace window",
            backend.name
        );
        assert_eq!(router.exec_status(&new).await, 200, "[{}] new value", backend.name);
        let shown = xeroctl(&router, &["keys", "show", "--name", "rot-grace", "-o", "json"])
            .success()
            .json();
        assert!(shown["previous_value_valid_until"].is_string(), "{shown}");
        assert!(shown["rotated_at"].is_string(), "{shown}");
        assert!(shown.get("value").is_none(), "show never carries the value: {shown}");

        // A second rotation replaces the grace value: the first value is gone.
        let third = router
            .post_json(
                &format!("{KEYS}/{}/rotate", shown["id"].as_str().unwrap()),
                &json!({ "grace_seconds": 3600, "reason": "second" }),
            )
            .await;
        third.assert_status(200);
        let third = Issued::from_json(&third.json()).value;
        assert_eq!(router.exec_status(&old).await, 401, "only one previous value is kept");
        assert_eq!(router.exec_status(&new).await, 200);
        assert_eq!(router.exec_status(&third).await, 200);

        // A revoke ends the grace window too.
        xeroctl(&router, &["keys", "revoke", "--name", "rot-grace", "--yes"]).success();
        assert_eq!(router.exec_status(&new).await, 401);
        assert_eq!(router.exec_status(&third).await, 401);

        // Rotating a revoked key is refused, over HTTP and with the CLI.
        let id = shown["id"].as_str().unwrap();
        let refused = router.post_json(&format!("{KEYS}/{id}/rotate"), &json!({})).await;
        refused.assert_error(409, "already_revoked");
        let cli = xeroctl(&router, &["keys", "rotate", id]).failure();
        assert!(cli.stderr.contains("already_revoked"), "{}", cli.stderr);
        assert!(!cli.stdout.contains("xero_"), "no value for a refused rotation: {}", cli.stdout);
        assert_eq!(router.exec_status(&new).await, 401, "a refused rotation revives nothing");

        // Rotating an unknown key: 404.
        router
            .post_json(&format!("{KEYS}/key_00000000000000000000000000/rotate"), &json!({}))
            .await
            .assert_error(404, "not_found");
    }
}

#[tokio::test]
async fn names_are_unique_among_active_keys() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let first = xeroctl(
            &router,
            &["keys", "create", "--scope", "execution", "--name", "dup-name", "-o", "json"],
        )
        .success()
        .json();
        let first_id = first["key"]["id"].as_str().unwrap().to_string();

        let cli =
            xeroctl(&router, &["keys", "create", "--scope", "execution", "--name", "dup-name"])
                .failure();
        assert!(cli.stderr.contains("dup-name"), "the message names the key: {}", cli.stderr);
        assert!(cli.stderr.contains("409"), "{}", cli.stderr);
        assert!(!cli.stdout.contains("xero_"), "{}", cli.stdout);

        let http =
            router.post_json(KEYS, &json!({ "name": "dup-name", "scopes": ["management"] })).await;
        http.assert_error(409, "name_taken");
        assert!(http.json()["error"]["message"].as_str().unwrap().contains("dup-name"));

        let named: Vec<Value> =
            router.all_keys().await.into_iter().filter(|k| k["name"] == "dup-name").collect();
        assert_eq!(named.len(), 1, "[{}] exactly one key named dup-name: {named:?}", backend.name);

        // Once the first is revoked the name is free again.
        xeroctl(&router, &["keys", "revoke", "--name", "dup-name", "--yes"]).success();
        let second = xeroctl(
            &router,
            &["keys", "create", "--scope", "execution", "--name", "dup-name", "-o", "json"],
        )
        .success()
        .json();
        let second_id = second["key"]["id"].as_str().unwrap();
        assert_ne!(second_id, first_id);
        let shown = xeroctl(&router, &["keys", "show", "--name", "dup-name", "-o", "json"])
            .success()
            .json();
        assert_eq!(shown["id"], second_id, "--name selects the active key");
        assert_eq!(router.show_key(&first_id).await["status"], "revoked");
        // Names are compared exactly: a different case is a different name.
        router.create_key("DUP-NAME", &["execution"]).await;
    }
}

/// Keys as listed, without `last_used_at` (written in the background, at most once a minute).
fn without_last_used(mut keys: Vec<Value>) -> Vec<Value> {
    for key in &mut keys {
        key.as_object_mut().unwrap().remove("last_used_at");
    }
    keys
}

/// Exactly one `success` record for `resp`'s request id, with the expected fields.
async fn assert_one_success(
    router: &Router,
    resp: &Resp,
    action: &str,
    target_id: &str,
    actor: &Value,
) -> Value {
    let request_id = resp.request_id();
    let records = router.audit(&format!("request_id={request_id}")).await;
    let successes: Vec<&Value> = records.iter().filter(|r| r["outcome"] == "success").collect();
    assert_eq!(
        successes.len(),
        1,
        "[{}] one success record for {action}: {records:?}",
        router.backend
    );
    assert_eq!(records.len(), 1, "nothing else under that request id: {records:?}");
    let record = successes[0].clone();
    assert_eq!(record["action"], action, "{record}");
    assert_eq!(record["request_id"], request_id.as_str(), "{record}");
    assert_eq!(record["target_type"], "api_key", "{record}");
    assert_eq!(record["target_id"], target_id, "{record}");
    assert_eq!(record["actor_key_id"], actor["id"], "{record}");
    assert_eq!(record["actor_name"], actor["name"], "{record}");
    assert!(
        record["client_addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")),
        "client address recorded: {record}"
    );
    assert!(record["id"].as_str().is_some_and(|id| id.starts_with("aud_")), "{record}");
    parse_time(&record["at"]);
    record
}

/// No `success` record under `resp`'s request id.
async fn assert_no_success(router: &Router, resp: &Resp) {
    let records = router.audit(&format!("request_id={}", resp.request_id())).await;
    assert!(
        records.iter().all(|r| r["outcome"] != "success"),
        "[{}] a refused mutation has no success record: {records:?}",
        router.backend
    );
}

#[tokio::test]
async fn every_mutation_is_audited_once() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let api = router.api();
        let admin = router.admin_key().to_string();

        // Bootstrap: one record, by the router itself.
        let bootstrap =
            router.all_keys().await.into_iter().find(|k| k["name"] == "bootstrap").unwrap();
        let records = router.audit("action=api_key.bootstrap").await;
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["outcome"], "success");
        assert_eq!(records[0]["target_id"], bootstrap["id"]);
        assert_eq!(records[0]["target_name"], "bootstrap");
        assert!(records[0]["actor_key_id"].is_null(), "the router bootstraps itself");

        // Create, with a request id chosen by the client: the router answers with its own
        // (the record's `request_id`) and keeps the client's as the correlation id.
        let create = Api::send(
            api.request(Method::POST, KEYS)
                .bearer_auth(&admin)
                .header("x-request-id", "e2e-create-0001")
                .json(&json!({ "name": "audited", "scopes": ["execution"] })),
        )
        .await;
        create.assert_status(201);
        assert!(create.request_id().starts_with("req_"), "{}", create.request_id());
        assert_eq!(create.headers["x-correlation-id"], "e2e-create-0001");
        let key = Issued::from_json(&create.json());
        let record =
            assert_one_success(&router, &create, "api_key.create", &key.id, &bootstrap).await;
        assert_eq!(record["correlation_id"], "e2e-create-0001", "{record}");
        assert_eq!(record["target_name"], "audited");
        assert_eq!(record["details"]["scopes"], json!(["execution"]));

        // Rotate, with a router-made request id.
        let rotate = api
            .post(
                &format!("{KEYS}/{}/rotate", key.id),
                Some(&admin),
                &json!({ "grace_seconds": 60, "reason": "scheduled" }),
            )
            .await;
        rotate.assert_status(200);
        let record =
            assert_one_success(&router, &rotate, "api_key.rotate", &key.id, &bootstrap).await;
        assert_eq!(record["reason"], "scheduled");

        // Revoke, by another management key: the actor is that key.
        let operator = router.create_key("operator", &["management"]).await;
        let operator_view = json!({ "id": operator.id, "name": "operator" });
        let revoke = api
            .post(
                &format!("{KEYS}/{}/revoke", key.id),
                Some(&operator.value),
                &json!({ "reason": "rotation done" }),
            )
            .await;
        revoke.assert_status(200);
        let record =
            assert_one_success(&router, &revoke, "api_key.revoke", &key.id, &operator_view).await;
        assert_eq!(record["reason"], "rotation done");
        let revoked = router.show_key(&key.id).await;
        assert_eq!(revoked["revoked_by"], operator.id.as_str());

        // Refused mutations change nothing and have no success record.
        let keys_before = without_last_used(router.all_keys().await);
        let duplicate = api
            .post(KEYS, Some(&admin), &json!({ "name": "operator", "scopes": ["execution"] }))
            .await;
        duplicate.assert_error(409, "name_taken");
        assert_no_success(&router, &duplicate).await;
        let unknown = api
            .post(
                &format!("{KEYS}/key_00000000000000000000000000/revoke"),
                Some(&admin),
                &json!({}),
            )
            .await;
        unknown.assert_error(404, "not_found");
        assert_no_success(&router, &unknown).await;
        let twice = api
            .post(&format!("{KEYS}/{}/revoke", key.id), Some(&admin), &json!({ "reason": "again" }))
            .await;
        twice.assert_error(409, "already_revoked");
        assert_no_success(&router, &twice).await;
        let rotate_revoked =
            api.post(&format!("{KEYS}/{}/rotate", key.id), Some(&admin), &json!({})).await;
        rotate_revoked.assert_error(409, "already_revoked");
        assert_no_success(&router, &rotate_revoked).await;
        assert_eq!(
            without_last_used(router.all_keys().await),
            keys_before,
            "[{}] refused mutations changed a key",
            backend.name
        );
        assert_eq!(router.show_key(&key.id).await["revoked_reason"], "rotation done");

        // In all: one success per mutation.
        let successes = router.audit("outcome=success").await;
        let count = |action: &str| successes.iter().filter(|r| r["action"] == action).count();
        assert_eq!(count("api_key.bootstrap"), 1);
        assert_eq!(count("api_key.create"), 2, "audited and operator");
        assert_eq!(count("api_key.rotate"), 1);
        assert_eq!(count("api_key.revoke"), 1);
        assert_eq!(successes.len(), 5, "{successes:?}");
        let all = router.audit("").await;
        assert!(
            all.iter()
                .all(|r| ["success", "denied", "failed"].contains(&r["outcome"].as_str().unwrap()))
        );

        // The CLI shows the same log.
        let table = xeroctl(&router, &["audit", "--limit", "500"]).success();
        for action in ["api_key.bootstrap", "api_key.create", "api_key.rotate", "api_key.revoke"] {
            assert!(table.stdout.contains(action), "{action} in:\n{}", table.stdout);
        }
        assert!(table.stdout.contains("e2e-create-0001"), "request ids shown:\n{}", table.stdout);
        let json_all =
            xeroctl(&router, &["audit", "-o", "json", "--limit", "500"]).success().json();
        assert_eq!(json_all["data"].as_array().unwrap().len(), all.len());
        let rotations = xeroctl(&router, &["audit", "--action", "api_key.rotate", "-o", "json"])
            .success()
            .json();
        let rotations = rotations["data"].as_array().unwrap();
        assert!(
            !rotations.is_empty() && rotations.iter().all(|r| r["action"] == "api_key.rotate"),
            "{rotations:?}"
        );
        let ok =
            xeroctl(&router, &["audit", "--outcome", "success", "-o", "json"]).success().json();
        assert_eq!(ok["data"].as_array().unwrap().len(), 5, "{ok}");
        let failed =
            xeroctl(&router, &["audit", "--outcome", "failed", "-o", "json"]).success().json();
        let failed = failed["data"].as_array().unwrap();
        assert!(failed.iter().all(|r| r["outcome"] == "failed"), "{failed:?}");
        let by_target =
            xeroctl(&router, &["audit", "--target", &key.id, "--outcome", "success", "-o", "json"])
                .success()
                .json();
        let records = by_target["data"].as_array().unwrap();
        let mut actions: Vec<&str> =
            records.iter().map(|r| r["action"].as_str().unwrap()).collect();
        // Oldest first (to the millisecond: ids order records made in one millisecond randomly).
        let times: Vec<SystemTime> = records.iter().map(|r| parse_time(&r["at"])).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first: {records:?}");
        actions.sort_unstable();
        assert_eq!(actions, ["api_key.create", "api_key.revoke", "api_key.rotate"]);
        let bad = xeroctl(&router, &["audit", "--outcome", "maybe"]).failure();
        assert!(bad.stderr.contains("outcome"), "{}", bad.stderr);
    }
}
