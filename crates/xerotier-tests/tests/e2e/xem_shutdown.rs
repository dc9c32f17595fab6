//! A XEM with invocations in flight gets SIGTERM (issue #8: "exits within a few seconds having
//! finished or cleanly abandoned in-flight work"): it takes no new work, lets what can finish
//! within `shutdown_grace_seconds` finish, kills the rest when the grace period ends, reports
//! every result to the router before it exits, and exits 0 a few seconds past the grace.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fleet_harness::{AGENT_DEADLINE, LEASE_MS, Xem, XemConfig, copy_dir, examples_dir};
use crate::harness::{Router, backends, eventually, send_sigterm};

/// The XEM's `shutdown_grace_seconds` in this test.
const GRACE: Duration = Duration::from_secs(3);
/// How far past the grace the XEM may take to exit: killing the tools and sending their
/// results is quick; the agent's own bounds on it are 5 s (killed results) + 2 s (acks).
const EXIT_AFTER_GRACE: Duration = Duration::from_secs(5);
/// Invocations that end within the grace, and ones that cannot.
const SHORT: usize = 2;
const LONG: usize = 3;
/// Deadline for invocations and agents to settle.
const SETTLE: Duration = Duration::from_secs(30);
const WORKSPACE: &str = "kubernetes-prod";
const TERMINAL: [&str; 4] = ["succeeded", "failed", "timed_out", "cancelled"];

/// A XEM offering the example tools (among them `sleep`) with a short shutdown grace, enrolled
/// and `active`. The harness's flags do not include the grace, so the whole config is written.
async fn draining_xem(router: &Router) -> (Xem, String) {
    let join_key = router.mint_join_key("xem-shutdown-key").await;
    let mut xem = Xem::with_config(&router.base_url(), "xem-shutdown", XemConfig::YamlFile);
    copy_dir(&examples_dir(), &xem.tools_dir());
    std::fs::create_dir_all(xem.credentials_dir()).unwrap();
    let credential = xem.credentials_dir().join("kubernetes-prod.yaml");
    std::fs::write(&credential, "current-context: prod\n").unwrap();
    std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = |p: &Path| p.display().to_string();
    let settings = [
        ("router_url", router.base_url()),
        ("join_key", join_key.token.clone()),
        ("registration_name", xem.name.clone()),
        ("state_dir", path(&xem.state_dir())),
        ("curve_key_path", path(&xem.curve_key_path())),
        ("signing_key_path", path(&xem.signing_key_path())),
        ("tools_dir", path(&xem.tools_dir())),
        ("credentials_dir", path(&xem.credentials_dir())),
        ("lease_renewal_interval_ms", LEASE_MS.to_string()),
        ("shutdown_grace_seconds", GRACE.as_secs().to_string()),
        ("log_level", "info".to_string()),
    ];
    let config: String =
        settings.iter().map(|(key, value)| format!("{key}: {value:?}\n")).collect();
    xem.start_with_config_text(&config);
    let agent_id = xem.wait_enrolled().await;
    router.wait_agent_status(&agent_id, "active", AGENT_DEADLINE).await;
    (xem, agent_id)
}

async fn invoke_sleep(router: &Router, seconds: u64) -> String {
    let body = json!({ "workspace": WORKSPACE, "tool": "sleep", "args": { "seconds": seconds } });
    let resp = router.api().post("/v1/exec/invocations", Some(router.admin_key()), &body).await;
    resp.assert_status(202);
    resp.json()["id"].as_str().unwrap().to_string()
}

async fn invocation(router: &Router, id: &str) -> Value {
    let resp =
        router.api().get(&format!("/v1/exec/invocations/{id}"), Some(router.admin_key())).await;
    resp.assert_status(200);
    resp.json()
}

async fn wait_status(router: &Router, id: &str, wanted: &[&str]) -> Value {
    eventually(&format!("invocation {id} to reach {wanted:?}"), SETTLE, || async {
        let view = invocation(router, id).await;
        wanted.contains(&view["status"].as_str().unwrap_or_default()).then_some(view)
    })
    .await
}

#[tokio::test]
async fn xem_shutdown_with_work_in_flight_finishes_or_kills_it_reports_all_and_exits_0() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (mut xem, _agent_id) = draining_xem(&router).await;
        eventually("the sleep tool to be offered", AGENT_DEADLINE, || async {
            let tools = router.api().get("/v1/exec/tools", Some(router.admin_key())).await.json();
            tools["tools"].as_array().unwrap().iter().any(|t| t["name"] == "sleep").then_some(())
        })
        .await;

        // Work that ends within the grace period, and work that cannot.
        let mut short = Vec::new();
        for _ in 0..SHORT {
            short.push(invoke_sleep(&router, 1).await);
        }
        let mut long = Vec::new();
        for _ in 0..LONG {
            long.push(invoke_sleep(&router, 600).await);
        }
        for id in short.iter().chain(&long) {
            wait_status(&router, id, &["running"]).await;
        }

        let stopping = Instant::now();
        send_sigterm(xem.pid());
        let status = xem.wait_exit(GRACE + EXIT_AFTER_GRACE + Duration::from_secs(5));
        let took = stopping.elapsed();
        let logs = xem.logs();
        assert!(status.success(), "[{}] exit status {status}\n{logs}", backend.name);
        assert!(
            took >= GRACE,
            "[{}] the long invocations get the whole grace period; exited after {took:?}\n{logs}",
            backend.name
        );
        assert!(
            took <= GRACE + EXIT_AFTER_GRACE,
            "[{}] exited {took:?} after SIGTERM (grace {GRACE:?})\n{logs}",
            backend.name
        );

        // Every result was reported by the XEM itself, none inferred as lost by the router.
        for id in &short {
            let done = wait_status(&router, id, &TERMINAL).await;
            assert_eq!(
                done["status"], "succeeded",
                "[{}] finished within the grace: {done}",
                backend.name
            );
        }
        for id in &long {
            let done = wait_status(&router, id, &TERMINAL).await;
            assert_eq!(
                done["status"], "cancelled",
                "[{}] killed at the end of the grace: {done}",
                backend.name
            );
            let error = done["error"].as_str().unwrap_or_default();
            assert!(error.contains("process group killed"), "[{}] {done}", backend.name);
        }
        let all = router.api().get("/v1/exec/invocations", Some(router.admin_key())).await.json();
        let running: Vec<&Value> = all["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| !TERMINAL.contains(&v["status"].as_str().unwrap_or_default()))
            .collect();
        assert!(running.is_empty(), "[{}] left unfinished: {running:?}", backend.name);

        assert!(logs.contains("draining in-flight invocations"), "{logs}");
        assert!(logs.contains("shutdown grace period over"), "{logs}");
        for line in logs.lines() {
            assert!(
                !line.contains("panicked") && !line.contains(" ERROR "),
                "[{}] XEM log: {line}\n{logs}",
                backend.name
            );
        }
        let router_logs = router.logs();
        assert!(!router_logs.contains("panicked"), "[{}] router log:\n{router_logs}", backend.name);
        assert!(
            !router_logs.contains("invocation lost")
                && !router_logs.contains("invocation requeued"),
            "[{}] the router had to infer a result:\n{router_logs}",
            backend.name
        );
    }
}
