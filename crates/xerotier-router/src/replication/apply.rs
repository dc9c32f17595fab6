//! What this replica does with each signal: re-read the changed thing from the store and make
//! its caches, allow-list, sessions and agents agree. Each step is idempotent and reads the
//! store's current state, so applying a signal twice, or late, is harmless.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use xerotier_store::{AgentRecord, Signal, SignalKind, Store, StoreError};

use crate::exec::ExecService;
use crate::fleet::rotation::RotationService;
use crate::key_cache::KeyCache;
use crate::mesh_link::MeshLink;
use crate::mesh_runtime::stored_curve_key;
use crate::router_keys::RouterKeyService;
use crate::webhooks::WebhookService;

/// The parts of this replica a signal can touch.
#[derive(Debug, Clone)]
pub struct SignalApplier {
    pub store: Store,
    pub cache: Arc<KeyCache>,
    pub link: Arc<MeshLink>,
    pub exec: ExecService,
    pub rotations: RotationService,
    pub router_keys: RouterKeyService,
    /// Woken (not applied to) by `NOTIFY xerotier_webhooks`: the listener's other task.
    pub webhooks: WebhookService,
    /// Test builds only (`slow_signal_apply`): a pause before each signal is applied.
    #[cfg(feature = "test-faults")]
    pub apply_delay: Option<std::time::Duration>,
}

/// The agents a batch of signals changed, read in one query before the batch is applied
/// (a fleet rotation signals every agent; one read each delayed the lease renewal).
#[derive(Debug, Default)]
pub struct ChangedAgents {
    read: HashSet<String>,
    found: HashMap<String, AgentRecord>,
}

impl ChangedAgents {
    /// `Some(row)` (`None` inside: no such agent) if `agent_id` was read with the batch; each
    /// row is handed out once (a batch applies each changed thing once, `task::plan`).
    fn take(&mut self, agent_id: &str) -> Option<Option<AgentRecord>> {
        self.read.remove(agent_id).then(|| self.found.remove(agent_id))
    }
}

impl SignalApplier {
    /// Reads, in one go, every agent the agent signals among `signals` name. Rows are read
    /// after the signals were (their changes are committed), so each is at least as new as
    /// its signal, which is all applying needs.
    pub async fn read_changed_agents<'a>(
        &self,
        signals: impl Iterator<Item = &'a Signal>,
    ) -> Result<ChangedAgents, StoreError> {
        let read: HashSet<String> = signals
            .filter(|signal| signal.kind == Some(SignalKind::Agent))
            .map(|signal| signal.subject.clone())
            .collect();
        let ids: Vec<&str> = read.iter().map(String::as_str).collect();
        let found = self.store.agents_by_ids(&ids).await?;
        let found = found.into_iter().map(|agent| (agent.id.clone(), agent)).collect();
        Ok(ChangedAgents { read, found })
    }

    /// Applies `signal`, with the agent's row from `agents` when it was read with the batch.
    pub async fn apply(
        &self,
        signal: &Signal,
        agents: &mut ChangedAgents,
    ) -> Result<(), StoreError> {
        #[cfg(feature = "test-faults")]
        if let Some(delay) = self.apply_delay {
            tokio::time::sleep(delay).await;
        }
        match signal.kind {
            Some(SignalKind::ApiKey) => self.cache.invalidate(&signal.subject),
            Some(SignalKind::Agent) => {
                let agent = match agents.take(&signal.subject) {
                    Some(agent) => agent,
                    None => self.store.agent(&signal.subject).await?,
                };
                self.agent_changed(&signal.subject, agent).await?;
            }
            Some(SignalKind::Invocation) => self.invocation_changed(&signal.subject).await?,
            // Join keys are consumed inside the enrollment transaction; nothing is cached.
            Some(SignalKind::JoinKey) => {}
            // A router key's phase moved: this replica matches the store for that kind.
            Some(SignalKind::RouterKey) => {
                if let Err(err) = self.router_keys.on_signal(&signal.subject).await {
                    tracing::error!(subject = %signal.subject, error = %err, "could not apply a router key phase");
                }
            }
            None => tracing::debug!(seq = signal.seq, "signal of an unknown kind skipped"),
        }
        Ok(())
    }

    /// An agent was revoked, rotated, promoted, retired, granted, paused or quarantined
    /// somewhere: its keys here become exactly what the store says, a session it may no
    /// longer hold ends, and what it serves and must be told is re-read.
    async fn agent_changed(
        &self,
        agent_id: &str,
        agent: Option<AgentRecord>,
    ) -> Result<(), StoreError> {
        let keys: Vec<[u8; 32]> = match &agent {
            Some(agent) if agent.revoked_at.is_none() => {
                [Some(&agent.curve_public_key), agent.previous_curve_public_key.as_ref()]
                    .into_iter()
                    .flatten()
                    .filter_map(|key| stored_curve_key(agent_id, key))
                    .collect()
            }
            _ => Vec::new(),
        };
        let allowed = self.link.allow.set_agent_keys(agent_id, &keys);
        // Without a session here nothing else is this replica's to do: an agent that connects
        // here later has its rotation read on its hello (`RotationService::on_hello`), and the
        // full refresh re-reads every promotion (`reconcile_promoted`). Reading it for every
        // agent of the fleet at every signal delayed the lease renewal under a fleet rotation.
        if !self.link.has_session(agent_id) {
            return Ok(());
        }
        if let Err(err) = self.rotations.reload_agent(agent_id).await {
            tracing::warn!(%agent_id, error = %err, "could not re-read the agent's rotation");
        }
        if allowed == 0 {
            self.link.end_session(agent_id, "credentials revoked");
            self.exec.on_agent_silenced(agent_id);
            tracing::warn!(%agent_id, "agent revoked on another replica; its session here ended");
            return Ok(());
        }
        self.exec.reload_served_from(agent_id, agent.as_ref()).await
    }

    /// An invocation was cancelled somewhere: the replica holding its agent's session tells it.
    async fn invocation_changed(&self, invocation_id: &str) -> Result<(), StoreError> {
        if let Some(record) = self.store.invocation(invocation_id).await? {
            self.exec.on_changed_elsewhere(&record);
        }
        Ok(())
    }
}
