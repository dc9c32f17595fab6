//! Tool execution end to end (SPEC 3.1, 3.5; the seed's "Workspace Credentials"): a real
//! router, a real XEM running real tool processes from `examples/tools`, the seed's two-step
//! credential rotation (`install -m 0600 …`, then SIGHUP as `systemctl reload` sends it) under
//! in-flight invocations, containment, timeouts, cancellation and argument checks.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::fleet_harness::{
    AGENT_DEADLINE, LEASE_MS, Xem, copy_dir, enrolled_xem_configured, examples_dir,
};
use crate::harness::{Router, RouterOptions, backends, eventually, xeroctl, xeroctl_with_key};

/// Deadline for invocations and reloads to settle.
pub(crate) const SETTLE: Duration = Duration::from_secs(30);
/// The workspace the example bundle declares.
/// Every status an invocation ends in.
const FINISHED: &[&str] = &["succeeded", "failed", "timed_out", "cancelled"];
const WORKSPACE: &str = "kubernetes-prod";
pub(crate) const CREDENTIAL_FILE: &str = "kubernetes-prod.yaml";

/// A tool bundle written by the test: `script` runs with `sh`, under `timeout_seconds`.
pub(crate) fn write_tool(tools_dir: &Path, name: &str, timeout_seconds: u64, script: &str) {
    let dir = tools_dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("tool.yaml"),
        format!(
            "name: {name}\ndescription: test tool\nrisk: read\ntimeout_seconds: {timeout_seconds}\n\
             command: run.sh\nargs_schema:\n  type: object\n  additionalProperties: true\n"
        ),
    )
    .unwrap();
    let script_path = dir.join("run.sh");
    std::fs::write(&script_path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The seed's first step: `install -m MODE new-file credentials_dir/kubernetes-prod.yaml`
/// (atomic replace; no `-o root`, which needs root).
pub(crate) fn install_credential(xem: &Xem, content: &str, mode: &str) {
    let staged = xem.credentials_dir().join(format!(".staged-{}", std::process::id()));
    std::fs::write(&staged, content).unwrap();
    let status = Command::new("install")
        .args(["-m", mode])
        .arg(&staged)
        .arg(xem.credentials_dir().join(CREDENTIAL_FILE))
        .status()
        .expect("running install");
    assert!(status.success(), "install failed: {status}");
    std::fs::remove_file(staged).unwrap();
}

/// The seed's second step: `systemctl reload xerotier-xem` runs the unit's ExecReload,
/// `xerotier-xem reload --pid $MAINPID`, which sends SIGHUP and waits for the outcome.
pub(crate) fn reload(xem: &Xem) -> std::process::Output {
    xem.reload_command().output().expect("running xerotier-xem reload")
}

pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A router with one XEM offering the example tools (plus `extra` test tools) in workspace
/// `kubernetes-prod`, whose credential starts as `credential`.
pub(crate) async fn exec_fleet(
    router: &Router,
    name: &str,
    credential: &str,
    extra: impl FnOnce(&Path),
) -> (Xem, String) {
    exec_fleet_configured(router, name, credential, &[], extra).await
}

/// As [`exec_fleet`], with more XEM config `settings` (key as in the YAML file, value).
pub(crate) async fn exec_fleet_configured(
    router: &Router,
    name: &str,
    credential: &str,
    settings: &[(&'static str, &str)],
    extra: impl FnOnce(&Path),
) -> (Xem, String) {
    enrolled_xem_configured(router, name, settings, |xem| {
        copy_dir(&examples_dir(), &xem.tools_dir());
        extra(&xem.tools_dir());
        std::fs::create_dir_all(xem.credentials_dir()).unwrap();
        install_credential(xem, credential, "0600");
    })
    .await
}

pub(crate) trait Exec {
    async fn invoke(&self, key: &str, tool: &str, args: Value) -> Value;
    async fn invocation(&self, id: &str) -> Value;
    async fn wait_status(&self, id: &str, wanted: &[&str]) -> Value;
    async fn wait_tool(&self, tool: &str);
    async fn event_of_type(&self, agent_id: &str, kind: &str, after: usize) -> Value;
}

impl Exec for Router {
    async fn invoke(&self, key: &str, tool: &str, args: Value) -> Value {
        let body = json!({ "workspace": WORKSPACE, "tool": tool, "args": args });
        let resp = self.api().post("/v1/exec/invocations", Some(key), &body).await;
        resp.assert_status(202);
        let view = resp.json();
        assert_eq!(view["status"], "queued", "{view}");
        assert!(view["id"].as_str().unwrap().starts_with("inv_"), "{view}");
        view
    }

    async fn invocation(&self, id: &str) -> Value {
        self.get_json(&format!("/v1/exec/invocations/{id}")).await
    }

    async fn wait_status(&self, id: &str, wanted: &[&str]) -> Value {
        eventually(&format!("invocation {id} to reach {wanted:?}"), SETTLE, || async {
            let view = self.invocation(id).await;
            wanted.contains(&view["status"].as_str().unwrap_or_default()).then_some(view)
        })
        .await
    }

    async fn wait_tool(&self, tool: &str) {
        eventually(&format!("tool {tool} to be offered"), AGENT_DEADLINE, || async {
            let resp = self.api().get("/v1/exec/tools", Some(self.admin_key())).await;
            let tools = resp.json();
            tools["tools"].as_array().unwrap().iter().any(|t| t["name"] == tool).then_some(())
        })
        .await
    }

    /// The first event of `kind` after the agent's first `after` events.
    async fn event_of_type(&self, agent_id: &str, kind: &str, after: usize) -> Value {
        eventually(&format!("a {kind} event of {agent_id}"), SETTLE, || async {
            let events = first_events(self, agent_id).await;
            events.into_iter().skip(after).find(|e| e["type"] == kind)
        })
        .await
    }
}

/// The agent's one credential file in `GET /v1/management/credentials`.
pub(crate) async fn credentials_of(router: &Router, agent_id: &str) -> Value {
    let path = format!("/v1/management/credentials?agent_id={agent_id}&kind=workspace_credential");
    let list = router.api().get(&path, Some(router.admin_key())).await.json();
    let files = list["credentials"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{list}");
    assert_eq!(files[0]["credentials_ref"], CREDENTIAL_FILE);
    files[0].clone()
}

/// The agent's first 500 events (one page), oldest first.
async fn first_events(router: &Router, agent_id: &str) -> Vec<Value> {
    let page = router.get_json(&format!("/v1/management/agents/{agent_id}/events?limit=500")).await;
    page["data"].as_array().unwrap().clone()
}

pub(crate) async fn event_count(router: &Router, agent_id: &str) -> usize {
    first_events(router, agent_id).await.len()
}

pub(crate) fn used_credential(view: &Value) -> String {
    let stdout = view["stdout"].as_str().unwrap_or_default();
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("credential_sha256="))
        .unwrap_or_else(|| panic!("no credential hash in the output: {view}"))
        .trim()
        .to_string()
}

#[tokio::test]
async fn seed_rotation_under_load_keeps_in_flight_invocations_on_their_credential() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (old, new) = ("apiVersion: v1\nuser: old-token\n", "apiVersion: v1\nuser: new-token\n");
        let (xem, agent_id) = exec_fleet(&router, "xem-rotate", old, |_| {}).await;
        router.wait_tool("sleep").await;
        let key = router.admin_key().to_string();

        // Long-running invocations, all started on the old credential.
        let mut before = Vec::new();
        for _ in 0..3 {
            before.push(router.invoke(&key, "sleep", json!({ "seconds": 4 })).await);
        }
        for view in &before {
            let running = router.wait_status(view["id"].as_str().unwrap(), &["running"]).await;
            assert_eq!(running["credential_generation"], 1, "{running}");
        }

        // The seed's two steps, while they run.
        let events_before = event_count(&router, &agent_id).await;
        install_credential(&xem, new, "0600");
        let reloaded = reload(&xem);
        let said = String::from_utf8_lossy(&reloaded.stdout).to_string();
        assert!(reloaded.status.success(), "{reloaded:?}");
        assert!(said.contains(&format!("ok      {CREDENTIAL_FILE} generation 2")), "{said}");
        let reloaded = router.event_of_type(&agent_id, "credentials_reloaded", events_before).await;
        let file = &reloaded["details"]["files"][0];
        assert_eq!(file["credentials_ref"], CREDENTIAL_FILE, "{reloaded}");
        assert_eq!(file["generation"], 2, "{reloaded}");
        assert_eq!(file["sha256"], sha256_hex(new), "{reloaded}");
        // The fleet's credential ages, centrally.
        let listed = credentials_of(&router, &agent_id).await;
        assert_eq!(listed["generation"], 2, "{listed}");
        assert_eq!(listed["sha256"], sha256_hex(new), "{listed}");
        assert_eq!(
            (listed["state"].as_str(), listed["rule"].as_str()),
            (Some("ok"), Some("default"))
        );
        assert!(listed["age_seconds"].as_i64().unwrap() < 86_400, "{listed}");
        assert_eq!(listed["reload_ok"], true);

        let mut after = Vec::new();
        for _ in 0..3 {
            after.push(router.invoke(&key, "sleep", json!({ "seconds": 0 })).await);
        }
        for view in &before {
            let done = router.wait_status(view["id"].as_str().unwrap(), FINISHED).await;
            assert_eq!(done["status"], "succeeded", "[{}] {done}", backend.name);
            assert_eq!(used_credential(&done), sha256_hex(old), "in-flight keeps its snapshot");
            assert_eq!(done["credential_generation"], 1);
        }
        for view in &after {
            let done = router.wait_status(view["id"].as_str().unwrap(), FINISHED).await;
            assert_eq!(done["status"], "succeeded", "[{}] {done}", backend.name);
            assert_eq!(used_credential(&done), sha256_hex(new), "the next one uses the new file");
            assert_eq!(done["credential_generation"], 2);
            assert_eq!(done["agent_id"], agent_id.as_str());
        }
        assert!(!xem.logs().contains("new-token"), "credential contents never reach the log");
    }
}

#[tokio::test]
async fn a_world_readable_credential_is_refused_and_the_previous_one_stays_in_use() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let good = "apiVersion: v1\nuser: good\n";
        let (xem, agent_id) = exec_fleet(&router, "xem-perms", good, |_| {}).await;
        router.wait_tool("sleep").await;

        let events_before = event_count(&router, &agent_id).await;
        install_credential(&xem, "apiVersion: v1\nuser: leaked\n", "0644");
        // A bare SIGHUP (what `kill -HUP` or an older unit sends) takes the same path...
        let hup = Command::new("kill").args(["-HUP", &xem.pid().to_string()]).status().unwrap();
        assert!(hup.success());
        let failed =
            router.event_of_type(&agent_id, "credentials_reload_failed", events_before).await;
        let file = &failed["details"]["files"][0];
        assert_eq!(file["ok"], false, "{failed}");
        assert!(
            file["error"].as_str().unwrap().contains("644"),
            "the error names the mode: {failed}"
        );
        assert_eq!(file["generation"], 1, "the last good version stays: {failed}");
        assert_eq!(file["sha256"], sha256_hex(good));
        let listed = credentials_of(&router, &agent_id).await;
        assert_eq!(
            (listed["reload_ok"].as_bool(), listed["generation"].as_u64()),
            (Some(false), Some(1))
        );
        assert!(listed["error"].as_str().unwrap().contains("644"), "{listed}");

        let view = router.invoke(router.admin_key(), "sleep", json!({ "seconds": 0 })).await;
        let done = router.wait_status(view["id"].as_str().unwrap(), &["succeeded", "failed"]).await;
        assert_eq!(done["status"], "succeeded", "[{}] {done}", backend.name);
        assert_eq!(used_credential(&done), sha256_hex(good));
        assert!(xem.logs().contains("NOT reloaded"), "the refusal is logged");
        // ...and `systemctl reload` (ExecReload) fails while the file stays refused.
        let reloaded = reload(&xem);
        assert_eq!(reloaded.status.code(), Some(1), "{reloaded:?}");
        let said = String::from_utf8_lossy(&reloaded.stdout).to_string();
        assert!(said.contains(&format!("REFUSED {CREDENTIAL_FILE}")), "{said}");
        assert!(said.contains("generation 1 stays in use"), "{said}");
    }
}

#[tokio::test]
async fn api_key_scopes_and_revocation_guard_the_exec_api() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (_xem, _agent) = exec_fleet(&router, "xem-keys", "v1\n", |_| {}).await;
        router.wait_tool("noop").await;
        let exec_key = router.create_key("exec-only", &["execution"]).await;
        let manage_key = router.create_key("manage-only", &["management"]).await;

        let view = router.invoke(&exec_key.value, "noop", json!({})).await;
        router.wait_status(view["id"].as_str().unwrap(), &["succeeded"]).await;

        // An execution key cannot reach management; a management key cannot invoke.
        router
            .api()
            .get("/v1/management/agents", Some(&exec_key.value))
            .await
            .assert_error(403, "scope_insufficient");
        let body = json!({ "workspace": WORKSPACE, "tool": "noop" });
        router
            .api()
            .post("/v1/exec/invocations", Some(&manage_key.value), &body)
            .await
            .assert_error(403, "scope_insufficient");

        // Revoked: the very next invocation is refused, and nothing is created.
        router.revoke_key(&exec_key.id).await.assert_status(200);
        router
            .api()
            .post("/v1/exec/invocations", Some(&exec_key.value), &body)
            .await
            .assert_error(401, "invalid_api_key");
        let all = router.api().get("/v1/exec/invocations", Some(router.admin_key())).await.json();
        assert_eq!(all["data"].as_array().unwrap().len(), 1, "[{}] {all}", backend.name);
    }
}

#[tokio::test]
async fn bad_arguments_unknown_tools_and_workspaces_are_refused_before_dispatch() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (_xem, _agent) = exec_fleet(&router, "xem-args", "v1\n", |_| {}).await;
        router.wait_tool("sleep").await;
        let key = router.admin_key();
        let post = |body: Value| {
            let api = router.api();
            async move { api.post("/v1/exec/invocations", Some(key), &body).await }
        };
        let resp =
            post(json!({ "workspace": WORKSPACE, "tool": "sleep", "args": { "seconds": "ten" } }))
                .await;
        resp.assert_error(400, "invalid_arguments");
        assert_eq!(resp.json()["error"]["param"], "args/seconds", "{}", resp.json());
        post(json!({ "workspace": WORKSPACE, "tool": "sleep", "args": { "seconds": 1, "extra": 1 } }))
            .await
            .assert_error(400, "invalid_arguments");
        post(json!({ "workspace": WORKSPACE, "tool": "sleep", "args": [1] }))
            .await
            .assert_error(400, "invalid_arguments");
        post(json!({ "workspace": WORKSPACE, "tool": "rm-rf" }))
            .await
            .assert_error(404, "tool_not_found");
        post(json!({ "workspace": "nowhere", "tool": "sleep" }))
            .await
            .assert_error(404, "workspace_not_found");
        post(json!({ "workspace": WORKSPACE, "tool": "sleep", "argz": {} }))
            .await
            .assert_error(400, "invalid_request");
        let all = router.api().get("/v1/exec/invocations", Some(key)).await.json();
        assert!(
            all["data"].as_array().unwrap().is_empty(),
            "[{}] nothing created: {all}",
            backend.name
        );
    }
}

#[tokio::test]
async fn a_timed_out_tool_is_killed_with_its_children() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        // The tool can write nowhere but its own directory: the grandchild's pid comes out on
        // stdout.
        let script = "sleep 300 &\necho \"grandchild=$!\"\necho started\nsleep 300";
        let (_xem, _agent) = exec_fleet(&router, "xem-timeout", "v1\n", |tools| {
            write_tool(tools, "hang", 1, script);
        })
        .await;
        router.wait_tool("hang").await;
        let view = router.invoke(router.admin_key(), "hang", json!({})).await;
        let done = router
            .wait_status(view["id"].as_str().unwrap(), &["timed_out", "failed", "succeeded"])
            .await;
        assert_eq!(done["status"], "timed_out", "[{}] {done}", backend.name);
        assert!(done["stdout"].as_str().unwrap().contains("started"), "{done}");
        let stdout = done["stdout"].as_str().unwrap();
        let pid = stdout
            .lines()
            .find_map(|l| l.strip_prefix("grandchild="))
            .unwrap_or_else(|| panic!("no pid in {stdout:?}"))
            .to_string();
        eventually(&format!("grandchild {pid} to be gone"), SETTLE, || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            // Gone, or a zombie waiting for its (killed) parent's reaper.
            let gone = stat.is_none_or(|s| s.split_whitespace().nth(2) == Some("Z"));
            async move { gone.then_some(()) }
        })
        .await;
    }
}

#[tokio::test]
async fn cancel_stops_a_running_invocation() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (_xem, _agent) = exec_fleet(&router, "xem-cancel", "v1\n", |_| {}).await;
        router.wait_tool("sleep").await;
        let view = router.invoke(router.admin_key(), "sleep", json!({ "seconds": 300 })).await;
        let id = view["id"].as_str().unwrap();
        router.wait_status(id, &["running"]).await;
        let resp = router.post_json(&format!("/v1/exec/invocations/{id}/cancel"), &json!({})).await;
        resp.assert_status(200);
        assert_eq!(resp.json()["cancel_requested"], true);
        let done = router.wait_status(id, &["cancelled", "failed", "succeeded"]).await;
        assert_eq!(done["status"], "cancelled", "[{}] {done}", backend.name);
        router
            .post_json(&format!("/v1/exec/invocations/{id}/cancel"), &json!({}))
            .await
            .assert_error(409, "invocation_finished");
    }
}

#[tokio::test]
async fn pause_exec_holds_new_work_lets_in_flight_finish_and_resume_runs_the_queue() {
    for backend in backends().await {
        // A fixed mesh port: the agent keeps the address it enrolled with across the restart.
        let mut router = Router::start_with(&backend, RouterOptions::fixed_mesh_port()).await;
        let (_xem, agent_id) = exec_fleet(&router, "xem-pause", "v1\n", |_| {}).await;
        router.wait_tool("sleep").await;
        let key = router.admin_key().to_string();

        let in_flight = router.invoke(&key, "sleep", json!({ "seconds": 2 })).await;
        let in_flight_id = in_flight["id"].as_str().unwrap().to_string();
        router.wait_status(&in_flight_id, &["running"]).await;

        let out = xeroctl(&router, &["agents", "pause-exec", &agent_id, "--reason", "incident 42"]);
        assert!(out.status.success(), "{out:?}");
        let held = router.invoke(&key, "noop", json!({})).await;
        let held_id = held["id"].as_str().unwrap().to_string();

        // In-flight work finishes while paused.
        let done = router.wait_status(&in_flight_id, &["succeeded", "failed"]).await;
        assert_eq!(done["status"], "succeeded", "[{}] {done}", backend.name);
        // New work waits: after the agent renewed its lease several times (dispatch has run
        // many passes since), the invocation is still queued and with no agent.
        let queued_at =
            router.invocation(&held_id).await["created_at"].as_str().unwrap().to_string();
        eventually("several lease renewals after the pause", SETTLE, || async {
            let agent = router.agent(&agent_id).await;
            let last = agent["last_heartbeat_at"].as_str().unwrap_or_default().to_string();
            (last > queued_at && done_leases_after(&queued_at, &last)).then_some(())
        })
        .await;
        let still = router.invocation(&held_id).await;
        assert_eq!(still["status"], "queued", "[{}] {still}", backend.name);
        assert!(still["agent_id"].is_null(), "{still}");

        // The queue survives a router restart (SQLite: same file; PostgreSQL: same database).
        router.restart().await;
        let key = router.admin_key().to_string();
        let still = router.invocation(&held_id).await;
        assert_eq!(still["status"], "queued", "{still}");

        let out = xeroctl(&router, &["agents", "resume-exec", &agent_id]);
        assert!(out.status.success(), "{out:?}");
        let done = router.wait_status(&held_id, &["succeeded", "failed"]).await;
        assert_eq!(done["status"], "succeeded", "[{}] {done}", backend.name);

        // Both are audited; resuming again is refused.
        let audit = router.audit("action=agent.pause_exec").await;
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0]["reason"], "incident 42");
        assert_eq!(router.audit("action=agent.resume_exec").await.len(), 1);
        let out = xeroctl_with_key(&router, &key, &["agents", "resume-exec", &agent_id]);
        assert!(!out.status.success(), "{out:?}");
        assert!(
            out.stderr.contains("not_paused") || out.stderr.contains("no agent-wide pause"),
            "{out:?}"
        );
    }
}

/// True when `last` is at least five lease intervals after `since` (both RFC 3339).
fn done_leases_after(since: &str, last: &str) -> bool {
    let parse = |t: &str| humantime::parse_rfc3339(t).unwrap();
    parse(last).duration_since(parse(since)).is_ok_and(|d| d >= Duration::from_millis(5 * LEASE_MS))
}

#[tokio::test]
async fn sigterm_drains_in_flight_invocations_before_the_xem_exits() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (mut xem, _agent) = exec_fleet(&router, "xem-drain", "v1\n", |_| {}).await;
        router.wait_tool("sleep").await;
        let view = router.invoke(router.admin_key(), "sleep", json!({ "seconds": 2 })).await;
        let id = view["id"].as_str().unwrap();
        router.wait_status(id, &["running"]).await;
        // Stop: the XEM takes no new work but lets the running tool finish and reports it.
        let status = xem.stop_with_sigterm();
        assert!(status.success(), "[{}] {status}\n{}", backend.name, xem.logs());
        let done = router.invocation(id).await;
        assert_eq!(done["status"], "succeeded", "[{}] reported before exit: {done}", backend.name);
        assert!(xem.logs().contains("draining in-flight invocations"), "{}", xem.logs());
    }
}

#[tokio::test]
async fn xeroctl_exec_invokes_waits_and_reports_like_the_tool() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (_xem, agent_id) = exec_fleet(&router, "xem-cli", "current-context: prod\n", |tools| {
            write_tool(tools, "fails", 10, "echo partial\necho broken >&2\nexit 3");
        })
        .await;
        router.wait_tool("fails").await;

        let tools = xeroctl(&router, &["exec", "tools"]);
        assert!(tools.status.success(), "{tools:?}");
        for name in ["kubectl-get", "noop", "sleep", "fails"] {
            assert!(tools.stdout.contains(name), "{name}: {}", tools.stdout);
        }

        // The example tool, as the README runs it: its output, exit 0.
        let args = r#"{"kind":"pods","namespace":"default"}"#;
        let out = xeroctl(
            &router,
            &[
                "exec",
                "invoke",
                "--workspace",
                WORKSPACE,
                "--tool",
                "kubectl-get",
                "--args",
                args,
                "--wait",
            ],
        );
        assert!(out.status.success(), "[{}] {out:?}", backend.name);
        assert!(out.stdout.contains("kubeconfig context: prod"), "{out:?}");
        assert!(out.stdout.contains("kubectl get pods --namespace default"), "{out:?}");

        // A failing tool: its stderr, and a non-zero exit.
        let out = xeroctl(
            &router,
            &["exec", "invoke", "--workspace", WORKSPACE, "--tool", "fails", "--wait"],
        );
        assert_eq!(out.status.code(), Some(1), "[{}] {out:?}", backend.name);
        assert!(out.stdout.contains("partial") && out.stderr.contains("broken"), "{out:?}");

        // JSON, then show/list by id.
        let out = xeroctl(
            &router,
            &["-o", "json", "exec", "invoke", "--workspace", WORKSPACE, "--tool", "noop"],
        );
        assert!(out.status.success(), "{out:?}");
        let view: Value = serde_json::from_str(&out.stdout).unwrap();
        let id = view["id"].as_str().unwrap().to_string();
        router.wait_status(&id, &["succeeded"]).await;
        let shown = xeroctl(&router, &["-o", "json", "exec", "show", &id]);
        let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
        assert_eq!(
            (shown["status"].as_str(), shown["agent_id"].as_str()),
            (Some("succeeded"), Some(agent_id.as_str()))
        );
        let listed = xeroctl(&router, &["exec", "list", "--tool", "noop"]);
        assert!(listed.status.success() && listed.stdout.contains(&id), "{listed:?}");

        // Bad JSON is refused before any request; --dry-run sends nothing.
        let before =
            router.api().get("/v1/exec/invocations", Some(router.admin_key())).await.json();
        let count = before["data"].as_array().unwrap().len();
        let out = xeroctl(
            &router,
            &["exec", "invoke", "--workspace", WORKSPACE, "--tool", "noop", "--args", "{not json"],
        );
        assert!(!out.status.success(), "{out:?}");
        let out = xeroctl(
            &router,
            &["--dry-run", "exec", "invoke", "--workspace", WORKSPACE, "--tool", "noop"],
        );
        assert!(out.status.success() && out.stdout.contains("/v1/exec/invocations"), "{out:?}");
        let after = router.api().get("/v1/exec/invocations", Some(router.admin_key())).await.json();
        assert_eq!(
            after["data"].as_array().unwrap().len(),
            count,
            "[{}] nothing was created",
            backend.name
        );
    }
}

/// With an agent free to take it, an invocation is claimed for that agent in the transaction
/// that creates it and sent at once, without waiting for a dispatch pass: the 202 answer names
/// the agent, dispatched when created. The claim is as durable as the creation: the router
/// crashes (SIGKILL) right after answering, and once it is back the invocation ends
/// `succeeded` on that agent, recorded once.
#[tokio::test]
async fn a_free_agent_is_claimed_as_the_invocation_is_created_and_a_router_crash_loses_nothing() {
    for backend in backends().await {
        // A fixed mesh port: the agent keeps the address it enrolled with across the restart.
        let mut router = Router::start_with(&backend, RouterOptions::fixed_mesh_port()).await;
        let (_xem, agent_id) = exec_fleet(&router, "xem-claim", "v1\n", |_| {}).await;
        router.wait_tool("sleep").await;

        let view = router.invoke(router.admin_key(), "sleep", json!({ "seconds": 1 })).await;
        assert_eq!(
            view["agent_id"],
            agent_id.as_str(),
            "[{}] claimed at creation: {view}",
            backend.name
        );
        assert_eq!(view["dispatched_at"], view["created_at"], "{view}");
        let id = view["id"].as_str().unwrap().to_string();

        router.kill();
        router.restart().await;
        let done = router.wait_status(&id, FINISHED).await;
        assert_eq!(done["status"], "succeeded", "[{}] {done}", backend.name);
        assert_eq!(done["agent_id"], agent_id.as_str(), "{done}");
        let runs = router.get_json("/v1/exec/invocations?tool=sleep").await;
        assert_eq!(runs["data"].as_array().unwrap().len(), 1, "run once: {runs}");
    }
}
