//! Load generators. Each prints one JSON line: operations, seconds, ops/s, latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use xerotier_core::{Clock, IdGenerator, IdKind, OsEntropy, SystemClock};
use xerotier_store::{AuditEntry, NewApiKey, Store};

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
    /// Create API keys directly in the store (key row + audit row in one transaction): the
    /// floor under `key-create`.
    StoreCreate {
        #[arg(long)]
        database_url: String,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let (label, latencies) = match args.command {
        Command::KeyCreate { base_url, api_key } => {
            let client = reqwest::Client::new();
            let workers = (0..args.concurrency).map(|w| {
                let (client, base_url, api_key, counter) =
                    (client.clone(), base_url.clone(), api_key.clone(), counter.clone());
                async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        let t = Instant::now();
                        let response = client
                            .post(format!("{base_url}/v1/management/api-keys"))
                            .bearer_auth(&api_key)
                            .json(&serde_json::json!({"name": format!("bench-{w}-{n}"), "scopes": ["execution"]}))
                            .send()
                            .await?;
                        if response.status() != 201 {
                            bail!("create answered {}", response.status());
                        }
                        latencies.push(t.elapsed());
                    }
                    Ok::<_, anyhow::Error>(latencies)
                }
            });
            ("http_key_create", futures::future::try_join_all(workers).await?)
        }
        Command::StoreCreate { database_url } => {
            let store = Store::connect(&database_url).await.context("connecting")?;
            let ids = IdGenerator::new(Arc::new(SystemClock), Arc::new(OsEntropy));
            let workers = (0..args.concurrency).map(|_| {
                let (store, ids) = (store.clone(), ids.clone());
                async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let now = SystemClock.now_millis();
                        let id = ids.next(IdKind::ApiKey);
                        let key = NewApiKey {
                            id: id.clone(),
                            name: id.clone(),
                            scopes: "execution".into(),
                            verifier: "00".repeat(32),
                            created_at: now,
                            created_by: None,
                            expires_at: None,
                        };
                        let audit = AuditEntry {
                            id: ids.next(IdKind::Audit),
                            at: now,
                            actor_key_id: None,
                            actor_name: None,
                            action: "api_key.create".into(),
                            target_type: Some("api_key".into()),
                            target_id: Some(id),
                            target_name: None,
                            reason: None,
                            request_id: None,
                            outcome: "success".into(),
                            client_addr: None,
                            details: None,
                        };
                        let t = Instant::now();
                        store.create_api_key(&key, &audit).await?;
                        latencies.push(t.elapsed());
                    }
                    Ok::<_, anyhow::Error>(latencies)
                }
            });
            ("store_key_create", futures::future::try_join_all(workers).await?)
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let mut all: Vec<Duration> = latencies.into_iter().flatten().collect();
    all.sort();
    let pct = |p: f64| {
        let index = ((all.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(all.len().saturating_sub(1));
        all.get(index).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
    };
    println!(
        "{}",
        serde_json::json!({
            "bench": label,
            "ops": all.len(),
            "seconds": elapsed,
            "ops_per_sec": all.len() as f64 / elapsed,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "concurrency": args.concurrency,
        })
    );
    Ok(())
}
