//! Load generators for `bench/run.sh`. Each prints one JSON line: operations, seconds, ops/s,
//! latency percentiles.

// A load generator measures with the real clocks and draws real keys; it decides nothing.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod exec;
mod fanout;
mod fleet;
mod fleet_replicas;
mod isolation;
mod keys;
mod mesh_rotation;
mod replicas;
mod rotation;
mod timeline;

use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
    /// Concurrent workers.
    #[arg(long, default_value_t = 8, global = true)]
    concurrency: usize,
    /// How long to run.
    #[arg(long, default_value_t = 5, global = true)]
    seconds: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Create API keys through the router's HTTP API.
    KeyCreate {
        #[arg(long)]
        base_url: String,
        #[arg(long)]
        api_key: String,
    },
    /// Rotate AGENTS connected simulated agents at once, ROUNDS times; latency is request →
    /// the agent receiving its promotion.
    Rotate {
        #[arg(long)]
        base_url: String,
        #[arg(long)]
        api_key: String,
        #[arg(long, default_value_t = 1)]
        agents: usize,
        #[arg(long, default_value_t = 100)]
        rounds: usize,
        /// Request the rotations through this replica (another router on the same
        /// PostgreSQL) instead of BASE_URL, which enrolls the agents and holds their sessions.
        #[arg(long)]
        request_url: Option<String>,
    },
    /// Several replicas: ROUNDS keys created on the first URL, used on the others (cached
    /// there), revoked through the first; revoke latency, and call → first refusal on each
    /// other replica (probed every PROBE_INTERVAL_MS); any acceptance after the return counts.
    RevokeReplicas {
        /// The replicas' base URLs, the first one revokes.
        #[arg(long = "url", required = true)]
        urls: Vec<String>,
        #[arg(long)]
        api_key: String,
        #[arg(long, default_value_t = 300)]
        rounds: usize,
        #[arg(long, default_value_t = 1)]
        probe_interval_ms: u64,
    },
    /// Event fan-out across replicas: ROUNDS events committed through WRITE_URL, each awaited
    /// on a live events stream held on READ_URL (another replica on the same database).
    EventFanOut {
        #[arg(long)]
        write_url: String,
        #[arg(long)]
        read_url: String,
        #[arg(long)]
        api_key: String,
        #[arg(long, default_value_t = 500)]
        rounds: usize,
    },
    /// An emergency rotation of AGENTS simulated agents as one fleet operation in waves of
    /// WAVE_SIZE: request → the operation `completed` (issue 13).
    FleetOperation {
        #[arg(long)]
        base_url: String,
        #[arg(long)]
        api_key: String,
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        #[arg(long, default_value_t = 100)]
        wave_size: u32,
    },
    /// A rotation of the router's mesh key across AGENTS connected simulated agents, phase by
    /// phase (issue 14), against the time the same agents took to connect at first.
    MeshRotation {
        #[arg(long)]
        base_url: String,
        #[arg(long)]
        api_key: String,
        #[arg(long, default_value_t = 1000)]
        agents: usize,
    },
    /// One mesh round trip plus the rotation crypto, ROUNDS times: the floor under `rotate`.
    RotateFloor {
        #[arg(long)]
        base_url: String,
        #[arg(long)]
        api_key: String,
        #[arg(long, default_value_t = 100)]
        rounds: usize,
    },
    /// Create API keys directly in the store (key row + audit row in one transaction): the
    /// floor under `key-create`.
    StoreCreate {
        #[arg(long)]
        database_url: String,
    },
    /// Mint a join key and enroll an agent with it, over HTTP.
    Enroll {
        #[arg(long)]
        base_url: String,
        #[arg(long)]
        api_key: String,
    },
    /// The cryptography of one enrollment, without I/O: the floor under `enroll`.
    EnrollCryptoFloor,
    /// ROUNDS sequential invocations of a no-op tool through router and XEM, against running
    /// its EXECUTABLE directly ROUNDS times in the same process.
    ExecRoundTrip {
        #[arg(long)]
        base_url: String,
        #[arg(long)]
        api_key: String,
        #[arg(long, default_value = "kubernetes-prod")]
        workspace: String,
        #[arg(long, default_value = "noop")]
        tool: String,
        #[arg(long)]
        executable: std::path::PathBuf,
        #[arg(long, default_value_t = 200)]
        rounds: usize,
        /// How the client learns that an invocation ended.
        #[arg(long, value_enum, default_value_t = exec::Wait::Stream)]
        wait: exec::Wait,
        /// The router's and the XEM's logs, written with `--log-level
        /// warn,xerotier_timeline=debug`: adds the per-layer breakdown (`layers`).
        #[arg(long = "timeline-log")]
        timeline_logs: Vec<std::path::PathBuf>,
    },
    /// Continuous invocations while the XEM's credential is replaced and reloaded RELOADS times.
    ExecUnderReloads {
        #[arg(long)]
        base_url: String,
        #[arg(long)]
        api_key: String,
        #[arg(long, default_value = "kubernetes-prod")]
        workspace: String,
        #[arg(long, default_value = "noop")]
        tool: String,
        #[arg(long)]
        xem_pid: u32,
        #[arg(long)]
        credential: std::path::PathBuf,
        #[arg(long, default_value_t = 100)]
        reloads: usize,
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
    },
    /// ROUNDS reloads of the XEM's credential store with FILES files.
    CredentialReload {
        #[arg(long, default_value_t = 100)]
        files: usize,
        #[arg(long, default_value_t = 200)]
        rounds: usize,
    },
    /// EXECUTABLE run ROUNDS times per isolation layer (plain spawn, through the runner, as the
    /// tool user, with Landlock, the XEM's whole executor path); needs root.
    IsolationLayers {
        #[arg(long, default_value = "nobody")]
        tool_user: String,
        #[arg(long)]
        executable: std::path::PathBuf,
        #[arg(long, default_value_t = 300)]
        rounds: usize,
    },
    /// Enroll COUNT agents, connect them over CURVE from one thread, renew their leases.
    Agents {
        #[arg(long)]
        base_url: String,
        #[arg(long)]
        api_key: String,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value_t = 1000)]
        lease_ms: u64,
        /// Mesh address to put in the join keys [default: the router's].
        #[arg(long)]
        router_addr: Option<String>,
    },
    /// AGENTS simulated agents spread over several replicas on one PostgreSQL: enrolled
    /// round-robin through the BASE_URLs (retrying while a replica answers 503), each connected
    /// to the mesh address of the replica it enrolled with; every lease renewal sent for
    /// SECONDS against those acknowledged, per replica; each replica's memory (`--pid`, same
    /// order as `--base-url`); then one `curve_rotate` operation over every agent, requested
    /// through the first replica.
    FleetReplicas(fleet_replicas::Options),
    /// One worker process of `fleet-replicas` (started by it; commands on stdin, reports on
    /// stdout).
    #[command(hide = true)]
    FleetReplicasWorker(fleet_replicas::WorkerOptions),
    /// COUNT honest agents renewing leases for SECONDS without, then SECONDS with, one more
    /// agent flooding the mesh with hellos; lease acknowledgement latency of both phases.
    Fairness {
        #[arg(long)]
        base_url: String,
        #[arg(long)]
        api_key: String,
        #[arg(long, default_value_t = 100)]
        count: usize,
        #[arg(long, default_value_t = 200)]
        lease_ms: u64,
        #[arg(long)]
        router_addr: Option<String>,
    },
}

/// One benchmark's result.
#[derive(Debug)]
pub struct Report {
    label: &'static str,
    elapsed: Duration,
    latencies: Vec<Duration>,
    concurrency: usize,
    extra: Vec<(&'static str, serde_json::Value)>,
}

impl Report {
    pub fn new(
        label: &'static str,
        elapsed: Duration,
        per_worker: Vec<Vec<Duration>>,
        concurrency: usize,
    ) -> Self {
        let mut latencies: Vec<Duration> = per_worker.into_iter().flatten().collect();
        latencies.sort();
        Self { label, elapsed, latencies, concurrency, extra: Vec::new() }
    }

    pub fn with_extra(mut self, name: &'static str, value: u64) -> Self {
        self.extra.push((name, value.into()));
        self
    }

    pub fn with_json(mut self, name: &'static str, value: serde_json::Value) -> Self {
        self.extra.push((name, value));
        self
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let rank = (self.latencies.len() as f64 * p).ceil() as usize;
        let index = rank.saturating_sub(1).min(self.latencies.len() - 1);
        self.latencies[index].as_secs_f64() * 1000.0
    }

    fn print(&self) {
        let seconds = self.elapsed.as_secs_f64();
        let mut json = serde_json::json!({
            "bench": self.label,
            "ops": self.latencies.len(),
            "seconds": seconds,
            "ops_per_sec": self.latencies.len() as f64 / seconds,
            "p50_ms": self.percentile_ms(0.50),
            "p99_ms": self.percentile_ms(0.99),
            "concurrency": self.concurrency,
        });
        for (name, value) in &self.extra {
            json[*name] = value.clone();
        }
        println!("{json}");
    }
}

/// A duration in whole milliseconds, for a report's extras.
pub(crate) fn ms(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn unreachable_isolation() -> anyhow::Result<Report> {
    anyhow::bail!("isolation-layers and fleet-replicas-worker are handled before the others")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // Its own report shape (one line per layer), so it is not a `Report`.
    if let Command::IsolationLayers { tool_user, executable, rounds } = &args.command {
        return runtime.block_on(isolation::layers(tool_user.clone(), executable.clone(), *rounds));
    }
    // A worker reports on stdout line by line, not as a `Report`.
    if let Command::FleetReplicasWorker(options) = args.command {
        return runtime.block_on(fleet_replicas::worker(options));
    }
    let report = runtime.block_on(async {
        match args.command {
            Command::KeyCreate { base_url, api_key } => {
                keys::http_create(base_url, api_key, args.seconds, args.concurrency).await
            }
            Command::StoreCreate { database_url } => {
                keys::store_create(database_url, args.seconds, args.concurrency).await
            }
            Command::Enroll { base_url, api_key } => {
                fleet::enroll_throughput(base_url, api_key, args.seconds, args.concurrency).await
            }
            Command::EnrollCryptoFloor => fleet::crypto_floor(args.seconds, args.concurrency).await,
            Command::Rotate { base_url, api_key, agents, rounds, request_url } => {
                rotation::rotations(base_url, api_key, agents, rounds, request_url).await
            }
            Command::RevokeReplicas { urls, api_key, rounds, probe_interval_ms } => {
                let interval = Duration::from_millis(probe_interval_ms);
                replicas::revoke_latency(urls, api_key, rounds, interval).await
            }
            Command::EventFanOut { write_url, read_url, api_key, rounds } => {
                fanout::fan_out(write_url, read_url, api_key, rounds).await
            }
            Command::FleetOperation { base_url, api_key, agents, wave_size } => {
                rotation::fleet_operation(base_url, api_key, agents, wave_size).await
            }
            Command::MeshRotation { base_url, api_key, agents } => {
                mesh_rotation::mesh_rotation(base_url, api_key, agents).await
            }
            Command::RotateFloor { base_url, api_key, rounds } => {
                rotation::floor(base_url, api_key, rounds).await
            }
            Command::ExecRoundTrip {
                base_url,
                api_key,
                workspace,
                tool,
                executable,
                rounds,
                wait,
                timeline_logs,
            } => {
                let logs = timeline_logs;
                exec::round_trip(base_url, api_key, workspace, tool, executable, rounds, wait, logs)
                    .await
            }
            Command::ExecUnderReloads {
                base_url,
                api_key,
                workspace,
                tool,
                xem_pid,
                credential,
                reloads,
                interval_ms,
            } => {
                exec::reloads_under_load(
                    base_url,
                    api_key,
                    workspace,
                    tool,
                    xem_pid,
                    credential,
                    reloads,
                    Duration::from_millis(interval_ms),
                    args.concurrency,
                )
                .await
            }
            Command::CredentialReload { files, rounds } => exec::credential_reload(files, rounds),
            Command::IsolationLayers { .. } | Command::FleetReplicasWorker(_) => {
                unreachable_isolation()
            }
            Command::Agents { base_url, api_key, count, lease_ms, router_addr } => {
                fleet::many_agents(base_url, api_key, count, lease_ms, args.seconds, router_addr)
                    .await
            }
            Command::FleetReplicas(mut options) => {
                options.seconds = args.seconds;
                fleet_replicas::fleet_replicas(options).await
            }
            Command::Fairness { base_url, api_key, count, lease_ms, router_addr } => {
                fleet::fairness(base_url, api_key, count, lease_ms, args.seconds, router_addr).await
            }
        }
    })?;
    report.print();
    Ok(())
}
