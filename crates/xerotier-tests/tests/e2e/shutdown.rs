//! A router stopped with SIGTERM under load: many simulated agents renewing their leases on
//! real CURVE sockets, CURVE rotations in flight (some acknowledged, some never), rotation
//! requests still arriving over HTTP. It must exit promptly and cleanly, finishing or
//! abandoning its in-flight work, and write nothing after its store closed; restarted on the
//! same store, every rotation ends and every agent comes back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use tokio::task::JoinSet;
use xerotier_core::OsEntropy;
use xerotier_credentials::{CurveKeyPair, SigningKeyPair};
use xerotier_mesh::{ClientKeys, configure_client_socket};
use xerotier_proto::mesh::{
    self, Frame, RotateAckPayload, encode_ack_payload, rotate_ack_signing_input,
};

use crate::fleet_harness::{AgentKeys, enroll_body};
use crate::harness::{Api, Backend, Router, RouterOptions, backends, eventually};

/// Simulated agents on the router: enough that frames are always arriving.
const AGENTS: usize = 200;
/// Their lease renewal interval (ms): 400 renewals a second across the fleet.
const SIM_LEASE_MS: u64 = 500;
/// The routers' acknowledgement timeout (s): unacknowledged rotations are still pending at the
/// SIGTERM, and end soon after the restart.
const ACK_TIMEOUT_S: u64 = 6;
/// How long the router may take to exit after SIGTERM.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);
/// Deadline for the fleet to enroll, connect, rotate and come back.
const SETTLE: Duration = Duration::from_secs(30);
/// Rotation requests answered before the SIGTERM, out of the second batch: the rest are in
/// flight (or refused) when it comes.
const BEFORE_SIGTERM: usize = 10;
/// What the router's log must never hold: a store access after the store closed (sqlx's
/// `Error::PoolClosed` and its message), or a panic.
const FORBIDDEN_IN_LOG: [&str; 4] =
    ["closed pool", "PoolClosed", "attempted to acquire a connection on a closed pool", "panicked"];

// ---------------------------------------------------------------------------------------------
// Simulated agents
// ---------------------------------------------------------------------------------------------

/// One agent enrolled over HTTP, driven by [`SimFleet`].
struct SimAgent {
    id: String,
    mesh_addr: String,
    router_key: String,
    curve: CurveKeyPair,
    signing: SigningKeyPair,
    /// Whether it acknowledges rotation instructions (a mute agent never does).
    acknowledges: bool,
    /// The keys (CURVE, signing) of an acknowledged rotation, until the promotion (or
    /// failure) arrives.
    pending: Option<(String, CurveKeyPair, SigningKeyPair)>,
}

impl SimAgent {
    /// A socket on the agent's current key, its hello queued (sent once the handshake is done).
    fn open(&self, context: &zmq::Context) -> zmq::Socket {
        let socket = context.socket(zmq::DEALER).expect("a DEALER socket");
        configure_client_socket(&socket, &ClientKeys::new(&self.curve, &self.router_key))
            .expect("configuring a simulated agent's socket");
        socket.connect(&self.mesh_addr).expect("connecting a simulated agent");
        let hello = Frame::Hello {
            agent_id: self.id.clone(),
            xem_version: "e2e-shutdown".to_string(),
            manifest_hash: "0".repeat(64),
            manifest_version: 1,
        };
        socket.send(mesh::encode(&hello), zmq::DONTWAIT).expect("queueing a hello");
        socket
    }

    /// Answers one frame from the router as the XEM would; `true` when the agent switched keys
    /// (its socket must be opened again).
    fn handle(&mut self, socket: &zmq::Socket, frame: Frame, stats: &SimStats) -> bool {
        match frame {
            Frame::RotateCurve { request_id, nonce } if self.acknowledges => {
                // A re-sent instruction (after a reconnect) reuses the pending key.
                let (key, next_signing) = match self.pending.take() {
                    Some((pending_id, key, next)) if pending_id == request_id => (key, next),
                    _ => (CurveKeyPair::generate(&OsEntropy), SigningKeyPair::generate(&OsEntropy)),
                };
                let payload = encode_ack_payload(&RotateAckPayload {
                    agent_id: self.id.clone(),
                    request_id: request_id.clone(),
                    nonce,
                    new_public_key: key.public_z85(),
                    new_signing_public_key: next_signing.public_hex(),
                });
                let signature = self.signing.sign(&rotate_ack_signing_input(&payload)).to_vec();
                let _ = socket.send(mesh::encode(&Frame::RotateAck { payload, signature }), 0);
                self.pending = Some((request_id, key, next_signing));
                stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                false
            }
            Frame::RotationPromoted { request_id } => match self.pending.take() {
                Some((pending_id, key, next_signing)) if pending_id == request_id => {
                    self.curve = key;
                    self.signing = next_signing;
                    stats.promoted.fetch_add(1, Ordering::Relaxed);
                    true
                }
                other => {
                    self.pending = other;
                    false
                }
            },
            Frame::RotationFailed { request_id, .. } => {
                if self.pending.as_ref().is_some_and(|(id, _, _)| *id == request_id) {
                    self.pending = None;
                }
                false
            }
            _ => false,
        }
    }
}

/// What the agents saw, for the test to wait on and to report.
#[derive(Debug, Default)]
struct SimStats {
    acknowledged: AtomicUsize,
    promoted: AtomicUsize,
}

/// Simulated agents, all on one thread and one ZeroMQ context: each renews its lease every
/// [`SIM_LEASE_MS`], answers rotations (or not) and switches keys on promotion.
struct SimFleet {
    ids: Vec<String>,
    stats: Arc<SimStats>,
    stop: Arc<AtomicBool>,
    /// Bumped to make every agent open a fresh socket and say hello (after a router restart,
    /// rather than waiting out ZeroMQ's reconnect back-off).
    reconnect: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl SimFleet {
    fn start(agents: Vec<SimAgent>) -> SimFleet {
        let ids = agents.iter().map(|a| a.id.clone()).collect();
        let stats = Arc::new(SimStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let reconnect = Arc::new(AtomicU64::new(0));
        let (t_stats, t_stop, t_reconnect) = (stats.clone(), stop.clone(), reconnect.clone());
        let thread = std::thread::spawn(move || drive(agents, &t_stats, &t_stop, &t_reconnect));
        SimFleet { ids, stats, stop, reconnect, thread: Some(thread) }
    }

    fn reconnect_all(&self) {
        self.reconnect.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn drive(mut agents: Vec<SimAgent>, stats: &SimStats, stop: &AtomicBool, reconnect: &AtomicU64) {
    let context = zmq::Context::new();
    let mut sockets: Vec<zmq::Socket> = agents.iter().map(|a| a.open(&context)).collect();
    let mut generation = reconnect.load(Ordering::SeqCst);
    let mut next_lease = Instant::now();
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        let wanted = reconnect.load(Ordering::SeqCst);
        if wanted != generation {
            generation = wanted;
            sockets = agents.iter().map(|a| a.open(&context)).collect();
        }
        if Instant::now() >= next_lease {
            seq += 1;
            for (agent, socket) in agents.iter().zip(&sockets) {
                let renewal = crate::fleet_harness::lease_renewal(&agent.id, seq);
                // A full queue (router away) drops the renewal, as a missed lease.
                let _ = socket.send(mesh::encode(&renewal), zmq::DONTWAIT);
            }
            next_lease += Duration::from_millis(SIM_LEASE_MS);
        }
        let mut items: Vec<_> = sockets.iter().map(|s| s.as_poll_item(zmq::POLLIN)).collect();
        zmq::poll(&mut items, 20).expect("polling the simulated agents");
        let ready: Vec<bool> = items.iter().map(zmq::PollItem::is_readable).collect();
        drop(items);
        for (index, ready) in ready.into_iter().enumerate() {
            if !ready {
                continue;
            }
            while let Ok(bytes) = sockets[index].recv_bytes(zmq::DONTWAIT) {
                let Ok(frame) = mesh::decode(&bytes) else { continue };
                if agents[index].handle(&sockets[index], frame, stats) {
                    sockets[index] = agents[index].open(&context);
                }
            }
        }
    }
}

/// Enrolls `count` agents over HTTP (a join key each), eight at a time; in the order of their
/// ids, every other one acknowledges rotations.
async fn enroll_fleet(router: &Router, count: usize) -> Vec<SimAgent> {
    let (api, admin_key, mesh_addr) =
        (router.api().clone(), router.admin_key().to_string(), router.mesh_addr());
    let mut agents = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(8) {
        let mut batch = JoinSet::new();
        for &index in chunk {
            let (api, admin_key, mesh_addr) = (api.clone(), admin_key.clone(), mesh_addr.clone());
            batch.spawn(async move {
                let name = format!("sim-{index:03}");
                let body = json!({ "name": format!("{name}-key"), "router_addr": mesh_addr });
                let minted = api.post("/v1/management/join-keys", Some(&admin_key), &body).await;
                minted.assert_status(201);
                let token = minted.json()["token"].as_str().expect("join key token").to_string();
                let keys = AgentKeys::fresh();
                let mut body = enroll_body(&token, &name, &keys);
                body["lease_renewal_interval_ms"] = json!(SIM_LEASE_MS);
                let enrolled = api.post("/v1/enroll", None, &body).await;
                enrolled.assert_status(200);
                let answer = enrolled.json();
                let text = |field: &str| answer[field].as_str().expect(field).to_string();
                SimAgent {
                    id: text("agent_id"),
                    mesh_addr: text("mesh_addr"),
                    router_key: text("router_curve_key"),
                    curve: keys.curve,
                    signing: keys.signing,
                    acknowledges: false,
                    pending: None,
                }
            });
        }
        while let Some(agent) = batch.join_next().await {
            agents.push(agent.expect("enrolling a simulated agent"));
        }
    }
    agents.sort_by(|a, b| a.id.cmp(&b.id));
    for (index, agent) in agents.iter_mut().enumerate() {
        agent.acknowledges = index % 2 == 0;
    }
    agents
}

// ---------------------------------------------------------------------------------------------
// The router side
// ---------------------------------------------------------------------------------------------

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The agents as the router lists them, by id.
async fn agents_by_id(router: &Router) -> BTreeMap<String, Value> {
    router
        .all_agents()
        .await
        .into_iter()
        .map(|a| (a["id"].as_str().expect("agent id").to_string(), a))
        .collect()
}

/// Waits until every one of `ids` is `active` on a lease renewal made after `since`.
async fn wait_all_active(router: &Router, ids: &[String], since: &str, what: &str) {
    eventually(&format!("[{}] {what}", router.backend), SETTLE, || async {
        let agents = agents_by_id(router).await;
        ids.iter()
            .all(|id| {
                agents.get(id).is_some_and(|a| {
                    a["status"] == "active"
                        && a["last_heartbeat_at"].as_str().is_some_and(|at| at > since)
                })
            })
            .then_some(())
    })
    .await;
}

/// `POST …/curve-rotate` for each of `ids`, all at once; the request ids of those answered 202
/// are sent on `accepted` as they come. Requests the stopping router refuses or drops are fine.
fn request_rotations(
    api: &Api,
    admin_key: &str,
    ids: &[String],
    accepted: tokio::sync::mpsc::UnboundedSender<(String, String)>,
) -> JoinSet<()> {
    let mut requests = JoinSet::new();
    for id in ids {
        let request = api
            .request(reqwest::Method::POST, &format!("/v1/management/agents/{id}/curve-rotate"))
            .bearer_auth(admin_key)
            .json(&json!({ "reason": "shutdown drill" }));
        let (id, accepted) = (id.clone(), accepted.clone());
        requests.spawn(async move {
            let Ok(response) = request.send().await else { return };
            if response.status().as_u16() != 202 {
                return;
            }
            let Ok(view) = response.json::<Value>().await else { return };
            let request_id = view["request_id"].as_str().expect("request id").to_string();
            let _ = accepted.send((id, request_id));
        });
    }
    requests
}

/// A rotation is over: promoted, or failed with a reason, and completed.
fn is_terminal(rotation: &Value) -> bool {
    matches!(rotation["status"].as_str(), Some("promoted" | "failed"))
        && rotation["completed_at"].is_string()
}

/// The lines of `log` that show work after the store closed, or a panic.
fn forbidden_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|line| FORBIDDEN_IN_LOG.iter().any(|bad| line.contains(bad))).collect()
}

async fn router_under_load_stops_cleanly(backend: &Backend) {
    let options = RouterOptions {
        extra_args: vec![
            "--curve-rotation-ack-timeout-seconds".to_string(),
            ACK_TIMEOUT_S.to_string(),
        ],
        ..RouterOptions::fixed_mesh_port()
    };
    let mut router = Router::start_with(backend, options).await;
    let began = Instant::now();
    let fleet = SimFleet::start(enroll_fleet(&router, AGENTS).await);
    wait_all_active(&router, &fleet.ids, "", "every simulated agent to be active").await;
    eprintln!("[{}] {AGENTS} agents active after {:?}", backend.name, began.elapsed());

    // First batch: half the fleet rotated; the acknowledging half is promoted, the mute half
    // stays pending (its acknowledgement timeout is still to come at the SIGTERM).
    let (first, second) = fleet.ids.split_at(AGENTS / 2);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut requests = request_rotations(router.api(), router.admin_key(), first, tx.clone());
    while requests.join_next().await.is_some() {}
    let mut rotations: Vec<(String, String)> = Vec::new();
    while let Ok(pair) = rx.try_recv() {
        rotations.push(pair);
    }
    assert_eq!(rotations.len(), first.len(), "[{}] every rotation is accepted", backend.name);
    let acknowledging = first.len().div_ceil(2);
    eventually(&format!("[{}] the first batch's promotions", backend.name), SETTLE, || async {
        (fleet.stats.promoted.load(Ordering::Relaxed) >= acknowledging).then_some(())
    })
    .await;

    // Second batch: the rest of the fleet, all at once; SIGTERM as soon as a few are accepted,
    // with the others still being requested, acknowledged and promoted.
    let mut requests = request_rotations(router.api(), router.admin_key(), second, tx);
    for _ in 0..BEFORE_SIGTERM {
        let pair = tokio::time::timeout(SETTLE, rx.recv())
            .await
            .expect("rotation requests of the second batch answered")
            .expect("the request tasks are running");
        rotations.push(pair);
    }
    let before_sigterm = rotations.len();
    // Blocking wait on this worker; the other one keeps the requests going.
    let outcome = tokio::task::block_in_place(|| router.sigterm_within(SHUTDOWN_DEADLINE));
    while requests.join_next().await.is_some() {}
    while let Ok(pair) = rx.try_recv() {
        rotations.push(pair);
    }
    eprintln!(
        "[{}] SIGTERM after {before_sigterm} rotations were accepted ({} in the end); the agents \
         had acknowledged {} and seen {} promotions",
        backend.name,
        rotations.len(),
        fleet.stats.acknowledged.load(Ordering::Relaxed),
        fleet.stats.promoted.load(Ordering::Relaxed)
    );

    // The shutdown itself.
    let log = router.logs();
    let mut problems = Vec::new();
    match &outcome {
        Ok((status, took)) => {
            eprintln!("[{}] the router exited {status} {took:?} after SIGTERM", backend.name);
            if !status.success() {
                problems.push(format!("it exited with {status} on SIGTERM"));
            }
        }
        Err(hung) => problems.push(hung.clone()),
    }
    let bad = forbidden_lines(&log);
    if !bad.is_empty() {
        problems.push(format!(
            "its log has {} line(s) with {FORBIDDEN_IN_LOG:?}, e.g.:\n  {}",
            bad.len(),
            bad.iter().take(5).copied().collect::<Vec<_>>().join("\n  ")
        ));
    }
    assert!(
        problems.is_empty(),
        "[{}] the router did not stop cleanly under load:\n- {}",
        backend.name,
        problems.join("\n- ")
    );

    // Restarted on the same store: nothing is stuck, every agent comes back.
    let since = now_rfc3339();
    router.restart().await;
    fleet.reconnect_all();
    wait_all_active(&router, &fleet.ids, &since, "every agent to renew after the restart").await;
    let restarted = &router;
    for (agent_id, request_id) in &rotations {
        let path = format!("/v1/management/agents/{agent_id}/curve-rotations/{request_id}");
        let what = format!("[{}] rotation {request_id} to end", backend.name);
        eventually(&what, SETTLE, || async {
            let resp = restarted.api().get(&path, Some(restarted.admin_key())).await;
            resp.assert_status(200);
            is_terminal(&resp.json()).then_some(())
        })
        .await;
    }
    let restarted_log = router.logs();
    let bad = forbidden_lines(&restarted_log[log.len()..]);
    assert!(bad.is_empty(), "[{}] after the restart: {bad:#?}", backend.name);
    eprintln!("[{}] done in {:?}", backend.name, began.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_with_many_agents_and_rotations_in_flight_stops_cleanly_on_sigterm() {
    for backend in backends().await {
        router_under_load_stops_cleanly(&backend).await;
    }
}
