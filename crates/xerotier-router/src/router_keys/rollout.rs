//! The contract between the staged rotation of a router key (phases, store, audit: the
//! `router_keys` service) and what each kind of key must do on every replica when a phase is
//! entered (the kind's *rollout*: which key a replica serves, signs or verifies with, and what it
//! tells its agents). SPEC §9; modelled on Teleport's certificate-authority rotation.
//!
//! A phase change is committed once (audited, evented, signalled). Every replica then calls
//! [`KindRollout::reconcile`] with the state read from the store: on start, after a change it
//! made itself, and when it applies another replica's signal. `reconcile` is therefore
//! idempotent and holds no state of its own that the store does not.

use std::future::Future;
use std::pin::Pin;

use secrecy::SecretString;

/// Which of the router's own keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouterKeyKind {
    /// The mesh CURVE server key every agent pins.
    Mesh,
    /// The Ed25519 key that signs join keys.
    JoinSigning,
    /// The TLS CA (and the server certificate it issues).
    Tls,
}

impl RouterKeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouterKeyKind::Mesh => "mesh",
            RouterKeyKind::JoinSigning => "join_signing",
            RouterKeyKind::Tls => "tls",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "mesh" => Some(RouterKeyKind::Mesh),
            "join_signing" | "join-signing" => Some(RouterKeyKind::JoinSigning),
            "tls" => Some(RouterKeyKind::Tls),
            _ => None,
        }
    }

    /// The prefix of this kind's key ids (`formats::ROUTER_KEY_ID`).
    pub fn kid_prefix(self) -> &'static str {
        match self {
            RouterKeyKind::Mesh => "mks-",
            RouterKeyKind::JoinSigning => "jks-",
            RouterKeyKind::Tls => "tls-",
        }
    }
}

/// A rotation's phase. `Standby` is "no rotation in progress" (and where a completed or rolled
/// back rotation ends). Order: `Init → UpdateClients → UpdateServers → Standby`; `Rollback`
/// is allowed from `Init`, `UpdateClients` and `UpdateServers` and ends in `Standby` with the
/// old key still current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RotationPhase {
    Standby,
    /// The new key exists (sealed in the store); nothing uses it yet.
    Init,
    /// Clients learn the new key and trust both (agents: `Frame::RouterKeys [old, new]`,
    /// acknowledged durably; join keys: every replica verifies both kids).
    UpdateClients,
    /// Servers use the new key (the mesh socket serves it; new join keys carry its kid); clients
    /// still trust the old one, so a straggler keeps working.
    UpdateServers,
    /// Undoing a rotation that had not reached `Standby`: the old key is (again) what every
    /// replica serves and signs with; the new one is withdrawn.
    Rollback,
}

impl RotationPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            RotationPhase::Standby => "standby",
            RotationPhase::Init => "init",
            RotationPhase::UpdateClients => "update_clients",
            RotationPhase::UpdateServers => "update_servers",
            RotationPhase::Rollback => "rollback",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "standby" => Some(RotationPhase::Standby),
            "init" => Some(RotationPhase::Init),
            "update_clients" | "update-clients" => Some(RotationPhase::UpdateClients),
            "update_servers" | "update-servers" => Some(RotationPhase::UpdateServers),
            "rollback" => Some(RotationPhase::Rollback),
            _ => None,
        }
    }
}

/// One key of a kind, opened (the secret is unsealed only in memory).
#[derive(Debug, Clone)]
pub struct RouterKeyMaterial {
    /// `mks-…`, `jks-…` or `tls-…`.
    pub kid: String,
    /// The public half in the kind's own text form (mesh: Z85; join signing: hex; TLS: PEM).
    pub public: String,
    /// The secret half in the kind's own text form (mesh and join signing: hex; TLS: PEM).
    pub secret: SecretString,
    pub created_at: i64,
}

/// What a replica must match for one kind: the key in force, and the one being rotated in
/// while a rotation is in progress.
#[derive(Debug, Clone)]
pub struct RouterKeyState {
    pub kind: RouterKeyKind,
    pub phase: RotationPhase,
    /// The rotation in progress (or the last one), if any.
    pub rotation_id: Option<String>,
    /// The key in force before the rotation (the only one in `Standby`).
    pub current: RouterKeyMaterial,
    /// The key being rotated in: present in `Init`, `UpdateClients`, `UpdateServers` and
    /// `Rollback`.
    pub next: Option<RouterKeyMaterial>,
    /// Keys no longer in force that must still be accepted (join signing: until the last join
    /// key they signed expires). Never served or signed with.
    pub verify_only: Vec<RouterKeyMaterial>,
}

/// How far the fleet has moved in the current phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RolloutProgress {
    /// Clients (agents) that have moved for this phase.
    pub moved: u64,
    /// Clients that must move before the next phase may begin (live, not revoked).
    pub total: u64,
    /// Whether the next phase may begin now (for `--auto`, and to refuse an early step without
    /// `--force`).
    pub ready: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("store: {0}")]
    Store(#[from] xerotier_store::StoreError),
    #[error("{0}")]
    Failed(String),
}

pub type RolloutFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, RolloutError>> + Send + 'a>>;

/// What one kind of router key does on this replica when its rotation moves.
pub trait KindRollout: Send + Sync + 'static {
    fn kind(&self) -> RouterKeyKind;
    /// Why this kind cannot rotate on this router, if it cannot (TLS without a CA of its own).
    fn unavailable(&self) -> Option<String> {
        None
    }
    /// Make this replica match `state`. Idempotent.
    fn reconcile<'a>(&'a self, state: &'a RouterKeyState) -> RolloutFuture<'a, ()>;
    /// How far the fleet has moved in `state.phase`, as the store records it (so any replica
    /// answers the same).
    fn progress<'a>(&'a self, state: &'a RouterKeyState) -> RolloutFuture<'a, RolloutProgress>;
}
