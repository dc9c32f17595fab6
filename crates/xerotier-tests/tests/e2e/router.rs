//! The router as a daemon: metrics, SIGTERM, restarts, one owner per SQLite store, replicas on
//! PostgreSQL, JSON logs.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::harness::{Router, RouterOptions, backends};

#[tokio::test]
async fn metrics_are_prometheus_text() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let api = router.api();
        api.get("/v1/exec/tools", Some(router.admin_key())).await.assert_status(200);
        api.get("/v1/exec/tools", Some("garbage")).await.assert_status(401);
        api.get("/v1/exec/tools", None).await.assert_status(401);

        let resp = api.get("/metrics", None).await;
        resp.assert_status(200);
        assert!(!resp.request_id().is_empty());
        let content_type = resp.headers["content-type"].to_str().unwrap();
        assert!(content_type.contains("text"), "{content_type}");
        let text = &resp.text;
        assert!(text.contains("# TYPE xerotier_router_http_requests counter"), "{text}");
        let exec_ok = text.lines().find(|l| {
            l.starts_with("xerotier_router_http_requests_total{")
                && l.contains(r#"route="/v1/exec/tools""#)
                && l.contains(r#"status="200""#)
        });
        let value: f64 = exec_ok
            .unwrap_or_else(|| panic!("a request counter for /v1/exec/tools 200:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(value >= 1.0);
        assert!(
            text.contains(r#"xerotier_router_auth_failures_total{reason="invalid_api_key"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"xerotier_router_auth_failures_total{reason="missing_api_key"} 1"#),
            "{text}"
        );
        assert!(text.contains("xerotier_router_http_request_duration_seconds_bucket"), "{text}");
        // Raw paths never become labels (unbounded cardinality).
        api.get("/random-path-1234", None).await.assert_status(404);
        let text = api.get("/metrics", None).await.text;
        assert!(!text.contains("random-path-1234"), "{text}");
        assert!(text.contains(r#"route="unmatched""#), "{text}");
        for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (_, sample) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
            assert!(sample.parse::<f64>().is_ok(), "bad sample value in {line:?}");
        }
    }
}

#[tokio::test]
async fn sigterm_stops_and_restart_keeps_everything() {
    for backend in backends().await {
        let mut router = Router::start(&backend).await;
        let bootstrap_before = std::fs::read(router.bootstrap_key_path()).unwrap();
        let mode = std::fs::metadata(router.bootstrap_key_path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "bootstrap.key is 0600");
        let kept = router.create_key("survivor", &["execution"]).await;
        let revoked = router.create_key("gone", &["execution"]).await;
        router.revoke_key(&revoked.id).await.assert_status(200);
        let keys_before = router.all_keys().await.len();

        let status = router.stop_with_sigterm();
        assert!(
            status.success(),
            "[{}] exit status on SIGTERM: {status}\n{}",
            backend.name,
            router.logs()
        );
        assert!(router.logs().contains("router stopped"), "{}", router.logs());

        router.restart().await;
        assert_eq!(
            std::fs::read(router.bootstrap_key_path()).unwrap(),
            bootstrap_before,
            "bootstrap.key unchanged"
        );
        assert_eq!(router.all_keys().await.len(), keys_before, "[{}] keys kept", backend.name);
        assert_eq!(
            router.exec_status(&kept.value).await,
            200,
            "a key from before the restart works"
        );
        assert_eq!(router.exec_status(&revoked.value).await, 401, "a revoke survives the restart");
        let bootstraps = router.audit("action=api_key.bootstrap").await;
        assert_eq!(bootstraps.len(), 1, "[{}] one bootstrap only: {bootstraps:?}", backend.name);
        let named_bootstrap =
            router.all_keys().await.into_iter().filter(|k| k["name"] == "bootstrap").count();
        assert_eq!(named_bootstrap, 1);
        assert_eq!(router.logs().matches("bootstrap admin API key created").count(), 1);

        // After a crash (SIGKILL) the store, its lock and the single bootstrap key are fine.
        router.kill();
        router.restart().await;
        assert_eq!(std::fs::read(router.bootstrap_key_path()).unwrap(), bootstrap_before);
        assert_eq!(router.audit("action=api_key.bootstrap").await.len(), 1);
        assert_eq!(router.exec_status(&kept.value).await, 200);
        assert_eq!(router.exec_status(&revoked.value).await, 401);
    }
}

#[tokio::test]
async fn a_second_router_on_the_same_store() {
    for backend in backends().await {
        let mut router = Router::start(&backend).await;
        if backend.is_sqlite() {
            // The embedded store belongs to one router: a second one is refused, clearly.
            let (status, output) = router.run_second_process();
            assert!(!status.success(), "a second router on the SQLite store must fail: {output}");
            assert!(
                output.contains("another router is already using the SQLite store"),
                "the message says why: {output}"
            );
            assert!(output.contains("--database-url"), "and what to do instead: {output}");
            // The first one is unharmed.
            router.api().get("/healthz", None).await.assert_status(200);
            assert_eq!(router.exec_status(router.admin_key()).await, 200);
            // Once the first has stopped, the store can be opened again.
            router.restart().await;
            assert_eq!(router.exec_status(router.admin_key()).await, 200);
        } else {
            // PostgreSQL is for replicas: a second router shares the keys, does not bootstrap
            // again, and sees a revoke made on the first at once.
            let replica = router.replica().await;
            assert_eq!(replica.exec_status(router.admin_key()).await, 200);
            let key = router.create_key("shared", &["execution"]).await;
            assert_eq!(
                replica.exec_status(&key.value).await,
                200,
                "a key made on one works on the other"
            );
            router.revoke_key(&key.id).await.assert_status(200);
            assert_eq!(
                replica.exec_status(&key.value).await,
                401,
                "a revoke holds on the other replica at once"
            );
            let made_on_replica = replica.create_key("from-replica", &["execution"]).await;
            assert_eq!(router.exec_status(&made_on_replica.value).await, 200);
            assert_eq!(replica.audit("action=api_key.bootstrap").await.len(), 1);
        }
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    for backend in backends().await {
        let options = RouterOptions {
            log_level: "debug".into(),
            log_format: Some("json".into()),
            ..RouterOptions::default()
        };
        let mut router = Router::start_with(&backend, options).await;
        router.create_key("logged", &["execution"]).await;
        router.api().get("/nope", None).await.assert_status(404);
        router.api().get("/v1/exec/tools", Some("garbage")).await.assert_status(401);
        assert!(router.stop_with_sigterm().success());

        let logs = router.logs();
        let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(lines.len() >= 5, "some logs were written:\n{logs}");
        for line in &lines {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("[{}] not a JSON line ({e}): {line:?}", backend.name));
            assert!(value.is_object(), "{line}");
            assert!(value["level"].is_string() && value["timestamp"].is_string(), "{line}");
        }
        let messages: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        let said = |text: &str| {
            messages
                .iter()
                .any(|m| m["fields"]["message"].as_str().is_some_and(|s| s.contains(text)))
        };
        assert!(said("HTTPS API listening on https://"), "{logs}");
        assert!(said("api key created"), "{logs}");
        assert!(said("router stopped"), "{logs}");
        assert!(!logs.contains('\u{1b}'), "no terminal colours in JSON logs");
    }
}

/// A misspelt filter is an error, never a silently ignored one that returns everything.
#[tokio::test]
async fn unknown_query_parameters_are_refused() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let api = router.api();
        let key = Some(router.admin_key());
        for path in [
            "/v1/management/audit?actr=key_x",
            "/v1/management/api-keys?include_revokd=true",
            "/v1/management/agents?limt=5",
            "/v1/management/join-keys?include_terminl=true",
            "/v1/exec/invocations?stauts=running",
            "/v1/management/credentials?agent=agt_x",
        ] {
            let resp = api.get(path, key).await;
            resp.assert_error(400, "invalid_request");
            assert!(resp.text.contains("unknown field"), "{path}: {}", resp.text);
        }
        // The honest spelling still works.
        api.get("/v1/management/audit?actor_key_id=key_01m8sbce9k2rcej9fhvv8jg3pq", key)
            .await
            .assert_status(200);
        api.get("/v1/management/api-keys?include_revoked=true", key).await.assert_status(200);
    }
}
