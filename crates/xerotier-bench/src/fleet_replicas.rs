//! A large fleet spread over several replicas on one PostgreSQL (issue 12): simulated agents
//! enrolled round-robin through the replicas, each holding its CURVE session with the replica
//! it enrolled with (the mesh address its join key names); every lease renewal sent against
//! those acknowledged, per replica; the replicas' memory idle, enrolled, loaded and after the
//! rotation; then one `curve_rotate` fleet operation over every agent.
//!
//! The agents are [`SimAgent`]s (real CURVE sessions, signed rotation acknowledgements, a
//! reconnect on the promoted key), held by worker processes of this executable (a process
//! holds at most its descriptor limit) and driven by a few threads in each: each thread
//! polls its agents' sockets once per [`LOOP_PERIOD`] (polling thousands of sockets as soon as
//! any frame arrives would spend the cores the routers need), so acknowledgement latencies
//! here are quantized by that period.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use tokio::sync::mpsc;
use xerotier_credentials::SigningKeyPair;
use xerotier_proto::mesh::{self, Frame};

use crate::fleet::{Enrolled, HttpStatusError, mint_and_enroll_with};
use crate::rotation::{AGENTS_PER_CONTEXT, SimAgent, SimEvent};
use crate::{Report, ms};

/// What the command line asks for.
#[derive(clap::Args)]
pub struct Options {
    /// A replica's base URL; once per replica. Agent `i` enrolls through `urls[i % len]`,
    /// and the fleet operation is requested through the first.
    #[arg(long = "base-url", required = true)]
    pub urls: Vec<String>,
    #[arg(long)]
    pub api_key: String,
    #[arg(long, default_value_t = 10_000)]
    pub agents: usize,
    /// The agents' lease interval, enrolled with and renewed at (the XEM's default is 10 s).
    #[arg(long, default_value_t = 10_000)]
    pub lease_ms: u64,
    /// How long every lease renewal is counted, once every agent is connected (the global
    /// `--seconds`).
    #[arg(skip)]
    pub seconds: u64,
    #[arg(long, default_value_t = 500)]
    pub wave_size: u32,
    /// The operation halts past this many failed targets (the router's maximum: every
    /// failure is counted instead of halting at the first).
    #[arg(long, default_value_t = 10_000)]
    pub max_failures: u32,
    /// Worker processes holding the agents (each agent takes four file descriptors here; a
    /// process holds at most its `ulimit -n`).
    #[arg(long, default_value_t = 4)]
    pub processes: usize,
    /// Threads driving the agents, per worker process.
    #[arg(long, default_value_t = 2)]
    pub drivers: usize,
    /// Enrollments in flight, per worker process.
    #[arg(long, default_value_t = 8)]
    pub enroll_concurrency: usize,
    /// Agents connected per second, all workers together, so that thousands of CURVE
    /// handshakes do not overflow the replicas' listen backlogs at once; it also spreads the
    /// renewals over the interval.
    #[arg(long, default_value_t = 1000)]
    pub connect_per_second: u64,
    /// A replica's process id (for its memory and CPU, read from `/proc`); once per replica
    /// (same order as `--base-url`), or never.
    #[arg(long = "pid")]
    pub pids: Vec<u32>,
    /// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    pub clk_tck: u64,
}

/// Phases a renewal is counted in, by the moment it was sent.
const CONNECTING: u8 = 0;
const RENEWING: u8 = 1;
const ROTATING: u8 = 2;
const AFTER: u8 = 3;
const PHASES: usize = 4;
const PHASE_NAMES: [&str; PHASES] = ["connecting", "renewing", "rotating", "after"];

/// How often a driver thread polls its agents' sockets.
const LOOP_PERIOD: Duration = Duration::from_millis(20);
/// Renewals an agent remembers waiting for their acknowledgement.
const IN_FLIGHT_KEPT: usize = 8;
/// Enrollment attempts per agent while a replica answers 503 (or refuses the connection).
const ENROLL_ATTEMPTS: u32 = 10;

/// Renewals sent and acknowledged, by phase and replica.
struct Tally {
    replicas: usize,
    sent: Vec<AtomicU64>,
    acked: Vec<AtomicU64>,
    /// Renewals the socket refused to queue.
    unsent: Vec<AtomicU64>,
}

impl Tally {
    fn new(replicas: usize) -> Self {
        let counters = || (0..PHASES * replicas).map(|_| AtomicU64::new(0)).collect();
        Self { replicas, sent: counters(), acked: counters(), unsent: counters() }
    }

    fn at(&self, phase: u8, replica: usize) -> usize {
        usize::from(phase) * self.replicas + replica
    }

    fn add(&self, which: &[AtomicU64], phase: u8, replica: usize) {
        which[self.at(phase, replica)].fetch_add(1, Ordering::Relaxed);
    }
}

struct Shared {
    phase: AtomicU8,
    stop: AtomicBool,
    tally: Tally,
    /// Reconnects put off for want of room for sockets (`SimAgent::reconnect`), by the
    /// drivers that ended.
    deferred_reconnects: AtomicU64,
}

/// What a driver tells the benchmark of one agent.
#[derive(Debug)]
enum Happened {
    /// Its first lease acknowledgement: the session is up.
    FirstAck,
    /// Its rotation was promoted and it reconnected on the new key.
    Promoted,
    /// Its first lease acknowledgement after the promotion: the session on the new key is up.
    AckOnNewKey,
    RotationFailed(String),
    /// Silent for 3 lease intervals: it reconnected instead of renewing.
    SilentReconnect,
    /// The simulator refused a frame (e.g. a promotion of another request).
    Error(String),
}

/// (agent's global index, what happened, when).
type Note = (usize, Happened, Instant);

/// One agent as a driver holds it.
struct Slot {
    sim: SimAgent,
    global: usize,
    replica: usize,
    next_tick: Instant,
    seq: u64,
    /// Renewals sent and not yet acknowledged: (seq, sent at, phase).
    in_flight: VecDeque<(u64, Instant, u8)>,
    acked_once: bool,
    promoted: bool,
    acked_on_new_key: bool,
}

/// An agent handed to a driver: (global index, replica index, enrollment, signing key).
type Assigned = (usize, usize, Enrolled, SigningKeyPair);

/// Connects its agents (paced by `connect_interval`), then runs them until `stop`: a lease
/// tick per agent every `lease` from its connect on, every frame handled.
fn run_driver(
    agents: Vec<Assigned>,
    lease: Duration,
    connect_interval: Duration,
    shared: Arc<Shared>,
    notes: mpsc::UnboundedSender<Note>,
) -> anyhow::Result<Vec<Duration>> {
    let note = |global: usize, what: Happened| {
        let _ = notes.send((global, what, Instant::now()));
    };
    let contexts: Vec<zmq::Context> =
        (0..agents.len().div_ceil(AGENTS_PER_CONTEXT)).map(|_| zmq::Context::new()).collect();
    let mut pending = agents.into_iter().enumerate();
    let mut slots: Vec<Slot> = Vec::new();
    let mut latencies = Vec::new();
    let mut next_connect = Instant::now();
    let mut connecting = true;
    let mut next_monitor_drain = Instant::now() + Duration::from_secs(1);
    while !shared.stop.load(Ordering::Relaxed) {
        let loop_start = Instant::now();
        while connecting && Instant::now() >= next_connect {
            let Some((k, (global, replica, enrolled, signing))) = pending.next() else {
                connecting = false;
                break;
            };
            let context = contexts[k / AGENTS_PER_CONTEXT].clone();
            let sim = SimAgent::connect_with(context, enrolled, signing, lease * 3)?;
            slots.push(Slot {
                sim,
                global,
                replica,
                // The first renewal goes out at once (queued behind the hello until the
                // handshake completes); the pacing of connects spreads the later ones.
                next_tick: Instant::now(),
                seq: 0,
                in_flight: VecDeque::new(),
                acked_once: false,
                promoted: false,
                acked_on_new_key: false,
            });
            next_connect += connect_interval;
        }
        let phase = shared.phase.load(Ordering::Relaxed);
        let tally = &shared.tally;
        for slot in &mut slots {
            let now = Instant::now();
            if now < slot.next_tick {
                continue;
            }
            slot.next_tick = (slot.next_tick + lease).max(now);
            slot.seq += 1;
            let failures = slot.sim.send_failures;
            match slot.sim.lease_tick(slot.seq)? {
                Some(SimEvent::Reconnected { .. }) => note(slot.global, Happened::SilentReconnect),
                Some(_) => {}
                None if slot.sim.send_failures != failures => {
                    tally.add(&tally.unsent, phase, slot.replica);
                }
                None => {
                    tally.add(&tally.sent, phase, slot.replica);
                    slot.in_flight.push_back((slot.seq, now, phase));
                    if slot.in_flight.len() > IN_FLIGHT_KEPT {
                        slot.in_flight.pop_front();
                    }
                }
            }
        }
        if Instant::now() >= next_monitor_drain {
            for slot in &mut slots {
                if let Some(SimEvent::Reconnected { .. }) = slot.sim.on_monitor()? {
                    note(slot.global, Happened::SilentReconnect);
                }
            }
            next_monitor_drain += Duration::from_secs(1);
        }
        if let Some(rest) = LOOP_PERIOD.checked_sub(loop_start.elapsed()) {
            std::thread::sleep(rest);
        }
        let mut items: Vec<_> =
            slots.iter().map(|s| s.sim.socket.as_poll_item(zmq::POLLIN)).collect();
        zmq::poll(&mut items, 0)?;
        let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        drop(items);
        for (slot, ready) in slots.iter_mut().zip(ready) {
            if ready {
                receive(slot, tally, &mut latencies, &note);
            }
        }
    }
    let deferred: u64 = slots.iter().map(|slot| slot.sim.deferred_reconnects).sum();
    shared.deferred_reconnects.fetch_add(deferred, Ordering::Relaxed);
    Ok(latencies)
}

/// Handles every frame waiting on the agent's socket.
fn receive(
    slot: &mut Slot,
    tally: &Tally,
    latencies: &mut Vec<Duration>,
    note: &impl Fn(usize, Happened),
) {
    while let Ok(bytes) = slot.sim.socket.recv_bytes(zmq::DONTWAIT) {
        slot.sim.heard_frame();
        let Ok(frame) = mesh::decode(&bytes) else { continue };
        match frame {
            Frame::LeaseAck { seq } => {
                let Some(position) = slot.in_flight.iter().position(|(s, _, _)| *s == seq) else {
                    continue;
                };
                let Some((_, sent_at, phase)) = slot.in_flight.remove(position) else { continue };
                tally.add(&tally.acked, phase, slot.replica);
                if phase == RENEWING {
                    latencies.push(sent_at.elapsed());
                }
                if !slot.acked_once {
                    slot.acked_once = true;
                    note(slot.global, Happened::FirstAck);
                }
                if slot.promoted && !slot.acked_on_new_key {
                    slot.acked_on_new_key = true;
                    note(slot.global, Happened::AckOnNewKey);
                }
            }
            Frame::RotationFailed { request_id, reason } => {
                note(slot.global, Happened::RotationFailed(format!("{request_id}: {reason}")));
            }
            frame => match slot.sim.handle(frame) {
                Ok(Some(SimEvent::Promoted(_))) => {
                    slot.promoted = true;
                    note(slot.global, Happened::Promoted);
                    // The old connection is closed: what it had in flight is gone with it.
                    break;
                }
                Ok(_) => {}
                Err(err) => note(slot.global, Happened::Error(err.to_string())),
            },
        }
    }
}

/// Mints and enrolls through `base_url`, retrying with backoff while the replica answers 503
/// or refuses the connection; `retries` counts the retries.
async fn enroll_retrying(
    client: &reqwest::Client,
    base_url: &str,
    api_key: &str,
    name: &str,
    lease_ms: u64,
    retries: &AtomicU64,
) -> anyhow::Result<(Enrolled, SigningKeyPair)> {
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        let result = mint_and_enroll_with(client, base_url, api_key, name, None, lease_ms).await;
        let err = match result {
            Ok(done) => return Ok(done),
            Err(err) => err,
        };
        let busy = err.downcast_ref::<HttpStatusError>().is_some_and(|e| e.status == 503)
            || err.downcast_ref::<reqwest::Error>().is_some_and(reqwest::Error::is_connect);
        if !busy || attempt >= ENROLL_ATTEMPTS {
            return Err(err.context(format!("{name} through {base_url}, attempt {attempt}")));
        }
        retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
        attempt += 1;
    }
}

/// A process's resident memory (KiB) and CPU time (clock ticks), from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kib: u64,
    cpu_ticks: u64,
}

fn sample(pid: &str) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(Sample { rss_kib, cpu_ticks: ticks(11)? + ticks(12)? })
}

fn samples(pids: &[u32]) -> Vec<Sample> {
    pids.iter().map(|pid| sample(&pid.to_string()).unwrap_or_default()).collect()
}

/// What a worker process tells the leader (one line of its stdout each).
#[derive(Debug)]
enum Msg {
    /// Its share is enrolled: `{"failed": [..], "retries": [..], "agents": [..],
    /// "first_error": ..}`, per replica.
    Enrolled(serde_json::Value),
    Note(Note),
    /// Its drivers stopped: the tallies and the renewal phase's latencies.
    Final(serde_json::Value),
    /// Its stdout closed (it exited).
    Exited(usize),
}

/// Writes one protocol line to the leader.
fn emit(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn note_line((global, what, _): &Note) -> String {
    let flat = |s: &str| s.replace('\n', " ");
    match what {
        Happened::FirstAck => format!("N first_ack {global}"),
        Happened::Promoted => format!("N promoted {global}"),
        Happened::AckOnNewKey => format!("N new_key {global}"),
        Happened::RotationFailed(why) => format!("N failed {global} {}", flat(why)),
        Happened::SilentReconnect => format!("N silent {global}"),
        Happened::Error(why) => format!("N error {global} {}", flat(why)),
    }
}

fn parse_line(worker: usize, line: &str) -> Option<Msg> {
    let (tag, rest) = line.split_once(' ')?;
    match tag {
        "E" => serde_json::from_str(rest).ok().map(Msg::Enrolled),
        "F" => serde_json::from_str(rest).ok().map(Msg::Final),
        "N" => {
            let mut parts = rest.splitn(3, ' ');
            let (kind, global) = (parts.next()?, parts.next()?.parse().ok()?);
            let detail = parts.next().unwrap_or_default().to_string();
            let what = match kind {
                "first_ack" => Happened::FirstAck,
                "promoted" => Happened::Promoted,
                "new_key" => Happened::AckOnNewKey,
                "failed" => Happened::RotationFailed(detail),
                "silent" => Happened::SilentReconnect,
                _ => Happened::Error(format!("worker {worker}: {detail}")),
            };
            Some(Msg::Note((global, what, Instant::now())))
        }
        _ => None,
    }
}

/// What one worker process is asked for.
#[derive(clap::Args)]
pub struct WorkerOptions {
    #[arg(long = "base-url", required = true)]
    pub urls: Vec<String>,
    #[arg(long)]
    pub api_key: String,
    /// The whole fleet; this worker takes agents `index`, `index + processes`, ….
    #[arg(long)]
    pub agents: usize,
    #[arg(long)]
    pub index: usize,
    #[arg(long)]
    pub processes: usize,
    #[arg(long)]
    pub lease_ms: u64,
    #[arg(long)]
    pub drivers: usize,
    #[arg(long)]
    pub enroll_concurrency: usize,
    #[arg(long)]
    pub connect_per_second: u64,
}

/// A worker process: enrolls its share of the fleet, reports it (`E`), waits for `connect` on
/// stdin, drives its agents reporting what they hear (`N`), follows `phase <n>` lines, and
/// on `stop` (or the end of stdin) reports its tallies (`F`).
pub async fn worker(w: WorkerOptions) -> anyhow::Result<()> {
    let replicas = w.urls.len();
    if replicas == 0 || w.drivers == 0 || w.processes == 0 {
        bail!("at least one --base-url, one driver and one process");
    }
    let client = reqwest::Client::new();
    let run = std::process::id();
    let retries: Vec<AtomicU64> = (0..replicas).map(|_| AtomicU64::new(0)).collect();
    let mine: Vec<usize> = (w.index..w.agents).step_by(w.processes).collect();
    let results: Vec<(usize, anyhow::Result<(Enrolled, SigningKeyPair)>)> =
        futures::stream::iter(mine)
            .map(|i| {
                let (client, retries) = (&client, &retries);
                let (url, key) = (&w.urls[i % replicas], &w.api_key);
                async move {
                    let name = format!("f10k-{run}-{i}");
                    let got = enroll_retrying(
                        client,
                        url,
                        key,
                        &name,
                        w.lease_ms,
                        &retries[i % replicas],
                    )
                    .await;
                    (i, got)
                }
            })
            .buffered(w.enroll_concurrency.max(1))
            .collect()
            .await;
    let mut agents = vec![0u64; replicas];
    let mut failed = vec![0u64; replicas];
    let mut first_error = None;
    let mut groups: Vec<Vec<Assigned>> = (0..w.drivers).map(|_| Vec::new()).collect();
    let mut enrolled = 0usize;
    for (i, result) in results {
        let replica = i % replicas;
        match result {
            Ok((agent, signing)) => {
                agents[replica] += 1;
                groups[enrolled % w.drivers].push((i, replica, agent, signing));
                enrolled += 1;
            }
            Err(err) => {
                failed[replica] += 1;
                first_error.get_or_insert_with(|| format!("{err:#}"));
            }
        }
    }
    let retries: Vec<u64> = retries.iter().map(|r| r.load(Ordering::Relaxed)).collect();
    emit(&format!(
        "E {}",
        serde_json::json!({
            "agents": agents, "failed": failed, "retries": retries, "first_error": first_error,
        })
    ));
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(CONNECTING),
        stop: AtomicBool::new(false),
        tally: Tally::new(replicas),
        deferred_reconnects: AtomicU64::new(0),
    });
    // The leader's commands, read by a thread of their own.
    let (connect_tx, connect_rx) = tokio::sync::oneshot::channel();
    let commands = shared.clone();
    std::thread::spawn(move || {
        let mut connect = Some(connect_tx);
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            match line.split_once(' ') {
                Some(("phase", n)) => {
                    commands.phase.store(n.trim().parse().unwrap_or(AFTER), Ordering::Relaxed);
                }
                _ if line.trim() == "connect" => {
                    if let Some(tx) = connect.take() {
                        let _ = tx.send(());
                    }
                }
                _ if line.trim() == "stop" => break,
                _ => {}
            }
        }
        commands.stop.store(true, Ordering::Relaxed);
    });
    if connect_rx.await.is_err() {
        return Ok(());
    }
    let lease = Duration::from_millis(w.lease_ms);
    let (tx, mut notes) = mpsc::unbounded_channel();
    let connect_interval =
        Duration::from_secs_f64(w.drivers as f64 / w.connect_per_second.max(1) as f64);
    let drivers: Vec<_> = groups
        .into_iter()
        .map(|group| {
            let (shared, tx) = (shared.clone(), tx.clone());
            std::thread::spawn(move || run_driver(group, lease, connect_interval, shared, tx))
        })
        .collect();
    drop(tx);
    while let Some(note) = notes.recv().await {
        emit(&note_line(&note));
    }
    let mut latencies_us: Vec<u64> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for driver in drivers {
        match driver.join() {
            Ok(Ok(l)) => latencies_us.extend(l.iter().map(|d| d.as_micros() as u64)),
            Ok(Err(err)) => failures.push(format!("{err:#}")),
            Err(_) => failures.push("a driver panicked".into()),
        }
    }
    let tally = &shared.tally;
    let load = |which: &[AtomicU64]| -> Vec<u64> {
        which.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    };
    emit(&format!(
        "F {}",
        serde_json::json!({
            "sent": load(&tally.sent), "acked": load(&tally.acked), "unsent": load(&tally.unsent),
            "latencies_us": latencies_us, "driver_failures": failures,
            "deferred_reconnects": shared.deferred_reconnects.load(Ordering::Relaxed),
        })
    ));
    Ok(())
}

/// What the benchmark heard from the workers, summed.
#[derive(Default)]
struct Heard {
    first_ack: Vec<Option<Instant>>,
    acked: usize,
    promoted: Vec<Option<Instant>>,
    promotions: usize,
    on_new_key: usize,
    last_on_new_key: Option<Instant>,
    rotation_failed: u64,
    silent_reconnects: u64,
    errors: u64,
    first_problem: Option<String>,
    enrolled: Vec<serde_json::Value>,
    finals: Vec<serde_json::Value>,
    exited: usize,
}

impl Heard {
    fn new(agents: usize) -> Self {
        Self { first_ack: vec![None; agents], promoted: vec![None; agents], ..Self::default() }
    }

    fn take(&mut self, msg: Msg) {
        let (global, what, at) = match msg {
            Msg::Note(note) => note,
            Msg::Enrolled(e) => return self.enrolled.push(e),
            Msg::Final(f) => return self.finals.push(f),
            Msg::Exited(worker) => {
                self.exited += 1;
                if self.finals.len() < self.exited {
                    self.first_problem.get_or_insert(format!("worker {worker} exited early"));
                }
                return;
            }
        };
        let Some(first_ack) = self.first_ack.get_mut(global) else { return };
        match what {
            Happened::FirstAck => {
                if first_ack.replace(at).is_none() {
                    self.acked += 1;
                }
            }
            Happened::Promoted => {
                if self.promoted[global].replace(at).is_none() {
                    self.promotions += 1;
                }
            }
            Happened::AckOnNewKey => {
                self.on_new_key += 1;
                self.last_on_new_key = Some(at);
            }
            Happened::RotationFailed(why) => {
                self.rotation_failed += 1;
                self.first_problem.get_or_insert(format!("rotation failed: {why}"));
            }
            Happened::SilentReconnect => self.silent_reconnects += 1,
            Happened::Error(why) => {
                self.errors += 1;
                self.first_problem.get_or_insert(why);
            }
        }
    }

    fn drain(&mut self, notes: &mut mpsc::UnboundedReceiver<Msg>) {
        while let Ok(msg) = notes.try_recv() {
            self.take(msg);
        }
    }

    /// Takes messages until `done` holds or `deadline` passes; whether `done` held.
    async fn until(
        &mut self,
        notes: &mut mpsc::UnboundedReceiver<Msg>,
        deadline: Instant,
        done: impl Fn(&Self) -> bool,
    ) -> bool {
        while !done(self) {
            match tokio::time::timeout_at(deadline.into(), notes.recv()).await {
                Ok(Some(msg)) => self.take(msg),
                Ok(None) | Err(_) => return false,
            }
        }
        true
    }
}

/// The worker processes' stdins: the leader's commands.
struct Workers {
    stdins: Vec<std::process::ChildStdin>,
    pids: Vec<u32>,
}

impl Workers {
    fn send(&mut self, line: &str) {
        use std::io::Write;
        for stdin in &mut self.stdins {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }

    fn set_phase(&mut self, phase: u8) {
        self.send(&format!("phase {phase}"));
    }
}

fn read_worker(worker: usize, stdout: std::process::ChildStdout, tx: mpsc::UnboundedSender<Msg>) {
    use std::io::BufRead;
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(msg) = parse_line(worker, &line) {
            let _ = tx.send(msg);
        }
    }
    let _ = tx.send(Msg::Exited(worker));
}

fn sum_arrays(values: &[serde_json::Value], field: &str, len: usize) -> Vec<u64> {
    let mut sum = vec![0u64; len];
    for v in values {
        for (i, x) in v[field].as_array().into_iter().flatten().enumerate() {
            if let Some(slot) = sum.get_mut(i) {
                *slot += x.as_u64().unwrap_or(0);
            }
        }
    }
    sum
}

/// The leader: starts `processes` workers (this executable, `fleet-replicas-worker`; a process
/// holds at most as many descriptors as its limit allows, four per agent here), measures the
/// replicas and runs the phases, sums what the workers counted.
pub async fn fleet_replicas(o: Options) -> anyhow::Result<Report> {
    let replicas = o.urls.len();
    if replicas == 0 || o.drivers == 0 || o.agents == 0 || o.processes == 0 {
        bail!("at least one --base-url, one driver, one process and one agent");
    }
    if !o.pids.is_empty() && o.pids.len() != replicas {
        bail!("--pid once per --base-url, in the same order");
    }
    let idle = samples(&o.pids);
    let exe = std::env::current_exe().context("this executable")?;
    let (tx, mut notes) = mpsc::unbounded_channel();
    let mut workers = Workers { stdins: Vec::new(), pids: Vec::new() };
    let mut children = Vec::new();
    let enroll_started = Instant::now();
    for k in 0..o.processes {
        let mut command = std::process::Command::new(&exe);
        command.arg("fleet-replicas-worker");
        for url in &o.urls {
            command.arg("--base-url").arg(url);
        }
        let per_process = (o.connect_per_second / o.processes as u64).max(1);
        command
            .args(["--api-key", &o.api_key, "--agents", &o.agents.to_string()])
            .args(["--index", &k.to_string(), "--processes", &o.processes.to_string()])
            .args(["--lease-ms", &o.lease_ms.to_string(), "--drivers", &o.drivers.to_string()])
            .args(["--enroll-concurrency", &o.enroll_concurrency.to_string()])
            .args(["--connect-per-second", &per_process.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = command.spawn().context("a worker process")?;
        let stdout = child.stdout.take().context("the worker's stdout")?;
        workers.stdins.push(child.stdin.take().context("the worker's stdin")?);
        workers.pids.push(child.id());
        let tx = tx.clone();
        std::thread::spawn(move || read_worker(k, stdout, tx));
        children.push(child);
    }
    drop(tx);
    let mut heard = Heard::new(o.agents);
    let processes = o.processes;
    let enroll_deadline = Instant::now() + Duration::from_secs(15 * 60);
    let outcome = async {
        if !heard.until(&mut notes, enroll_deadline, |h| h.enrolled.len() >= processes).await {
            bail!("not every worker enrolled its agents: {:?}", heard.first_problem);
        }
        run_phases(&o, &mut workers, &mut notes, &mut heard, enroll_started).await
    }
    .await;
    workers.send("stop");
    let stop_deadline = Instant::now() + Duration::from_secs(60);
    heard.until(&mut notes, stop_deadline, |h| h.exited >= processes).await;
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let phases = outcome?;
    if heard.finals.len() < processes {
        bail!("{} of {processes} workers reported their tallies", heard.finals.len());
    }
    // A failed driver (its agents stopped with it) is reported, not fatal: what the others
    // measured stands.
    let failures: Vec<serde_json::Value> = heard
        .finals
        .iter()
        .flat_map(|f| f["driver_failures"].as_array().into_iter().flatten().cloned())
        .collect();
    if let Some(failure) = failures.first() {
        eprintln!("{} driver(s) failed: {failure}", failures.len());
    }
    let n = PHASES * replicas;
    let (sent, acked, unsent) = (
        sum_arrays(&heard.finals, "sent", n),
        sum_arrays(&heard.finals, "acked", n),
        sum_arrays(&heard.finals, "unsent", n),
    );
    let latencies: Vec<Vec<Duration>> = heard
        .finals
        .iter()
        .map(|f| {
            f["latencies_us"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_u64)
                .map(Duration::from_micros)
                .collect()
        })
        .collect();
    let per_agents = sum_arrays(&heard.enrolled, "agents", replicas);
    let enroll_failed = sum_arrays(&heard.enrolled, "failed", replicas);
    let retries = sum_arrays(&heard.enrolled, "retries", replicas);
    let first_enroll_error =
        heard.enrolled.iter().find_map(|e| e["first_error"].as_str().map(str::to_string));
    let enrolled: u64 = per_agents.iter().sum();
    let mut promotions_per_replica = vec![0u64; replicas];
    for (global, at) in heard.promoted.iter().enumerate() {
        if at.is_some() {
            promotions_per_replica[global % replicas] += 1;
        }
    }
    let cpu = |a: &[Sample], b: &[Sample], secs: f64| -> Vec<f64> {
        a.iter()
            .zip(b)
            .map(|(a, b)| {
                let ticks = b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64;
                100.0 * ticks / o.clk_tck.max(1) as f64 / secs
            })
            .collect()
    };
    let renew_secs = phases.renewing.as_secs_f64().max(f64::EPSILON);
    let router_cpu = cpu(&phases.connected_mem, &phases.loaded_mem, renew_secs);
    let bench_cpu: f64 = cpu(&phases.bench.0, &phases.bench.1, renew_secs).iter().sum();
    let bench_rss: u64 = phases.bench.1.iter().map(|s| s.rss_kib).sum();
    let get = |v: &[u64], p: u8, r: usize| v[usize::from(p) * replicas + r];
    let per_replica: Vec<serde_json::Value> = (0..replicas)
        .map(|r| {
            let mem = |s: &[Sample]| s.get(r).map_or(0, |s| s.rss_kib);
            let by_phase = |v: &[u64]| {
                let mut map = serde_json::Map::new();
                for (p, name) in PHASE_NAMES.iter().enumerate() {
                    map.insert((*name).into(), v[p * replicas + r].into());
                }
                serde_json::Value::Object(map)
            };
            let loaded = mem(&phases.loaded_mem).saturating_sub(mem(&idle));
            serde_json::json!({
                "url": o.urls[r],
                "agents": per_agents[r],
                "enroll_failed": enroll_failed[r],
                "enroll_retries": retries[r],
                "sent": by_phase(&sent),
                "acked": by_phase(&acked),
                "unsent": by_phase(&unsent),
                "rss_idle_kib": mem(&idle),
                "rss_enrolled_kib": mem(&phases.enrolled_mem),
                "rss_connected_kib": mem(&phases.connected_mem),
                "rss_loaded_kib": mem(&phases.loaded_mem),
                "rss_rotated_kib": mem(&phases.rotated_mem),
                "mib_per_agent_loaded": loaded as f64 / 1024.0 / per_agents[r].max(1) as f64,
                "cpu_pct_renewing": router_cpu.get(r).copied().unwrap_or(0.0),
                "promotions": promotions_per_replica[r],
            })
        })
        .collect();
    let total = |v: &[u64], p: u8| (0..replicas).map(|r| get(v, p, r)).sum::<u64>();
    let h = &heard;
    Ok(Report::new("fleet_replicas", phases.renewing, latencies, enrolled as usize)
        .with_extra("agents", o.agents as u64)
        .with_extra("enrolled", enrolled)
        .with_extra("replicas", replicas as u64)
        .with_extra("lease_ms", o.lease_ms)
        .with_extra("enroll_ms", ms(phases.enroll))
        .with_extra("connected", h.acked as u64)
        .with_extra("connect_ms", ms(phases.connect))
        .with_extra("renewing_ms", ms(phases.renewing))
        .with_extra("sent", total(&sent, RENEWING))
        .with_extra("acked", total(&acked, RENEWING))
        .with_extra("unsent", total(&unsent, RENEWING))
        .with_extra("sent_rotating", total(&sent, ROTATING))
        .with_extra("acked_rotating", total(&acked, ROTATING))
        .with_extra("sent_after", total(&sent, AFTER))
        .with_extra("acked_after", total(&acked, AFTER))
        .with_extra("wave_size", u64::from(o.wave_size))
        .with_extra("max_failures", u64::from(o.max_failures))
        .with_json("operation", phases.operation)
        .with_extra("completion_ms", ms(phases.rotation))
        .with_extra("last_promotion_ms", ms(phases.last_promotion))
        .with_extra("promoted", h.promotions as u64)
        .with_extra("on_new_key", h.on_new_key as u64)
        .with_extra("all_on_new_key_ms", ms(phases.all_on_new_key))
        .with_extra("rotation_failed_frames", h.rotation_failed)
        .with_extra("silent_reconnects", h.silent_reconnects)
        .with_extra(
            "deferred_reconnects",
            heard.finals.iter().filter_map(|f| f["deferred_reconnects"].as_u64()).sum::<u64>(),
        )
        .with_extra("simulator_errors", h.errors)
        .with_json("first_problem", h.first_problem.clone().into())
        .with_json("first_enroll_error", first_enroll_error.into())
        .with_json("sessions_reported", phases.sessions_reported)
        .with_extra("bench_rss_kib", bench_rss)
        .with_json("bench_cpu_pct_renewing", bench_cpu.into())
        .with_extra("processes", o.processes as u64)
        .with_json("driver_failures", failures.into())
        .with_extra("operation_view_errors", phases.op_view_errors)
        .with_extra("drivers", (o.drivers * o.processes) as u64)
        .with_json("per_replica", per_replica.into()))
}

/// What the phases after enrollment measured.
#[derive(Default)]
struct Phases {
    enroll: Duration,
    connect: Duration,
    renewing: Duration,
    rotation: Duration,
    last_promotion: Duration,
    all_on_new_key: Duration,
    enrolled_mem: Vec<Sample>,
    connected_mem: Vec<Sample>,
    loaded_mem: Vec<Sample>,
    rotated_mem: Vec<Sample>,
    /// The worker processes at the start and the end of the renewal phase.
    bench: (Vec<Sample>, Vec<Sample>),
    operation: serde_json::Value,
    sessions_reported: serde_json::Value,
    /// Reads of the operation that failed (a fenced replica answers 503): retried.
    op_view_errors: u64,
}

async fn run_phases(
    o: &Options,
    workers: &mut Workers,
    notes: &mut mpsc::UnboundedReceiver<Msg>,
    heard: &mut Heard,
    enroll_started: Instant,
) -> anyhow::Result<Phases> {
    let lease = Duration::from_millis(o.lease_ms);
    let mut p = Phases { enroll: enroll_started.elapsed(), ..Phases::default() };
    let enrolled: u64 = sum_arrays(&heard.enrolled, "agents", o.urls.len()).iter().sum::<u64>();
    let enrolled = usize::try_from(enrolled).unwrap_or(usize::MAX);
    eprintln!("enrolled {enrolled} of {} agents in {:.1}s", o.agents, p.enroll.as_secs_f64());
    p.enrolled_mem = samples(&o.pids);
    let connect_started = Instant::now();
    workers.send("connect");
    let pacing = Duration::from_secs_f64(enrolled as f64 / o.connect_per_second.max(1) as f64);
    let deadline = Instant::now() + pacing + lease * 3 + Duration::from_secs(60);
    let all = heard.until(notes, deadline, |h| h.acked >= enrolled).await;
    p.connect = connect_started.elapsed();
    eprintln!(
        "{} of {enrolled} agents acknowledged in {:.1}s{}",
        heard.acked,
        p.connect.as_secs_f64(),
        if all { "" } else { " (gave up waiting for the rest)" }
    );
    let client = reqwest::Client::new();
    let base = &o.urls[0];

    // Every renewal sent in this phase is counted against its acknowledgement.
    p.connected_mem = samples(&o.pids);
    let bench_before = samples(&workers.pids);
    workers.set_phase(RENEWING);
    let renew_started = Instant::now();
    let renew_until = renew_started + Duration::from_secs(o.seconds);
    heard.until(notes, renew_until, |_| false).await;
    p.renewing = renew_started.elapsed();
    p.loaded_mem = samples(&o.pids);
    p.bench = (bench_before, samples(&workers.pids));
    let rss: Vec<u64> = p.loaded_mem.iter().map(|s| s.rss_kib).collect();
    eprintln!("replicas' VmRSS (KiB) loaded {rss:?}");
    p.sessions_reported = replicas_view(&client, base, &o.api_key).await;
    eprintln!("renewed for {:.1}s; rotating", p.renewing.as_secs_f64());

    // One operation over the whole fleet.
    workers.set_phase(ROTATING);
    let started = Instant::now();
    let id = crate::rotation::start_operation(
        &client,
        base,
        &o.api_key,
        serde_json::json!({
            "kind": "curve_rotate", "selector": { "all": true },
            "reason": "benchmark: the whole fleet over the replicas",
            "wave_size": o.wave_size, "max_failures": o.max_failures,
        }),
    )
    .await?;
    let op_deadline = started + Duration::from_secs(15 * 60);
    let mut last_print = Instant::now();
    let finished = loop {
        heard.drain(notes);
        let view = async {
            let response = client
                .get(format!("{base}/v1/management/operations/{id}"))
                .bearer_auth(&o.api_key)
                .send()
                .await?;
            let status = response.status();
            let body: serde_json::Value = response.json().await?;
            if !status.is_success() {
                bail!("{status}: {body}");
            }
            Ok::<_, anyhow::Error>(body)
        };
        let op = match view.await {
            Ok(op) => op,
            Err(err) => {
                p.op_view_errors += 1;
                eprintln!("reading the operation: {err:#}; retrying");
                serde_json::json!({ "status": "running" })
            }
        };
        if op["status"] != "running" && op["status"] != "pending" {
            break op;
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "{:.0}s: {} succeeded, {} failed, {} promoted (agents' side)",
                started.elapsed().as_secs_f64(),
                op["succeeded"],
                op["failed"],
                heard.promotions
            );
            last_print = Instant::now();
        }
        if Instant::now() > op_deadline {
            eprintln!("the operation did not end within the 15-minute window");
            break op;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    p.rotation = started.elapsed();
    eprintln!("operation {id}: {} in {:.1}s", finished["status"], p.rotation.as_secs_f64());
    heard.drain(notes);
    let promoted = heard.promotions;
    let back_by = Instant::now() + lease * 3 + Duration::from_secs(10);
    heard.until(notes, back_by, |h| h.on_new_key >= promoted).await;
    p.all_on_new_key = heard.last_on_new_key.map_or(Duration::ZERO, |at| at - started);
    p.last_promotion = heard
        .promoted
        .iter()
        .flatten()
        .max()
        .map_or(Duration::ZERO, |at| at.saturating_duration_since(started));
    // Renewals from here are not part of the rotation; those sent during it get their
    // acknowledgements in.
    workers.set_phase(AFTER);
    heard.until(notes, Instant::now() + Duration::from_secs(2), |_| false).await;
    p.rotated_mem = samples(&o.pids);
    p.operation = finished;
    Ok(p)
}

/// `GET /v1/router/replicas`: each replica's sessions at its last lease renewal (or the error).
async fn replicas_view(client: &reqwest::Client, base: &str, api_key: &str) -> serde_json::Value {
    let got = async {
        let list: serde_json::Value = client
            .get(format!("{base}/v1/router/replicas"))
            .bearer_auth(api_key)
            .send()
            .await?
            .json()
            .await?;
        let rows: Vec<serde_json::Value> = list["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                serde_json::json!({
                    "mesh_addr": r["mesh_addr"], "status": r["status"], "sessions": r["sessions"],
                })
            })
            .collect();
        Ok::<_, anyhow::Error>(serde_json::Value::from(rows))
    };
    got.await.unwrap_or_else(|err| format!("{err:#}").into())
}
