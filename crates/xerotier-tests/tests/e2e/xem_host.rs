//! The XEM host against a compromised router and hostile tools (SPEC 6.3): received invocation
//! ids never name anything on disk, tools run as an unprivileged user who cannot reach the
//! agent's keys, state, credential files or another invocation, the credential snapshot is in
//! memory only, and a tool that ignores large arguments still times out and cancels on time.
//! Real router, XEM, runner and tool processes; both backends.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::exec::{Exec, exec_fleet, write_tool};
use crate::fleet_harness::TOOL_USER;
use crate::harness::{Router, RouterOptions, backends, eventually};

const FINISHED: &[&str] = &["succeeded", "failed", "timed_out", "cancelled"];
const SETTLE: Duration = Duration::from_secs(30);
/// What the router's `send_hostile_invocation_ids` fault sends before every real dispatch.
const HOSTILE_IDS_SENT: usize = 6;
const HOSTILE_PATHS: [&str; 2] =
    ["/tmp/xerotier-hostile-invocation-id", "/tmp/xerotier-hostile-parent"];

fn tool_uid() -> u32 {
    nix::unistd::User::from_name(TOOL_USER).unwrap().unwrap().uid.as_raw()
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn hostile_invocation_ids_from_a_compromised_router_are_refused_and_touch_nothing() {
    for backend in backends().await {
        let options = RouterOptions {
            env: vec![("XEROTIER_ROUTER_TEST_FAULT".into(), "send_hostile_invocation_ids".into())],
            ..RouterOptions::default()
        };
        let router = Router::start_with(&backend, options).await;
        let (xem, _agent) = exec_fleet(&router, "xem-hostile-ids", "v1\n", |_| {}).await;
        router.wait_tool("noop").await;
        let view = router.invoke(router.admin_key(), "noop", json!({})).await;
        let done = router.wait_status(view["id"].as_str().unwrap(), FINISHED).await;
        assert_eq!(
            done["status"], "succeeded",
            "[{}] the real one still runs: {done}",
            backend.name
        );
        // Each hostile frame is refused by the XEM and the refusal reaches the router.
        eventually("the XEM to refuse every hostile id", SETTLE, || {
            let refused = xem.logs().matches("malformed invocation id refused").count();
            async move { (refused >= HOSTILE_IDS_SENT).then_some(()) }
        })
        .await;
        eventually("the router to hear every refusal", SETTLE, || {
            let heard = router.logs().matches("malformed invocation id").count();
            async move { (heard >= HOSTILE_IDS_SENT).then_some(()) }
        })
        .await;
        for path in HOSTILE_PATHS {
            assert!(!Path::new(path).exists(), "[{}] {path} was created", backend.name);
        }
        // The real invocation's directory goes just after its result is sent.
        eventually("the run dir to be empty", SETTLE, || {
            let left = entries(&xem.run_dir());
            async move { left.is_empty().then_some(()) }
        })
        .await;
        assert!(!xem.logs().contains(&"a".repeat(100)), "the overlong id is not logged whole");
    }
}

/// The snooping tool tries every secret on the host it should not reach, and reports only
/// what it could do; the test first proves each target exists (root can read it).
#[tokio::test]
async fn a_tool_cannot_reach_the_agents_keys_state_other_credentials_or_other_invocations() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let mut snoop = String::new();
        let (xem, _agent) = exec_fleet(&router, "xem-snoop", "current-context: e2e\n", |tools| {
            write_tool(tools, "snoop", 20, "true");
            snoop = tools.join("snoop/run.sh").display().to_string();
        })
        .await;
        let other_credential = xem.credentials_dir().join("other-workspace.yaml");
        std::fs::write(&other_credential, "other secret\n").unwrap();
        std::fs::set_permissions(&other_credential, std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let targets = [
            xem.curve_key_path(),
            xem.signing_key_path(),
            other_credential.clone(),
            xem.state_dir().join("identity.json"),
        ];
        for target in &targets {
            std::fs::read(target).unwrap_or_else(|e| panic!("{}: {e}", target.display()));
        }
        let script = format!(
            "other=$(cat | sed -n 's/.*\"other\":\"\\(inv_[0-9a-z]*\\)\".*/\\1/p')\n\
             for f in {files}; do cat \"$f\" >/dev/null 2>&1 && echo \"READ $f\"; done\n\
             for d in {state} {creds} {run} {run}/$other {run}/$other/tmp; do \
               ls \"$d\" >/dev/null 2>&1 && echo \"LISTED $d\"; done\n\
             echo x > {run}/$other/planted 2>/dev/null && echo 'WROTE into the other invocation'\n\
             cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -q XEROTIER_INVOCATION_ID=$other \
               && echo 'READ the other environment'\n\
             echo \"uid=$(id -u) euid=$(id -u -r)\"\n\
             echo \"fs=$(stat -L -f -c %T \"$KUBECONFIG\") $(readlink \"$KUBECONFIG\")\"\n\
             echo \"context=$(sed -n 's/^current-context: *//p' \"$KUBECONFIG\")\"",
            files = targets.iter().map(|t| t.display().to_string()).collect::<Vec<_>>().join(" "),
            state = xem.state_dir().display(),
            creds = xem.credentials_dir().display(),
            run = xem.run_dir().display(),
        );
        std::fs::write(&snoop, format!("#!/bin/sh\n{script}\n")).unwrap();
        router.wait_tool("snoop").await;
        // Another invocation, running while the snoop runs.
        let sleeper = router.invoke(router.admin_key(), "sleep", json!({ "seconds": 60 })).await;
        let sleeper_id = sleeper["id"].as_str().unwrap().to_string();
        router.wait_status(&sleeper_id, &["running"]).await;
        assert!(xem.run_dir().join(&sleeper_id).is_dir(), "the other invocation's directory");

        let view = router.invoke(router.admin_key(), "snoop", json!({ "other": sleeper_id })).await;
        let done = router.wait_status(view["id"].as_str().unwrap(), FINISHED).await;
        assert_eq!(done["status"], "succeeded", "[{}] {done}", backend.name);
        let uid = tool_uid();
        assert_ne!(uid, 0);
        assert_eq!(
            done["stdout"].as_str().unwrap(),
            format!(
                "uid={uid} euid={uid}\nfs=tmpfs /memfd:xerotier-credential (deleted)\ncontext=e2e\n"
            ),
            "[{}] every attempt must fail, the credential must be in memory: {done}",
            backend.name
        );
        // While the sleeper runs, its directory holds no copy of the credential.
        let sleeper_dir = xem.run_dir().join(&sleeper_id);
        let mut stack = vec![sleeper_dir.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let bytes = std::fs::read(&path).unwrap_or_default();
                    assert!(
                        !String::from_utf8_lossy(&bytes).contains("current-context"),
                        "a credential copy on disk: {}",
                        path.display()
                    );
                }
            }
        }
        assert!(!sleeper_dir.join("planted").exists());
        router
            .post_json(&format!("/v1/exec/invocations/{sleeper_id}/cancel"), &json!({}))
            .await
            .assert_status(200);
        router.wait_status(&sleeper_id, FINISHED).await;
    }
}

#[tokio::test]
async fn oversized_arguments_are_refused_and_a_deaf_tool_still_times_out_and_cancels_on_time() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (_xem, _agent) = exec_fleet(&router, "xem-deaf", "v1\n", |tools| {
            // Never reads its stdin, so a large argument write would block on a full pipe.
            write_tool(tools, "deaf", 2, "echo \"env=${XEROTIER_ARGS:-none}\"\nsleep 300");
        })
        .await;
        router.wait_tool("deaf").await;
        let key = router.admin_key().to_string();
        let body = json!({
            "workspace": "kubernetes-prod",
            "tool": "deaf",
            "args": { "pad": "a".repeat(70 * 1024) },
        });
        let resp = router.api().post("/v1/exec/invocations", Some(&key), &body).await;
        resp.assert_error(400, "invalid_arguments");
        assert!(
            resp.json()["error"]["message"].as_str().unwrap().contains("65536"),
            "{}",
            resp.json()
        );

        let large = json!({ "pad": "a".repeat(60 * 1024) });
        let began = Instant::now();
        let view = router.invoke(&key, "deaf", large.clone()).await;
        let done = router.wait_status(view["id"].as_str().unwrap(), FINISHED).await;
        assert_eq!(done["status"], "timed_out", "[{}] {done}", backend.name);
        assert_eq!(done["stdout"], "env=none\n", "no environment copy of large arguments");
        assert!(began.elapsed() < Duration::from_secs(8), "2 s timeout took {:?}", began.elapsed());

        let view = router.invoke(&key, "deaf", large).await;
        let id = view["id"].as_str().unwrap();
        router.wait_status(id, &["running"]).await;
        let cancelled_at = Instant::now();
        router
            .post_json(&format!("/v1/exec/invocations/{id}/cancel"), &json!({}))
            .await
            .assert_status(200);
        let done = router.wait_status(id, FINISHED).await;
        assert_eq!(done["status"], "cancelled", "{done}");
        assert!(cancelled_at.elapsed() < Duration::from_secs(3), "{:?}", cancelled_at.elapsed());
    }
}

#[tokio::test]
async fn resource_limits_in_tool_yaml_hold_for_the_real_tool() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let (_xem, _agent) = exec_fleet(&router, "xem-limits", "v1\n", |tools| {
            write_tool(
                tools,
                "bounded",
                10,
                "grep -E '^Max (file size|open files)' /proc/self/limits | tr -s ' ' | cut -d' ' -f1-5\n\
                 head -c 3145728 /dev/zero > big 2>/dev/null; echo \"size=$(stat -c %s big)\"",
            );
            let yaml = tools.join("bounded/tool.yaml");
            let mut text = std::fs::read_to_string(&yaml).unwrap();
            text.push_str("limits:\n  file_size: 1MiB\n  open_files: 64\n");
            std::fs::write(yaml, text).unwrap();
        })
        .await;
        router.wait_tool("bounded").await;
        let view = router.invoke(router.admin_key(), "bounded", json!({})).await;
        let done = router.wait_status(view["id"].as_str().unwrap(), FINISHED).await;
        assert_eq!(
            done["stdout"], "Max file size 1048576 1048576\nMax open files 64 64\nsize=1048576\n",
            "[{}] {done}",
            backend.name
        );
    }
}
