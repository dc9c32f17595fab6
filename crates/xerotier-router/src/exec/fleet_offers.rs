//! What the agents of *other* replicas offer, read from the store (their manifests, grants
//! and stored lease renewals), so that an invocation created on a replica with no agent for it
//! is accepted when another replica's agent can run it. It is queued unclaimed and the replica
//! holding such an agent claims it (its dispatch is woken through the store's notification).
//!
//! Read at most once a second, on demand; only on PostgreSQL (on SQLite this router holds
//! every agent). An agent this replica knows itself is never taken from here: what the agent
//! told this replica is fresher than what the store says.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use xerotier_core::{SharedClock, UnixMillis};
use xerotier_proto::agents::CapabilityManifest;
use xerotier_store::{AgentRecord, Backend, Store, StoreError, WorkspaceDecision};

use super::offers::{AgentOffer, Offers};
use super::service::served;

/// How long a read of the store is reused.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// Lease renewals are stored once a second (buffered); an agent counts as online elsewhere
/// while its last stored renewal is younger than this many of its lease intervals plus that.
const MISSED_LEASES: i64 = 3;
const FLUSH_SLACK_MS: i64 = 2_000;
/// Agents whose renewals are older than this are not even read.
const OLDEST_MS: i64 = 5 * 60 * 1000;

#[derive(Debug)]
pub struct FleetOffers {
    store: Store,
    clock: SharedClock,
    cached: Mutex<Option<(Instant, Arc<Vec<AgentOffer>>)>>,
}

impl FleetOffers {
    pub fn new(store: Store, clock: SharedClock) -> Self {
        Self { store, clock, cached: Mutex::new(None) }
    }

    /// Whether other replicas exist to ask about.
    pub fn applies(&self) -> bool {
        self.store.backend() == Backend::Postgres
    }

    /// The offers of online agents that `local` does not know, as one [`Offers`].
    pub async fn remote(&self, local: &Offers) -> Result<Offers, StoreError> {
        let all = self.read().await?;
        let remote = Offers::default();
        for offer in all.iter().filter(|o| !local.knows_agent(&o.agent_id)) {
            remote.upsert(offer.clone());
        }
        Ok(remote)
    }

    async fn read(&self) -> Result<Arc<Vec<AgentOffer>>, StoreError> {
        if let Some((at, offers)) = self.cached.lock().as_ref()
            && at.elapsed() < FRESH_FOR
        {
            return Ok(offers.clone());
        }
        let now = self.clock.now_millis();
        let agents = self.store.agents_heard_since(now - OLDEST_MS).await?;
        let grants = self.store.servable_grants().await?;
        let offers: Vec<AgentOffer> =
            agents.into_iter().filter_map(|agent| offer_of(agent, &grants, now)).collect();
        let offers = Arc::new(offers);
        *self.cached.lock() = Some((Instant::now(), offers.clone()));
        Ok(offers)
    }
}

/// The agent's offer as the store knows it, if it counts as online: `last_seen` is its stored
/// renewal, moved forward by the slack of the buffered writes.
fn offer_of(
    agent: AgentRecord,
    grants: &[WorkspaceDecision],
    now: UnixMillis,
) -> Option<AgentOffer> {
    let heard = agent.last_heartbeat_at?;
    let interval = agent.lease_interval_ms.max(1);
    if now - heard > MISSED_LEASES * interval + FLUSH_SLACK_MS {
        return None;
    }
    let manifest: CapabilityManifest = serde_json::from_str(&agent.manifest).ok()?;
    // What this replica would compute for the agent at its hello, from the same rows.
    let decisions = grants.iter().filter(|g| g.agent_id == agent.id).cloned().collect();
    let served = served(&agent, &manifest, decisions);
    Some(AgentOffer {
        agent_id: agent.id,
        agent_name: agent.name,
        manifest,
        lease_interval_ms: interval,
        // Within the window above: online by the same rule as a local agent, for now.
        last_seen: now,
        served,
    })
}
