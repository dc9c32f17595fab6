//! Three replicas on one PostgreSQL: a revoke made through one is in force on every other when
//! it returns (signals, acknowledgements), and a replica cut off from the database is fenced and
//! recovers by catching up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;

use crate::exec::{Exec, exec_fleet};
use crate::fleet_harness::{AgentKeys, RawMesh, enroll, enroll_body, hello, lease_renewal};
use crate::harness::{Backend, Router, RouterOptions, backends, eventually};
use crate::tcp_proxy::TcpProxy;

const TOOLS: &str = "/v1/exec/tools";
/// The lease of the replicas of the fence test.
const LEASE_MS: u64 = 2_000;
const LEASE_FRAMES: &str = "xerotier_router_mesh_frames_total{kind=\"lease_renewal\"}";

async fn postgres() -> Option<Backend> {
    backends().await.into_iter().find(|b| !b.is_sqlite())
}

/// Routers that accept any number of failed authentications from the test's one address (the
/// point is to count refusals, not to be rate-limited).
fn options() -> RouterOptions {
    RouterOptions {
        extra_args: ["--auth-failure-burst", "1000000", "--auth-failures-per-minute", "1000000"]
            .map(String::from)
            .to_vec(),
        ..RouterOptions::default()
    }
}

/// 200 keys, each used on B and C (so both cache it), revoked on A: the very next request on B
/// and on C is refused, every time. Then one key under concurrent load on B and C while A
/// revokes it: nothing started after the revoke returned is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_on_one_replica_holds_on_every_other_when_it_returns() {
    let Some(backend) = postgres().await else { return };
    let a = Router::start_with(&backend, options()).await;
    let (b, c) = (a.replica().await, a.replica().await);
    let mut latencies = Vec::new();
    for round in 0..200 {
        let key = a.create_key(&format!("cached-{round}"), &["execution"]).await;
        for replica in [&b, &c] {
            replica.api().get(TOOLS, Some(&key.value)).await.assert_status(200);
            // Twice: the second answer comes from the replica's cache.
            replica.api().get(TOOLS, Some(&key.value)).await.assert_status(200);
        }
        let started = Instant::now();
        a.revoke_key(&key.id).await.assert_status(200);
        latencies.push(started.elapsed());
        for (name, replica) in [("B", &b), ("C", &c)] {
            replica.api().get(TOOLS, Some(&key.value)).await.assert_error(401, "invalid_api_key");
            assert_eq!(
                replica.exec_status(&key.value).await,
                401,
                "round {round}: replica {name} accepted a key revoked on A"
            );
        }
    }
    latencies.sort();
    eprintln!(
        "revoke through A, in force on B and C: p50 {:?}, p99 {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100]
    );

    let key = a.create_key("loaded", &["execution"]).await;
    let load = Load::start(&[&b, &c], &key.value);
    eventually("successful requests on B and C", Duration::from_secs(10), || async {
        (load.ok.load(Ordering::SeqCst) >= 32).then_some(())
    })
    .await;
    a.revoke_key(&key.id).await.assert_status(200);
    let returned = Instant::now();
    let sent = load.sent.load(Ordering::SeqCst);
    eventually("requests after the revoke", Duration::from_secs(10), || async {
        (load.sent.load(Ordering::SeqCst) >= sent + 200).then_some(())
    })
    .await;
    let samples = load.finish().await;
    let after: Vec<_> = samples.iter().filter(|(started, _)| *started > returned).collect();
    assert!(after.len() >= 200, "{} requests after the revoke", after.len());
    let accepted = after.iter().filter(|(_, status)| *status != 401).count();
    assert_eq!(
        accepted,
        0,
        "{accepted} of {} requests after the revoke were accepted",
        after.len()
    );
}

/// Requests with one key on several replicas at once, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    ok: Arc<AtomicUsize>,
    tasks: JoinSet<Vec<(Instant, u16)>>,
}

impl Load {
    fn start(routers: &[&Router], value: &str) -> Load {
        let (stop, sent, ok) = (Arc::default(), Arc::default(), Arc::default());
        let mut tasks = JoinSet::new();
        for router in routers {
            for _ in 0..8 {
                let (api, value) = (router.api().clone(), value.to_string());
                let (stop, sent, ok): (Arc<AtomicBool>, Arc<AtomicUsize>, Arc<AtomicUsize>) =
                    (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&ok));
                tasks.spawn(async move {
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let started = Instant::now();
                        let status = api.get(TOOLS, Some(&value)).await.status;
                        if status == 200 {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        sent.fetch_add(1, Ordering::SeqCst);
                        samples.push((started, status));
                    }
                    samples
                });
            }
        }
        Load { stop, sent, ok, tasks }
    }

    async fn finish(mut self) -> Vec<(Instant, u16)> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        while let Some(joined) = self.tasks.join_next().await {
            all.extend(joined.expect("a load task"));
        }
        all
    }
}

/// An agent whose session is on C, revoked through A: when the call returns, C has cut it.
/// Frames it sends afterwards are dropped, none is acted on, and C told it why.
#[tokio::test]
async fn revoking_an_agent_through_one_replica_cuts_its_session_on_another() {
    let Some(backend) = postgres().await else { return };
    let a = Router::start(&backend).await;
    let c = a.replica().await;
    let join_key = a.mint_join_key_with(json!({ "name": "raw-on-c" })).await;
    let (resp, keys) = enroll(&a, &join_key.token, "raw-on-c").await;
    resp.assert_status(200);
    let body = resp.json();
    let agent_id = body["agent_id"].as_str().expect("agent id").to_string();
    let router_key = body["router_curve_key"].as_str().expect("router key").to_string();
    let mesh = RawMesh::curve(&c.mesh_addr(), &keys.curve, &router_key);
    mesh.send(&hello(&agent_id));
    let mut seq = 0;
    let before = c.metric(LEASE_FRAMES).await;
    eventually("C to act on the agent's lease renewals", Duration::from_secs(10), || {
        seq += 1;
        mesh.send(&lease_renewal(&agent_id, seq));
        let c = &c;
        async move { (c.metric(LEASE_FRAMES).await > before).then_some(()) }
    })
    .await;

    a.revoke_agent(&agent_id).await.assert_status(200);
    let handled = c.metric(LEASE_FRAMES).await;
    let dropped_before = dropped(&c).await;
    for _ in 0..50 {
        seq += 1;
        mesh.send(&lease_renewal(&agent_id, seq));
    }
    eventually("C to drop the 50 frames sent after the revoke", Duration::from_secs(5), || async {
        (dropped(&c).await >= dropped_before + 50.0).then_some(())
    })
    .await;
    assert_eq!(
        c.metric(LEASE_FRAMES).await,
        handled,
        "C acted on a frame of an agent revoked through A after the revoke returned"
    );
    // Lease acknowledgements sent before the revoke come first.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match mesh.recv(Duration::from_millis(100)) {
            Some(xerotier_proto::mesh::Frame::Revoked { .. }) => return,
            Some(other) => seen.push(other),
            None => {}
        }
    }
    panic!("C did not tell the agent it was revoked; it sent {seen:?}");
}

async fn dropped(router: &Router) -> f64 {
    let text = router.api().get("/metrics", None).await.text;
    text.lines()
        .filter(|line| line.starts_with("xerotier_router_mesh_frames_dropped_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A burst of changes that takes a replica longer to apply than its serving margin (router test
/// fault `slow_signal_apply`: 50 ms before each signal; 130 signals, about 6.5 s; the default
/// 6 s lease stops serving 5 s after a renewal) does not fence it: it renews between budgeted steps
/// of catching up, and would stop renewing only after half a lease behind. Before, the whole
/// backlog was applied ahead of the renewal, whose serving time counted from before it, and the
/// replica fenced itself (the 10k runs' fences). A revoke made behind the burst still returns
/// only once the slow replica applied it: there, the key is refused when the call returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_a_burst_of_changes_keeps_serving_and_a_revoke_still_holds_there() {
    const BURST: usize = 130;
    /// The router's `SLOW_SIGNAL_APPLY_DELAY`.
    const SLOW_APPLY: Duration = Duration::from_millis(50);
    let Some(backend) = postgres().await else { return };
    let a = Router::start_with(&backend, options()).await;
    let mut slow = options();
    slow.env.push(("XEROTIER_ROUTER_TEST_FAULT".into(), "slow_signal_apply".into()));
    let b = a.replica_with(slow).await;
    let (probe, victim) =
        (a.create_key("probe", &["execution"]).await, a.create_key("victim", &["execution"]).await);
    assert_eq!(b.exec_status(&victim.value).await, 200);
    let burst_started = Instant::now();
    let stop = AtomicBool::new(false);
    // B is probed every 100 ms from the start of the burst until the revoke returns.
    let probing = async {
        let mut statuses = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            statuses.push((burst_started.elapsed(), b.api().get(TOOLS, Some(&probe.value)).await));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        statuses
    };
    let burst = async {
        // Ten at a time: far faster than B's 20 signals a second, so B falls behind.
        for n in (0..BURST).step_by(10) {
            let names: Vec<String> = (n..n + 10).map(|i| format!("burst-{i}")).collect();
            futures::future::join_all(names.iter().map(|name| a.create_key(name, &["execution"])))
                .await;
        }
        eprintln!("burst of {BURST} changes made in {:?}", burst_started.elapsed());
        // The revoke comes after the whole burst: it returns once B has applied all of it.
        let resp = a.revoke_key(&victim.id).await;
        stop.store(true, Ordering::SeqCst);
        resp
    };
    let (statuses, revoked) = tokio::join!(probing, burst);
    revoked.assert_status(200);
    let caught_up = burst_started.elapsed();
    assert_eq!(
        b.exec_status(&victim.value).await,
        401,
        "the revoke is in force on B when it returns"
    );
    let refused: Vec<_> = statuses.iter().filter(|(_, resp)| resp.status != 200).collect();
    assert!(
        refused.is_empty(),
        "B stopped serving while behind: {:?}\n{}",
        refused.iter().map(|(at, resp)| (at, resp.status)).collect::<Vec<_>>(),
        b.logs().lines().filter(|l| l.contains("replication")).collect::<Vec<_>>().join("\n")
    );
    assert!(!b.logs().contains("FENCED"), "B fenced itself behind a burst");
    // The burst really left B behind: 50 ms a signal makes it at least this long.
    assert!(
        caught_up >= SLOW_APPLY * u32::try_from(BURST).unwrap_or(u32::MAX),
        "B caught up after {caught_up:?}: was it ever behind?"
    );
    eprintln!("B caught up after {caught_up:?}, {} probes served", statuses.len());
}

/// A replica that loses the database loses its lease: it serves nothing authenticated
/// (`replica_fenced`), a revoke through another replica returns within the lease bound instead
/// of waiting for it, and once the database is back it catches up (the revoked key is refused
/// there too) before it serves again.
#[tokio::test]
async fn a_replica_cut_off_from_the_database_is_fenced_and_recovers() {
    let Some(backend) = postgres().await else { return };
    // A short lease keeps the test short; the rule is the same at any length.
    let options = RouterOptions {
        extra_args: vec!["--replica-lease-ms".into(), LEASE_MS.to_string()],
        ..RouterOptions::default()
    };
    let a = Router::start_with(&backend, options).await;
    let url = backend.database_url().expect("a PostgreSQL URL").to_string();
    let (before_host, rest) = url.split_once('@').expect("user@host in the URL");
    let (authority, path) = rest.split_once('/').expect("a database in the URL");
    let proxy = TcpProxy::start(&format!("tcp://{authority}"));
    let proxied = proxy.base_url("tcp://x").trim_start_matches("tcp://").to_string();
    let c = a.replica_via(format!("{before_host}@{proxied}/{path}")).await;
    let (kept, revoked) = (
        a.create_key("kept", &["execution"]).await,
        a.create_key("revoked-while-cut", &["execution"]).await,
    );
    for key in [&kept, &revoked] {
        assert_eq!(c.exec_status(&key.value).await, 200);
    }

    proxy.refuse(true);
    proxy.cut();
    let cut_at = Instant::now();
    // Until its lease runs out C may still answer (from its cache), or fail on the store.
    let fenced = eventually("C to fence itself", Duration::from_secs(5), || async {
        let resp = c.api().get(TOOLS, Some(&kept.value)).await;
        (resp.status == 503 && resp.json()["error"]["code"] == "replica_fenced").then_some(resp)
    })
    .await;
    fenced.assert_error(503, "replica_fenced");
    assert!(
        cut_at.elapsed() < Duration::from_millis(LEASE_MS + 500),
        "fenced after {:?}",
        cut_at.elapsed()
    );

    let started = Instant::now();
    a.revoke_key(&revoked.id).await.assert_status(200);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(2 * LEASE_MS),
        "a revoke waited {waited:?} for a fenced replica"
    );
    c.api().get(TOOLS, Some(&revoked.value)).await.assert_error(503, "replica_fenced");

    proxy.refuse(false);
    eventually("C to serve again", Duration::from_secs(15), || async {
        (c.api().get(TOOLS, Some(&kept.value)).await.status == 200).then_some(())
    })
    .await;
    assert_eq!(c.exec_status(&revoked.value).await, 401, "caught up before serving");
    assert!(c.logs().contains("FENCED"), "the fence is logged");
}

/// The only agent's session is on C; the caller talks to A, which has no agent at all. A sees
/// what C's agent offers (from the store), accepts the invocation, and C's dispatch, woken
/// through the store, runs it: once, to the end, visible on A.
#[tokio::test]
async fn an_invocation_created_on_a_replica_without_agents_runs_on_another() {
    let Some(backend) = postgres().await else { return };
    let a = Router::start(&backend).await;
    let c = a.replica().await;
    let (_xem, agent_id) = exec_fleet(&c, "xem-on-c", "v1\n", |_| {}).await;
    a.wait_tool("sleep").await;
    let started = Instant::now();
    let view = a.invoke(a.admin_key(), "sleep", json!({ "seconds": 0 })).await;
    assert!(view["agent_id"].is_null(), "not claimed by A, which has no agent: {view}");
    let id = view["id"].as_str().expect("invocation id").to_string();
    let done = a.wait_status(&id, &["succeeded", "failed", "timed_out", "cancelled"]).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["agent_id"], agent_id.as_str(), "{done}");
    eprintln!("created on A, run through C: {:?}", started.elapsed());
    let runs = a.get_json("/v1/exec/invocations?tool=sleep").await;
    assert_eq!(runs["data"].as_array().expect("a page").len(), 1, "run once: {runs}");

    // An argument C's agent's schema refuses is refused on A too, before anything is queued.
    let bad =
        json!({ "workspace": "kubernetes-prod", "tool": "sleep", "args": { "seconds": "x" } });
    a.api()
        .post("/v1/exec/invocations", Some(a.admin_key()), &bad)
        .await
        .assert_error(400, "invalid_arguments");
}

/// One join key, 64 enrollments at once spread over three replicas: exactly one agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_enrollments_over_three_replicas_with_one_join_key_make_one_agent() {
    const ATTEMPTS: usize = 64;
    let Some(backend) = postgres().await else { return };
    let a = Router::start(&backend).await;
    let (b, c) = (a.replica().await, a.replica().await);
    let key = a.mint_join_key("contended-replicas").await;
    let barrier = Arc::new(tokio::sync::Barrier::new(ATTEMPTS));
    let replicas = [&a, &b, &c];
    let tasks: Vec<_> = (0..ATTEMPTS)
        .map(|i| {
            let body = enroll_body(&key.token, &format!("racer-{i:02}"), &AgentKeys::fresh());
            let api = replicas[i % 3].api().clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                api.post("/v1/enroll", None, &body).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("an enrollment task"));
    }
    let won: Vec<_> = answers.iter().filter(|r| r.status == 200).collect();
    assert_eq!(
        won.len(),
        1,
        "exactly one wins: {:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for resp in answers.iter().filter(|r| r.status != 200) {
        resp.assert_error(409, "join_key_used");
    }
    for replica in replicas {
        assert_eq!(replica.all_agents().await.len(), 1, "one agent, seen from every replica");
    }
}
