//! Fleet benchmarks: enrollment throughput, its crypto floor, and many agents on one router.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use xerotier_core::{IdGenerator, IdKind, OsEntropy, SystemClock};
use xerotier_credentials::{CurveKeyPair, JoinTokenSigner, SigningKeyPair};
use xerotier_mesh::{ClientKeys, configure_client_socket};
use xerotier_proto::agents::{CapabilityManifest, EnrollRequest, EnrollResponse};
use xerotier_proto::join_keys::{IssuedJoinKey, JOIN_KEY_AUDIENCE, JOIN_KEY_ISSUER, JoinKeyClaims};
use xerotier_proto::mesh::{self, Frame};

use crate::Report;

/// The lease interval every simulated agent enrolls with.
pub const LEASE_INTERVAL_MS: u64 = 1_000;

/// One agent enrolled over HTTP: its keys and what the router answered.
#[derive(Debug)]
pub struct Enrolled {
    pub curve: CurveKeyPair,
    pub answer: EnrollResponse,
}

/// A step of an enrollment answered with an unexpected HTTP status.
#[derive(Debug)]
pub struct HttpStatusError {
    pub step: &'static str,
    pub status: u16,
    pub body: String,
}

impl std::fmt::Display for HttpStatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} answered {}: {}", self.step, self.status, self.body)
    }
}

impl std::error::Error for HttpStatusError {}

/// Mints a join key and enrolls with it: the whole operator + host round trip.
pub async fn mint_and_enroll(
    client: &reqwest::Client,
    base_url: &str,
    api_key: &str,
    name: &str,
    router_addr: Option<&str>,
) -> anyhow::Result<(Enrolled, SigningKeyPair)> {
    mint_and_enroll_with(client, base_url, api_key, name, router_addr, LEASE_INTERVAL_MS).await
}

/// [`mint_and_enroll`] with the lease interval `lease_ms`; an unexpected status is an
/// [`HttpStatusError`].
pub async fn mint_and_enroll_with(
    client: &reqwest::Client,
    base_url: &str,
    api_key: &str,
    name: &str,
    router_addr: Option<&str>,
    lease_ms: u64,
) -> anyhow::Result<(Enrolled, SigningKeyPair)> {
    let minted = client
        .post(format!("{base_url}/v1/management/join-keys"))
        .bearer_auth(api_key)
        .json(&serde_json::json!({ "name": name, "ttl_seconds": 600, "router_addr": router_addr }))
        .send()
        .await?;
    if minted.status() != 201 {
        let status = minted.status().as_u16();
        let body = minted.text().await.unwrap_or_default();
        return Err(HttpStatusError { step: "mint", status, body }.into());
    }
    let issued: IssuedJoinKey = minted.json().await?;
    let curve = CurveKeyPair::generate(&OsEntropy);
    let signing = SigningKeyPair::generate(&OsEntropy);
    let request = EnrollRequest {
        join_key: issued.token,
        registration_name: name.to_string(),
        curve_public_key: curve.public_z85(),
        signing_public_key: signing.public_hex(),
        manifest: CapabilityManifest { version: 1, tools: Vec::new(), workspaces: Vec::new() },
        lease_renewal_interval_ms: Some(lease_ms),
    };
    let enrolled = client.post(format!("{base_url}/v1/enroll")).json(&request).send().await?;
    if enrolled.status() != 200 {
        let status = enrolled.status().as_u16();
        let body = enrolled.text().await.unwrap_or_default();
        return Err(HttpStatusError { step: "enroll", status, body }.into());
    }
    Ok((Enrolled { curve, answer: enrolled.json().await? }, signing))
}

pub async fn enroll_throughput(
    base_url: String,
    api_key: String,
    seconds: u64,
    concurrency: usize,
) -> anyhow::Result<Report> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let run = std::process::id();
    let workers = (0..concurrency).map(|w| {
        let (client, base_url, api_key, counter) =
            (client.clone(), base_url.clone(), api_key.clone(), counter.clone());
        async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                mint_and_enroll(
                    &client,
                    &base_url,
                    &api_key,
                    &format!("bench-{run}-{w}-{n}"),
                    None,
                )
                .await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }
    });
    let latencies = futures::future::try_join_all(workers).await?;
    Ok(Report::new("enroll_mint_and_enroll", started.elapsed(), latencies, concurrency))
}

/// The cryptography one enrollment needs, with no I/O: two key pairs for the host, a JWT signed
/// and verified, as the floor under `enroll_throughput`.
pub async fn crypto_floor(seconds: u64, concurrency: usize) -> anyhow::Result<Report> {
    let signer = Arc::new(JoinTokenSigner::new(&SigningKeyPair::generate(&OsEntropy))?);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let signer = signer.clone();
        tokio::task::spawn_blocking(move || {
            let ids = IdGenerator::new(Arc::new(SystemClock), Arc::new(OsEntropy));
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let claims = JoinKeyClaims {
                    iss: JOIN_KEY_ISSUER.into(),
                    aud: JOIN_KEY_AUDIENCE.into(),
                    jti: ids.next(IdKind::JoinKey),
                    iat: 0,
                    exp: i64::MAX / 2000,
                    name: "bench".into(),
                    region: None,
                    role: "execution".into(),
                    router_addr: "tcp://127.0.0.1:5555".into(),
                    router_curve_key: "x".repeat(40),
                    workspaces: Vec::new(),
                    require_approval: false,
                    tls_ca: None,
                };
                let token = signer.issue(&claims)?;
                let curve = CurveKeyPair::generate(&OsEntropy);
                let signing = SigningKeyPair::generate(&OsEntropy);
                signer.verify(&token, 0)?;
                xerotier_credentials::parse_curve_public(&curve.public_z85())?;
                xerotier_credentials::parse_signing_public(&signing.public_hex())?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        })
    });
    let mut all = Vec::new();
    for worker in futures::future::join_all(workers).await {
        all.push(worker??);
    }
    Ok(Report::new("enroll_crypto_floor", started.elapsed(), all, concurrency))
}

/// Enrolls `count` agents, connects them all from one thread over CURVE, and renews every
/// agent's lease each `lease_ms` for `seconds`. Reports acknowledged renewals per second.
pub async fn many_agents(
    base_url: String,
    api_key: String,
    count: usize,
    lease_ms: u64,
    seconds: u64,
    router_addr: Option<String>,
) -> anyhow::Result<Report> {
    let client = reqwest::Client::new();
    let run = std::process::id();
    let mut enrolled = Vec::with_capacity(count);
    let started_enroll = Instant::now();
    for chunk in (0..count).collect::<Vec<_>>().chunks(16) {
        let names: Vec<String> = chunk.iter().map(|i| format!("sim-{run}-{i}")).collect();
        let batch = names.iter().map(|name| {
            mint_and_enroll(&client, &base_url, &api_key, name, router_addr.as_deref())
        });
        enrolled.extend(futures::future::try_join_all(batch).await?.into_iter().map(|(e, _)| e));
    }
    eprintln!("enrolled {count} agents in {:.1}s", started_enroll.elapsed().as_secs_f64());
    let result =
        tokio::task::spawn_blocking(move || drive_agents(enrolled, lease_ms, seconds)).await??;
    Ok(result)
}

fn drive_agents(agents: Vec<Enrolled>, lease_ms: u64, seconds: u64) -> anyhow::Result<Report> {
    let context = zmq::Context::new();
    let mut sockets = Vec::with_capacity(agents.len());
    for agent in &agents {
        let socket = context.socket(zmq::DEALER)?;
        configure_client_socket(
            &socket,
            &ClientKeys::new(&agent.curve, &agent.answer.router_curve_key),
        )?;
        socket.connect(&agent.answer.mesh_addr).context("connect")?;
        let hello = Frame::Hello {
            agent_id: agent.answer.agent_id.clone(),
            xem_version: "bench".into(),
            manifest_hash: "h".into(),
            manifest_version: 1,
        };
        socket.send(mesh::encode(&hello), 0)?;
        sockets.push(socket);
    }
    eprintln!(
        "{} sockets connecting; renewing leases every {lease_ms} ms for {seconds}s",
        sockets.len()
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut next_round = Instant::now();
    let mut seq = 0u64;
    let mut sent_at = std::collections::HashMap::new();
    let mut latencies = Vec::new();
    let mut sent = 0u64;
    while Instant::now() < deadline {
        if Instant::now() >= next_round {
            seq += 1;
            for (socket, agent) in sockets.iter().zip(&agents) {
                let renewal = Frame::LeaseRenewal {
                    agent_id: agent.answer.agent_id.clone(),
                    seq,
                    in_flight: Vec::new(),
                    manifest_hash: "h".into(),
                    manifest_version: 1,
                };
                socket.send(mesh::encode(&renewal), zmq::DONTWAIT).ok();
                sent += 1;
            }
            sent_at.insert(seq, Instant::now());
            next_round += Duration::from_millis(lease_ms);
        }
        let mut items: Vec<_> = sockets.iter().map(|s| s.as_poll_item(zmq::POLLIN)).collect();
        zmq::poll(&mut items, 10)?;
        let readable: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        for (socket, ready) in sockets.iter().zip(readable) {
            if !ready {
                continue;
            }
            while let Ok(bytes) = socket.recv_bytes(zmq::DONTWAIT) {
                if let Ok(Frame::LeaseAck { seq }) = mesh::decode(&bytes)
                    && let Some(at) = sent_at.get(&seq)
                {
                    latencies.push(at.elapsed());
                }
            }
        }
    }
    eprintln!("sent {sent} renewals, {} acknowledged", latencies.len());
    Ok(Report::new("fleet_lease_renewals", started.elapsed(), vec![latencies], agents.len())
        .with_extra("sent", sent))
}

/// Lease acknowledgement latency of `count` honest agents (one thread, renewing every
/// `lease_ms`) for `seconds` without a flood, then `seconds` while one more agent, with a valid
/// identity, sends hellos as fast as its socket takes them. Reports the flood phase; the quiet
/// phase is in `quiet_p50_us` / `quiet_p99_us`.
pub async fn fairness(
    base_url: String,
    api_key: String,
    count: usize,
    lease_ms: u64,
    seconds: u64,
    router_addr: Option<String>,
) -> anyhow::Result<Report> {
    let client = reqwest::Client::new();
    let run = std::process::id();
    let mut enrolled = Vec::with_capacity(count + 1);
    for chunk in (0..=count).collect::<Vec<_>>().chunks(16) {
        let names: Vec<String> = chunk.iter().map(|i| format!("fair-{run}-{i}")).collect();
        let batch = names.iter().map(|name| {
            mint_and_enroll(&client, &base_url, &api_key, name, router_addr.as_deref())
        });
        enrolled.extend(futures::future::try_join_all(batch).await?.into_iter().map(|(e, _)| e));
    }
    let flooder = enrolled.pop().context("the flooder")?;
    tokio::task::spawn_blocking(move || drive_fairness(enrolled, flooder, lease_ms, seconds))
        .await?
}

fn open_agent(context: &zmq::Context, agent: &Enrolled) -> anyhow::Result<zmq::Socket> {
    let socket = context.socket(zmq::DEALER)?;
    configure_client_socket(
        &socket,
        &ClientKeys::new(&agent.curve, &agent.answer.router_curve_key),
    )?;
    socket.connect(&agent.answer.mesh_addr).context("connect")?;
    let hello = Frame::Hello {
        agent_id: agent.answer.agent_id.clone(),
        xem_version: "bench".into(),
        manifest_hash: "h".into(),
        manifest_version: 1,
    };
    socket.send(mesh::encode(&hello), 0)?;
    Ok(socket)
}

/// The flooder: hellos back to back until `stop`; returns how many it sent.
fn flood(agent: Enrolled, stop: Arc<std::sync::atomic::AtomicBool>) -> anyhow::Result<u64> {
    let context = zmq::Context::new();
    let socket = open_agent(&context, &agent)?;
    let hello = mesh::encode(&Frame::Hello {
        agent_id: agent.answer.agent_id.clone(),
        xem_version: "flood".into(),
        manifest_hash: "h".into(),
        manifest_version: 1,
    });
    // A send blocks while the socket's queue is full (as fast as the router takes them), with
    // a timeout so the stop flag is seen. Retrying a full queue at once instead would spend a
    // core of this machine, which the router shares with the flooder here, and measure that
    // rather than the router: an attacker's spinning costs the attacker's host.
    socket.set_sndtimeo(100)?;
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if socket.send(&hello, 0).is_ok() {
            sent += 1;
        }
    }
    Ok(sent)
}

fn drive_fairness(
    agents: Vec<Enrolled>,
    flooder: Enrolled,
    lease_ms: u64,
    seconds: u64,
) -> anyhow::Result<Report> {
    let context = zmq::Context::new();
    let sockets = agents
        .iter()
        .map(|agent| open_agent(&context, agent))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Connects and first renewals settle before anything is measured.
    let warmup = Duration::from_secs(2);
    let phase = Duration::from_secs(seconds);
    let started = Instant::now();
    let flood_at = started + warmup + phase;
    let deadline = flood_at + phase;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flooder = Some(flooder);
    let mut flood_thread = None;
    let mut next_round = Instant::now();
    let mut seq = 0u64;
    let mut sent_at: std::collections::HashMap<u64, Instant> = std::collections::HashMap::new();
    let (mut quiet, mut flooded) = (Vec::new(), Vec::new());
    let (mut sent_quiet, mut sent_flood) = (0u64, 0u64);
    // Acknowledgements of the last round get a second to arrive.
    while Instant::now() < deadline + Duration::from_secs(1) {
        let now = Instant::now();
        if now >= flood_at
            && flood_thread.is_none()
            && let Some(agent) = flooder.take()
        {
            let stop = stop.clone();
            flood_thread = Some(std::thread::spawn(move || flood(agent, stop)));
            eprintln!("flooding with hellos from one agent");
        }
        if now >= next_round && now < deadline {
            seq += 1;
            for (socket, agent) in sockets.iter().zip(&agents) {
                let renewal = Frame::LeaseRenewal {
                    agent_id: agent.answer.agent_id.clone(),
                    seq,
                    in_flight: Vec::new(),
                    manifest_hash: "h".into(),
                    manifest_version: 1,
                };
                if socket.send(mesh::encode(&renewal), zmq::DONTWAIT).is_ok() {
                    if now >= flood_at {
                        sent_flood += 1;
                    } else if now >= started + warmup {
                        sent_quiet += 1;
                    }
                }
            }
            sent_at.insert(seq, now);
            next_round += Duration::from_millis(lease_ms);
        }
        let mut items: Vec<_> = sockets.iter().map(|s| s.as_poll_item(zmq::POLLIN)).collect();
        zmq::poll(&mut items, 5)?;
        let readable: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        for (socket, ready) in sockets.iter().zip(readable) {
            if !ready {
                continue;
            }
            while let Ok(bytes) = socket.recv_bytes(zmq::DONTWAIT) {
                if let Ok(Frame::LeaseAck { seq }) = mesh::decode(&bytes)
                    && let Some(at) = sent_at.get(&seq)
                {
                    if *at >= flood_at {
                        flooded.push(at.elapsed());
                    } else if *at >= started + warmup {
                        quiet.push(at.elapsed());
                    }
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flood_sent = match flood_thread {
        Some(thread) => thread.join().map_err(|_| anyhow::anyhow!("the flooder panicked"))??,
        None => 0,
    };
    let quiet = Report::new("quiet", phase, vec![quiet], agents.len());
    let percentile_us = |report: &Report, p: f64| (report.percentile_ms(p) * 1000.0) as u64;
    eprintln!(
        "quiet: {} of {sent_quiet} renewals acknowledged; flood ({flood_sent} hellos): {} of {sent_flood}",
        quiet.latencies.len(),
        flooded.len()
    );
    Ok(Report::new("fairness_lease_acks_under_flood", phase, vec![flooded], agents.len())
        .with_extra("flood_hellos", flood_sent)
        .with_extra("sent_flood", sent_flood)
        .with_extra("sent_quiet", sent_quiet)
        .with_extra("acked_quiet", quiet.latencies.len() as u64)
        .with_extra("quiet_p50_us", percentile_us(&quiet, 0.50))
        .with_extra("quiet_p99_us", percentile_us(&quiet, 0.99)))
}
