//! The XEM host's side of workspace credentials, from an attacker's angle next to the honest
//! path (issue 11): credential files swapped for a symlink or a FIFO are refused without
//! hanging or reading them, the optional watch reloads a file renamed into place and never a
//! half-written one, `/metrics` follows invocations and reloads, and `log_level` takes level
//! names only.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::exec::{
    CREDENTIAL_FILE, Exec, SETTLE, credentials_of, exec_fleet, exec_fleet_configured,
    install_credential, reload, sha256_hex, used_credential,
};
use crate::fleet_harness::{Xem, XemConfig};
use crate::harness::{EXIT_DEADLINE, Router, backends, closed_port, eventually, metric_value};

/// The XEM's debounce of renames (watch.rs); waits that prove an absence are multiples of it.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// `<state_dir>/reload-status.json`: the daemon's latest reload (what `xerotier-xem reload`
/// waits for).
fn reload_status(xem: &Xem) -> Value {
    let text = std::fs::read_to_string(xem.state_dir().join("reload-status.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Replaces the credential file by a rename, as an atomic writer ends (the staged file lives in
/// the same directory, as it must for rename(2)).
fn rename_into_place(xem: &Xem, content: &str) {
    let staged = xem.credentials_dir().join(".kubernetes-prod.yaml.new");
    std::fs::write(&staged, content).unwrap();
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&staged, xem.credentials_dir().join(CREDENTIAL_FILE)).unwrap();
}

/// A root-owned 0600 file outside credentials_dir: a perfectly good credential by itself.
fn outside_file(content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other-workspace.yaml");
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, path)
}

/// `xerotier-xem reload` with a bounded wait for the daemon's report, and how long it took.
fn timed_reload(xem: &Xem) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let out = xem.reload_command().args(["--timeout-seconds", "10"]).output().unwrap();
    (out, started.elapsed())
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn a_credential_swapped_for_a_symlink_or_a_fifo_is_refused_and_reload_exits_1() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let good = "apiVersion: v1\nuser: good\n";
        let (xem, agent_id) = exec_fleet(&router, "xem-swap", good, |_| {}).await;
        router.wait_tool("sleep").await;
        let file = xem.credentials_dir().join(CREDENTIAL_FILE);

        // A symlink to another private file, renamed over the credential: refused, unread.
        let (_outside, target) = outside_file("apiVersion: v1\nuser: other-workspace-admin\n");
        let link = xem.credentials_dir().join(".link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::fs::rename(&link, &file).unwrap();
        let (out, _) = timed_reload(&xem);
        assert_eq!(out.status.code(), Some(1), "[{}] {out:?}", backend.name);
        let said = stdout(&out);
        assert!(said.contains(&format!("REFUSED {CREDENTIAL_FILE}")), "{said}");
        assert!(said.contains("symbolic link") && said.contains("generation 1 stays"), "{said}");
        let listed = credentials_of(&router, &agent_id).await;
        assert_eq!(
            (listed["reload_ok"].as_bool(), listed["generation"].as_u64()),
            (Some(false), Some(1))
        );
        assert!(listed["error"].as_str().unwrap().contains("symbolic link"), "{listed}");
        let view = router.invoke(router.admin_key(), "sleep", json!({ "seconds": 0 })).await;
        let done = router.wait_status(view["id"].as_str().unwrap(), &["succeeded", "failed"]).await;
        assert_eq!(used_credential(&done), sha256_hex(good), "the last good version runs");

        // A FIFO with no writer: the reload neither hangs (it would wait forever for a writer
        // without O_NONBLOCK, and `reload` would then exit 2 at its timeout) nor takes it.
        std::fs::remove_file(&file).unwrap();
        let made = Command::new("mkfifo").args(["-m", "0600"]).arg(&file).status().unwrap();
        assert!(made.success());
        let (out, took) = timed_reload(&xem);
        assert_eq!(out.status.code(), Some(1), "[{}] {out:?}\n{}", backend.name, xem.logs());
        assert!(took < Duration::from_secs(10), "{took:?}");
        let said = stdout(&out);
        assert!(said.contains("a FIFO") && said.contains("generation 1 stays"), "{said}");
        let status = reload_status(&xem);
        assert_eq!(status["report"]["trigger"], "sighup");
        assert_eq!(status["report"]["files"][0]["sha256"], sha256_hex(good), "{status}");

        // Fixed: the next reload takes the new file.
        std::fs::remove_file(&file).unwrap();
        install_credential(&xem, "apiVersion: v1\nuser: fixed\n", "0600");
        let (out, _) = timed_reload(&xem);
        assert!(out.status.success(), "{out:?}");
        assert!(stdout(&out).contains(&format!("ok      {CREDENTIAL_FILE} generation 2")));
        assert!(!xem.logs().contains("other-workspace-admin"), "the link's target was never read");
    }
}

#[tokio::test]
async fn the_watch_reloads_a_file_renamed_into_place_and_never_a_half_written_one() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let settings = [("credentials_watch", "true")];
        let (xem, agent_id) =
            exec_fleet_configured(&router, "xem-watch", "user: one\n", &settings, |_| {}).await;
        router.wait_tool("sleep").await;
        assert_eq!(reload_status(&xem)["seq"], 1, "the startup load");

        // Renamed into place: reloaded without a signal, reported as the watch's.
        rename_into_place(&xem, "user: two\n");
        let status = eventually("a reload by the watch", SETTLE, || async {
            let status = reload_status(&xem);
            (status["seq"] == 2).then_some(status)
        })
        .await;
        let report = &status["report"];
        assert_eq!(
            (report["trigger"].as_str(), report["ok"].as_bool()),
            (Some("watch"), Some(true))
        );
        assert_eq!(report["files"][0]["generation"], 2, "{status}");
        assert_eq!(report["files"][0]["sha256"], sha256_hex("user: two\n"));
        eventually("the router to see generation 2", SETTLE, || async {
            let listed = credentials_of(&router, &agent_id).await;
            (listed["generation"] == 2).then_some(())
        })
        .await;

        // Written in place, half done, held open: the watch never reads it. Proving an
        // absence needs a bounded wait: ten debounce periods, far beyond one.
        let mut half = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(xem.credentials_dir().join(CREDENTIAL_FILE))
            .unwrap();
        half.write_all(b"user: thr").unwrap();
        half.flush().unwrap();
        tokio::time::sleep(DEBOUNCE * 10).await;
        let status = reload_status(&xem);
        assert_eq!(status["seq"], 2, "no reload for a write in place: {status}");
        let view = router.invoke(router.admin_key(), "sleep", json!({ "seconds": 0 })).await;
        let done = router.wait_status(view["id"].as_str().unwrap(), &["succeeded", "failed"]).await;
        assert_eq!(used_credential(&done), sha256_hex("user: two\n"), "[{}] {done}", backend.name);
        drop(half);

        // A symlink renamed into place goes the same way as a SIGHUP reload: refused.
        let (_outside, target) = outside_file("user: elsewhere\n");
        let link = xem.credentials_dir().join(".link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::fs::rename(&link, xem.credentials_dir().join(CREDENTIAL_FILE)).unwrap();
        let status = eventually("the watch to refuse the symlink", SETTLE, || async {
            let status = reload_status(&xem);
            (status["seq"] == 3).then_some(status)
        })
        .await;
        let file = &status["report"]["files"][0];
        assert_eq!(status["report"]["trigger"], "watch", "{status}");
        assert!(file["error"].as_str().unwrap().contains("symbolic link"), "{status}");
        assert_eq!(file["generation"], 2, "the last good version stays: {status}");
        let listed = eventually("the router to see the refusal", SETTLE, || async {
            let listed = credentials_of(&router, &agent_id).await;
            (listed["reload_ok"] == false).then_some(listed)
        })
        .await;
        assert_eq!(listed["generation"], 2, "{listed}");
    }
}

#[tokio::test]
async fn metrics_follow_invocations_reloads_and_the_session() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let listen = format!("127.0.0.1:{}", closed_port());
        let secret = "apiVersion: v1\nuser: metrics-secret-token\n";
        let settings = [("metrics_listen", listen.as_str())];
        let (xem, _agent) =
            exec_fleet_configured(&router, "xem-metrics", secret, &settings, |_| {}).await;
        router.wait_tool("sleep").await;
        let url = format!("http://{listen}/metrics");
        let scrape = || async {
            let resp = reqwest::get(&url).await.expect("scraping the XEM");
            assert_eq!(resp.status(), 200);
            resp.text().await.unwrap()
        };
        let generation =
            format!("xerotier_xem_credential_generation{{credentials_ref=\"{CREDENTIAL_FILE}\"}}");
        let text = eventually("the session to be reported connected", SETTLE, || async {
            let text = scrape().await;
            (metric_value(&text, "xerotier_xem_session_connected") == 1.0).then_some(text)
        })
        .await;
        let startup = "xerotier_xem_credential_reloads_total{trigger=\"startup\",result=\"ok\"}";
        assert_eq!(metric_value(&text, startup), 1.0, "{text}");
        assert_eq!(metric_value(&text, &generation), 1.0, "{text}");
        let age =
            format!("xerotier_xem_credential_age_seconds{{credentials_ref=\"{CREDENTIAL_FILE}\"}}");
        assert!(text.contains(&age), "{text}");
        assert!(text.contains("xerotier_xem_invocations_total{outcome=\"refused\"} 0"), "{text}");

        // An invocation that succeeds, one that runs and is cancelled.
        let succeeded = "xerotier_xem_invocations_total{outcome=\"succeeded\"}";
        let view = router.invoke(router.admin_key(), "noop", json!({})).await;
        router.wait_status(view["id"].as_str().unwrap(), &["succeeded"]).await;
        eventually("one success counted", SETTLE, || async {
            (metric_value(&scrape().await, succeeded) == 1.0).then_some(())
        })
        .await;
        let view = router.invoke(router.admin_key(), "sleep", json!({ "seconds": 300 })).await;
        let id = view["id"].as_str().unwrap();
        router.wait_status(id, &["running"]).await;
        eventually("one invocation running", SETTLE, || async {
            (metric_value(&scrape().await, "xerotier_xem_invocations_running") == 1.0).then_some(())
        })
        .await;
        router
            .post_json(&format!("/v1/exec/invocations/{id}/cancel"), &json!({}))
            .await
            .assert_status(200);
        router.wait_status(id, &["cancelled"]).await;
        let text = eventually("the cancellation counted", SETTLE, || async {
            let text = scrape().await;
            let cancelled = "xerotier_xem_invocations_total{outcome=\"cancelled\"}";
            (metric_value(&text, cancelled) == 1.0).then_some(text)
        })
        .await;
        assert_eq!(metric_value(&text, "xerotier_xem_invocations_running"), 0.0, "{text}");

        // A good reload, then a refused one.
        install_credential(&xem, "apiVersion: v1\nuser: rotated\n", "0600");
        assert!(reload(&xem).status.success());
        install_credential(&xem, "apiVersion: v1\nuser: leaked\n", "0644");
        assert_eq!(reload(&xem).status.code(), Some(1));
        let text = scrape().await;
        for (series, expected) in [
            ("xerotier_xem_credential_reloads_total{trigger=\"sighup\",result=\"ok\"}", 1.0),
            ("xerotier_xem_credential_reloads_total{trigger=\"sighup\",result=\"failed\"}", 1.0),
            (generation.as_str(), 2.0),
        ] {
            assert_eq!(
                metric_value(&text, series),
                expected,
                "[{}] {series}:\n{text}",
                backend.name
            );
        }
        for content in [secret, "user: rotated", "metrics-secret-token"] {
            assert!(!text.contains(content), "no credential content in the metrics");
        }
        assert!(!text.contains(&sha256_hex(secret)), "no credential hash in the metrics");
    }
}

/// Starts an enrolled-nothing XEM on `config` and returns its exit status and stderr.
fn start_refused(config: &str) -> (Option<i32>, String, PathBuf) {
    let router_url = format!("http://127.0.0.1:{}", closed_port());
    let mut xem = Xem::with_config(&router_url, "xem-log-level", XemConfig::YamlFile);
    xem.start_with_config_text(config);
    let status = xem.wait_exit(EXIT_DEADLINE);
    (status.code(), xem.stderr(), xem.state_dir())
}

#[tokio::test]
async fn log_level_takes_level_names_and_refuses_anything_else_at_start() {
    for bogus in ["bogus", "notice", "xerotier_xem=debug"] {
        let (code, stderr, state_dir) = start_refused(&format!("log_level: {bogus}\n"));
        assert_eq!(code, Some(1), "{bogus}: {stderr}");
        assert!(stderr.contains(&format!("unknown log level {bogus:?}")), "{stderr}");
        assert!(stderr.contains("error, warn (or warning), info, debug, trace"), "{stderr}");
        assert!(!Path::new(&state_dir).exists(), "nothing was created");
    }

    // `warning` used to switch logging off: now warnings and errors are logged, info is not.
    let backend = backends().await.remove(0);
    let router = Router::start(&backend).await;
    let settings = [("log_level", "WARNING")];
    let (xem, _agent) =
        exec_fleet_configured(&router, "xem-warning", "user: a\n", &settings, |_| {}).await;
    install_credential(&xem, "user: b\n", "0644");
    assert_eq!(reload(&xem).status.code(), Some(1));
    let logs = eventually("the refusal to be logged", SETTLE, || async {
        let logs = xem.logs();
        logs.contains("NOT reloaded").then_some(logs)
    })
    .await;
    assert!(logs.contains("ERROR"), "{logs}");
    assert!(!logs.contains("mesh session established"), "info is below warning: {logs}");
}

/// A tracing filter (per-target levels) comes only from XEM_LOG_FILTER, and a malformed one
/// stops the start as a bad `log_level` does.
#[test]
fn a_malformed_log_filter_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xem.yaml");
    std::fs::write(&config, format!("state_dir: {}\n", dir.path().join("state").display()))
        .unwrap();
    let out = std::process::Command::new(crate::harness::binary(crate::harness::XEM_BIN))
        .arg("--config")
        .arg(&config)
        .env("XEM_LOG_FILTER", "xerotier_xem=[[nonsense")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("XEM_LOG_FILTER"), "{stderr}");
    assert!(!dir.path().join("state").exists(), "nothing was created");
}
