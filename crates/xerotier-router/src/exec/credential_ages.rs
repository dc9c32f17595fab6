//! The fleet's workspace credentials, centrally: every agent reports each file's hash,
//! generation, mtime and (when it carries one) expiry with every reload; this records them.
//! Their age is judged by the posture report (`crate::posture`), against the policy.

use xerotier_core::{SharedClock, UnixMillis};
use xerotier_proto::workspace_credentials::{CredentialFileReport, ReloadReport};
use xerotier_store::{CredentialState, Store, StoreError};

/// What agents reported of their credential files.
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
