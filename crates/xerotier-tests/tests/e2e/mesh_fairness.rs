//! Fairness on the mesh: one agent holding a valid identity floods the router with hellos as
//! fast as it can while honest agents renew their leases on real CURVE sockets. The honest
//! agents' acknowledgements stay prompt, the flood is one `connected` event and one
//! `disconnected_flooding` event (not 20 000 events and log lines), and the flooder is served
//! again after its cool-down.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};
use xerotier_credentials::CurveKeyPair;
use xerotier_mesh::{ClientKeys, configure_client_socket};
use xerotier_proto::mesh::{self, Frame};

use crate::fleet_harness::{AgentKeys, enroll_body, hello, lease_renewal};
use crate::harness::{Router, RouterOptions, backends, eventually};

/// Honest agents renewing their leases through the flood.
const HONEST: usize = 20;
/// Their renewal interval (ms).
const HONEST_LEASE_MS: u64 = 200;
/// Hellos the flooder sends, back to back.
const FLOOD_HELLOS: usize = 20_000;
/// The router's flood cool-down in this test (s).
const COOLDOWN_S: u64 = 5;
/// The honest agents' acknowledgement p99 must stay under this during the flood.
const ACK_P99_LIMIT: Duration = Duration::from_secs(1);
/// How long the baseline (no flood) is measured.
const BASELINE: Duration = Duration::from_secs(2);
/// Deadline for anything to happen (enroll, connect, the event, the cool-down).
const SETTLE: Duration = Duration::from_secs(40);

/// One agent enrolled over HTTP.
struct Agent {
    id: String,
    mesh_addr: String,
    router_key: String,
    curve: CurveKeyPair,
}

impl Agent {
    fn open(&self, context: &zmq::Context) -> zmq::Socket {
        let socket = context.socket(zmq::DEALER).expect("a DEALER socket");
        configure_client_socket(&socket, &ClientKeys::new(&self.curve, &self.router_key))
            .expect("configuring an agent socket");
        socket.connect(&self.mesh_addr).expect("connecting an agent");
        socket
    }
}

async fn enroll_agent(router: &Router, name: &str) -> Agent {
    let key = router.mint_join_key(&format!("{name}-key")).await;
    let keys = AgentKeys::fresh();
    let mut body = enroll_body(&key.token, name, &keys);
    body["lease_renewal_interval_ms"] = json!(HONEST_LEASE_MS);
    let resp = router.post_enroll(&body).await;
    resp.assert_status(200);
    let answer = resp.json();
    let text = |field: &str| answer[field].as_str().expect(field).to_string();
    Agent {
        id: text("agent_id"),
        mesh_addr: text("mesh_addr"),
        router_key: text("router_curve_key"),
        curve: keys.curve,
    }
}

/// Acknowledgement latencies, each with when its renewal was sent.
type Acks = Arc<Mutex<Vec<(Instant, Duration)>>>;

/// The honest agents on one thread: a hello each, then a renewal every [`HONEST_LEASE_MS`];
/// every acknowledgement's latency is recorded. Renewals never acknowledged are counted.
struct Honest {
    acks: Acks,
    sent: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Honest {
    fn start(agents: Vec<Agent>) -> Honest {
        let acks: Acks = Arc::default();
        let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (t_acks, t_sent, t_stop) = (acks.clone(), sent.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let context = zmq::Context::new();
            let sockets: Vec<zmq::Socket> = agents.iter().map(|a| a.open(&context)).collect();
            for (agent, socket) in agents.iter().zip(&sockets) {
                socket.send(mesh::encode(&hello(&agent.id)), 0).expect("queueing a hello");
            }
            let mut pending: Vec<HashMap<u64, Instant>> = vec![HashMap::new(); agents.len()];
            let mut next = Instant::now();
            let mut seq = 0;
            while !t_stop.load(Ordering::SeqCst) {
                if Instant::now() >= next {
                    seq += 1;
                    for (index, (agent, socket)) in agents.iter().zip(&sockets).enumerate() {
                        let at = Instant::now();
                        if socket
                            .send(mesh::encode(&lease_renewal(&agent.id, seq)), zmq::DONTWAIT)
                            .is_ok()
                        {
                            pending[index].insert(seq, at);
                            t_sent.lock().push(at);
                        }
                    }
                    next += Duration::from_millis(HONEST_LEASE_MS);
                }
                let mut items: Vec<_> =
                    sockets.iter().map(|s| s.as_poll_item(zmq::POLLIN)).collect();
                zmq::poll(&mut items, 10).expect("polling the honest agents");
                let ready: Vec<bool> = items.iter().map(zmq::PollItem::is_readable).collect();
                drop(items);
                for (index, ready) in ready.into_iter().enumerate() {
                    if !ready {
                        continue;
                    }
                    while let Ok(bytes) = sockets[index].recv_bytes(zmq::DONTWAIT) {
                        if let Ok(Frame::LeaseAck { seq }) = mesh::decode(&bytes)
                            && let Some(at) = pending[index].remove(&seq)
                        {
                            t_acks.lock().push((at, at.elapsed()));
                        }
                    }
                }
            }
        });
        Honest { acks, sent, stop, thread: Some(thread) }
    }

    /// (p50, p99, acknowledged, sent) of the renewals sent in `[from, to)`.
    fn window(&self, from: Instant, to: Instant) -> (Duration, Duration, usize, usize) {
        let mut latencies: Vec<Duration> = self
            .acks
            .lock()
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, latency)| *latency)
            .collect();
        let sent = self.sent.lock().iter().filter(|at| **at >= from && **at < to).count();
        latencies.sort();
        let pick = |q: f64| {
            let index = ((latencies.len() as f64) * q).ceil() as usize;
            latencies.get(index.saturating_sub(1)).copied().unwrap_or(Duration::MAX)
        };
        (pick(0.50), pick(0.99), latencies.len(), sent)
    }
}

impl Drop for Honest {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the flooder saw.
struct Flood {
    started: Instant,
    finished: Instant,
    /// When its first lease renewal after the flood was acknowledged.
    served_again: Option<Instant>,
}

/// The flooder: [`FLOOD_HELLOS`] hellos as fast as the socket takes them, then a renewal every
/// 250 ms until one is acknowledged (or `deadline`).
fn flood(agent: Agent, deadline: Duration) -> Flood {
    let context = zmq::Context::new();
    let socket = agent.open(&context);
    let hello = mesh::encode(&hello(&agent.id));
    let started = Instant::now();
    for _ in 0..FLOOD_HELLOS {
        // Blocking: the socket's queue paces the flood, nothing else does.
        socket.send(&hello, 0).expect("sending a hello");
    }
    let finished = Instant::now();
    let mut served_again = None;
    let mut seq = 1_000_000;
    'renew: while finished.elapsed() < deadline {
        seq += 1;
        // The socket's queue may still be full of hellos: then this renewal is lost, as a
        // missed lease, and the next one tries again.
        let _ = socket.send(mesh::encode(&lease_renewal(&agent.id, seq)), zmq::DONTWAIT);
        let until = Instant::now() + Duration::from_millis(250);
        while Instant::now() < until {
            if socket.poll(zmq::POLLIN, 50).expect("polling the flooder") == 0 {
                continue;
            }
            while let Ok(bytes) = socket.recv_bytes(zmq::DONTWAIT) {
                if let Ok(Frame::LeaseAck { .. }) = mesh::decode(&bytes) {
                    served_again = Some(Instant::now());
                    break 'renew;
                }
            }
        }
    }
    Flood { started, finished, served_again }
}

async fn events_of(router: &Router, agent_id: &str, kind: &str) -> Vec<Value> {
    router
        .collect_pages(&format!("/v1/management/agents/{agent_id}/events"))
        .await
        .into_iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_agent_does_not_delay_the_others_and_is_disconnected_under_load() {
    // SQLite only: the limits are in the router loop, before the store; PostgreSQL changes
    // nothing here but the time it takes.
    let backend = backends().await.into_iter().next().expect("the SQLite backend");
    let options = RouterOptions {
        extra_args: vec!["--mesh-flood-cooldown-seconds".to_string(), COOLDOWN_S.to_string()],
        ..RouterOptions::default()
    };
    let router = Router::start_with(&backend, options).await;
    let mut honest_agents = Vec::with_capacity(HONEST);
    for index in 0..HONEST {
        honest_agents.push(enroll_agent(&router, &format!("honest-{index:02}")).await);
    }
    let flooder = enroll_agent(&router, "flooder").await;
    let flooder_id = flooder.id.clone();

    let honest = Honest::start(honest_agents);
    eventually("every honest agent's first acknowledgements", SETTLE, || async {
        (honest.acks.lock().len() >= HONEST * 3).then_some(())
    })
    .await;
    let baseline_from = Instant::now();
    tokio::time::sleep(BASELINE).await; // a measurement period, not a wait for a condition
    let baseline_to = Instant::now();

    let flood = tokio::task::spawn_blocking(move || flood(flooder, SETTLE));
    let disconnected = eventually("the flooder's disconnected_flooding event", SETTLE, || async {
        let events = events_of(&router, &flooder_id, "disconnected_flooding").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    let flood = flood.await.expect("the flooder thread");
    // The acknowledgements of renewals sent until a second after the flood are in by then.
    let flood_to = flood.finished + Duration::from_secs(1);
    eventually("the flood window's acknowledgements", SETTLE, || async {
        let (_, _, acked, sent) = honest.window(flood.started, flood_to);
        (Instant::now() > flood_to + Duration::from_secs(2) || (acked == sent && sent > 0))
            .then_some(())
    })
    .await;
    let (base_p50, base_p99, base_acked, base_sent) = honest.window(baseline_from, baseline_to);
    let (p50, p99, acked, sent) = honest.window(flood.started, flood_to);
    eprintln!(
        "flood of {FLOOD_HELLOS} hellos took {:?}; honest lease acks without flood p50 {base_p50:?} \
         p99 {base_p99:?} ({base_acked}/{base_sent}); during the flood p50 {p50:?} p99 {p99:?} \
         ({acked}/{sent})",
        flood.finished - flood.started
    );
    assert!(sent > 0, "no renewal was sent during the flood");
    assert_eq!(acked, sent, "every honest renewal sent during the flood is acknowledged");
    assert!(p99 < ACK_P99_LIMIT, "honest lease acks during the flood: p99 {p99:?}");

    // Served again after the cool-down, and not before.
    let served = flood.served_again.expect("the flooder is served again after the cool-down");
    assert!(
        served >= flood.started + Duration::from_secs(COOLDOWN_S),
        "the flooder was served {:?} after its flood began, within the {COOLDOWN_S} s cool-down",
        served - flood.started
    );

    // One connected event (a handful at most), one or two disconnections, a few log lines.
    let connected = events_of(&router, &flooder_id, "connected").await;
    assert!(
        (1..=3).contains(&connected.len()),
        "the flood made {} connected events",
        connected.len()
    );
    assert!(
        (1..=2).contains(&disconnected.len()),
        "{} disconnected_flooding events: {disconnected:#?}",
        disconnected.len()
    );
    let details = &disconnected[0]["details"];
    assert!(details["dropped_frames"].as_u64().is_some_and(|n| n > 1_000), "{details}");
    assert!(details["window_ms"].is_i64() || details["window_ms"].is_u64(), "{details}");
    let log = router.logs();
    let lines: Vec<&str> = log.lines().filter(|line| line.contains(&flooder_id)).collect();
    assert!(
        lines.len() <= 6,
        "{} router log lines about the flooder:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(
        lines.iter().any(|line| line.contains("flooded the mesh")),
        "the disconnection is logged:\n{}",
        lines.join("\n")
    );

    // Counted, by reason.
    let rate_limited =
        router.metric("xerotier_router_mesh_frames_dropped_total{reason=\"rate_limited\"}").await;
    let cooldown =
        router.metric("xerotier_router_mesh_frames_dropped_total{reason=\"flood_cooldown\"}").await;
    let disconnects = router.metric("xerotier_router_mesh_flood_disconnects_total").await;
    assert!(rate_limited > 1_000.0, "rate_limited drops: {rate_limited}");
    assert!(cooldown > 0.0, "flood_cooldown drops: {cooldown}");
    assert!(disconnects >= 1.0, "flood disconnects: {disconnects}");
}
