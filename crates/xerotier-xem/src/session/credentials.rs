//! Workspace credentials in the session: the reload on SIGHUP (what `systemctl reload` sends)
//! or on files renamed into place (the watch), told to the router, to systemd, to the metrics,
//! and to `xerotier-xem reload` through the state dir.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use xerotier_proto::mesh::Frame;
use xerotier_proto::workspace_credentials::{CredentialFileReport, ReloadReport};

use super::{GO_ON, Session, Step, notify};
use crate::credentials::{CredentialStore, ReloadScope};
use crate::reload;

impl Session {
    pub(super) async fn reload_on_sighup(&mut self) -> anyhow::Result<()> {
        self.reload("sighup", ReloadScope::All).await
    }

    /// The watch saw these files renamed into place: the SIGHUP path, for them only (a file
    /// being written in place meanwhile is not read).
    pub async fn on_credentials_replaced(&mut self, names: BTreeSet<String>) -> Step {
        self.reload("watch", ReloadScope::Only(names)).await?;
        GO_ON
    }

    async fn reload(&mut self, trigger: &'static str, scope: ReloadScope) -> anyhow::Result<()> {
        notify(&[sd_notify::NotifyState::Reloading]);
        self.last_reload = read_credentials(&self.credentials, trigger, scope).await;
        log_reload(&self.last_reload);
        self.metrics.reload(&self.last_reload);
        self.reload_seq += 1;
        record_reload(&self.state_dir, self.reload_seq, &self.last_reload);
        self.send(&Frame::CredentialsReloaded { report: self.last_reload.clone() })?;
        let status = if self.last_reload.ok {
            "credentials reloaded".to_string()
        } else {
            reload_failure_summary(&self.last_reload)
        };
        notify(&[sd_notify::NotifyState::Status(&status), sd_notify::NotifyState::Ready]);
        Ok(())
    }
}

/// Re-reads the files in `scope` (blocking I/O, off the event loop).
pub(super) async fn read_credentials(
    store: &Arc<CredentialStore>,
    trigger: &'static str,
    scope: ReloadScope,
) -> ReloadReport {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.reload_scoped(trigger, &scope)).await {
        Ok(report) => report,
        Err(err) => ReloadReport {
            trigger: trigger.to_string(),
            ok: false,
            files: vec![CredentialFileReport {
                credentials_ref: "*".into(),
                ok: false,
                sha256: None,
                generation: 0,
                mtime_ms: None,
                error: Some(format!("reload task failed: {err}")),
                expires_at_ms: None,
            }],
        },
    }
}

pub(super) fn log_reload(report: &ReloadReport) {
    for file in &report.files {
        match &file.error {
            None => {
                tracing::info!(credentials_ref = %file.credentials_ref, generation = file.generation, sha256 = file.sha256.as_deref().unwrap_or("-"), trigger = %report.trigger, "credential loaded")
            }
            Some(error) => {
                tracing::error!(credentials_ref = %file.credentials_ref, generation = file.generation, %error, trigger = %report.trigger, "credential NOT reloaded; the last good version stays in use")
            }
        }
    }
}

/// For `xerotier-xem reload` (systemd's ExecReload), which waits for this to report.
pub(super) fn record_reload(state_dir: &Path, seq: u64, report: &ReloadReport) {
    let status = reload::ReloadStatus { seq, pid: std::process::id(), report: report.clone() };
    if let Err(err) = reload::write_status(state_dir, &status) {
        tracing::warn!(error = %format!("{err:#}"), "could not record the reload status");
    }
}

fn reload_failure_summary(report: &ReloadReport) -> String {
    let failed: Vec<&str> =
        report.files.iter().filter(|f| !f.ok).map(|f| f.credentials_ref.as_str()).collect();
    format!("credential reload FAILED for: {}", failed.join(", "))
}
