//! The fleet's workspace credentials, centrally: every agent reports each file's hash,
//! generation and mtime with every reload; this lists them with their age against the routine
//! cadence (SPEC 3.6: 90 days for long-lived workspace credentials).

use xerotier_core::{SharedClock, UnixMillis, format_rfc3339};
use xerotier_proto::workspace_credentials::{CredentialFileReport, CredentialView, ReloadReport};
use xerotier_store::{CredentialState, Store, StoreError};

use crate::service_error::ServiceError;

/// The routine cadence for long-lived workspace credentials.
pub const CADENCE_DAYS: u64 = 90;
/// A credential is `due` this many days before its cadence runs out.
const DUE_WITHIN_DAYS: u64 = 7;
const DAY_MS: i64 = 86_400_000;

/// What agents reported of their credential files, and how old each is.
#[derive(Debug, Clone)]
pub struct CredentialAges {
    store: Store,
    clock: SharedClock,
}

impl CredentialAges {
    pub fn new(store: Store, clock: SharedClock) -> Self {
        Self { store, clock }
    }

    /// Records an agent's reload report as the current state of its credential files.
    pub async fn record(&self, agent_id: &str, report: &ReloadReport) -> Result<(), StoreError> {
        let now = self.clock.now_millis();
        let states: Vec<CredentialState> =
            report.files.iter().map(|file| state(agent_id, file, now)).collect();
        self.store.record_credential_report(agent_id, &states, now).await
    }

    /// Every live agent's files (or one agent's), and the time their ages are counted to.
    pub async fn list(
        &self,
        agent_id: Option<&str>,
    ) -> Result<(Vec<CredentialState>, UnixMillis), ServiceError> {
        let now = self.clock.now_millis();
        Ok((self.store.credential_states(agent_id).await?, now))
    }
}

fn state(agent_id: &str, file: &CredentialFileReport, now: UnixMillis) -> CredentialState {
    CredentialState {
        agent_id: agent_id.to_string(),
        credentials_ref: file.credentials_ref.clone(),
        sha256: file.sha256.clone(),
        generation: i64::try_from(file.generation).unwrap_or(i64::MAX),
        mtime_ms: file.mtime_ms,
        ok: file.ok,
        error: file.error.clone(),
        reported_at: now,
        expires_at: file.expires_at_ms,
    }
}

/// `ok`, `due`, `overdue` against the cadence, or `unknown` for a file never read.
pub fn rotation_status(age_days: Option<u64>) -> &'static str {
    match age_days {
        None => "unknown",
        Some(age) if age > CADENCE_DAYS => "overdue",
        Some(age) if age + DUE_WITHIN_DAYS > CADENCE_DAYS => "due",
        Some(_) => "ok",
    }
}

/// How one file appears in the API, its age counted to `now`.
pub fn view(state: CredentialState, now: UnixMillis) -> CredentialView {
    let age_days = state.mtime_ms.map(|m| u64::try_from((now - m).max(0) / DAY_MS).unwrap_or(0));
    CredentialView {
        rotation: rotation_status(age_days).to_string(),
        age_days,
        cadence_days: CADENCE_DAYS,
        last_changed_at: state.mtime_ms.map(format_rfc3339),
        reported_at: format_rfc3339(state.reported_at),
        expires_at: state.expires_at.map(format_rfc3339),
        generation: u64::try_from(state.generation).unwrap_or(0),
        reload_ok: state.ok,
        agent_id: state.agent_id,
        credentials_ref: state.credentials_ref,
        sha256: state.sha256,
        error: state.error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cadence_status_by_age() {
        assert_eq!(rotation_status(None), "unknown");
        assert_eq!(rotation_status(Some(0)), "ok");
        assert_eq!(rotation_status(Some(83)), "ok");
        assert_eq!(rotation_status(Some(84)), "due");
        assert_eq!(rotation_status(Some(90)), "due");
        assert_eq!(rotation_status(Some(91)), "overdue");
    }

    #[test]
    fn age_counts_whole_days_from_the_file_mtime() {
        let state = CredentialState {
            agent_id: "agt_a".into(),
            credentials_ref: "k.yaml".into(),
            sha256: None,
            generation: 1,
            mtime_ms: Some(0),
            ok: true,
            error: None,
            reported_at: 0,
            expires_at: None,
        };
        let seen = view(state, 100 * DAY_MS + 5);
        assert_eq!((seen.age_days, seen.rotation.as_str()), (Some(100), "overdue"));
    }
}
