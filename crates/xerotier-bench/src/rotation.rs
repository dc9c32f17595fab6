//! CURVE rotation benchmarks: one rotation's latency against its floor (one mesh round trip
//! plus the crypto), and a whole fleet rotated at once. The simulated agent here ([`SimAgent`])
//! also follows a rotation of the router's mesh key, for `mesh_rotation`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::mpsc;
use xerotier_core::OsEntropy;
use xerotier_credentials::{CurveKeyPair, SigningKeyPair, verify_signature};
use xerotier_mesh::{ClientKeys, configure_client_socket};
use xerotier_proto::mesh::{
    self, Frame, RotateAckPayload, RouterMeshKey, encode_ack_payload, rotate_ack_signing_input,
};
use xerotier_xem::router_keys::{from_single, validate};

use crate::Report;
use crate::fleet::{Enrolled, LEASE_INTERVAL_MS, mint_and_enroll};

/// The XEM's bound (`MISSED_ACKS_BEFORE_FAILOVER`, 3 lease intervals): an agent that heard
/// nothing from the router for longer reconnects (with the next key it holds if this
/// connection never completed a handshake).
const SILENCE_BEFORE_RECONNECT: Duration = Duration::from_millis(3 * LEASE_INTERVAL_MS);
/// Agents per ZeroMQ context: libzmq's default cap is 1,023 sockets per context (past it a new
/// socket fails with EMFILE), each agent holds three (its DEALER, the monitor libzmq attaches
/// to it, the monitor's reader), and a reconnect briefly holds the closing ones too. Under a
/// storm of reconnects the closing ones pile up faster than libzmq reaps them (10k runs 6 and
/// 7, with 150 and 100 agents per context), so a reconnect that finds no room is put off
/// (`SimAgent::reconnect`).
pub const AGENTS_PER_CONTEXT: usize = 100;
/// Names each connection's monitor endpoint apart.
static MONITORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What a simulated agent reports to the benchmark, with the instant it happened.
#[derive(Debug)]
pub enum SimEvent {
    /// Its CURVE rotation `request_id` was promoted and it reconnected on the new key.
    Promoted(String),
    /// The first frame arrived on a new connection opened with the router key `kid` (no frame
    /// comes without a completed handshake).
    Session(String),
    /// It saved the router's key set and acknowledged it (`RouterKeysAck`) with these kids.
    KeysAcked(Vec<String>),
    /// It heard nothing for [`SILENCE_BEFORE_RECONNECT`] and opened a new connection with the
    /// router key `kid`; `exhausted`: after a round through every key it holds.
    Reconnected { kid: String, exhausted: bool },
}

/// A simulated agent that answers CURVE rotations and router key sets like the XEM does.
pub struct SimAgent {
    pub enrolled: Enrolled,
    signing: SigningKeyPair,
    context: zmq::Context,
    pub socket: zmq::Socket,
    /// The connection's monitor: its `DISCONNECTED` events (the XEM's `ClientEvent`).
    pub monitor: zmq::Socket,
    /// The router key (Z85) this connection was opened with.
    connected_key: String,
    /// The request, and the new CURVE and signing keys it acknowledged.
    pending: Option<(String, CurveKeyPair, SigningKeyPair)>,
    /// The router mesh keys it holds, in the order to try them (the XEM's identity file).
    router_keys: Vec<RouterMeshKey>,
    /// The held key this connection was opened with.
    key_index: usize,
    /// A frame arrived on this connection: the XEM's `handshaken`.
    heard: bool,
    last_heard: Instant,
    /// Silence after which a lease tick reconnects instead of renewing (3 lease intervals).
    silence: Duration,
    /// Frames the socket refused to queue (`send` with `DONTWAIT` failed).
    pub send_failures: u64,
    /// A reconnect found no room for new sockets in its context: the next lease tick tries
    /// again (meanwhile the old connection stays, and libzmq keeps reconnecting it).
    reopen_due: bool,
    /// Reconnects put off that way (see [`SimAgent::reconnect`]).
    pub deferred_reconnects: u64,
}

impl SimAgent {
    fn connect(
        context: zmq::Context,
        enrolled: Enrolled,
        signing: SigningKeyPair,
    ) -> anyhow::Result<Self> {
        Self::connect_with(context, enrolled, signing, SILENCE_BEFORE_RECONNECT)
    }

    /// [`SimAgent::connect`] for an agent enrolled with another lease interval: `silence` is
    /// its bound before a reconnect (the XEM's: 3 lease intervals).
    pub fn connect_with(
        context: zmq::Context,
        enrolled: Enrolled,
        signing: SigningKeyPair,
        silence: Duration,
    ) -> anyhow::Result<Self> {
        let answer = &enrolled.answer;
        let router_keys = if answer.router_mesh_keys.is_empty() {
            from_single(&answer.router_curve_key).into_iter().collect()
        } else {
            answer.router_mesh_keys.clone()
        };
        let server = router_keys
            .first()
            .map_or_else(|| answer.router_curve_key.clone(), |k| k.public_key.clone());
        let (socket, monitor) = open(&context, &enrolled.curve, &server, &enrolled)?;
        Ok(Self {
            enrolled,
            signing,
            context,
            socket,
            monitor,
            connected_key: server,
            pending: None,
            router_keys,
            key_index: 0,
            heard: false,
            last_heard: Instant::now(),
            silence,
            send_failures: 0,
            reopen_due: false,
            deferred_reconnects: 0,
        })
    }

    fn send(&mut self, frame: &Frame) {
        if self.socket.send(mesh::encode(frame), zmq::DONTWAIT).is_err() {
            self.send_failures += 1;
        }
    }

    /// The router key this connection uses, and its kid (empty for a bare key).
    fn server_key(&self) -> (String, String) {
        match self.router_keys.get(self.key_index) {
            Some(key) => (key.public_key.clone(), key.kid.clone()),
            None => (self.enrolled.answer.router_curve_key.clone(), String::new()),
        }
    }

    /// Closes the connection and opens the next with the held key at `key_index`, as the
    /// XEM's `Session::connect` does. `false`: put off to the next lease tick, because the
    /// context had no room for the new sockets (EMFILE: libzmq caps a context's sockets, and
    /// the closed ones are reaped by its I/O thread, which falls behind under a storm of
    /// reconnects; an XEM has one connection, so this is the simulator's own limit). Any
    /// other error is the caller's.
    fn reconnect(&mut self) -> anyhow::Result<bool> {
        let (server, _) = self.server_key();
        match open(&self.context, &self.enrolled.curve, &server, &self.enrolled) {
            Ok((socket, monitor)) => {
                (self.socket, self.monitor) = (socket, monitor);
                self.connected_key = server;
                self.heard = false;
                self.last_heard = Instant::now();
                self.reopen_due = false;
                Ok(true)
            }
            Err(err) if err.downcast_ref::<zmq::Error>() == Some(&zmq::Error::EMFILE) => {
                self.reopen_due = true;
                self.deferred_reconnects += 1;
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    /// A lease tick, as the XEM's `renew_lease`: after [`SILENCE_BEFORE_RECONNECT`] without a
    /// frame, a connection that never completed a handshake moves to the next held key (after
    /// the last, the next replica: here the one router, first key again); one that did is
    /// taken for lost and reopened on the same key. Otherwise a lease renewal. A round through
    /// every key held is reported as `exhausted`: the XEM would fetch the keys over HTTPS
    /// (signed) next; the simulator does not, so the benchmark reports it instead.
    pub fn lease_tick(&mut self, seq: u64) -> anyhow::Result<Option<SimEvent>> {
        if self.reopen_due {
            if self.reconnect()? {
                let (_, kid) = self.server_key();
                return Ok(Some(SimEvent::Reconnected { kid, exhausted: false }));
            }
        } else if self.last_heard.elapsed() > self.silence {
            let mut exhausted = false;
            if !self.heard {
                self.key_index += 1;
                if self.key_index >= self.router_keys.len() {
                    self.key_index = 0;
                    exhausted = true;
                }
            }
            if self.reconnect()? {
                let (_, kid) = self.server_key();
                return Ok(Some(SimEvent::Reconnected { kid, exhausted }));
            }
        }
        self.send(&Frame::LeaseRenewal {
            agent_id: self.enrolled.answer.agent_id.clone(),
            seq,
            in_flight: Vec::new(),
            manifest_hash: "h".into(),
            manifest_version: 1,
        });
        Ok(None)
    }

    /// The connection's monitor reported a lost session: as the XEM, an agent whose preferred
    /// key (the first held) is not the one this connection uses reconnects on it at once (the
    /// router rekeyed in update_servers); otherwise libzmq reconnects on its own.
    pub fn on_monitor(&mut self) -> anyhow::Result<Option<SimEvent>> {
        let mut lost = false;
        while let Ok(parts) = self.monitor.recv_multipart(zmq::DONTWAIT) {
            let event =
                parts.first().and_then(|p| p.get(..2)).map(|b| u16::from_le_bytes([b[0], b[1]]));
            lost |= event == Some(zmq::SocketEvent::DISCONNECTED.to_raw());
        }
        let preferred = self.router_keys.first().map(|k| k.public_key.as_str());
        if !lost || preferred.is_none_or(|key| key == self.connected_key) {
            return Ok(None);
        }
        self.key_index = 0;
        if !self.reconnect()? {
            return Ok(None);
        }
        let (_, kid) = self.server_key();
        Ok(Some(SimEvent::Reconnected { kid, exhausted: false }))
    }

    /// Any frame: the connection is alive. The first one on a connection is its handshake;
    /// a key other than the first that connected goes to the front (the XEM's
    /// `on_handshake`).
    pub fn heard_frame(&mut self) -> Option<SimEvent> {
        self.last_heard = Instant::now();
        if self.heard {
            return None;
        }
        self.heard = true;
        let (_, kid) = self.server_key();
        if self.key_index != 0 && self.key_index < self.router_keys.len() {
            let key = self.router_keys.remove(self.key_index);
            self.router_keys.insert(0, key);
            self.key_index = 0;
        }
        Some(SimEvent::Session(kid))
    }

    /// The router's key set, as the XEM's `on_router_keys`: checked whole (a refused set
    /// leaves the held one and says nothing), held, then acknowledged. The live connection
    /// keeps its key; the next one tries the router's preferred key first.
    fn on_router_keys(&mut self, keys: Vec<RouterMeshKey>) -> Option<SimEvent> {
        if validate(&keys).is_err() {
            return None;
        }
        let kids: Vec<String> = keys.iter().map(|k| k.kid.clone()).collect();
        self.router_keys = keys;
        self.key_index = 0;
        self.send(&Frame::RouterKeysAck { kids: kids.clone() });
        Some(SimEvent::KeysAcked(kids))
    }

    /// Handles one frame; returns what the benchmark is told of.
    pub fn handle(&mut self, frame: Frame) -> anyhow::Result<Option<SimEvent>> {
        match frame {
            Frame::RotateCurve { request_id, nonce } => {
                // A re-sent instruction (after a reconnect) reuses the pending key, as the XEM does.
                let (key, next_signing) = match self.pending.take() {
                    Some((pending_id, key, next)) if pending_id == request_id => (key, next),
                    _ => (CurveKeyPair::generate(&OsEntropy), SigningKeyPair::generate(&OsEntropy)),
                };
                let payload = encode_ack_payload(&RotateAckPayload {
                    agent_id: self.enrolled.answer.agent_id.clone(),
                    request_id: request_id.clone(),
                    nonce,
                    new_public_key: key.public_z85(),
                    new_signing_public_key: next_signing.public_hex(),
                });
                let signature = self.signing.sign(&rotate_ack_signing_input(&payload)).to_vec();
                self.send(&Frame::RotateAck { payload, signature });
                self.pending = Some((request_id, key, next_signing));
                Ok(None)
            }
            Frame::RotationPromoted { request_id } => {
                let Some((pending_id, key, next_signing)) = self.pending.take() else {
                    return Ok(None);
                };
                if pending_id != request_id {
                    bail!("promotion for {request_id}, pending {pending_id}");
                }
                self.enrolled.curve = key;
                self.signing = next_signing;
                // If put off, it happens at the next lease tick, on the new key.
                self.reconnect()?;
                Ok(Some(SimEvent::Promoted(request_id)))
            }
            Frame::RotationFailed { request_id, reason } => {
                bail!("rotation {request_id} failed: {reason}")
            }
            Frame::RouterKeys { keys, .. } => Ok(self.on_router_keys(keys)),
            _ => Ok(None),
        }
    }
}

/// A connection to the router with `server_public_z85`, hello sent, and a reader of its
/// `DISCONNECTED` events.
fn open(
    context: &zmq::Context,
    curve: &CurveKeyPair,
    server_public_z85: &str,
    enrolled: &Enrolled,
) -> anyhow::Result<(zmq::Socket, zmq::Socket)> {
    let socket = context.socket(zmq::DEALER)?;
    configure_client_socket(&socket, &ClientKeys::new(curve, server_public_z85))?;
    let address = format!("inproc://sim-monitor-{}", MONITORS.fetch_add(1, Ordering::Relaxed));
    socket.monitor(&address, zmq::SocketEvent::DISCONNECTED as i32)?;
    let monitor = context.socket(zmq::PAIR)?;
    monitor.connect(&address)?;
    socket.connect(&enrolled.answer.mesh_addr).context("connect")?;
    let hello = Frame::Hello {
        agent_id: enrolled.answer.agent_id.clone(),
        xem_version: "bench".into(),
        manifest_hash: "h".into(),
        manifest_version: 1,
    };
    socket.send(mesh::encode(&hello), 0)?;
    Ok((socket, monitor))
}

/// What [`drive`] reports: the agent's index, what happened, and when.
pub type Reported = (usize, SimEvent, Instant);

/// Connects the enrolled agents (in one thread, as one process would hold them), then runs
/// them until `stop`: a lease tick every `lease` for each, every frame handled.
pub fn drive(
    enrolled: Vec<(Enrolled, SigningKeyPair)>,
    lease: Duration,
    stop: Arc<AtomicBool>,
    events: mpsc::UnboundedSender<Reported>,
) -> anyhow::Result<()> {
    let contexts: Vec<zmq::Context> =
        (0..enrolled.len().div_ceil(AGENTS_PER_CONTEXT)).map(|_| zmq::Context::new()).collect();
    let mut agents = Vec::with_capacity(enrolled.len());
    for (i, (agent, signing)) in enrolled.into_iter().enumerate() {
        let context = contexts[i / AGENTS_PER_CONTEXT].clone();
        agents.push(SimAgent::connect(context, agent, signing)?);
    }
    let mut next_lease = Instant::now();
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next_lease {
            seq += 1;
            for (index, agent) in agents.iter_mut().enumerate() {
                if let Some(event) = agent.lease_tick(seq)? {
                    let _ = events.send((index, event, Instant::now()));
                }
            }
            next_lease += lease;
        }
        poll_once(&mut agents, &events)?;
    }
    Ok(())
}

/// Waits up to 20 ms for frames and handles every one that arrived.
fn poll_once(
    agents: &mut [SimAgent],
    events: &mpsc::UnboundedSender<Reported>,
) -> anyhow::Result<()> {
    let mut items: Vec<_> = agents
        .iter()
        .flat_map(|a| [a.socket.as_poll_item(zmq::POLLIN), a.monitor.as_poll_item(zmq::POLLIN)])
        .collect();
    zmq::poll(&mut items, 20)?;
    let ready: Vec<(bool, bool)> =
        items.chunks(2).map(|pair| (pair[0].is_readable(), pair[1].is_readable())).collect();
    drop(items);
    for (index, (agent, (ready, lost))) in agents.iter_mut().zip(ready).enumerate() {
        if lost && let Some(event) = agent.on_monitor()? {
            let _ = events.send((index, event, Instant::now()));
            continue;
        }
        if !ready {
            continue;
        }
        while let Ok(bytes) = agent.socket.recv_bytes(zmq::DONTWAIT) {
            if let Some(event) = agent.heard_frame() {
                let _ = events.send((index, event, Instant::now()));
            }
            let Ok(frame) = mesh::decode(&bytes) else { continue };
            if let Some(event) = agent.handle(frame)? {
                let _ = events.send((index, event, Instant::now()));
            }
        }
    }
    Ok(())
}

/// Enrolls `count` agents (not yet connected: [`drive`] connects them), 16 at a time.
pub async fn enroll_agents(
    base_url: &str,
    api_key: &str,
    count: usize,
    prefix: &str,
) -> anyhow::Result<Vec<(Enrolled, SigningKeyPair)>> {
    let client = reqwest::Client::new();
    let run = std::process::id();
    let mut agents = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(16) {
        let names: Vec<String> = chunk.iter().map(|i| format!("{prefix}-{run}-{i}")).collect();
        let batch = names.iter().map(|n| mint_and_enroll(&client, base_url, api_key, n, None));
        agents.extend(futures::future::try_join_all(batch).await?);
    }
    Ok(agents)
}

/// The promotions among the driver's reports.
fn promotion(reported: Reported) -> Option<(String, Instant)> {
    match reported {
        (_, SimEvent::Promoted(request_id), at) => Some((request_id, at)),
        _ => None,
    }
}

async fn rotate(
    client: &reqwest::Client,
    base_url: &str,
    api_key: &str,
    agent_id: &str,
) -> anyhow::Result<String> {
    let response = client
        .post(format!("{base_url}/v1/management/agents/{agent_id}/curve-rotate"))
        .bearer_auth(api_key)
        .json(&serde_json::json!({ "reason": "benchmark" }))
        .send()
        .await?;
    if response.status() != 202 {
        bail!(
            "curve-rotate answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let body: serde_json::Value = response.json().await?;
    Ok(body["request_id"].as_str().unwrap_or_default().to_string())
}

/// Rotates `count` agents at once (or one agent `rounds` times) and measures request → the
/// agent receiving its promotion.
/// With `request_url` (another replica on the same PostgreSQL), the rotations are requested
/// there while the agents' sessions stay on `base_url`'s replica. With at most
/// [`COMPLETION_AGENTS`] agents, each round also waits for the old key's retirement
/// (`rotation_completed`, read through the requesting replica) and reports request → retired.
pub async fn rotations(
    base_url: String,
    api_key: String,
    agents: usize,
    rounds: usize,
    request_url: Option<String>,
) -> anyhow::Result<Report> {
    let request_base = request_url.clone().unwrap_or_else(|| base_url.clone());
    let sims = enroll_agents(&base_url, &api_key, agents, "rot").await?;
    let ids: Vec<String> = sims.iter().map(|(a, _)| a.answer.agent_id.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut promoted) = mpsc::unbounded_channel();
    let driver_stop = stop.clone();
    let driver = std::thread::spawn(move || drive(sims, ROTATION_LEASE, driver_stop, tx));
    // Let every agent finish its handshake and hello.
    wait_connected(&base_url, &api_key, &ids).await?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut completed = Vec::new();
    let mut not_retired = 0u64;
    let mut cursors: HashMap<String, Option<String>> = HashMap::new();
    let mut rounds_done = 0u64;
    for _ in 0..rounds {
        rounds_done += 1;
        let round_start = Instant::now();
        let requests = ids.iter().map(|id| {
            let client = client.clone();
            let (base_url, api_key) = (request_base.clone(), api_key.clone());
            async move {
                let wall = wall_ms();
                let t = Instant::now();
                let request_id = rotate(&client, &base_url, &api_key, id).await?;
                Ok::<_, anyhow::Error>((request_id, (t, wall, id.clone())))
            }
        });
        let requested: HashMap<String, (Instant, i64, String)> =
            futures::future::try_join_all(requests).await?.into_iter().collect();
        let sent: HashMap<&String, Instant> =
            requested.iter().map(|(request_id, (t, _, _))| (request_id, *t)).collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut done = 0;
        while done < sent.len() {
            let reported = tokio::time::timeout_at(deadline.into(), promoted.recv())
                .await
                .context("timed out waiting for promotions")?
                .context("driver stopped")?;
            let Some((request_id, at)) = promotion(reported) else { continue };
            if let Some(t) = sent.get(&request_id) {
                latencies.push(at.duration_since(*t));
                done += 1;
            }
        }
        eprintln!(
            "round: {} agents rotated in {:.3}s",
            sent.len(),
            round_start.elapsed().as_secs_f64()
        );
        if agents <= COMPLETION_AGENTS {
            for (request_id, (_, wall, agent_id)) in &requested {
                let cursor = cursors.entry(agent_id.clone()).or_default();
                match wait_retired(&client, &request_base, &api_key, agent_id, request_id, cursor)
                    .await?
                {
                    Some(retired_at) => completed
                        .push(Duration::from_millis(u64::try_from(retired_at - wall).unwrap_or(0))),
                    None => {
                        eprintln!(
                            "rotation {request_id}: promoted, old key not retired within {RETIRE_WAIT:?}"
                        );
                        not_retired += 1;
                    }
                }
            }
            // Its agent stays on two keys (never `active` again): the run ends here.
            if not_retired > 0 {
                break;
            }
        }
        // Agents reconnect on the new key; give them the handshake before the next round.
        wait_connected(&base_url, &api_key, &ids).await?;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    driver.join().map_err(|_| anyhow::anyhow!("driver panicked"))??;
    let last = latencies.iter().max().copied().unwrap_or_default();
    completed.sort();
    let percentile = |p: f64| {
        let rank = (completed.len() as f64 * p).ceil() as usize;
        completed
            .get(rank.saturating_sub(1).min(completed.len().saturating_sub(1)))
            .map_or(0, |d| d.as_millis() as u64)
    };
    let (completed_p50, completed_p99) = (percentile(0.50), percentile(0.99));
    Ok(Report::new("curve_rotation", elapsed, vec![latencies], agents)
        .with_extra("agents", agents as u64)
        .with_extra("rounds", rounds as u64)
        .with_extra("last_promotion_ms", last.as_millis() as u64)
        .with_extra("completed_count", completed.len() as u64)
        .with_extra("not_retired", not_retired)
        .with_extra("rounds_done", rounds_done)
        .with_extra("completed_p50_ms", completed_p50)
        .with_extra("completed_p99_ms", completed_p99)
        .with_json("request_url", request_base.into())
        .with_json("sessions_url", base_url.into()))
}

/// The CURVE rotation benchmarks renew every half interval, as they always did: a margin
/// for a router loaded with a whole fleet's rotations.
const ROTATION_LEASE: Duration = Duration::from_millis(500);

/// Up to this many agents, each rotation's retirement of the old key is awaited and timed.
const COMPLETION_AGENTS: usize = 16;

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How long a promoted rotation's retirement of the old key is waited for.
const RETIRE_WAIT: Duration = Duration::from_secs(5);

/// Polls the agent's events (from `cursor` on) until `rotation_completed` of `request_id`;
/// returns that event's time (the router's clock, milliseconds), or `None` after
/// [`RETIRE_WAIT`].
async fn wait_retired(
    client: &reqwest::Client,
    base_url: &str,
    api_key: &str,
    agent_id: &str,
    request_id: &str,
    cursor: &mut Option<String>,
) -> anyhow::Result<Option<i64>> {
    let deadline = Instant::now() + RETIRE_WAIT;
    loop {
        let mut url = format!("{base_url}/v1/management/agents/{agent_id}/events?limit=500");
        if let Some(after) = cursor.as_deref() {
            url.push_str(&format!("&after={after}"));
        }
        let page: serde_json::Value =
            client.get(url).bearer_auth(api_key).send().await?.json().await?;
        for event in page["data"].as_array().into_iter().flatten() {
            if let Some(id) = event["id"].as_str() {
                *cursor = Some(id.to_string());
            }
            if event["type"] == "rotation_completed" && event["request_id"] == request_id {
                let at = event["at"].as_str().unwrap_or_default();
                return xerotier_core::parse_rfc3339(at)
                    .with_context(|| format!("event time {at:?}"))
                    .map(Some);
            }
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        if page["has_more"] != true {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Waits until no rotation is pending and every agent's current key has been seen (its
/// previous key retired), i.e. the fleet is idle on its current keys.
pub async fn wait_connected(base_url: &str, api_key: &str, ids: &[String]) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut after: Option<String> = None;
        let mut active = 0;
        loop {
            let mut url = format!("{base_url}/v1/management/agents?limit=500");
            if let Some(a) = &after {
                url.push_str(&format!("&after={a}"));
            }
            let page: serde_json::Value =
                client.get(url).bearer_auth(api_key).send().await?.json().await?;
            for agent in page["data"].as_array().into_iter().flatten() {
                if agent["status"] == "active" && ids.iter().any(|id| agent["id"] == id.as_str()) {
                    active += 1;
                }
            }
            match page["next_after"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => break,
            }
        }
        if active == ids.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {active} of {} agents became active", ids.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The floor under one rotation: a mesh round trip (a lease renewal and its acknowledgement on
/// an established CURVE session) plus the rotation's crypto (key pair, sign, verify).
pub async fn floor(base_url: String, api_key: String, rounds: usize) -> anyhow::Result<Report> {
    let client = reqwest::Client::new();
    let (enrolled, signing) = mint_and_enroll(
        &client,
        &base_url,
        &api_key,
        &format!("floor-{}", std::process::id()),
        None,
    )
    .await?;
    let result = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Duration>> {
        let context = zmq::Context::new();
        let (socket, _monitor) =
            open(&context, &enrolled.curve, &enrolled.answer.router_curve_key, &enrolled)?;
        let agent_id = enrolled.answer.agent_id.clone();
        let mut latencies = Vec::with_capacity(rounds);
        for seq in 1..=rounds as u64 {
            let t = Instant::now();
            let renewal = Frame::LeaseRenewal {
                agent_id: agent_id.clone(),
                seq,
                in_flight: Vec::new(),
                manifest_hash: "h".into(),
                manifest_version: 1,
            };
            socket.send(mesh::encode(&renewal), 0)?;
            loop {
                let bytes = socket.recv_bytes(0)?;
                if matches!(mesh::decode(&bytes), Ok(Frame::LeaseAck { seq: s }) if s == seq) {
                    break;
                }
            }
            let key = CurveKeyPair::generate(&OsEntropy);
            let payload = encode_ack_payload(&RotateAckPayload {
                agent_id: agent_id.clone(),
                request_id: "r".into(),
                nonce: "n".into(),
                new_public_key: key.public_z85(),
                new_signing_public_key: signing.public_hex(),
            });
            let signature = signing.sign(&rotate_ack_signing_input(&payload));
            if !verify_signature(
                &signing.public_hex(),
                &rotate_ack_signing_input(&payload),
                &signature,
            ) {
                bail!("signature did not verify");
            }
            latencies.push(t.elapsed());
        }
        Ok(latencies)
    })
    .await??;
    let elapsed = result.iter().sum();
    Ok(Report::new("rotation_floor", elapsed, vec![result], 1))
}

/// An emergency fleet rotation as an operator runs it: `AGENTS` simulated agents, one
/// `curve_rotate` operation over all of them (`POST /v1/management/operations`, waves of
/// `wave_size`), timed from the request to the operation's `completed` (every target's
/// rotation promoted, wave after wave), against the 15-minute window for a suspected leak.
pub async fn fleet_operation(
    base_url: String,
    api_key: String,
    agents: usize,
    wave_size: u32,
) -> anyhow::Result<Report> {
    let sims = enroll_agents(&base_url, &api_key, agents, "rot").await?;
    let ids: Vec<String> = sims.iter().map(|(a, _)| a.answer.agent_id.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut promoted) = mpsc::unbounded_channel();
    let driver_stop = stop.clone();
    let driver = std::thread::spawn(move || drive(sims, ROTATION_LEASE, driver_stop, tx));
    wait_connected(&base_url, &api_key, &ids).await?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let id = start_operation(
        &client,
        &base_url,
        &api_key,
        serde_json::json!({
            "kind": "curve_rotate", "selector": { "agents": ids }, "reason": "benchmark: emergency rotation",
            "wave_size": wave_size, "max_failures": 0,
        }),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(15 * 60);
    let mut promotions = Vec::new();
    let finished = loop {
        while let Ok(reported) = promoted.try_recv() {
            if let Some((_, at)) = promotion(reported) {
                promotions.push(at.duration_since(started));
            }
        }
        let op: serde_json::Value = client
            .get(format!("{base_url}/v1/management/operations/{id}"))
            .bearer_auth(&api_key)
            .send()
            .await?
            .json()
            .await?;
        if op["status"] != "running" {
            break op;
        }
        if Instant::now() > deadline {
            bail!("the operation did not end within the 15-minute window: {}", op["status"]);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    driver.join().map_err(|_| anyhow::anyhow!("driver panicked"))??;
    if finished["status"] != "completed" {
        bail!("the operation ended {}: {finished}", finished["status"]);
    }
    eprintln!(
        "operation {id}: {agents} agents in waves of {wave_size}: {:.1}s",
        elapsed.as_secs_f64()
    );
    Ok(Report::new("fleet_rotation_operation", elapsed, vec![promotions], agents)
        .with_extra("agents", agents as u64)
        .with_extra("wave_size", u64::from(wave_size))
        .with_extra("succeeded", finished["succeeded"].as_u64().unwrap_or(0))
        .with_extra("failed", finished["failed"].as_u64().unwrap_or(0))
        .with_extra("skipped", finished["skipped"].as_u64().unwrap_or(0))
        .with_extra("completion_ms", elapsed.as_millis() as u64)
        .with_extra("window_ms", 15 * 60 * 1000))
}

/// Creates a fleet operation from `body` (`POST /v1/management/operations`); its id.
pub(crate) async fn start_operation(
    client: &reqwest::Client,
    base_url: &str,
    api_key: &str,
    body: serde_json::Value,
) -> anyhow::Result<String> {
    let response = client
        .post(format!("{base_url}/v1/management/operations"))
        .bearer_auth(api_key)
        .json(&body)
        .send()
        .await?;
    if response.status() != 202 {
        bail!(
            "operation answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let op: serde_json::Value = response.json().await?;
    Ok(op["id"].as_str().unwrap_or_default().to_string())
}
