//! Outbound webhooks for security events, end to end: receivers in this process verify every
//! delivery's signature and timestamp as the README tells receivers to; a revoked agent, a
//! failed rotation and a refused enrollment each arrive signed, once; a receiver that answers
//! 500 then 200 gets a retry, one that hangs blocks nobody else, one that never succeeds ends
//! `failed` after the attempt limit; an unsafe config is refused at start. An operator retries
//! a failed delivery (`xeroctl webhooks deliveries --retry`), and only as the API allows; SIGHUP
//! swaps the webhooks for the config file's, or keeps them when the file is bad. On
//! PostgreSQL an event written through any replica wakes every replica's dispatcher. Plus:
//! every metric the alert rules use is one a live router exports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use serde_json::{Value, json};
use xerotier_credentials::webhook_signature::{DEFAULT_TOLERANCE_SECS, verify};

use crate::fleet_harness::enroll;
use crate::harness::{
    ROUTER_BIN, Router, RouterOptions, backends, binary, eventually, wait_for_exit, xeroctl,
    xeroctl_with_key,
};

const SETTLE: Duration = Duration::from_secs(40);
const SECRET: &str = "0123456789abcdef0123456789abcdef-good";

/// How a receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Ok,
    /// 500 the first time it sees a delivery id, 200 after.
    FailOnce,
    /// Never answers (within the test).
    Hang,
    Always500,
    /// 500 until the test heals it (`Seen::healed`), 200 after.
    FailUntilHealed,
}

/// What one receiver saw: per delivery id, how many POSTs, and the verified bodies.
#[derive(Debug, Default)]
struct Seen {
    posts: HashMap<String, usize>,
    verified: Vec<(String, Value)>,
    rejected: Vec<String>,
    raw: Vec<String>,
    healed: bool,
}

#[derive(Clone)]
struct Receiver {
    secret: Vec<u8>,
    behaviour: Behaviour,
    seen: Arc<Mutex<Seen>>,
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    };
    let delivery = header("x-xerotier-delivery");
    let first = {
        let mut seen = r.seen.lock();
        seen.raw.push(format!("{headers:?} {}", String::from_utf8_lossy(&body)));
        let n = seen.posts.entry(delivery.clone()).or_default();
        *n += 1;
        *n == 1
    };
    // The verification a receiver does: exact body bytes, 5-minute window.
    let checked = verify(
        &r.secret,
        &header("x-xerotier-timestamp"),
        &header("x-xerotier-signature"),
        &body,
        now_secs(),
        DEFAULT_TOLERANCE_SECS,
    );
    if let Err(err) = checked {
        r.seen.lock().rejected.push(err.to_string());
        return StatusCode::UNAUTHORIZED;
    }
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["type"].as_str(), Some(header("x-xerotier-event").as_str()));
    r.seen.lock().verified.push((delivery, value));
    match r.behaviour {
        Behaviour::Ok => StatusCode::OK,
        Behaviour::FailOnce if first => StatusCode::INTERNAL_SERVER_ERROR,
        Behaviour::FailOnce => StatusCode::NO_CONTENT,
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            StatusCode::OK
        }
        Behaviour::Always500 => StatusCode::INTERNAL_SERVER_ERROR,
        Behaviour::FailUntilHealed if r.seen.lock().healed => StatusCode::OK,
        Behaviour::FailUntilHealed => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A loopback HTTP receiver; its address and what it saw.
async fn start_receiver(secret: &str, behaviour: Behaviour) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = Receiver { secret: secret.as_bytes().to_vec(), behaviour, seen: seen.clone() };
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

fn secret_file(dir: &Path, name: &str, secret: &str, mode: u32) -> PathBuf {
    let path = dir.join(format!("{name}.secret"));
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn write_config(dir: &Path, hooks: &[(&str, String, PathBuf)], delivery: Value) -> PathBuf {
    let webhooks: Vec<Value> = hooks
        .iter()
        .map(|(name, url, secret)| {
            json!({ "name": name, "url": url, "events": ["*"], "secret_file": secret })
        })
        .collect();
    let path = dir.join("router.yaml");
    let text =
        serde_norway::to_string(&json!({ "webhooks": webhooks, "webhook_delivery": delivery }))
            .unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

async fn deliveries(router: &Router, query: &str) -> Vec<Value> {
    router.collect_pages(&format!("/v1/management/webhooks/deliveries?{query}")).await
}

#[tokio::test]
async fn security_events_arrive_signed_once_with_retries_and_no_receiver_blocking_another() {
    for backend in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let (good, good_seen) = start_receiver(SECRET, Behaviour::Ok).await;
        let (flaky, flaky_seen) = start_receiver(SECRET, Behaviour::FailOnce).await;
        let (hang, _) = start_receiver(SECRET, Behaviour::Hang).await;
        let (dead, _) = start_receiver(SECRET, Behaviour::Always500).await;
        // The attacker's receiver: it holds another secret, so nothing it gets verifies.
        let (wrong, wrong_seen) =
            start_receiver("another-secret-another-secret-xx", Behaviour::Ok).await;
        let secret = secret_file(dir.path(), "shared", SECRET, 0o600);
        let config = write_config(
            dir.path(),
            &[
                ("good", format!("http://{good}/hook?token=abc"), secret.clone()),
                ("flaky", format!("http://{flaky}/hook"), secret.clone()),
                ("hang", format!("http://{hang}/hook"), secret.clone()),
                ("dead", format!("http://{dead}/hook"), secret.clone()),
                ("wrong", format!("http://{wrong}/hook"), secret.clone()),
            ],
            json!({ "max_attempts": 3, "backoff_initial_ms": 100, "backoff_max_ms": 200,
                    "timeout_ms": 30000, "poll_interval_ms": 100 }),
        );
        let options = RouterOptions {
            extra_args: vec!["--config".into(), config.display().to_string()],
            ..RouterOptions::default()
        };
        let router = Router::start_with(&backend, options).await;

        // The configured webhooks: never the secret, the URL's query redacted.
        let listed = router.get_json("/v1/management/webhooks").await;
        assert_eq!(listed["data"].as_array().unwrap().len(), 5, "{listed}");
        assert_eq!(listed["data"][0]["url"], format!("http://{good}/hook?redacted"));
        assert!(!listed.to_string().contains(SECRET));

        // Three security events: a revoked agent, a failed rotation (of that revoked agent),
        // a refused enrollment (a used join key).
        let key = router.mint_join_key("webhook-agent").await;
        let (resp, _) = enroll(&router, &key.token, "webhook-agent").await;
        resp.assert_status(200);
        let agent_id = resp.json()["agent_id"].as_str().unwrap().to_string();
        router.revoke_agent(&agent_id).await.assert_status(200);
        let rotate = router
            .post_json(&format!("/v1/management/agents/{agent_id}/curve-rotate"), &json!({}))
            .await;
        assert!(rotate.status < 300, "{}", rotate.text);
        enroll(&router, &key.token, "replayer").await.0.assert_error(409, "join_key_used");

        let expected = ["agent.credentials_revoked", "enrollment.denied", "rotation.failed"];
        let types = |seen: &Arc<Mutex<Seen>>| {
            let mut t: Vec<String> = seen
                .lock()
                .verified
                .iter()
                .map(|(_, v)| v["type"].as_str().unwrap().to_string())
                .collect();
            t.sort();
            t
        };
        // Delivered to the good receiver while the hanging one still holds its deliveries.
        eventually("three verified deliveries", SETTLE, || async {
            (types(&good_seen) == expected).then_some(())
        })
        .await;
        {
            let seen = good_seen.lock();
            assert!(seen.rejected.is_empty(), "{:?}", seen.rejected);
            assert!(seen.posts.values().all(|n| *n == 1), "each once: {:?}", seen.posts);
            for raw in &seen.raw {
                assert!(!raw.contains(SECRET), "the secret was sent: {raw}");
                assert!(!raw.contains(&key.token), "the join key was sent: {raw}");
            }
            let revoked =
                seen.verified.iter().find(|(_, v)| v["type"] == "agent.credentials_revoked");
            assert_eq!(revoked.unwrap().1["agent_id"], agent_id.as_str());
            let failed = seen.verified.iter().find(|(_, v)| v["type"] == "rotation.failed");
            assert_eq!(failed.unwrap().1["details"]["failure_reason"], "revoked agent");
            let denied = seen.verified.iter().find(|(_, v)| v["type"] == "enrollment.denied");
            assert_eq!(denied.unwrap().1["credential"]["id"], key.id.as_str());
        }
        let hanging = deliveries(&router, "webhook=hang").await;
        assert!(
            hanging.iter().all(|d| d["status"] == "pending" && d["attempts"] == 0),
            "[{}] {hanging:?}",
            backend.name
        );

        // 500 then 200: retried, delivered on the second attempt.
        eventually("the flaky receiver's retries", SETTLE, || async {
            let d = deliveries(&router, "webhook=flaky&status=delivered").await;
            (d.len() == 3).then_some(d)
        })
        .await
        .iter()
        .for_each(|d| assert_eq!(d["attempts"], 2, "{d}"));
        assert_eq!(types(&flaky_seen).len(), 6, "each POSTed twice, each verified");

        // Never 2xx: failed after the attempt limit, with the last answer kept.
        let failed = eventually("the dead receiver's deliveries to fail", SETTLE, || async {
            let d = deliveries(&router, "webhook=dead&status=failed").await;
            (d.len() == 3).then_some(d)
        })
        .await;
        for d in &failed {
            assert_eq!(
                (d["attempts"].as_i64(), d["last_status_code"].as_i64()),
                (Some(3), Some(500)),
                "{d}"
            );
        }
        // The receiver with the wrong secret refused everything it got (401 → retried →
        // failed), and verified nothing.
        eventually("the wrong-secret receiver's deliveries to fail", SETTLE, || async {
            let d = deliveries(&router, "webhook=wrong&status=failed").await;
            (d.len() == 3).then_some(())
        })
        .await;
        assert!(wrong_seen.lock().verified.is_empty());
        assert!(wrong_seen.lock().rejected.iter().all(|e| e.contains("does not match")));

        let delivered = router
            .metric(
                "xerotier_router_webhook_deliveries_total{webhook=\"good\",outcome=\"delivered\"}",
            )
            .await;
        assert_eq!(delivered, 3.0, "[{}]", backend.name);
        let out = xeroctl(
            &router,
            &["webhooks", "deliveries", "--webhook", "dead", "--status", "failed", "-o", "json"],
        )
        .success();
        let page: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(page["data"].as_array().unwrap().len(), 3, "{}", out.stdout);
        let out = xeroctl(&router, &["webhooks"]).success();
        assert!(out.stdout.contains("good") && !out.stdout.contains(SECRET), "{}", out.stdout);
    }
}

fn with_config(config: &Path) -> RouterOptions {
    RouterOptions {
        extra_args: vec!["--config".into(), config.display().to_string()],
        ..RouterOptions::default()
    }
}

/// One security event: a used join key presented again (`enrollment.denied`).
async fn security_event(router: &Router, name: &str) {
    let key = router.mint_join_key(name).await;
    enroll(router, &key.token, name).await.0.assert_status(200);
    let again = format!("{name}-again");
    enroll(router, &key.token, &again).await.0.assert_error(409, "join_key_used");
}

fn retry_path(id: &str) -> String {
    format!("/v1/management/webhooks/deliveries/{id}/retry")
}

/// How many times the router logged `message`.
fn logged(router: &Router, message: &str) -> usize {
    router.logs().lines().filter(|l| l.contains(message)).count()
}

async fn reloaded(router: &Router, message: &str, times: usize) {
    eventually(&format!("{message:?} logged {times} times"), SETTLE, || async {
        (logged(router, message) >= times).then_some(())
    })
    .await;
}

async fn webhook_names(router: &Router) -> Vec<String> {
    let listed = router.get_json("/v1/management/webhooks").await;
    listed["data"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap().into()).collect()
}

/// Two replicas on PostgreSQL whose dispatchers poll once a minute: a security event committed
/// through either replica is delivered within the deadline below, which only the wake-up its
/// `NOTIFY` gives every dispatcher can do; both dispatchers wake, and each event is still
/// created and sent once.
#[tokio::test]
async fn an_event_committed_on_any_replica_wakes_the_dispatchers_at_once() {
    let Some(backend) = backends().await.into_iter().find(|b| !b.is_sqlite()) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (addr, seen) = start_receiver(SECRET, Behaviour::Ok).await;
    let secret = secret_file(dir.path(), "soc", SECRET, 0o600);
    let hooks = [("soc", format!("http://{addr}/hook"), secret)];
    let config = write_config(dir.path(), &hooks, json!({ "poll_interval_ms": 60000 }));
    let a = Router::start_with(&backend, with_config(&config)).await;
    let b = a.replica().await;
    for (expected, (name, router)) in [("a", &a), ("b", &b)].into_iter().enumerate() {
        security_event(router, &format!("notified-{name}")).await;
        eventually(&format!("the event written on {name}, at once"), SETTLE, || async {
            (seen.lock().verified.len() > expected).then_some(())
        })
        .await;
    }
    let delivered = eventually("both deliveries recorded delivered", SETTLE, || async {
        let d = deliveries(&a, "webhook=soc&status=delivered").await;
        (d.len() == 2).then_some(d)
    })
    .await;
    let seen = seen.lock();
    assert_eq!(seen.verified.len(), 2, "{:?}", seen.raw);
    assert!(seen.posts.values().all(|n| *n == 1), "each delivery sent once: {:?}", seen.posts);
    assert!(seen.rejected.is_empty(), "{:?}", seen.rejected);
    for d in &delivered {
        assert_eq!(
            (d["event_type"].as_str(), d["attempts"].as_i64()),
            (Some("enrollment.denied"), Some(1)),
            "{d}"
        );
    }
}

#[tokio::test]
async fn an_operator_retries_a_failed_delivery_which_goes_out_at_once_audited_with_the_reason() {
    for backend in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let (addr, seen) = start_receiver(SECRET, Behaviour::FailUntilHealed).await;
        let secret = secret_file(dir.path(), "soc", SECRET, 0o600);
        let hooks = [("soc", format!("http://{addr}/hook"), secret)];
        let fast = json!({ "max_attempts": 2, "backoff_initial_ms": 100, "backoff_max_ms": 100,
                           "poll_interval_ms": 100 });
        let config = write_config(dir.path(), &hooks, fast);
        let router = Router::start_with(&backend, with_config(&config)).await;
        security_event(&router, "retry-agent").await;
        let failed = eventually("the delivery to fail", SETTLE, || async {
            let d = deliveries(&router, "webhook=soc&status=failed").await;
            (d.len() == 1).then(|| d[0].clone())
        })
        .await;
        assert_eq!(
            (failed["attempts"].as_i64(), failed["last_status_code"].as_i64()),
            (Some(2), Some(500)),
            "{failed}"
        );
        let id = failed["id"].as_str().unwrap().to_string();

        // From here the dispatcher polls once a minute: only the wake-up a retry gives it can
        // send the retried delivery within the deadline below.
        let slow = json!({ "max_attempts": 2, "backoff_initial_ms": 100, "backoff_max_ms": 100,
                           "poll_interval_ms": 60000 });
        write_config(dir.path(), &hooks, slow);
        router.send_sighup();
        reloaded(&router, "webhooks reloaded", 1).await;

        // --dry-run: the delivery that would be retried; nothing changes, nothing is audited.
        let before = deliveries(&router, "").await;
        let args = ["webhooks", "deliveries", "--retry", &id, "--reason", "dry", "--dry-run"];
        let dry = xeroctl(&router, &[&args[..], &["-o", "json"][..]].concat()).success().json();
        assert_eq!(
            (dry["id"].as_str(), dry["status"].as_str(), dry["attempts"].as_i64()),
            (Some(id.as_str()), Some("failed"), Some(2)),
            "{dry}"
        );
        let text = xeroctl(&router, &args).success();
        assert!(
            text.stdout.contains("dry run: nothing changed") && text.stdout.contains(&id),
            "{}",
            text.stdout
        );
        assert_eq!(deliveries(&router, "").await, before, "[{}] a dry run changed", backend.name);
        assert!(router.audit("action=webhook_delivery.retry").await.is_empty());
        assert_eq!(seen.lock().posts.get(&id), Some(&2));

        // The receiver is fixed; the operator retries; the delivery goes out at once.
        seen.lock().healed = true;
        let reason = "receiver fixed (INC-42)";
        let args = ["webhooks", "deliveries", "--retry", &id, "--reason", reason, "-o", "json"];
        let retried = xeroctl(&router, &args).success().json();
        assert_eq!(
            (retried["id"].as_str(), retried["status"].as_str(), retried["attempts"].as_i64()),
            (Some(id.as_str()), Some("pending"), Some(0)),
            "{retried}"
        );
        let delivered = eventually("the retried delivery, at once", SETTLE, || async {
            let d = deliveries(&router, "webhook=soc&status=delivered").await;
            (d.len() == 1).then(|| d[0].clone())
        })
        .await;
        assert_eq!(
            (delivered["id"].as_str(), delivered["attempts"].as_i64()),
            (Some(id.as_str()), Some(1)),
            "{delivered}"
        );
        {
            let seen = seen.lock();
            assert_eq!(seen.posts.get(&id), Some(&3), "the same delivery id, a third time");
            assert!(seen.rejected.is_empty(), "{:?}", seen.rejected);
        }
        let audit = router.audit("action=webhook_delivery.retry").await;
        assert_eq!(audit.len(), 1, "{audit:?}");
        let record = &audit[0];
        assert_eq!(record["outcome"], "success", "{record}");
        assert_eq!(record["reason"], reason, "{record}");
        assert_eq!(record["target_id"], id.as_str(), "{record}");
        assert_eq!(record["target_name"], "soc", "{record}");
        assert_eq!(record["actor_key_id"], router.admin_key_id().await.as_str(), "{record}");
        assert_eq!(record["details"]["from"], "failed", "{record}");
        assert_eq!(record["details"]["attempts"], 2, "{record}");
    }
}

#[tokio::test]
async fn a_retry_is_refused_for_a_malformed_id_a_key_without_the_scope_and_a_pending_delivery() {
    for backend in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let (hang, _) = start_receiver(SECRET, Behaviour::Hang).await;
        let (dead, _) = start_receiver(SECRET, Behaviour::Always500).await;
        let secret = secret_file(dir.path(), "shared", SECRET, 0o600);
        let config = write_config(
            dir.path(),
            &[
                ("hang", format!("http://{hang}/hook"), secret.clone()),
                ("dead", format!("http://{dead}/hook"), secret),
            ],
            // One attempt; the hanging receiver holds its delivery pending past the test.
            json!({ "max_attempts": 1, "timeout_ms": 60000, "poll_interval_ms": 100 }),
        );
        let router = Router::start_with(&backend, with_config(&config)).await;
        security_event(&router, "refusals-agent").await;
        let failed = eventually("the dead receiver's delivery to fail", SETTLE, || async {
            let d = deliveries(&router, "webhook=dead&status=failed").await;
            (d.len() == 1).then(|| d[0]["id"].as_str().unwrap().to_string())
        })
        .await;
        let pending = deliveries(&router, "webhook=hang&status=pending").await;
        assert_eq!(pending.len(), 1, "{pending:?}");
        let pending = pending[0]["id"].as_str().unwrap().to_string();
        let before = deliveries(&router, "").await;
        let (api, admin) = (router.api(), Some(router.admin_key()));

        // Out of the id's format: 400 naming `id`, before anything is looked up.
        let overlong = format!("del_{}", "0".repeat(4_000));
        let longer = format!("{failed}0");
        for (id, what) in [
            ("..%2F..%2Fapi-keys", "path traversal"),
            ("del_..%2F..%2F..%2Fv1%2Fmanagement%2Fapi-keys", "traversal behind the prefix"),
            (overlong.as_str(), "overlong"),
            (longer.as_str(), "a real id and one more character"),
            ("key_01m8sbce9k2rcej9fhvv8jg3pq", "another kind's id"),
            ("sev_01m8sbce9k2rcej9fhvv8jg3pq", "the event's id"),
            ("del_01M8SBCE9K2RCEJ9FHVV8JG3PQ", "upper case"),
            ("del_01m8sbce9k2rcej9fhvv8jg3p%00", "a NUL"),
            ("del_01m8sbce9k2rcej9fhvv8jg3p%27", "a quote"),
        ] {
            let resp = api.post(&retry_path(id), admin, &json!({ "reason": "probe" })).await;
            resp.assert_error(400, "invalid_request");
            assert_eq!(resp.json()["error"]["param"], "id", "{what}: {}", resp.text);
            assert!(!resp.text.contains("0000000000"), "{what}: the input is not echoed");
        }
        // A reason no column holds.
        for reason in [json!("a\u{0}b"), json!("r".repeat(1_025))] {
            let resp = api.post(&retry_path(&failed), admin, &json!({ "reason": reason })).await;
            resp.assert_error(400, "invalid_request");
            assert_eq!(resp.json()["error"]["param"], "reason", "{}", resp.text);
        }
        // xeroctl: another kind's id never leaves it; a traversal is sent as one segment.
        let out = xeroctl(&router, &["webhooks", "deliveries", "--retry", "key_x"]).failure();
        assert_eq!(out.status.code(), Some(2), "{}", out.all());
        let out = xeroctl(&router, &["webhooks", "deliveries", "--retry", "del_../../api-keys"])
            .failure();
        assert_eq!(out.status.code(), Some(3), "{}", out.all());
        assert!(out.stderr.contains("del_"), "{}", out.stderr);

        // Unknown: 404.
        let unknown = "del_01m8sbce9k2rcej9fhvv8jg3pq";
        api.post(&retry_path(unknown), admin, &json!({})).await.assert_error(404, "not_found");
        let out = xeroctl(&router, &["webhooks", "deliveries", "--retry", unknown]).failure();
        assert_eq!(out.status.code(), Some(4), "{}", out.all());

        // Without a key, or with a key without the management scope: 401, 403.
        api.post(&retry_path(&failed), None, &json!({})).await.assert_error(401, "missing_api_key");
        let exec_key = router.create_key("exec-only", &["execution"]).await;
        api.post(&retry_path(&failed), Some(&exec_key.value), &json!({}))
            .await
            .assert_error(403, "scope_insufficient");
        let args = ["webhooks", "deliveries", "--retry", &failed];
        let out = xeroctl_with_key(&router, &exec_key.value, &args).failure();
        assert_eq!(out.status.code(), Some(5), "{}", out.all());

        // Still pending: 409, saying so; a dry run is refused alike.
        let resp = api.post(&retry_path(&pending), admin, &json!({ "reason": "impatient" })).await;
        resp.assert_error(409, "delivery_pending");
        let message = resp.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains("already pending"), "{message}");
        for dry in [false, true] {
            let mut args = vec!["webhooks", "deliveries", "--retry", &pending];
            if dry {
                args.push("--dry-run");
            }
            let out = xeroctl(&router, &args).failure();
            assert_eq!(out.status.code(), Some(3), "{}", out.all());
            assert!(out.stderr.contains("already pending"), "{}", out.stderr);
        }

        // Nothing changed; the refusals the store saw are audited as failed, none succeeded.
        assert_eq!(deliveries(&router, "").await, before, "[{}]", backend.name);
        let audit = router.audit("action=webhook_delivery.retry").await;
        assert!(audit.iter().all(|r| r["outcome"] == "failed"), "{audit:?}");
        let refused_pending = audit
            .iter()
            .filter(|r| {
                r["target_id"] == pending.as_str() && r["details"]["error"] == "delivery_pending"
            })
            .count();
        assert_eq!(refused_pending, 2, "the API's and xeroctl's, not the dry run's: {audit:?}");
        assert!(audit.iter().all(|r| r["target_id"] != failed.as_str()), "{audit:?}");
    }
}

#[tokio::test]
async fn sighup_swaps_the_webhooks_for_the_config_files_and_keeps_them_when_the_file_is_bad() {
    const SECRET_B: &str = "bravo-secret-bravo-secret-bravo-secret";
    for backend in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let (alpha, alpha_seen) = start_receiver(SECRET, Behaviour::Ok).await;
        let (bravo, bravo_seen) = start_receiver(SECRET_B, Behaviour::Ok).await;
        let alpha_secret = secret_file(dir.path(), "alpha", SECRET, 0o600);
        let bravo_secret = secret_file(dir.path(), "bravo", SECRET_B, 0o600);
        let delivery = json!({ "poll_interval_ms": 100 });
        let config = write_config(
            dir.path(),
            &[("alpha", format!("http://{alpha}/hook"), alpha_secret)],
            delivery.clone(),
        );
        let router = Router::start_with(&backend, with_config(&config)).await;
        let verified = |seen: &Arc<Mutex<Seen>>| seen.lock().verified.len();
        security_event(&router, "before-reload").await;
        eventually("alpha to get the first event", SETTLE, || async {
            (verified(&alpha_seen) == 1).then_some(())
        })
        .await;

        // Rewritten to bravo only, and SIGHUP: swapped in, the change logged by name.
        write_config(
            dir.path(),
            &[("bravo", format!("http://{bravo}/hook"), bravo_secret.clone())],
            delivery.clone(),
        );
        router.send_sighup();
        reloaded(&router, "webhooks reloaded", 1).await;
        let logs = router.logs();
        let line = logs.lines().find(|l| l.contains("webhooks reloaded")).unwrap();
        assert!(
            line.contains(r#"added=["bravo"]"#) && line.contains(r#"removed=["alpha"]"#),
            "{line}"
        );
        assert_eq!(webhook_names(&router).await, ["bravo"]);

        security_event(&router, "after-reload").await;
        eventually("bravo to get the second event", SETTLE, || async {
            (verified(&bravo_seen) == 1).then_some(())
        })
        .await;
        // Bravo starts at the reload (not sent the first event); alpha is sent nothing more.
        let to_bravo = deliveries(&router, "webhook=bravo").await;
        assert_eq!(to_bravo.len(), 1, "{to_bravo:?}");
        let to_alpha = deliveries(&router, "webhook=alpha").await;
        assert_eq!(to_alpha.len(), 1, "{to_alpha:?}");
        assert_eq!(verified(&alpha_seen), 1);

        // Alpha's settled delivery cannot be retried now that alpha is gone: 409, saying what
        // to do, nothing changed, the refusal audited; xeroctl exits 3.
        let alpha_delivery = to_alpha[0]["id"].as_str().unwrap().to_string();
        let resp = router
            .api()
            .post(
                &retry_path(&alpha_delivery),
                Some(router.admin_key()),
                &json!({ "reason": "replay" }),
            )
            .await;
        resp.assert_error(409, "webhook_not_configured");
        let message = resp.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains("\"alpha\"") && message.contains("SIGHUP"), "{message}");
        let out =
            xeroctl(&router, &["webhooks", "deliveries", "--retry", &alpha_delivery]).failure();
        assert_eq!(out.status.code(), Some(3), "{}", out.all());
        assert_eq!(deliveries(&router, "webhook=alpha").await, to_alpha);
        let audit = router.audit("action=webhook_delivery.retry").await;
        assert!(
            audit.len() == 2
                && audit.iter().all(|r| r["outcome"] == "failed"
                    && r["details"]["error"] == "webhook_not_configured"),
            "{audit:?}"
        );

        // A bad file, three ways, each with SIGHUP: refused, bravo stays, the router serves.
        let open = secret_file(dir.path(), "open", SECRET_B, 0o644);
        write_config(dir.path(), &[("charlie", format!("http://{bravo}/hook"), open)], delivery);
        router.send_sighup();
        reloaded(&router, "webhooks not reloaded", 1).await;
        std::fs::write(&config, "webhooks: [this is: not yaml").unwrap();
        router.send_sighup();
        reloaded(&router, "webhooks not reloaded", 2).await;
        std::fs::remove_file(&config).unwrap();
        router.send_sighup();
        reloaded(&router, "webhooks not reloaded", 3).await;
        router.api().get("/healthz", None).await.assert_status(200);
        assert_eq!(webhook_names(&router).await, ["bravo"]);
        assert_eq!(logged(&router, "webhooks reloaded"), 1);

        security_event(&router, "after-bad-reloads").await;
        eventually("bravo to get the third event", SETTLE, || async {
            (verified(&bravo_seen) == 2).then_some(())
        })
        .await;
        assert_eq!(verified(&alpha_seen), 1);
        assert!(bravo_seen.lock().rejected.is_empty());
        let logs = router.logs();
        assert!(logs.contains("mode 0644"), "the refusal says why");
        assert!(!logs.contains(SECRET) && !logs.contains(SECRET_B), "a secret was logged");
    }
}

/// The router refuses to start with an unsafe webhook, saying why.
fn refused_at_start(config: &Path) -> String {
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary(ROUTER_BIN))
        .args(["--listen", "127.0.0.1:0", "--mesh-bind", "tcp://127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(state.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for_exit(&mut child, SETTLE).expect("the router should refuse to start");
    assert!(!status.success());
    let out = child.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_plain_http_url_off_loopback_or_a_readable_secret_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let good = secret_file(dir.path(), "good", SECRET, 0o600);
    let config =
        write_config(dir.path(), &[("soc", "http://siem.example/hooks".into(), good)], json!({}));
    let out = refused_at_start(&config);
    assert!(out.contains("not loopback") && out.contains("https://"), "{out}");
    let open = secret_file(dir.path(), "open", SECRET, 0o644);
    let config =
        write_config(dir.path(), &[("soc", "https://siem.example/h".into(), open)], json!({}));
    let out = refused_at_start(&config);
    assert!(out.contains("mode 0644") && out.contains("chmod 600"), "{out}");
}

/// Metric names the alert rules use that a router does not export yet, and why. Remove an
/// entry when what adds the metric is merged; the test then holds the rule to it.
const NOT_EXPORTED_YET: &[(&str, &str)] = &[];

#[tokio::test]
async fn every_metric_the_alert_rules_use_is_exported_by_the_router() {
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/xerotier-alerts.yaml"),
    )
    .unwrap();
    let doc: Value = serde_norway::from_str(&rules).unwrap();
    let mut used = std::collections::BTreeSet::new();
    for group in doc["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            let mut word = String::new();
            for c in expr.chars().chain(std::iter::once(' ')) {
                if c.is_ascii_alphanumeric() || c == '_' {
                    word.push(c);
                } else {
                    if word.starts_with("xerotier_") {
                        used.insert(std::mem::take(&mut word));
                    }
                    word.clear();
                }
            }
        }
    }
    assert!(!used.is_empty());
    let backend = backends().await.remove(0);
    let router = Router::start(&backend).await;
    let text = router.api().get("/metrics", None).await.text;
    let mut exported = std::collections::BTreeSet::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            exported.insert(name.to_string());
            match kind {
                "counter" => {
                    exported.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        exported.insert(format!("{name}{s}"));
                    }
                }
                _ => {}
            }
        }
    }
    for name in &used {
        let excused = NOT_EXPORTED_YET.iter().any(|(n, _)| n == name);
        assert!(
            exported.contains(name) != excused,
            "{name}: exported {}, listed as not exported yet {excused}",
            exported.contains(name)
        );
    }
}
