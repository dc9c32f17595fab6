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
pub mod live_streams;
pub mod master_key;
pub mod membership;
pub mod mesh_link;
pub mod mesh_runtime;
pub mod metrics;
pub mod operations;
pub mod posture;
pub mod replication;
pub mod request_limits;
pub mod rewrap;
pub mod router_keys;
pub mod server;
pub mod service_error;
#[cfg(feature = "test-faults")]
pub mod test_faults;
pub mod tls_reload;
pub mod validate;
pub mod webhooks;

use std::sync::Arc;

use axum::extract::FromRef;
use xerotier_core::{IdGenerator, IdKind, SharedClock, SharedEntropy};
use xerotier_seal::Sealer;
use xerotier_store::Store;

use crate::agent_events::EventLog;
use crate::api_keys::{ApiKeyService, GraceUseCounter};
use crate::audit::AuditLog;
use crate::auth::{AuthGate, Authenticator, FailureLimit, GateParts};
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
use crate::live_streams::LiveStreams;
use crate::membership::ReplicaService;
use crate::mesh_link::MeshLink;
use crate::mesh_runtime::{FrameHandler, RuntimeDeps};
use crate::metrics::Metrics;
use crate::operations::OperationService;
use crate::operations::executor::Executor;
use crate::posture::PostureService;
use crate::posture::monitor::PostureMonitor;
use crate::replication::apply::SignalApplier;
use crate::replication::{LeaseSettings, Replication};
use crate::request_limits::RequestLimits;
use crate::router_keys::join_signing::JoinSigningRollout;
use crate::router_keys::registry::RolloutRegistry;
use crate::router_keys::sealing::RouterKeySealer;
use crate::router_keys::{RouterKeyParts, RouterKeyService};
use crate::webhooks::WebhookService;

/// The services, wired once, behind one `Arc`: axum clones the state for every request, so a
/// clone must be one reference count, not one per service (it was half the CPU of an
/// authenticated request; docs/BENCHMARKS.md "TLS"). Handlers take the part they need through
/// `FromRef`, never the whole.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

#[derive(Debug)]
pub struct Services {
    pub store: Store,
    /// Seals and opens the router's secrets in the store, under the master key.
    pub sealer: Sealer,
    /// This replica's lease and fence, and the wait that makes revokes hold everywhere.
    pub replication: Replication,
    pub cache: Arc<KeyCache>,
    pub clock: SharedClock,
    /// Makes request ids (and every other id the state's services make).
    pub ids: IdGenerator,
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
    pub posture: PostureService,
    pub metrics: Metrics,
    pub streams: LiveStreams,
    pub replicas: ReplicaService,
    pub webhooks: WebhookService,
    pub operations: OperationService,
    pub router_keys: RouterKeyService,
    /// Signed router key fetches by agents that missed a mesh key rotation.
    pub router_key_fetch: router_keys::fetch::KeyFetchService,
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
    posture: PostureService,
    metrics: Metrics,
    streams: LiveStreams,
    replicas: ReplicaService,
    webhooks: WebhookService,
    operations: OperationService,
    router_keys: RouterKeyService,
    router_key_fetch: router_keys::fetch::KeyFetchService,
);

impl AppState {
    pub fn new(
        store: Store,
        clock: SharedClock,
        entropy: SharedEntropy,
        sealer: Sealer,
        link: MeshLink,
        limits: RequestLimits,
    ) -> Self {
        let ids = IdGenerator::new(clock.clone(), entropy.clone());
        let replication = Replication::new(
            store.clone(),
            link.replica_id.clone(),
            LeaseSettings::for_lease(std::time::Duration::from_millis(
                link.settings.replica_lease_ms,
            )),
        );
        let audit = AuditLog::new(store.clone(), clock.clone(), ids.clone(), replication.clone());
        // Every change to a key reaches this cache before it is acknowledged: on SQLite this
        // process makes them all, on PostgreSQL a revoke waits for every replica (replication).
        let cache = Arc::new(KeyCache::new());
        let grace_uses = Arc::new(GraceUseCounter::new());
        let api_keys = ApiKeyService::new(
            store.clone(),
            clock.clone(),
            entropy.clone(),
            audit.clone(),
            cache.clone(),
            grace_uses.clone(),
        );
        let metrics = Metrics::default();
        let auth = Authenticator::new(store.clone(), clock.clone(), cache.clone(), grace_uses);
        let streams = LiveStreams::new(auth.clone(), clock.clone(), &limits);
        let gate = AuthGate::new(GateParts {
            auth,
            replication: replication.clone(),
            audit: audit.clone(),
            metrics: metrics.clone(),
            failures: FailureLimit::new(clock.clone(), &limits),
        });
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
        let exec = ExecService::new(
            store.clone(),
            clock.clone(),
            ids.clone(),
            audit.clone(),
            link.clone(),
        );
        let replicas = ReplicaService::new(store.clone(), clock.clone(), link.clone());
        let enrollment = EnrollService::new(
            store.clone(),
            clock.clone(),
            ids.clone(),
            audit.clone(),
            events.clone(),
            EnrollAttempts::new(audit.clone(), clock.clone(), metrics.clone()),
            replicas.clone(),
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
        let posture = PostureService::new(
            store.clone(),
            clock.clone(),
            link.settings.credential_policy.clone(),
        );
        let grants = GrantService::new(
            store.clone(),
            clock.clone(),
            audit.clone(),
            events.clone(),
            exec.clone(),
        );
        let webhooks = WebhookService::new(
            store.clone(),
            clock.clone(),
            entropy.clone(),
            ids.clone(),
            metrics.clone(),
            audit.clone(),
        );
        let operations =
            OperationService::new(store.clone(), clock.clone(), ids.clone(), audit.clone());
        let mut registry = RolloutRegistry::default();
        registry.register(Arc::new(JoinSigningRollout::new(link.clone())));
        registry.register(Arc::new(crate::router_keys::mesh::MeshRollout::new(
            link.clone(),
            store.clone(),
            clock.clone(),
        )));
        registry.register(Arc::new(crate::router_keys::tls::TlsRollout::new(
            link.clone(),
            store.clone(),
            clock.clone(),
        )));
        let router_keys = RouterKeyService::new(RouterKeyParts {
            store: store.clone(),
            clock: clock.clone(),
            entropy: entropy.clone(),
            ids: ids.clone(),
            audit: audit.clone(),
            metrics: metrics.clone(),
            sealer: RouterKeySealer::sealed(sealer.clone()),
            registry,
            mesh_key_overlap_ms: link.settings.mesh_key_overlap_ms,
        });
        let router_key_fetch = router_keys::fetch::KeyFetchService::new(
            store.clone(),
            clock.clone(),
            link.clone(),
            audit.clone(),
            metrics.clone(),
        );
        Self(Arc::new(Services {
            router_keys,
            router_key_fetch,
            webhooks,
            store,
            sealer,
            replication,
            cache,
            clock,
            ids,
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
            posture,
            metrics,
            streams,
            replicas,
            operations,
        }))
    }

    /// Loads (or creates) the router identity from `store`, sealed under `sealer`'s master
    /// key, and builds the state.
    pub async fn load(
        store: Store,
        clock: SharedClock,
        entropy: SharedEntropy,
        sealer: Sealer,
        settings: FleetSettings,
        limits: RequestLimits,
    ) -> Result<Self, fleet::identity::IdentityError> {
        let identity =
            RouterIdentity::load_or_create(&store, clock.as_ref(), entropy.as_ref(), &sealer)
                .await?;
        let replica_id = IdGenerator::new(clock.clone(), entropy.clone()).next(IdKind::Replica);
        let link = MeshLink::new(settings, identity, replica_id);
        Ok(Self::new(store, clock, entropy, sealer, link, limits))
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
                replication: self.replication.clone(),
                replicas: self.replicas.clone(),
                router_keys: crate::router_keys::mesh::MeshKeyAcks::new(
                    self.link.clone(),
                    self.store.clone(),
                    self.clock.clone(),
                ),
            },
            rotations: self.rotations.clone(),
            exec: self.exec.clone(),
            replication: self.replication.clone(),
            posture: PostureMonitor {
                posture: self.posture.clone(),
                store: self.store.clone(),
                audit: self.audit.clone(),
                events: self.events.clone(),
                metrics: self.metrics.clone(),
            },
            operations: Executor {
                operations: self.operations.clone(),
                rotations: self.rotations.clone(),
                agents: self.agents.clone(),
                join_keys: self.join_keys.clone(),
                replica_id: self.link.replica_id.clone(),
            },
            applier: SignalApplier {
                store: self.store.clone(),
                cache: self.cache.clone(),
                link: self.link.clone(),
                exec: self.exec.clone(),
                rotations: self.rotations.clone(),
                router_keys: self.router_keys.clone(),
                webhooks: self.webhooks.clone(),
                #[cfg(feature = "test-faults")]
                apply_delay: crate::test_faults::signal_apply_delay(),
            },
        }
    }
}
