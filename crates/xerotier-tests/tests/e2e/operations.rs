//! Fleet-wide emergency operations end to end (issue 13 item 4): a real router, real XEMs (some
//! frozen with the `never_ack` test fault, some offline), `xeroctl` creating, following,
//! resuming and detaching from operations, and the router restarted mid-operation. Every test
//! runs against SQLite and PostgreSQL.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fleet_harness::{AGENT_DEADLINE, EXIT_REVOKED, Xem};
use crate::harness::{Router, RouterOptions, Xeroctl, backends, eventually, xeroctl};

/// Rotation acknowledgement timeout of these routers (seconds): a frozen agent fails this fast.
const ACK_TIMEOUT_S: &str = "2";
const SETTLE: Duration = Duration::from_secs(40);
/// `xeroctl`'s status for a halted, cancelled or failed operation.
const EXIT_OPERATION_INCOMPLETE: i32 = 10;

async fn start_router(backend: &crate::harness::Backend) -> Router {
    let options = RouterOptions {
        extra_args: vec!["--curve-rotation-ack-timeout-seconds".into(), ACK_TIMEOUT_S.into()],
        ..RouterOptions::fixed_mesh_port()
    };
    Router::start_with(backend, options).await
}

/// A XEM enrolled with a join key minted with `body` (by `key`, the admin's by default),
/// optionally frozen (`never_ack`); waits until active. Returns it with its agent id.
async fn agent(
    router: &Router,
    name: &str,
    body: Value,
    key: Option<&str>,
    fault: Option<&str>,
) -> (Xem, String) {
    let mut body = body;
    body["name"] = json!(format!("{name}-key"));
    body["router_addr"] = json!(router.mesh_addr());
    let resp = router
        .api()
        .post("/v1/management/join-keys", Some(key.unwrap_or(router.admin_key())), &body)
        .await;
    resp.assert_status(201);
    let token = resp.json()["token"].as_str().expect("token").to_string();
    let mut xem = Xem::new(router, name);
    xem.fault = fault.map(str::to_string);
    xem.start(Some(&token));
    let id = xem.wait_enrolled().await;
    router.wait_agent_status(&id, "active", AGENT_DEADLINE).await;
    (xem, id)
}

async fn operation(router: &Router, id: &str) -> Value {
    router.get_json(&format!("/v1/management/operations/{id}")).await
}

async fn wait_status(router: &Router, id: &str, status: &str) -> Value {
    eventually(&format!("[{}] operation {id} to be {status}", router.backend), SETTLE, || async {
        let op = operation(router, id).await;
        (op["status"] == status).then_some(op)
    })
    .await
}

/// Target id → (status, reason).
fn results(op: &Value) -> Vec<(String, String, String)> {
    op["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| {
            (
                t["target_id"].as_str().unwrap().to_string(),
                t["status"].as_str().unwrap().to_string(),
                t["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn result_of(op: &Value, target: &str) -> (String, String) {
    results(op)
        .into_iter()
        .find(|(id, _, _)| id == target)
        .map(|(_, status, reason)| (status, reason))
        .unwrap_or_else(|| panic!("{target} is not in {op}"))
}

fn op_id_in(text: &str) -> String {
    let start = text.find("op_").unwrap_or_else(|| panic!("no operation id in {text}"));
    text[start..start + 29].to_string()
}

// A fleet rotation of five agents, two frozen (they never acknowledge) in the first wave and
// one offline: it halts after that wave (2 failures > 1), one frozen agent is thawed, resume
// with --retry-failed finishes it: the thawed one rotates, the other fails again (1 failure
// since the resume is tolerated), the offline one is skipped, not failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_rotation_with_frozen_agents_halts_at_the_threshold_resumes_and_finishes() {
    for backend in backends().await {
        let router = start_router(&backend).await;
        let (_frozen, frozen_id) =
            agent(&router, "frozen-1", json!({}), None, Some("never_ack")).await;
        let (mut thawed, thawed_id) =
            agent(&router, "frozen-2", json!({}), None, Some("never_ack")).await;
        let (_ok1, ok1) = agent(&router, "ok-1", json!({}), None, None).await;
        let (_ok2, ok2) = agent(&router, "ok-2", json!({}), None, None).await;
        let (mut offline, offline_id) = agent(&router, "offline-1", json!({}), None, None).await;
        offline.kill();
        router.wait_agent_status(&offline_id, "disconnected", AGENT_DEADLINE).await;

        let out = xeroctl(
            &router,
            &[
                "agents",
                "curve-rotate",
                "--all",
                "--reason",
                "suspected leak",
                "--wave-size",
                "2",
                "--max-failures",
                "1",
                "--yes",
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(EXIT_OPERATION_INCOMPLETE),
            "[{}] {}",
            backend.name,
            out.all()
        );
        let id = op_id_in(&out.all());
        let op = operation(&router, &id).await;
        assert_eq!(op["status"], "halted", "[{}] {op}", backend.name);
        assert_eq!(op["current_wave"], 1, "halted after the first wave: {op}");
        for frozen in [&frozen_id, &thawed_id] {
            assert_eq!(result_of(&op, frozen), ("failed".into(), "acknowledgement timeout".into()));
        }
        for untouched in [&ok1, &ok2, &offline_id] {
            assert_eq!(result_of(&op, untouched).0, "pending", "nothing after the halting wave");
        }
        assert!(out.stderr.contains("--resume"), "the CLI says what to do next: {}", out.stderr);

        // Thaw one frozen agent; resume with the failed ones retried.
        thawed.stop_with_sigterm();
        thawed.fault = None;
        thawed.restart();
        let since =
            router.agent(&thawed_id).await["last_heartbeat_at"].as_str().unwrap_or("").to_string();
        eventually("the thawed agent back", SETTLE, || async {
            let a = router.agent(&thawed_id).await;
            (a["status"] == "active"
                && a["last_heartbeat_at"].as_str().unwrap_or("") > since.as_str())
            .then_some(())
        })
        .await;
        let out = xeroctl(&router, &["operations", &id, "--resume", "--retry-failed"]);
        assert_eq!(out.status.code(), Some(0), "[{}] {}", backend.name, out.all());
        let op = operation(&router, &id).await;
        assert_eq!(op["status"], "completed", "{op}");
        assert_eq!(result_of(&op, &frozen_id), ("failed".into(), "acknowledgement timeout".into()));
        assert_eq!(result_of(&op, &thawed_id).0, "succeeded", "{op}");
        assert_eq!(result_of(&op, &ok1).0, "succeeded");
        assert_eq!(result_of(&op, &ok2).0, "succeeded");
        assert_eq!(result_of(&op, &offline_id), ("skipped".into(), "offline".into()));
        assert_eq!(
            (op["succeeded"].as_u64(), op["failed"].as_u64(), op["skipped"].as_u64()),
            (Some(3), Some(1), Some(1))
        );
        // The final table: agent → result/reason.
        let table = out.stdout.clone();
        for (agent_id, result) in
            [(&frozen_id, "acknowledgement timeout"), (&offline_id, "offline"), (&ok1, "succeeded")]
        {
            let row = table
                .lines()
                .find(|l| l.contains(agent_id.as_str()))
                .unwrap_or_else(|| panic!("{agent_id} in {table}"));
            assert!(row.contains(result), "{row}");
        }
        // Audited: the creation, the halt, the resume, the end; one rotation record per agent
        // request, each naming the operation.
        for action in ["operation.create", "operation.halt", "operation.resume", "operation.end"] {
            assert_eq!(
                router.audit(&format!("action={action}&target_id={id}")).await.len(),
                1,
                "{action}"
            );
        }
        let rotations =
            router.audit(&format!("action=agent.curve_rotate&correlation_id={id}")).await;
        assert!(
            rotations.len() >= 6,
            "every rotation request is audited under the operation: {rotations:?}"
        );
    }
}

/// Everything a dry run could change.
async fn snapshot(router: &Router) -> Value {
    let agents = router.all_agents().await;
    let mut events = Vec::new();
    for agent in &agents {
        let id = agent["id"].as_str().unwrap();
        events.push(router.collect_pages(&format!("/v1/management/agents/{id}/events")).await);
    }
    json!({
        "agents": agents,
        "events": events,
        "join_keys": router.all_join_keys().await,
        "operations": router.collect_pages("/v1/management/operations").await,
        "audit": router.collect_pages("/v1/management/audit").await,
    })
}

fn without_heartbeats(mut snapshot: Value) -> Value {
    for agent in snapshot["agents"].as_array_mut().unwrap() {
        agent["last_heartbeat_at"] = Value::Null;
        agent["status"] = Value::Null;
    }
    snapshot
}

// Every dry run prints the plan and changes nothing: agents, their events (rotations), join
// keys, operations and the audit log are the same before and after.
#[tokio::test(flavor = "multi_thread")]
async fn every_dry_run_changes_nothing() {
    for backend in backends().await {
        let router = start_router(&backend).await;
        let (_a, a) = agent(&router, "dry-a", json!({ "region": "eu" }), None, None).await;
        let (_b, _) = agent(&router, "dry-b", json!({ "region": "us" }), None, None).await;
        let agent_a = router.agent(&a).await;
        let jk = agent_a["join_key_id"].as_str().unwrap().to_string();
        router.mint_join_key("spare-1").await;
        router.mint_join_key("spare-2").await;
        // Each agent's start-up reload is an event of its own: taken before the snapshot, so
        // only what the dry runs do can differ.
        for agent in router.all_agents().await {
            let id = agent["id"].as_str().unwrap().to_string();
            eventually(&format!("{id}'s start-up reload"), SETTLE, || async {
                let events =
                    router.collect_pages(&format!("/v1/management/agents/{id}/events")).await;
                events.iter().any(|e| e["type"] == "credentials_reloaded").then_some(())
            })
            .await;
        }
        let before = without_heartbeats(snapshot(&router).await);
        let runs: [&[&str]; 5] = [
            &["agents", "curve-rotate", "--all", "--reason", "drill", "--dry-run"],
            &[
                "agents",
                "curve-rotate",
                "--region",
                "eu",
                "--reason",
                "drill",
                "--wave-size",
                "1",
                "--dry-run",
            ],
            &[
                "agents",
                "join-keys",
                "--revoke",
                "--all-unconsumed",
                "--reason",
                "drill",
                "--dry-run",
            ],
            &[
                "agents",
                "revoke-credentials",
                "--enrolled-via",
                &jk,
                "--reason",
                "drill",
                "--dry-run",
            ],
            &[
                "agents",
                "revoke-credentials",
                "--region",
                "us",
                "--reason",
                "drill",
                "--dry-run",
                "-o",
                "json",
            ],
        ];
        for args in runs {
            let out = xeroctl(&router, args).success();
            assert!(
                out.stdout.contains("agt_") || out.stdout.contains("jk_"),
                "the plan lists targets: {}",
                out.stdout
            );
        }
        let plan = xeroctl(
            &router,
            &[
                "agents",
                "curve-rotate",
                "--all",
                "--reason",
                "d",
                "--wave-size",
                "1",
                "--dry-run",
                "-o",
                "json",
            ],
        )
        .success()
        .json();
        assert_eq!(
            (plan["target_count"].as_u64(), plan["wave_count"].as_u64()),
            (Some(2), Some(2)),
            "{plan}"
        );
        assert_eq!(plan["targets"][0]["target_id"], a.as_str(), "{plan}");
        let resp = router
            .post_json("/v1/management/operations", &json!({ "kind": "revoke_agents", "selector": { "region": "eu" }, "reason": "r", "dry_run": true }))
            .await;
        resp.assert_status(200);
        assert_eq!(resp.json()["targets"][0]["target_id"], a.as_str());
        let after = without_heartbeats(snapshot(&router).await);
        assert_eq!(before, after, "[{}] a dry run changed something", backend.name);
    }
}

fn revoked(agents: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = agents
        .iter()
        .filter(|a| a["status"] == "revoked")
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    ids.sort();
    ids
}

// A fleet of agents enrolled via join keys minted by two API keys in two regions: revoking by
// join key, by minting key and by region revokes exactly the selected agents (their XEMs are
// cut off and exit 3) and no other; join keys by name prefix and region likewise.
#[tokio::test(flavor = "multi_thread")]
async fn blast_radius_revocations_revoke_exactly_the_selected_set() {
    for backend in backends().await {
        let router = start_router(&backend).await;
        let k1 = router.create_key("minter-1", &["management"]).await;
        let k2 = router.create_key("minter-2", &["management"]).await;
        let (mut e1, e1_id) =
            agent(&router, "e1", json!({ "region": "eu" }), Some(&k1.value), None).await;
        let (mut u1, u1_id) =
            agent(&router, "u1", json!({ "region": "us" }), Some(&k1.value), None).await;
        let (mut u2, u2_id) =
            agent(&router, "u2", json!({ "region": "us" }), Some(&k2.value), None).await;
        let (mut e2, e2_id) =
            agent(&router, "e2", json!({ "region": "eu" }), Some(&k2.value), None).await;
        let (_bystander, bystander_id) =
            agent(&router, "ap1", json!({ "region": "ap" }), None, None).await;
        let e1_key = router.agent(&e1_id).await["join_key_id"].as_str().unwrap().to_string();

        xeroctl(
            &router,
            &[
                "agents",
                "revoke-credentials",
                "--enrolled-via",
                &e1_key,
                "--reason",
                "leak",
                "--yes",
            ],
        )
        .success();
        assert_eq!(
            revoked(&router.all_agents().await),
            sorted(&[&e1_id]),
            "[{}] by join key",
            backend.name
        );
        assert_eq!(e1.wait_exit(AGENT_DEADLINE).code(), Some(EXIT_REVOKED), "its session is cut");

        xeroctl(
            &router,
            &["agents", "revoke-credentials", "--minted-by", &k2.id, "--reason", "leak", "--yes"],
        )
        .success();
        assert_eq!(
            revoked(&router.all_agents().await),
            sorted(&[&e1_id, &u2_id, &e2_id]),
            "by minting key"
        );
        assert_eq!(u2.wait_exit(AGENT_DEADLINE).code(), Some(EXIT_REVOKED));
        assert_eq!(e2.wait_exit(AGENT_DEADLINE).code(), Some(EXIT_REVOKED));

        xeroctl(
            &router,
            &["agents", "revoke-credentials", "--region", "us", "--reason", "leak", "--yes"],
        )
        .success();
        assert_eq!(
            revoked(&router.all_agents().await),
            sorted(&[&e1_id, &u2_id, &e2_id, &u1_id]),
            "by region"
        );
        assert_eq!(u1.wait_exit(AGENT_DEADLINE).code(), Some(EXIT_REVOKED));
        assert_eq!(router.agent(&bystander_id).await["status"], "active", "the bystander stays");

        // Join keys: by name prefix and region, then all the unconsumed rest.
        let batch_eu =
            router.mint_join_key_with(json!({ "name": "batch-a-1", "region": "eu" })).await.id;
        let batch_us =
            router.mint_join_key_with(json!({ "name": "batch-a-2", "region": "us" })).await.id;
        let other_us =
            router.mint_join_key_with(json!({ "name": "other-1", "region": "us" })).await.id;
        xeroctl(
            &router,
            &[
                "agents",
                "join-keys",
                "--revoke",
                "--all-unconsumed",
                "--name-prefix",
                "batch-a",
                "--region",
                "us",
                "--reason",
                "leak",
                "--yes",
            ],
        )
        .success();
        let state = |keys: &[Value], id: &str| {
            keys.iter().find(|k| k["id"] == id).unwrap()["state"].clone()
        };
        let keys = router.all_join_keys().await;
        assert_eq!(
            (state(&keys, &batch_eu), state(&keys, &batch_us), state(&keys, &other_us)),
            (json!("active"), json!("revoked"), json!("active"))
        );
        xeroctl(
            &router,
            &["agents", "join-keys", "--revoke", "--all-unconsumed", "--reason", "leak", "--yes"],
        )
        .success();
        let keys = router.all_join_keys().await;
        assert!(keys.iter().all(|k| k["state"] != "active"), "{keys:?}");
        // Each revocation is audited on its own, under its operation.
        let ops = router.collect_pages("/v1/management/operations").await;
        assert_eq!(ops.len(), 5);
        assert!(ops.iter().all(|o| o["status"] == "completed"), "{ops:?}");
        let by_region = &ops[2]["id"];
        let records = router
            .audit(&format!(
                "action=agent.revoke_credentials&correlation_id={}",
                by_region.as_str().unwrap()
            ))
            .await;
        assert_eq!(records.len(), 1, "{records:?}");
    }
}

// An operation survives the CLI detaching and a router killed mid-operation: the restarted
// router takes it over once the dead one's lease ran out, and `xeroctl operations op_…
// --follow` shows it finish.
#[tokio::test(flavor = "multi_thread")]
async fn an_operation_survives_the_cli_detaching_and_a_router_restart() {
    for backend in backends().await {
        let mut router = start_router(&backend).await;
        // The first wave waits for the frozen agent's timeout: time to kill the router in it.
        let (_frozen, frozen_id) = agent(&router, "slow", json!({}), None, Some("never_ack")).await;
        let (_a, a) = agent(&router, "after-1", json!({}), None, None).await;
        let (_b, b) = agent(&router, "after-2", json!({}), None, None).await;
        let out = xeroctl(
            &router,
            &[
                "agents",
                "curve-rotate",
                "--all",
                "--reason",
                "drill",
                "--wave-size",
                "1",
                "--max-failures",
                "5",
                "--detach",
                "--yes",
            ],
        )
        .success();
        let id = op_id_in(&out.all());
        assert!(
            out.stderr.contains(&format!("xeroctl operations {id} --follow")),
            "{}",
            out.stderr
        );
        eventually("the first wave in flight", SETTLE, || async {
            let op = operation(&router, &id).await;
            (result_of(&op, &frozen_id).0 == "running").then_some(())
        })
        .await;
        router.kill();
        router.restart().await;
        let out = Xeroctl::for_router(&router).run(&["operations", &id, "--follow"]);
        assert_eq!(out.status.code(), Some(0), "[{}] {}", backend.name, out.all());
        let op = operation(&router, &id).await;
        assert_eq!(op["status"], "completed", "{op}");
        assert_eq!(result_of(&op, &frozen_id), ("failed".into(), "acknowledgement timeout".into()));
        assert_eq!(result_of(&op, &a).0, "succeeded", "{op}");
        assert_eq!(result_of(&op, &b).0, "succeeded", "{op}");
    }
}

// The attacker's side: an execution key is refused; hostile requests are 400 and create
// nothing (no operation, no audit record); an empty selection is 409; cancelling or resuming
// a finished operation is 409.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_create_nothing_and_finished_operations_refuse_changes() {
    for backend in backends().await {
        let router = crate::harness::Router::start(&backend).await;
        let exec = router.create_key("exec-only", &["execution"]).await;
        let body = json!({ "kind": "revoke_join_keys", "selector": { "all_unconsumed": true }, "reason": "r" });
        let api = router.api();
        api.post("/v1/management/operations", Some(&exec.value), &body)
            .await
            .assert_error(403, "scope_insufficient");
        api.get("/v1/management/operations", Some(&exec.value))
            .await
            .assert_error(403, "scope_insufficient");
        let audit_before = router.collect_pages("/v1/management/audit").await.len();
        let agents: Vec<String> =
            (0..1001).map(|_| "agt_01m8sbce9k2rcej9fhvv8jg3pq".to_string()).collect();
        let hostile = [
            json!({ "kind": "delete_everything", "selector": { "all": true }, "reason": "r" }),
            json!({ "kind": "curve_rotate", "selector": { "all": true }, "reason": "r", "wave_size": 0 }),
            json!({ "kind": "curve_rotate", "selector": { "all": true }, "reason": "r", "wave_size": 1_000_000_000u64 }),
            json!({ "kind": "curve_rotate", "selector": { "all": true }, "reason": "r", "max_failures": 10_001 }),
            json!({ "kind": "curve_rotate", "selector": { "agents": agents }, "reason": "r" }),
            json!({ "kind": "curve_rotate", "selector": { "agents": ["agt_'; DROP TABLE agents; --"] }, "reason": "r" }),
            json!({ "kind": "curve_rotate", "selector": { "all": true, "region": "eu" }, "reason": "r" }),
            json!({ "kind": "curve_rotate", "selector": { "all": true, "sneaky": 1 }, "reason": "r" }),
            json!({ "kind": "curve_rotate", "selector": { "all": true }, "reason": "   " }),
            json!({ "kind": "curve_rotate", "selector": { "all": true } }),
            json!({ "kind": "revoke_agents", "selector": { "enrolled_via": "jk_../../etc" }, "reason": "r" }),
            json!({ "kind": "revoke_agents", "selector": { "minted_by": "agt_01m8sbce9k2rcej9fhvv8jg3pq" }, "reason": "r" }),
            json!({ "kind": "revoke_join_keys", "selector": { "all_unconsumed": true, "name_prefix": "a b" }, "reason": "r" }),
        ];
        for body in &hostile {
            router
                .post_json("/v1/management/operations", body)
                .await
                .assert_error(400, "invalid_request");
        }
        router.post_json("/v1/management/operations", &json!({ "kind": "revoke_join_keys", "selector": { "all_unconsumed": true }, "reason": "r" })).await.assert_error(409, "nothing_selected");
        assert!(router.collect_pages("/v1/management/operations").await.is_empty());
        assert_eq!(
            router.collect_pages("/v1/management/audit").await.len(),
            audit_before,
            "nothing recorded"
        );
        router.get_json("/v1/management/operations").await;
        api.get("/v1/management/operations/op_nope", Some(router.admin_key()))
            .await
            .assert_error(404, "not_found");

        // A finished operation: cancel and resume are 409.
        router.mint_join_key("to-revoke").await;
        let resp = router.post_json("/v1/management/operations", &body).await;
        resp.assert_status(202);
        let id = resp.json()["id"].as_str().unwrap().to_string();
        wait_status(&router, &id, "completed").await;
        router
            .post_json(&format!("/v1/management/operations/{id}/cancel"), &json!({}))
            .await
            .assert_error(409, "operation_state");
        router
            .post_json(&format!("/v1/management/operations/{id}/resume"), &json!({}))
            .await
            .assert_error(409, "operation_state");
        let out = xeroctl(&router, &["operations", &id, "--cancel"]);
        assert_eq!(out.status.code(), Some(3), "{}", out.all());
    }
}
