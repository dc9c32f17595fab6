//! CURVE rotation benchmarks: one rotation's latency against its floor (one mesh round trip
//! plus the crypto), and a whole fleet rotated at once.

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
    self, Frame, RotateAckPayload, encode_ack_payload, rotate_ack_signing_input,
};

use crate::Report;
use crate::fleet::{Enrolled, mint_and_enroll};

/// A simulated agent that answers rotations like the XEM does.
struct SimAgent {
    enrolled: Enrolled,
    signing: SigningKeyPair,
    socket: zmq::Socket,
    /// The request, and the new CURVE and signing keys it acknowledged.
    pending: Option<(String, CurveKeyPair, SigningKeyPair)>,
}

impl SimAgent {
    fn connect(
        context: &zmq::Context,
        enrolled: Enrolled,
        signing: SigningKeyPair,
    ) -> anyhow::Result<Self> {
        let socket = open(context, &enrolled.curve, &enrolled)?;
        Ok(Self { enrolled, signing, socket, pending: None })
    }

    fn send(&self, frame: &Frame) {
        self.socket.send(mesh::encode(frame), zmq::DONTWAIT).ok();
    }

    /// Handles one frame; returns the request id when a promotion was applied.
    fn handle(&mut self, context: &zmq::Context, frame: Frame) -> anyhow::Result<Option<String>> {
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
                self.socket = open(context, &key, &self.enrolled)?;
                self.enrolled.curve = key;
                self.signing = next_signing;
                Ok(Some(request_id))
            }
            Frame::RotationFailed { request_id, reason } => {
                bail!("rotation {request_id} failed: {reason}")
            }
            _ => Ok(None),
        }
    }
}

fn open(
    context: &zmq::Context,
    curve: &CurveKeyPair,
    enrolled: &Enrolled,
) -> anyhow::Result<zmq::Socket> {
    let socket = context.socket(zmq::DEALER)?;
    configure_client_socket(&socket, &ClientKeys::new(curve, &enrolled.answer.router_curve_key))?;
    socket.connect(&enrolled.answer.mesh_addr).context("connect")?;
    let hello = Frame::Hello {
        agent_id: enrolled.answer.agent_id.clone(),
        xem_version: "bench".into(),
        manifest_hash: "h".into(),
        manifest_version: 1,
    };
    socket.send(mesh::encode(&hello), 0)?;
    Ok(socket)
}

/// Runs the simulated agents on one thread until `stop`; reports each promotion's agent-side
/// arrival time on `promoted`.
fn drive(
    agents: Vec<SimAgent>,
    context: zmq::Context,
    stop: Arc<AtomicBool>,
    promoted: mpsc::UnboundedSender<(String, Instant)>,
) -> anyhow::Result<()> {
    let mut agents = agents;
    let mut next_lease = Instant::now();
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        // Keep every lease fresh (enrolled with a 1 s interval), as a XEM does.
        if Instant::now() >= next_lease {
            seq += 1;
            for agent in &agents {
                let agent_id = agent.enrolled.answer.agent_id.clone();
                agent.send(&Frame::LeaseRenewal {
                    agent_id,
                    seq,
                    in_flight: Vec::new(),
                    manifest_hash: "h".into(),
                    manifest_version: 1,
                });
            }
            next_lease += Duration::from_millis(500);
        }
        let mut items: Vec<_> = agents.iter().map(|a| a.socket.as_poll_item(zmq::POLLIN)).collect();
        zmq::poll(&mut items, 20)?;
        let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        drop(items);
        for (agent, ready) in agents.iter_mut().zip(ready) {
            if !ready {
                continue;
            }
            while let Ok(bytes) = agent.socket.recv_bytes(zmq::DONTWAIT) {
                let Ok(frame) = mesh::decode(&bytes) else { continue };
                if let Some(request_id) = agent.handle(&context, frame)? {
                    let _ = promoted.send((request_id, Instant::now()));
                }
            }
        }
    }
    Ok(())
}

async fn enroll_agents(
    base_url: &str,
    api_key: &str,
    count: usize,
) -> anyhow::Result<Vec<SimAgent>> {
    let client = reqwest::Client::new();
    let context = zmq::Context::new();
    let run = std::process::id();
    let mut agents = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(16) {
        let names: Vec<String> = chunk.iter().map(|i| format!("rot-{run}-{i}")).collect();
        let batch = names.iter().map(|n| mint_and_enroll(&client, base_url, api_key, n, None));
        for (enrolled, signing) in futures::future::try_join_all(batch).await? {
            agents.push(SimAgent::connect(&context, enrolled, signing)?);
        }
    }
    // Each socket holds its context alive.
    Ok(agents)
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
    let sims = enroll_agents(&base_url, &api_key, agents).await?;
    let ids: Vec<String> = sims.iter().map(|a| a.enrolled.answer.agent_id.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut promoted) = mpsc::unbounded_channel();
    let driver_stop = stop.clone();
    let driver = std::thread::spawn(move || drive(sims, zmq::Context::new(), driver_stop, tx));
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
            let (request_id, at) = tokio::time::timeout_at(deadline.into(), promoted.recv())
                .await
                .context("timed out waiting for promotions")?
                .context("driver stopped")?;
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
async fn wait_connected(base_url: &str, api_key: &str, ids: &[String]) -> anyhow::Result<()> {
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
        let socket = open(&context, &enrolled.curve, &enrolled)?;
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
    let sims = enroll_agents(&base_url, &api_key, agents).await?;
    let ids: Vec<String> = sims.iter().map(|a| a.enrolled.answer.agent_id.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut promoted) = mpsc::unbounded_channel();
    let driver_stop = stop.clone();
    let driver = std::thread::spawn(move || drive(sims, zmq::Context::new(), driver_stop, tx));
    wait_connected(&base_url, &api_key, &ids).await?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let response = client
        .post(format!("{base_url}/v1/management/operations"))
        .bearer_auth(&api_key)
        .json(&serde_json::json!({
            "kind": "curve_rotate", "selector": { "agents": ids }, "reason": "benchmark: emergency rotation",
            "wave_size": wave_size, "max_failures": 0,
        }))
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
    let id = op["id"].as_str().unwrap_or_default().to_string();
    let deadline = Instant::now() + Duration::from_secs(15 * 60);
    let mut promotions = Vec::new();
    let finished = loop {
        while let Ok((_, at)) = promoted.try_recv() {
            promotions.push(at.duration_since(started));
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
