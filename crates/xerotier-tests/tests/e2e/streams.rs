//! Streams that outlive their connection: `xeroctl agents agt_… --events --follow` and
//! `xeroctl exec watch inv_…` reconnect after the stream is cut or the router restarts, and
//! resume with `Last-Event-ID` where they stood: nothing lost, nothing printed twice. `exec
//! watch` streams an invocation's output as it is written (`GET
//! /v1/exec/invocations/{id}/output`) instead of downloading it again and again.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::requests_seen;
use crate::cli_conventions::candidate_agent;
use crate::exec::{Exec, exec_fleet, write_tool};
use crate::harness::{Router, RunningXeroctl, Xeroctl, backends, eventually};
use crate::tcp_proxy::TcpProxy;

/// How long a follower may take to catch up after a reconnection.
const CATCH_UP: Duration = Duration::from_secs(20);
/// xeroctl's status when it stopped waiting while the work goes on (README, "Exit codes").
const STILL_RUNNING: i32 = 8;

/// Pauses or resumes dispatch to `agent` (each is one event in its log).
async fn toggle(router: &Router, agent: &str, n: usize) {
    let action = if n.is_multiple_of(2) { "pause-exec" } else { "resume-exec" };
    let resp =
        router.post_json(&format!("/v1/management/agents/{agent}/{action}"), &json!({})).await;
    resp.assert_status(200);
}

/// The ids of the events a follower printed (`-o json`: one object per line).
fn followed(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

async fn event_ids(router: &Router, agent: &str) -> Vec<String> {
    router
        .collect_pages(&format!("/v1/management/agents/{agent}/events"))
        .await
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until the follower printed exactly the agent's events; them.
async fn caught_up(
    router: &Router,
    follower: &RunningXeroctl,
    agent: &str,
    what: &str,
) -> Vec<String> {
    eventually(what, CATCH_UP, || async {
        let all = event_ids(router, agent).await;
        (followed(&follower.stdout()) == all).then_some(all)
    })
    .await
}

#[tokio::test]
async fn events_follower_resumes_after_a_cut_and_a_restarted_router() {
    for backend in backends().await {
        let mut router = Router::start(&backend).await;
        let (agent, _) = candidate_agent(&router, "xem-followed").await;
        let proxy = TcpProxy::start(&router.base_url());
        let ctl = Xeroctl::for_router(&router).base_url(Some(&proxy.base_url(&router.base_url())));
        let follower = ctl.spawn(&["-o", "json", "agents", &agent, "--events", "--follow"]);
        let mut n = 0;
        for _ in 0..2 {
            toggle(&router, &agent, n).await;
            n += 1;
        }
        let before =
            caught_up(&router, &follower, &agent, "the follower to print every event").await;
        assert!(before.len() >= 2, "paused, resumed: {before:?}");

        // The stream is cut, and nothing can connect for a while: what happens meanwhile
        // comes after the reconnection, once.
        proxy.refuse(true);
        proxy.cut();
        for _ in 0..3 {
            toggle(&router, &agent, n).await;
            n += 1;
        }
        proxy.refuse(false);
        let seen =
            caught_up(&router, &follower, &agent, "the follower to resume after the cut").await;
        assert_eq!(seen.len(), before.len() + 3, "[{}] {seen:?}", backend.name);

        // The router restarts (SIGTERM ends the stream) on another port behind the proxy.
        router.restart().await;
        proxy.set_upstream(&router.base_url());
        for _ in 0..2 {
            toggle(&router, &agent, n).await;
            n += 1;
        }
        let seen =
            caught_up(&router, &follower, &agent, "the follower to resume after a restart").await;
        let printed = followed(&follower.stdout());
        let mut unique = printed.clone();
        unique.dedup();
        assert_eq!(printed, unique, "[{}] no event twice", backend.name);
        assert_eq!(printed, seen, "[{}] every event, in order", backend.name);
        assert!(follower.stderr().contains("reconnecting"), "{}", follower.stderr());
        let mut follower = follower;
        assert!(follower.is_running(), "following goes on: {}", follower.stderr());
    }
}

#[tokio::test]
async fn watch_streams_output_as_it_is_written_and_resumes_after_a_cut() {
    for backend in backends().await {
        let router = Router::start(&backend).await;
        let gate_dir = tempfile::tempdir().unwrap();
        let gate = gate_dir.path().join("open");
        let script = format!(
            "echo first\necho warning >&2\nwhile [ ! -e {} ]; do sleep 0.05; done\necho second",
            gate.display()
        );
        let (_xem, _agent) = exec_fleet(&router, "xem-watch", "v1\n", |tools| {
            write_tool(tools, "gated", 120, &script);
        })
        .await;
        router.wait_tool("gated").await;
        let proxy = TcpProxy::start(&router.base_url());
        let ctl = Xeroctl::for_router(&router).base_url(Some(&proxy.base_url(&router.base_url())));
        let id = router.invoke(router.admin_key(), "gated", json!({})).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let reads_before = requests_seen(&router, "GET", "/v1/exec/invocations/{id}").await;

        // The first line is printed while the tool still runs (it waits for the gate).
        let watch = ctl.spawn(&["exec", "watch", &id]);
        eventually("the first line to be streamed", CATCH_UP, || async {
            (watch.stdout() == "first\n" && watch.stderr().contains("warning")).then_some(())
        })
        .await;
        assert_eq!(router.invocation(&id).await["status"], "running", "[{}]", backend.name);

        // Cut mid-run: the watch reconnects and resumes where it stood.
        let accepted = proxy.accepted();
        proxy.cut();
        eventually("the watch to reconnect", CATCH_UP, || async {
            (proxy.accepted() > accepted).then_some(())
        })
        .await;

        // Waiting with a deadline while it runs: status 8, and it keeps running.
        let waited = ctl.run(&["exec", "watch", &id, "--wait-timeout", "1s"]);
        assert_eq!(waited.status.code(), Some(STILL_RUNNING), "{waited:?}");
        assert!(waited.stderr.contains("keeps running"), "{}", waited.stderr);
        assert_eq!(waited.stdout, "first\n", "what was written so far");

        std::fs::write(&gate, "").unwrap();
        let out = watch.wait();
        assert!(out.status.success(), "[{}] {out:?}", backend.name);
        assert_eq!(out.stdout, "first\nsecond\n", "every line once, in order");
        assert_eq!(out.stderr.matches("warning").count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains(&format!("{id}: succeeded (exit code 0)")), "{}", out.stderr);

        // Streamed, not polled (a poll every 250 ms would have read it a dozen times): the
        // invocation itself was read once per watch, and once by this test.
        let reads = requests_seen(&router, "GET", "/v1/exec/invocations/{id}").await;
        assert!(
            reads - reads_before <= 3.0,
            "[{}] {} reads of the invocation",
            backend.name,
            reads - reads_before
        );
        let streams = requests_seen(&router, "GET", "/v1/exec/invocations/{id}/output").await;
        assert!(
            streams >= 3.0,
            "[{}] the watch, its reconnection, the timed wait: {streams}",
            backend.name
        );

        // An ended invocation: its whole output at once; as data, the final view.
        let again = ctl.run(&["exec", "watch", &id]).success();
        assert_eq!(again.stdout, "first\nsecond\n");
        let view = ctl.run(&["-o", "json", "exec", "watch", &id]).success().json();
        assert_eq!(
            (view["status"].as_str(), view["stdout"].as_str()),
            (Some("succeeded"), Some("first\nsecond\n"))
        );
        let name = ctl.run(&["-o", "name", "exec", "show", &id]).success();
        assert_eq!(name.stdout, format!("invocation/{id}\n"));
        let yaml: Value =
            serde_norway::from_str(&ctl.run(&["-o", "yaml", "exec", "show", &id]).success().stdout)
                .unwrap();
        assert_eq!(yaml["stdout"], "first\nsecond\n");
        let tools = ctl.run(&["exec", "tools", "-o", "name"]).success();
        assert!(tools.stdout.lines().any(|l| l == "tool/gated"), "{}", tools.stdout);
    }
}
