//! The Xerotier router: HTTP API, authentication, audit log, the fleet and tool execution.
//!
//! `server::run` is the daemon; [`http::app`] is the HTTP application, usable in-process by
//! tests; [`AppState`] wires the store, the injected clock and entropy, and the services. Each
//! handler takes only the service it needs (`FromRef`), and no service knows HTTP.

pub mod agent_events;
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
pub mod mesh_link;
pub mod mesh_runtime;
pub mod metrics;
pub mod server;
pub mod service_error;
#[cfg(feature = "test-faults")]
pub mod test_faults;
pub mod tls_reload;
pub mod validate;

use std::sync::Arc;

use axum::extract::FromRef;
use xerotier_core::{IdGenerator, SharedClock, SharedEntropy};
use xerotier_store::{Backend, Store};

use crate::agent_events::EventLog;
use crate::api_keys::ApiKeyService;
use crate::audit::AuditLog;
use crate::auth::{AuthGate, Authenticator};
use crate::exec::ExecService;
use crate::exec::credential_ages::CredentialAges;
use crate::exec::pauses::PauseService;
use crate::fleet::agents::AgentService;
use crate::fleet::enroll::EnrollService;
use crate::fleet::enroll_attempts::EnrollAttempts;
use crate::fleet::grants::GrantService;
use crate::fleet::join_keys::JoinKeyService;
use crate::fleet::rotation::RotationService;
use crate::fleet::{FleetSettings, RouterIdentity};
use crate::key_cache::KeyCache;
use crate::mesh_link::MeshLink;
use crate::mesh_runtime::{FrameHandler, RuntimeDeps};
use crate::metrics::Metrics;

/// The services, wired once. Cheap to clone; handlers take the part they need through
/// `FromRef`, never the whole.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub clock: SharedClock,
    pub link: Arc<MeshLink>,
    pub gate: AuthGate,
    pub audit: AuditLog,
    pub api_keys: ApiKeyService,
    pub join_keys: JoinKeyService,
    pub enrollment: EnrollService,
    pub agents: AgentService,
    pub grants: GrantService,
    pub events: EventLog,
    pub rotations: RotationService,
    pub exec: ExecService,
    pub pauses: PauseService,
    pub credential_ages: CredentialAges,
    pub metrics: Metrics,
}

macro_rules! sub_state {
    ($($field:ident: $ty:ty),+ $(,)?) => {
        $(impl FromRef<AppState> for $ty {
            fn from_ref(state: &AppState) -> Self {
                state.$field.clone()
            }
        })+
    };
}

sub_state!(
    gate: AuthGate,
    audit: AuditLog,
    api_keys: ApiKeyService,
    join_keys: JoinKeyService,
    enrollment: EnrollService,
    agents: AgentService,
    grants: GrantService,
    events: EventLog,
    rotations: RotationService,
    exec: ExecService,
    pauses: PauseService,
    credential_ages: CredentialAges,
    metrics: Metrics,
);

impl AppState {
    pub fn new(store: Store, clock: SharedClock, entropy: SharedEntropy, link: MeshLink) -> Self {
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
        let metrics = Metrics::default();
        let gate = AuthGate {
            auth: Authenticator::new(store.clone(), clock.clone(), cache),
            audit: audit.clone(),
            metrics: metrics.clone(),
        };
        let link = Arc::new(link);
        let join_keys = JoinKeyService::new(
            store.clone(),
            clock.clone(),
            ids.clone(),
            audit.clone(),
            link.clone(),
        );
        let events = EventLog::new(store.clone(), clock.clone(), ids.clone());
        let rotations = RotationService::new(
            store.clone(),
            clock.clone(),
            entropy.clone(),
            audit.clone(),
            events.clone(),
            link.clone(),
        );
        let exec = ExecService::new(store.clone(), clock.clone(), ids.clone(), link.clone());
        let enrollment = EnrollService::new(
            store.clone(),
            clock.clone(),
            ids,
            audit.clone(),
            link.clone(),
            events.clone(),
            EnrollAttempts::new(audit.clone(), clock.clone(), metrics.clone()),
        );
        let agents = AgentService::new(
            store.clone(),
            clock.clone(),
            audit.clone(),
            link.clone(),
            events.clone(),
            rotations.clone(),
            exec.clone(),
        );
        let pauses = PauseService::new(
            store.clone(),
            clock.clone(),
            audit.clone(),
            events.clone(),
            exec.clone(),
        );
        let credential_ages = CredentialAges::new(store.clone(), clock.clone());
        let grants = GrantService::new(
            store.clone(),
            clock.clone(),
            audit.clone(),
            events.clone(),
            exec.clone(),
        );
        Self {
            store,
            clock,
            link,
            gate,
            audit,
            api_keys,
            join_keys,
            enrollment,
            agents,
            grants,
            events,
            rotations,
            exec,
            pauses,
            credential_ages,
            metrics,
        }
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
        Ok(Self::new(store, clock, entropy, MeshLink::new(settings, identity)))
    }

    /// What the mesh runtime's tasks use.
    pub fn runtime_deps(&self) -> RuntimeDeps {
        RuntimeDeps {
            store: self.store.clone(),
            frames: FrameHandler {
                clock: self.clock.clone(),
                link: self.link.clone(),
                rotations: self.rotations.clone(),
                exec: self.exec.clone(),
                events: self.events.clone(),
                credential_ages: self.credential_ages.clone(),
                metrics: self.metrics.clone(),
                agents: self.agents.clone(),
            },
            rotations: self.rotations.clone(),
            exec: self.exec.clone(),
        }
    }
}
