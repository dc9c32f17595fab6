//! Tool execution through the router and a real XEM: a no-op invocation's round trip against
//! running the same tool directly, and invocations under continuous load while the workspace
//! credential is replaced and reloaded over and over.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::Report;
use crate::timeline::{self, CLIENT_CREATED, CLIENT_OBSERVED, CLIENT_SENT, Marks, Micros};

const TERMINAL: [&str; 4] = ["succeeded", "failed", "cancelled", "timed_out"];
/// How often a waiting client polls the invocation (the round trip's resolution).
const POLL: Duration = Duration::from_millis(1);

/// How a client learns that its invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Wait {
    /// Follows the invocation's output stream (`GET …/{id}/output`, server-sent events) to its
    /// `end` event, as `xeroctl exec invoke --wait` does.
    Stream,
    /// Reads the invocation (`GET …/{id}`) every millisecond until it ended.
    Poll,
}

struct Client {
    http: reqwest::Client,
    base_url: String,
    api_key: String,
    wait: Wait,
}

impl Client {
    fn new(base_url: String, api_key: String, wait: Wait) -> Self {
        Self { http: reqwest::Client::new(), base_url, api_key, wait }
    }

    /// Follows the output stream to its `end` event; returns that event's data (the final view
    /// without its output).
    async fn follow_to_end(&self, id: &str) -> anyhow::Result<Value> {
        let mut body = self
            .http
            .get(format!("{}/v1/exec/invocations/{id}/output", self.base_url))
            .bearer_auth(&self.api_key)
            .header("Accept", "text/event-stream")
            .send()
            .await?
            .error_for_status()?
            .bytes_stream();
        let mut text = String::new();
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk?));
            // Events end with a blank line; the `end` event is the last one.
            if let Some(at) = text.find("event: end\n") {
                let event = &text[at..];
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: "))
                    && event.contains("\n\n")
                {
                    return Ok(serde_json::from_str(data)?);
                }
            }
        }
        bail!("the output stream of {id} closed before its end event")
    }

    /// Invokes and polls until the invocation ends; returns its final view.
    async fn invoke_and_wait(
        &self,
        workspace: &str,
        tool: &str,
        args: Value,
    ) -> anyhow::Result<Value> {
        Ok(self.invoke_and_wait_timed(workspace, tool, args).await?.view)
    }

    /// [`Self::invoke_and_wait`], with the client's marks for the per-layer breakdown.
    async fn invoke_and_wait_timed(
        &self,
        workspace: &str,
        tool: &str,
        args: Value,
    ) -> anyhow::Result<Timed> {
        let sent = timeline::now_micros();
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
        let created_at = timeline::now_micros();
        let id = created["id"].as_str().context("invocation id")?.to_string();
        if self.wait == Wait::Stream {
            let view = tokio::time::timeout(Duration::from_secs(60), self.follow_to_end(&id))
                .await
                .with_context(|| format!("invocation {id} did not end within 60 s"))??;
            let observed = timeline::now_micros();
            return Ok(Timed { id, view, sent, created: created_at, observed });
        }
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
                let observed = timeline::now_micros();
                return Ok(Timed { id, view, sent, created: created_at, observed });
            }
            if Instant::now() > deadline {
                bail!("invocation {id} did not end within 60 s");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// One invocation's final view and the client's marks.
struct Timed {
    id: String,
    view: Value,
    sent: Micros,
    created: Micros,
    observed: Micros,
}

/// ROUNDS sequential no-op invocations through router and XEM, and ROUNDS direct runs of the
/// same executable with the same stdin, in the same process, alternating.
#[allow(clippy::too_many_arguments)] // one per command-line option, as for the reloads
pub async fn round_trip(
    base_url: String,
    api_key: String,
    workspace: String,
    tool: String,
    executable: PathBuf,
    rounds: usize,
    wait: Wait,
    logs: Vec<PathBuf>,
) -> anyhow::Result<Report> {
    let client = Client::new(base_url, api_key, wait);
    let mut marks = Marks::default();
    let mut ids = Vec::with_capacity(rounds);
    // Warm up: the first invocation pays for connection setup.
    client.invoke_and_wait(&workspace, &tool, json!({})).await?;
    run_directly(&executable).await?;
    let mut mesh = Vec::with_capacity(rounds);
    let mut direct = Vec::with_capacity(rounds);
    let mut elapsed = Duration::ZERO;
    // The two alternate, one of each per round, so that whatever else the machine does at the
    // time weighs on both alike.
    for _ in 0..rounds {
        let begin = Instant::now();
        let timed = client.invoke_and_wait_timed(&workspace, &tool, json!({})).await?;
        mesh.push(begin.elapsed());
        elapsed += begin.elapsed();
        if timed.view["status"] != "succeeded" {
            bail!("no-op invocation did not succeed: {}", timed.view);
        }
        marks.mark(&timed.id, CLIENT_SENT, timed.sent);
        marks.mark(&timed.id, CLIENT_CREATED, timed.created);
        marks.mark(&timed.id, CLIENT_OBSERVED, timed.observed);
        ids.push(timed.id);
        let begin = Instant::now();
        run_directly(&executable).await?;
        direct.push(begin.elapsed());
    }
    direct.sort();
    let direct_p50 = direct[direct.len() / 2];
    let direct_p99 = direct[(direct.len() * 99 / 100).min(direct.len() - 1)];
    let mut report = Report::new("exec-round-trip", elapsed, vec![mesh], 1)
        .with_extra("direct_p50_us", u64::try_from(direct_p50.as_micros()).unwrap_or(u64::MAX))
        .with_extra("direct_p99_us", u64::try_from(direct_p99.as_micros()).unwrap_or(u64::MAX));
    if !logs.is_empty() {
        // The daemons write their marks as they go; give the last lines time to reach the files.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for log in &logs {
            marks.read_log(log).with_context(|| format!("reading {}", log.display()))?;
        }
        report = report.with_json("layers", marks.layers(&ids));
    }
    Ok(report)
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
    let client = Arc::new(Client::new(base_url, api_key, Wait::Stream));
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
