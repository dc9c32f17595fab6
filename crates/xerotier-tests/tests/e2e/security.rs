//! Authentication, scopes, revocation, expiry, and secrets that must never leak.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::task::JoinSet;

use crate::harness::{
    Api, Issued, Router, RouterOptions, backends, eventually, secret_part, with_key, xeroctl,
};

const TOOLS: &str = "/v1/exec/tools";
const KEYS: &str = "/v1/management/api-keys";

/// One request of the load: when it was started and what came back.
#[derive(Debug)]
struct Sample {
    started: Instant,
    status: u16,
    code: Option<String>,
}

/// Runs `WORKERS` tasks that call `/v1/exec/tools` with `value` in a loop until told to stop.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    ok: Arc<AtomicUsize>,
    tasks: JoinSet<Vec<Sample>>,
}

const WORKERS: usize = 16;

impl Load {
    fn start(api: &Api, value: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let ok = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        for _ in 0..WORKERS {
            let (api, value) = (api.clone(), value.to_string());
            let (stop, sent, ok) = (stop.clone(), sent.clone(), ok.clone());
            tasks.spawn(async move {
                let mut samples = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let resp = api.get(TOOLS, Some(&value)).await;
                    let code = (resp.status != 200)
                        .then(|| resp.json()["error"]["code"].as_str().map(str::to_string))
                        .flatten();
                    if resp.status == 200 {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    samples.push(Sample { started, status: resp.status, code });
                }
                samples
            });
        }
        Load { stop, sent, ok, tasks }
    }

    async fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        while let Some(joined) = self.tasks.join_next().await {
            all.extend(joined.expect("a load task panicked"));
        }
        all
    }
}

/// Hammers `key` on `router` from 16 tasks, revokes it with `revoke` (on this router or
/// another one) while the load runs, and checks that no request started after the revoke
/// returned succeeded.
async fn revoke_under_load<F, Fut>(router: &Router, key: &Issued, revoke: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let load = Load::start(router.api(), &key.value);
    // The load must be flowing (and succeeding) before the revoke.
    eventually("successful requests under load", Duration::from_secs(10), || async {
        (load.ok.load(Ordering::SeqCst) >= 2 * WORKERS).then_some(())
    })
    .await;

    revoke().await;
    let revoke_returned = Instant::now();
    let sent_at_revoke = load.sent.load(Ordering::SeqCst);
    // Keep the load on until plenty of requests were started (and answered) after the revoke.
    eventually("requests after the revoke", Duration::from_secs(10), || async {
        (load.sent.load(Ordering::SeqCst) >= sent_at_revoke + 10 * WORKERS).then_some(())
    })
    .await;
    let samples = load.finish().await;

    let before = samples.iter().filter(|s| s.started < revoke_returned).count();
    let after: Vec<&Sample> = samples.iter().filter(|s| s.started > revoke_returned).collect();
    assert!(
        before > 0 && after.len() >= 5 * WORKERS,
        "load: {before} before, {} after",
        after.len()
    );
    let succeeded_after: Vec<_> = after.iter().filter(|s| s.status != 401).collect();
    assert!(
        succeeded_after.is_empty(),
        "[{}] {} of {} requests started after the revoke returned were not refused, e.g. {:?}",
        router.backend,
        succeeded_after.len(),
        after.len(),
        succeeded_after.first()
    );
    assert!(
        after.iter().all(|s| s.code.as_deref() == Some("invalid_api_key")),
        "refusals carry invalid_api_key"
    );
    // Requests in flight at the revoke may have gone either way; nothing else is allowed.
    assert!(samples.iter().all(|s| s.status == 200 || s.status == 401), "only 200 or 401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_is_immediate_under_concurrent_load() {
    for backend in backends().await {
        // Hundreds of requests with a revoked key, from one address, on purpose: the
        // per-address limit on failed authentications (tested in `request_hygiene`) is set
        // out of the way, so that every one of them reaches authentication.
        let options = RouterOptions {
            extra_args: [
                "--auth-failure-burst",
                "1000000",
                "--auth-failures-per-minute",
                "1000000",
            ]
            .map(String::from)
            .to_vec(),
            ..RouterOptions::default()
        };
        let router = Router::start_with(&backend, options).await;

        // Revoked over HTTP: the instant the answer arrived is the boundary.
        let by_http = router.create_key("loaded-http", &["execution"]).await;
        revoke_under_load(&router, &by_http, || async {
            router.revoke_key(&by_http.id).await.assert_status(200);
        })
        .await;

        // Revoked with the CLI: the boundary is the instant the command exited.
        let by_cli = router.create_key("loaded-cli", &["execution"]).await;
        let (base, admin) = (router.base_url(), router.admin_key().to_string());
        let ca = router.ca_file();
        revoke_under_load(&router, &by_cli, || async move {
            tokio::task::spawn_blocking(move || {
                crate::harness::Xeroctl::bare()
                    .base_url(Some(&base))
                    .api_key(Some(&admin))
                    .ca_file(ca.as_deref())
                    .run(&["keys", "revoke", "--name", "loaded-cli", "--reason", "leaked", "--yes"])
                    .success();
            })
            .await
            .expect("the CLI task");
        })
        .await;

        assert_eq!(router.show_key(&by_http.id).await["status"], "revoked");
        assert_eq!(router.show_key(&by_cli.id).await["revoked_reason"], "leaked");

        // Replicas share PostgreSQL: the load runs on one router, the revoke on the other.
        if !backend.is_sqlite() {
            let replica = router.replica().await;
            let shared = router.create_key("loaded-replica", &["execution"]).await;
            revoke_under_load(&replica, &shared, || async {
                router.revoke_key(&shared.id).await.assert_status(200);
            })
            .await;
        }
    }
}

#[tokio::test]
async fn scopes_are_enforced_both_ways() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let api = router.api();
        let exec = router.create_key("exec-only", &["execution"]).await;
        let mgmt = router.create_key("mgmt-only", &["management"]).await;
        let keys_before = router.all_keys().await.len();

        // Execution-only: exec yes, management no (reads and writes).
        api.get(TOOLS, Some(&exec.value)).await.assert_status(200);
        api.get(KEYS, Some(&exec.value)).await.assert_error(403, "scope_insufficient");
        api.get("/v1/management/audit", Some(&exec.value))
            .await
            .assert_error(403, "scope_insufficient");
        api.get(&format!("{KEYS}/{}", exec.id), Some(&exec.value))
            .await
            .assert_error(403, "scope_insufficient");
        let denied = api
            .post(
                KEYS,
                Some(&exec.value),
                &json!({ "name": "escalated", "scopes": ["management"] }),
            )
            .await;
        denied.assert_error(403, "scope_insufficient");
        api.post(&format!("{KEYS}/{}/revoke", mgmt.id), Some(&exec.value), &json!({}))
            .await
            .assert_error(403, "scope_insufficient");

        // Management-only: management yes, exec no.
        api.get(TOOLS, Some(&mgmt.value)).await.assert_error(403, "scope_insufficient");
        api.get(KEYS, Some(&mgmt.value)).await.assert_status(200);
        api.get("/v1/management/audit", Some(&mgmt.value)).await.assert_status(200);

        // The denied POST changed nothing and is in the audit log as denied.
        let keys = router.all_keys().await;
        assert_eq!(keys.len(), keys_before, "no key was created or changed");
        assert!(keys.iter().all(|k| k["name"] != "escalated"));
        assert_eq!(router.show_key(&mgmt.id).await["status"], "active");
        let records = router.audit(&format!("request_id={}", denied.request_id())).await;
        assert_eq!(
            records.len(),
            1,
            "[{}] one record of the denied POST: {records:?}",
            backend.name
        );
        let record = &records[0];
        assert_eq!(record["outcome"], "denied");
        assert_eq!(record["actor_key_id"], exec.id.as_str());
        assert_eq!(record["actor_name"], "exec-only");
        assert_eq!(record["details"]["required_scope"], "management");
        assert_eq!(record["details"]["path"], KEYS);
        assert!(
            router
                .audit("action=api_key.create&outcome=success")
                .await
                .iter()
                .all(|r| r["target_name"] != "escalated")
        );
        // The CLI with the execution key says why.
        let cli = crate::harness::xeroctl_with_key(&router, &exec.value, &["keys"]).failure();
        assert!(
            cli.stderr.contains("scope_insufficient") && cli.stderr.contains("403"),
            "{}",
            cli.stderr
        );
    }
}

#[tokio::test]
async fn missing_and_invalid_keys_get_401() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let api = router.api();
        let key = router.create_key("real", &["execution", "management"]).await;

        for path in [TOOLS, KEYS] {
            let missing = api.get(path, None).await;
            missing.assert_error(401, "missing_api_key");
            assert_eq!(
                missing.headers.get("www-authenticate").and_then(|v| v.to_str().ok()),
                Some("Bearer"),
                "401 carries WWW-Authenticate"
            );

            // Garbage in many shapes.
            for garbage in ["garbage", "xero_", "xero_abc_def", &key.value[..key.value.len() - 1]] {
                api.get(path, Some(garbage)).await.assert_error(401, "invalid_api_key");
            }
            for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "token xero_x"] {
                let resp =
                    Api::send(api.request(Method::GET, path).header("authorization", header)).await;
                resp.assert_error(401, "invalid_api_key");
            }

            // A well-formed value for a key id that does not exist.
            let unknown = with_other_key_id(&key.value);
            api.get(path, Some(&unknown)).await.assert_error(401, "invalid_api_key");

            // The right key id with a wrong secret.
            let wrong = with_other_secret(&key.value);
            api.get(path, Some(&wrong)).await.assert_error(401, "invalid_api_key");

            // The real thing works (so the refusals above were about the key).
            api.get(path, Some(&key.value)).await.assert_status(200);
            let lower = Api::send(
                with_key(api.request(Method::GET, path), None)
                    .header("authorization", format!("bearer {}", key.value)),
            )
            .await;
            lower.assert_status(200);
        }
        // Mutations without a valid key are refused before anything happens.
        api.post(KEYS, None, &json!({ "name": "x", "scopes": ["execution"] }))
            .await
            .assert_error(401, "missing_api_key");
        api.post(
            KEYS,
            Some(&with_other_secret(&key.value)),
            &json!({ "name": "x", "scopes": ["execution"] }),
        )
        .await
        .assert_error(401, "invalid_api_key");
        assert!(router.all_keys().await.iter().all(|k| k["name"] != "x"));
    }
}

/// `xero_<id>_<secret>` with one character of the id changed (still a valid id).
fn with_other_key_id(value: &str) -> String {
    const ALPHABET: &str = "0123456789abcdefghjkmnpqrstvwxyz";
    let (id_part, secret) = value.strip_prefix("xero_").unwrap().split_once('_').unwrap();
    let last = id_part.chars().last().unwrap();
    let replacement = ALPHABET.chars().find(|c| *c != last).unwrap();
    format!("xero_{}{replacement}_{secret}", &id_part[..id_part.len() - 1])
}

/// `xero_<id>_<secret>` with the last secret character changed (still 64 hex characters).
fn with_other_secret(value: &str) -> String {
    let last = value.chars().last().unwrap();
    let replacement = if last == '0' { '1' } else { '0' };
    format!("{}{replacement}", &value[..value.len() - 1])
}

#[tokio::test]
async fn expired_keys_are_refused() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let api = router.api();
        let created = api
            .post(
                KEYS,
                Some(router.admin_key()),
                &json!({ "name": "short-lived", "scopes": ["execution"], "expires_in_seconds": 1 }),
            )
            .await;
        created.assert_status(201);
        let key = Issued::from_json(&created.json());
        assert!(key.key["expires_at"].is_string(), "expires_at is set: {}", key.key);
        // It may already have expired on a slow machine; either answer is fine at first.
        let first = router.exec_status(&key.value).await;
        assert!(first == 200 || first == 401);

        eventually("the key to expire", Duration::from_secs(10), || async {
            (router.exec_status(&key.value).await == 401).then_some(())
        })
        .await;
        // Once refused, it stays refused.
        api.get(TOOLS, Some(&key.value)).await.assert_error(401, "invalid_api_key");
        assert_eq!(router.show_key(&key.id).await["status"], "expired");

        // Zero and absurd lifetimes are refused.
        for bad in [json!(0), json!(-1), json!(10_u64.pow(12))] {
            let resp = api
                .post(
                    KEYS,
                    Some(router.admin_key()),
                    &json!({ "name": "bad-expiry", "scopes": ["execution"], "expires_in_seconds": bad }),
                )
                .await;
            resp.assert_error(400, "invalid_request");
        }
        // The CLI's --expires-in reaches the router.
        let cli = xeroctl(
            &router,
            &[
                "keys",
                "create",
                "--scope",
                "execution",
                "--name",
                "cli-expiring",
                "--expires-in",
                "90d",
                "-o",
                "json",
            ],
        )
        .success();
        assert!(cli.json()["key"]["expires_at"].is_string(), "{}", cli.stdout);
    }
}

#[tokio::test]
async fn secrets_never_appear_in_logs_or_later_answers() {
    for backend in backends().await {
        let mut router = Router::start_with(
            &backend,
            RouterOptions { log_level: "debug".into(), ..RouterOptions::default() },
        )
        .await;
        let mut secrets = vec![router.admin_key().to_string()];

        // Issue and rotate keys over HTTP and with the CLI, and use every value.
        let http_key = router.create_key("http-made", &["execution"]).await;
        secrets.push(http_key.value.clone());
        let rotated = router.post_json(&format!("{KEYS}/{}/rotate", http_key.id), &json!({})).await;
        rotated.assert_status(200);
        secrets.push(Issued::from_json(&rotated.json()).value);

        let cli_made = xeroctl(
            &router,
            &["keys", "create", "--scope", "execution,management", "--name", "cli-made"],
        )
        .success();
        secrets.push(cli_made.issued_value());
        let cli_rotated =
            xeroctl(&router, &["keys", "rotate", "--name", "cli-made", "--grace", "1h"]).success();
        secrets.push(cli_rotated.issued_value());
        let cli_json = xeroctl(
            &router,
            &["-o", "json", "keys", "create", "--scope", "execution", "--name", "cli-json"],
        )
        .success();
        secrets.push(cli_json.json()["value"].as_str().unwrap().to_string());
        assert!(
            !cli_json.stderr.contains("xero_"),
            "the value goes to stdout only: {}",
            cli_json.stderr
        );

        for value in &secrets[1..] {
            router.exec_status(value).await;
        }
        // Failed authentications with near-miss values, and a revoked key in use.
        router.exec_status(&with_other_secret(&secrets[1])).await;
        router.revoke_key(&http_key.id).await.assert_status(200);
        router.exec_status(&secrets[2]).await;
        router.exec_status(&with_other_secret(&secrets[2])).await;

        // Every read of keys and audit, over HTTP and with the CLI.
        let mut reads = Vec::new();
        let admin = router.admin_key().to_string();
        for path in [
            format!("{KEYS}?include_revoked=true"),
            format!("{KEYS}?name=cli-made"),
            format!("{KEYS}/{}", http_key.id),
            "/v1/management/audit?limit=500".to_string(),
        ] {
            let resp = router.api().get(&path, Some(&admin)).await;
            resp.assert_status(200);
            reads.push((path, resp.text));
        }
        for key in router.all_keys().await {
            let id = key["id"].as_str().unwrap().to_string();
            reads.push((
                id.clone(),
                router.api().get(&format!("{KEYS}/{id}"), Some(&admin)).await.text,
            ));
            let show = xeroctl(&router, &["keys", "show", &id]).success();
            reads.push((format!("keys show {id}"), show.all()));
        }
        for args in [
            vec!["keys", "--include-revoked"],
            vec!["keys", "-o", "json", "--include-revoked"],
            vec!["keys", "show", "--name", "cli-made", "-o", "json"],
            vec!["audit"],
            vec!["audit", "-o", "json", "--limit", "500"],
        ] {
            let out = xeroctl(&router, &args).success();
            reads.push((format!("xeroctl {args:?}"), out.all()));
        }
        for (what, body) in &reads {
            assert!(
                !body.contains("xero_"),
                "[{}] {what} shows a key value:\n{body}",
                backend.name
            );
            for secret in &secrets {
                assert!(
                    !body.contains(secret_part(secret)),
                    "[{}] {what} leaks a secret",
                    backend.name
                );
            }
        }

        // Restart too: startup on a bootstrapped store must not print anything either.
        router.restart().await;
        let logs = router.logs();
        assert!(logs.contains("api key created"), "debug logs were captured:\n{logs}");
        for secret in &secrets {
            assert!(
                !logs.contains(secret.as_str()),
                "[{}] the log contains a key value",
                backend.name
            );
            assert!(
                !logs.contains(secret_part(secret)),
                "[{}] the log contains a secret",
                backend.name
            );
        }
    }
}
