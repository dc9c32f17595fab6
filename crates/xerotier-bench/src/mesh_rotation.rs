//! Issue 14: a rotation of the router's mesh CURVE key across a fleet of simulated agents,
//! phase by phase (`init → update_clients → update_servers → standby`, as `xeroctl router
//! rotate-keys --kind mesh --auto` walks them), against the time the same fleet took to connect
//! in the first place, measured in the same run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::mpsc;
use xerotier_proto::router_keys::{RouterKeyKindView, RouterKeyRotationView, RouterKeysView};

use crate::fleet::LEASE_INTERVAL_MS;
use crate::rotation::{Reported, SimEvent, drive, enroll_agents, wait_connected};
use crate::{Report, ms};

/// How long one phase may take before the run is called failed: long enough for an agent
/// that needs every key it holds (two silences of 3 s each) many times over.
const PHASE_DEADLINE: Duration = Duration::from_secs(300);
/// How often the router's progress is read.
const POLL: Duration = Duration::from_millis(50);

/// What the simulated agents reported, by agent index.
#[derive(Debug, Default)]
struct Seen {
    /// The new key's id, once `init` made it.
    next_kid: String,
    /// When each agent acknowledged a set holding the new key (the first time).
    acked: HashMap<usize, Instant>,
    /// When each agent heard its first frame on a connection to the new key.
    on_new_key: HashMap<usize, Instant>,
    /// Agents that had the update_servers set (the new key first) before they reconnected on
    /// it; the others lost it to the rekey and first retried the old key.
    servers_set: HashSet<usize>,
    /// When `init` was requested: reconnects before it belong to the baseline.
    started: Option<Instant>,
    /// Silent connections replaced (the XEM's rule) before the rotation, during it, and of
    /// those the ones opened with a key other than the new one.
    startup_reconnects: u64,
    rotation_reconnects: u64,
    old_key_reconnects: u64,
    /// Rounds through every held key without a handshake (the XEM would fetch the keys).
    exhausted: u64,
}

impl Seen {
    fn note(&mut self, (agent, event, at): Reported) {
        match event {
            SimEvent::KeysAcked(kids) => {
                if kids.contains(&self.next_kid) {
                    self.acked.entry(agent).or_insert(at);
                }
                if kids.first() == Some(&self.next_kid) && !self.on_new_key.contains_key(&agent) {
                    self.servers_set.insert(agent);
                }
            }
            SimEvent::Session(kid) if kid == self.next_kid => {
                self.on_new_key.entry(agent).or_insert(at);
            }
            SimEvent::Reconnected { kid, exhausted } => self.reconnected(&kid, exhausted, at),
            SimEvent::Session(_) | SimEvent::Promoted(_) => {}
        }
    }

    fn reconnected(&mut self, kid: &str, exhausted: bool, at: Instant) {
        self.exhausted += u64::from(exhausted);
        if self.started.is_none_or(|started| at < started) {
            self.startup_reconnects += 1;
            return;
        }
        self.rotation_reconnects += 1;
        if kid != self.next_kid {
            self.old_key_reconnects += 1;
        }
    }

    fn drain(&mut self, events: &mut mpsc::UnboundedReceiver<Reported>) {
        while let Ok(reported) = events.try_recv() {
            self.note(reported);
        }
    }
}

/// The router's HTTP API as this benchmark uses it.
#[derive(Debug)]
struct Api {
    client: reqwest::Client,
    base_url: String,
    api_key: String,
}

impl Api {
    async fn mesh(&self) -> anyhow::Result<RouterKeyKindView> {
        let response = self
            .client
            .get(format!("{}/v1/management/router/keys", self.base_url))
            .bearer_auth(&self.api_key)
            .send()
            .await?;
        if response.status() != 200 {
            bail!("router keys answered {}", response.status());
        }
        let view: RouterKeysView = response.json().await?;
        view.kinds.into_iter().find(|k| k.kind == "mesh").context("no mesh key reported")
    }

    /// Moves the mesh rotation to `phase` (never forced: every phase waits for the fleet).
    async fn advance(&self, phase: &str) -> anyhow::Result<RouterKeyRotationView> {
        let response = self
            .client
            .post(format!("{}/v1/management/router/keys/mesh/rotation", self.base_url))
            .bearer_auth(&self.api_key)
            .json(&serde_json::json!({ "phase": phase, "reason": "benchmark: mesh key rotation" }))
            .send()
            .await?;
        if response.status() != 200 {
            bail!(
                "mesh rotation to {phase} answered {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        let step: RouterKeyRotationView = response.json().await?;
        if !step.applied || step.status.phase != phase {
            bail!("mesh rotation to {phase}: the router is in {}", step.status.phase);
        }
        Ok(step)
    }

    /// Reads the mesh progress until at least `agents` moved in `phase`; returns the last
    /// `moved`.
    async fn wait_moved(
        &self,
        phase: &str,
        agents: usize,
        seen: &mut Seen,
        events: &mut mpsc::UnboundedReceiver<Reported>,
    ) -> anyhow::Result<u64> {
        let deadline = Instant::now() + PHASE_DEADLINE;
        loop {
            seen.drain(events);
            let mesh = self.mesh().await?;
            if mesh.phase != phase {
                bail!("the mesh rotation moved to {} meanwhile", mesh.phase);
            }
            let moved = mesh.progress.map_or(0, |p| p.moved);
            if moved >= agents as u64 {
                return Ok(moved);
            }
            if Instant::now() > deadline {
                bail!(
                    "{phase}: only {moved} of {agents} agents moved within {PHASE_DEADLINE:?} \
                     (agents: {} acknowledged the new key, {} connected on it)",
                    seen.acked.len(),
                    seen.on_new_key.len()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Waits until `count` agents reported on the agent side (`which` reads the map).
async fn wait_agents(
    seen: &mut Seen,
    events: &mut mpsc::UnboundedReceiver<Reported>,
    count: usize,
    which: fn(&Seen) -> &HashMap<usize, Instant>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + PHASE_DEADLINE;
    while which(seen).len() < count {
        let reported = tokio::time::timeout_at(deadline.into(), events.recv())
            .await
            .context("timed out waiting for the simulated agents")?
            .context("the agents' driver stopped")?;
        seen.note(reported);
    }
    Ok(())
}

/// The last of `times`, from `since`.
fn last_after(times: &HashMap<usize, Instant>, since: Instant) -> Duration {
    times.values().map(|at| at.saturating_duration_since(since)).max().unwrap_or_default()
}

/// The phases' timings.
#[derive(Debug, Default)]
struct Phases {
    init: Duration,
    clients_request: Duration,
    clients_moved: Duration,
    clients_agents: Duration,
    servers_request: Duration,
    servers_moved: Duration,
    servers_agents: Duration,
    standby: Duration,
    /// `init` sent → the router reports every agent on the new key.
    total: Duration,
    /// `init` sent → `standby` answered.
    complete: Duration,
    moved: u64,
    /// Per agent: `update_servers` sent → its first frame on the new key.
    reconnects: Vec<Duration>,
}

/// `init` and `update_clients`, until every agent acknowledged the new key.
async fn to_clients(
    api: &Api,
    agents: usize,
    seen: &mut Seen,
    events: &mut mpsc::UnboundedReceiver<Reported>,
    phases: &mut Phases,
) -> anyhow::Result<Instant> {
    let started = Instant::now();
    seen.started = Some(started);
    let init = api.advance("init").await?;
    phases.init = started.elapsed();
    seen.next_kid = init
        .status
        .keys
        .iter()
        .find(|k| k.state == "next")
        .map(|k| k.kid.clone())
        .context("init made no next key")?;
    let sent = Instant::now();
    api.advance("update_clients").await?;
    phases.clients_request = sent.elapsed();
    api.wait_moved("update_clients", agents, seen, events).await?;
    phases.clients_moved = sent.elapsed();
    wait_agents(seen, events, agents, |s| &s.acked).await?;
    phases.clients_agents = last_after(&seen.acked, sent);
    eprintln!(
        "update_clients: {agents} agents acknowledged the new key {} in {:.2}s",
        seen.next_kid,
        phases.clients_moved.as_secs_f64()
    );
    Ok(started)
}

/// `update_servers` until every agent is on the new key, then `standby`.
async fn to_standby(
    api: &Api,
    agents: usize,
    seen: &mut Seen,
    events: &mut mpsc::UnboundedReceiver<Reported>,
    phases: &mut Phases,
    started: Instant,
) -> anyhow::Result<()> {
    let sent = Instant::now();
    api.advance("update_servers").await?;
    phases.servers_request = sent.elapsed();
    phases.moved = api.wait_moved("update_servers", agents, seen, events).await?;
    phases.servers_moved = sent.elapsed();
    phases.total = started.elapsed();
    wait_agents(seen, events, agents, |s| &s.on_new_key).await?;
    phases.servers_agents = last_after(&seen.on_new_key, sent);
    phases.reconnects =
        seen.on_new_key.values().map(|at| at.saturating_duration_since(sent)).collect();
    eprintln!(
        "update_servers: {agents} agents reconnected on the new key in {:.2}s",
        phases.servers_moved.as_secs_f64()
    );
    let sent = Instant::now();
    api.advance("standby").await?;
    phases.standby = sent.elapsed();
    phases.complete = started.elapsed();
    Ok(())
}

fn ratio(a: Duration, b: Duration) -> serde_json::Value {
    (a.as_secs_f64() / b.as_secs_f64().max(f64::EPSILON)).into()
}

/// Enrolls `agents` simulated agents, connects them all at once (the baseline: sockets opened
/// → the router lists every one `active`), then rotates the router's mesh key through every
/// phase.
pub async fn mesh_rotation(
    base_url: String,
    api_key: String,
    agents: usize,
) -> anyhow::Result<Report> {
    let enrolled = enroll_agents(&base_url, &api_key, agents, "mkr").await?;
    let ids: Vec<String> = enrolled.iter().map(|(e, _)| e.answer.agent_id.clone()).collect();
    let api = Api { client: reqwest::Client::new(), base_url, api_key };
    if api.mesh().await?.phase != "standby" {
        bail!("a mesh key rotation is already under way on this router");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut events) = mpsc::unbounded_channel();
    let driver_stop = stop.clone();
    let lease = Duration::from_millis(LEASE_INTERVAL_MS);
    let connecting = Instant::now();
    let driver = std::thread::spawn(move || drive(enrolled, lease, driver_stop, tx));
    let run = async {
        wait_connected(&api.base_url, &api.api_key, &ids).await?;
        let baseline = connecting.elapsed();
        eprintln!("{agents} agents connected in {:.2}s", baseline.as_secs_f64());
        let mut seen = Seen::default();
        seen.drain(&mut events);
        let mut phases = Phases::default();
        let started = to_clients(&api, agents, &mut seen, &mut events, &mut phases).await?;
        to_standby(&api, agents, &mut seen, &mut events, &mut phases, started).await?;
        // Not timed: the fleet is still all there, on the new key.
        wait_connected(&api.base_url, &api.api_key, &ids).await?;
        Ok::<_, anyhow::Error>((baseline, phases, seen))
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    driver.join().map_err(|_| anyhow::anyhow!("the agents' driver panicked"))??;
    let (baseline, phases, mut seen) = run?;
    seen.drain(&mut events);
    Ok(report(agents, baseline, phases, &seen))
}

fn report(agents: usize, baseline: Duration, phases: Phases, seen: &Seen) -> Report {
    let total = phases.total;
    Report::new("mesh_key_rotation", total, vec![phases.reconnects], agents)
        .with_extra("agents", agents as u64)
        .with_extra("baseline_connect_ms", ms(baseline))
        .with_extra("init_ms", ms(phases.init))
        .with_extra("update_clients_request_ms", ms(phases.clients_request))
        .with_extra("update_clients_ms", ms(phases.clients_moved))
        .with_extra("update_clients_agents_ms", ms(phases.clients_agents))
        .with_extra("update_servers_request_ms", ms(phases.servers_request))
        .with_extra("update_servers_ms", ms(phases.servers_moved))
        .with_extra("update_servers_agents_ms", ms(phases.servers_agents))
        .with_extra("standby_ms", ms(phases.standby))
        .with_extra("total_ms", ms(total))
        .with_extra("complete_ms", ms(phases.complete))
        .with_extra("moved", phases.moved)
        .with_extra("acked", seen.acked.len() as u64)
        .with_extra("on_new_key", seen.on_new_key.len() as u64)
        .with_extra("got_update_servers_set", seen.servers_set.len() as u64)
        .with_extra("startup_reconnects", seen.startup_reconnects)
        .with_extra("rotation_reconnects", seen.rotation_reconnects)
        .with_extra("old_key_reconnects", seen.old_key_reconnects)
        .with_extra("exhausted_rounds", seen.exhausted)
        .with_json("total_over_baseline", ratio(total, baseline))
        .with_json("update_servers_over_baseline", ratio(phases.servers_moved, baseline))
        .with_json("new_kid", seen.next_kid.clone().into())
}
