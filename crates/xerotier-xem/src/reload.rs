//! `xerotier-xem reload`: what `systemctl reload xerotier-xem` runs. It sends SIGHUP to the
//! daemon and waits for the daemon's report of that reload, so a reload that refused a file
//! makes `systemctl reload` fail (a bare `kill -HUP` would always succeed).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use xerotier_credentials::write_secret_file;
use xerotier_proto::workspace_credentials::ReloadReport;

const STATUS_FILE: &str = "reload-status.json";
const PID_FILE: &str = "xem.pid";
const POLL: Duration = Duration::from_millis(50);

/// The daemon's latest reload, in its state dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// Counts reloads since the daemon started (the startup load is 1).
    pub seq: u64,
    pub pid: u32,
    pub report: ReloadReport,
}

fn status_path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATUS_FILE)
}

pub fn write_pid(state_dir: &Path) -> anyhow::Result<()> {
    let path = state_dir.join(PID_FILE);
    write_secret_file(&path, format!("{}\n", std::process::id()).as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

pub fn write_status(state_dir: &Path, status: &ReloadStatus) -> anyhow::Result<()> {
    let path = status_path(state_dir);
    let json = serde_json::to_vec(status)?;
    write_secret_file(&path, &json).with_context(|| format!("writing {}", path.display()))
}

fn read_status(state_dir: &Path) -> Option<ReloadStatus> {
    let text = std::fs::read_to_string(status_path(state_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

fn daemon_pid(state_dir: &Path, pid: Option<u32>) -> anyhow::Result<u32> {
    if let Some(pid) = pid {
        return Ok(pid);
    }
    let path = state_dir.join(PID_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no running XEM found ({}); pass --pid", path.display()))?;
    text.trim().parse().with_context(|| format!("{} does not hold a pid", path.display()))
}

/// Signals the daemon and waits for its report of this reload. Needs a tokio runtime with
/// time enabled (the wait is a tokio timeout, so a test can drive it with paused time).
pub async fn request(
    state_dir: &Path,
    pid: Option<u32>,
    timeout: Duration,
) -> anyhow::Result<ReloadReport> {
    let pid = daemon_pid(state_dir, pid)?;
    let before = read_status(state_dir).filter(|s| s.pid == pid).map_or(0, |s| s.seq);
    let target = i32::try_from(pid).context("pid out of range")?;
    kill(Pid::from_raw(target), Signal::SIGHUP)
        .with_context(|| format!("sending SIGHUP to the XEM (pid {pid})"))?;
    let report = async {
        loop {
            if let Some(status) = read_status(state_dir).filter(|s| s.pid == pid && s.seq > before)
            {
                return status.report;
            }
            tokio::time::sleep(POLL).await;
        }
    };
    match tokio::time::timeout(timeout, report).await {
        Ok(report) => Ok(report),
        Err(_) => {
            bail!("the XEM (pid {pid}) did not report the reload within {}s", timeout.as_secs())
        }
    }
}

/// One line per file, for the operator (and the journal, under systemd).
pub fn summary(report: &ReloadReport) -> Vec<String> {
    report
        .files
        .iter()
        .map(|f| match &f.error {
            None => format!(
                "ok      {} generation {} sha256 {}",
                f.credentials_ref,
                f.generation,
                f.sha256.as_deref().unwrap_or("-")
            ),
            Some(error) => format!(
                "REFUSED {}: {error} (generation {} stays in use)",
                f.credentials_ref, f.generation
            ),
        })
        .collect()
}
