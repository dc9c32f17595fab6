//! The Xerotier router: HTTP API, authentication, audit log.
//!
//! `server::run` is the daemon; [`http::app`] is the HTTP application, usable in-process by
//! tests; [`AppState`] wires the store, the injected clock and entropy, and the services.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod exec;
pub mod fleet;
pub mod health;
pub mod http;
pub mod key_cache;
pub mod metrics;
pub mod server;
pub mod validate;

use std::sync::Arc;

use xerotier_core::{IdGenerator, SharedClock, SharedEntropy};
use xerotier_store::{Backend, Store};

use crate::api_keys::ApiKeyService;
use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::exec::ExecService;
use crate::fleet::agents::AgentService;
use crate::fleet::enroll::EnrollService;
use crate::fleet::events::EventLog;
use crate::fleet::join_keys::JoinKeyService;
use crate::fleet::rotation::RotationService;
use crate::fleet::{Fleet, FleetSettings, RouterIdentity};
use crate::key_cache::KeyCache;
use crate::metrics::Metrics;

/// Everything a request handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    store: Store,
    clock: SharedClock,
    auth: Authenticator,
    audit: AuditLog,
    api_keys: ApiKeyService,
    fleet: Arc<Fleet>,
    join_keys: JoinKeyService,
    enrollment: EnrollService,
    agents: AgentService,
    events: EventLog,
    rotations: RotationService,
    exec: ExecService,
    metrics: Metrics,
}

impl AppState {
    pub fn new(store: Store, clock: SharedClock, entropy: SharedEntropy, fleet: Fleet) -> Self {
        let ids = IdGenerator::new(clock.clone(), entropy.clone());
        let audit = AuditLog::new(store.clone(), clock.clone(), ids.clone());
        // Only a store this process owns alone can be cached (see key_cache).
        let cache = Arc::new(KeyCache::new(store.backend() == Backend::Sqlite));
        let api_keys = ApiKeyService::new(
            store.clone(),
            clock.clone(),
            entropy.clone(),
            audit.clone(),
            cache.clone(),
        );
        let auth = Authenticator::new(store.clone(), clock.clone(), cache);
        let fleet = Arc::new(fleet);
        let join_keys = JoinKeyService::new(
            store.clone(),
            clock.clone(),
            ids.clone(),
            audit.clone(),
            fleet.clone(),
        );
        let events = EventLog::new(store.clone(), clock.clone(), ids.clone());
        let rotations = RotationService::new(
            store.clone(),
            clock.clone(),
            entropy.clone(),
            audit.clone(),
            events.clone(),
            fleet.clone(),
        );
        let exec = ExecService::new(store.clone(), clock.clone(), ids.clone(), fleet.clone());
        let enrollment = EnrollService::new(
            store.clone(),
            clock.clone(),
            ids,
            audit.clone(),
            fleet.clone(),
            events.clone(),
        );
        let agents = AgentService::new(
            store.clone(),
            clock.clone(),
            audit.clone(),
            fleet.clone(),
            events.clone(),
            rotations.clone(),
            exec.clone(),
        );
        Self(Arc::new(Inner {
            store,
            clock,
            auth,
            audit,
            api_keys,
            fleet,
            join_keys,
            enrollment,
            agents,
            events,
            rotations,
            exec,
            metrics: Metrics::default(),
        }))
    }

    /// Loads (or creates) the router identity from `store` and builds the state.
    pub async fn load(
        store: Store,
        clock: SharedClock,
        entropy: SharedEntropy,
        settings: FleetSettings,
    ) -> Result<Self, fleet::identity::IdentityError> {
        let identity =
            RouterIdentity::load_or_create(&store, clock.as_ref(), entropy.as_ref()).await?;
        Ok(Self::new(store, clock, entropy, Fleet::new(settings, identity)))
    }

    pub fn clock(&self) -> &SharedClock {
        &self.0.clock
    }

    pub fn fleet(&self) -> &Fleet {
        &self.0.fleet
    }

    pub fn join_keys(&self) -> &JoinKeyService {
        &self.0.join_keys
    }

    pub fn enrollment(&self) -> &EnrollService {
        &self.0.enrollment
    }

    pub fn agents(&self) -> &AgentService {
        &self.0.agents
    }

    pub fn events(&self) -> &EventLog {
        &self.0.events
    }

    pub fn rotations(&self) -> &RotationService {
        &self.0.rotations
    }

    pub fn exec(&self) -> &ExecService {
        &self.0.exec
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    pub fn auth(&self) -> &Authenticator {
        &self.0.auth
    }

    pub fn audit(&self) -> &AuditLog {
        &self.0.audit
    }

    pub fn api_keys(&self) -> &ApiKeyService {
        &self.0.api_keys
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }
}
