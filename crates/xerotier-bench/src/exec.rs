//! Tool execution through the router and a real XEM: a no-op invocation's round trip against
//! running the same tool directly, and invocations under continuous load while the workspace
//! credential is replaced and reloaded over and over.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::Report;

const TERMINAL: [&str; 4] = ["succeeded", "failed", "cancelled", "timed_out"];
/// How often a waiting client polls the invocation (the round trip's resolution).
const POLL: Duration = Duration::from_millis(1);

struct Client {
    http: reqwest::Client,
    base_url: String,
    api_key: String,
}

impl Client {
    fn new(base_url: String, api_key: String) -> Self {
        Self { http: reqwest::Client::new(), base_url, api_key }
    }

    /// Invokes and polls until the invocation ends; returns its final view.
    async fn invoke_and_wait(
        &self,
        workspace: &str,
        tool: &str,
        args: Value,
    ) -> anyhow::Result<Value> {
        let created: Value = self
            .http
            .post(format!("{}/v1/exec/invocations", self.base_url))
            .bearer_auth(&self.api_key)
            .json(&json!({ "workspace": workspace, "tool": tool, "args": args }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = created["id"].as_str().context("invocation id")?.to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let view: Value = self
                .http
                .get(format!("{}/v1/exec/invocations/{id}", self.base_url))
                .bearer_auth(&self.api_key)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            if TERMINAL.contains(&view["status"].as_str().unwrap_or_default()) {
                return Ok(view);
            }
            if Instant::now() > deadline {
                bail!("invocation {id} did not end within 60 s");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// ROUNDS sequential no-op invocations through router and XEM, then ROUNDS direct runs of the
/// same executable with the same stdin, in the same process.
pub async fn round_trip(
    base_url: String,
    api_key: String,
    workspace: String,
    tool: String,
    executable: PathBuf,
    rounds: usize,
) -> anyhow::Result<Report> {
    let client = Client::new(base_url, api_key);
    // Warm up: the first invocation pays for connection setup.
    client.invoke_and_wait(&workspace, &tool, json!({})).await?;
    let mut mesh = Vec::with_capacity(rounds);
    let started = Instant::now();
    for _ in 0..rounds {
        let begin = Instant::now();
        let view = client.invoke_and_wait(&workspace, &tool, json!({})).await?;
        if view["status"] != "succeeded" {
            bail!("no-op invocation did not succeed: {view}");
        }
        mesh.push(begin.elapsed());
    }
    let elapsed = started.elapsed();
    let mut direct = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let begin = Instant::now();
        run_directly(&executable).await?;
        direct.push(begin.elapsed());
    }
    direct.sort();
    let direct_p50 = direct[direct.len() / 2];
    let direct_p99 = direct[(direct.len() * 99 / 100).min(direct.len() - 1)];
    Ok(Report::new("exec-round-trip", elapsed, vec![mesh], 1)
        .with_extra("direct_p50_us", u64::try_from(direct_p50.as_micros()).unwrap_or(u64::MAX))
        .with_extra("direct_p99_us", u64::try_from(direct_p99.as_micros()).unwrap_or(u64::MAX)))
}

async fn run_directly(executable: &Path) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new(executable)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("XEROTIER_ARGS", "{}")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // As in the XEM: a tool that ignores its stdin may close it first.
        let _ = stdin.write_all(b"{}").await;
    }
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        bail!("direct run failed: {}", output.status);
    }
    Ok(())
}

/// CONCURRENCY clients invoke TOOL continuously while the credential at CREDENTIAL is
/// replaced (0600, atomic rename) and the XEM sent SIGHUP, RELOADS times, INTERVAL apart.
/// Counts invocations by outcome: the target is zero failures.
#[allow(clippy::too_many_arguments)]
pub async fn reloads_under_load(
    base_url: String,
    api_key: String,
    workspace: String,
    tool: String,
    xem_pid: u32,
    credential: PathBuf,
    reloads: usize,
    interval: Duration,
    concurrency: usize,
) -> anyhow::Result<Report> {
    let client = Arc::new(Client::new(base_url, api_key));
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, stop, failed) = (client.clone(), stop.clone(), failed.clone());
        let (workspace, tool) = (workspace.clone(), tool.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let begin = Instant::now();
                match client.invoke_and_wait(&workspace, &tool, json!({})).await {
                    Ok(view) if view["status"] == "succeeded" => latencies.push(begin.elapsed()),
                    Ok(view) => {
                        eprintln!("invocation did not succeed: {view}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) => {
                        eprintln!("invocation error: {err:#}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    for n in 0..reloads {
        let staged = credential.with_extension(format!("staged-{n}"));
        std::fs::write(&staged, format!("apiVersion: v1\nrotation: {n}\n"))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, &credential)?;
        let status =
            std::process::Command::new("kill").args(["-HUP", &xem_pid.to_string()]).status()?;
        if !status.success() {
            bail!("kill -HUP {xem_pid} failed");
        }
        tokio::time::sleep(interval).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut per_worker = Vec::new();
    for worker in workers {
        per_worker.push(worker.await?);
    }
    let elapsed = started.elapsed();
    Ok(Report::new("exec-under-reloads", elapsed, per_worker, concurrency)
        .with_extra("reloads", reloads as u64)
        .with_extra("failed", failed.load(Ordering::Relaxed)))
}

/// ROUNDS reloads of FILES credential files (each 0600, a few hundred bytes, one of them
/// replaced before every reload so each reload also swaps in a new version).
pub fn credential_reload(files: usize, rounds: usize) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let mut refs = Vec::with_capacity(files);
    for n in 0..files {
        let name = format!("workspace-{n}.yaml");
        let path = dir.path().join(&name);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: ctx-{n}\n{}\n",
                "x".repeat(256)
            ),
        )?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        refs.push(name);
    }
    let store = xerotier_xem::credentials::CredentialStore::new(dir.path().to_path_buf(), refs);
    if !store.reload("startup").ok {
        bail!("the first reload failed");
    }
    let mut latencies = Vec::with_capacity(rounds);
    let started = Instant::now();
    for round in 0..rounds {
        let path = dir.path().join(format!("workspace-{}.yaml", round % files.max(1)));
        std::fs::write(&path, format!("apiVersion: v1\nrotation: {round}\n"))?;
        let begin = Instant::now();
        let report = store.reload("bench");
        latencies.push(begin.elapsed());
        if !report.ok {
            bail!("reload {round} failed: {report:?}");
        }
    }
    Ok(Report::new("credential-reload", started.elapsed(), vec![latencies], 1)
        .with_extra("files", files as u64))
}
