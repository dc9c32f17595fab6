//! The router's durable state.
//!
//! One [`Store`] over sqlx's `Any` driver serves SQLite (embedded default) and PostgreSQL (shared
//! by several router replicas). Queries are written once in the common dialect; the few
//! differences (how a write transaction starts, migrations) are chosen by [`Backend`].
//! Every credential mutation takes the audit record it must write and commits both together.

mod agents;
mod api_keys;
mod audit;
mod backend;
mod credentials;
mod error;
mod failover;
mod invocations;
mod join_keys;
mod listen;
mod migrate;
mod operations;
mod order;
mod page;
mod pauses;
mod posture;
mod replicas;
mod rotations;
mod router_key_acks;
mod router_keys;
mod rows;
mod sealed;
mod webhooks;
mod workspaces;

pub use agents::{AgentRecord, Heartbeat};
pub use api_keys::{ApiKeyRecord, GraceUses, NewApiKey};
pub use audit::{AuditEntry, AuditFilter, Outcome};
pub use backend::{Backend, Store, redact_url, sqlite_path};
pub use credentials::CredentialState;
pub use error::StoreError;
pub use failover::ReleasedWork;
pub use invocations::{
    CancelOutcome, InvocationEnd, InvocationFilter, InvocationRecord, NewInvocation,
};
pub use join_keys::JoinKeyRecord;
pub use listen::{Notice, Notifications};
pub use operations::{OperationRecord, OperationTargetRecord, TargetInFlight};
pub use order::{EVENTS_CHANNEL, Sequenced};
pub use page::{PageRequest, PageSlice};
pub use pauses::PauseRecord;
pub use posture::{AnnouncedState, CurveKeyAge, Transition as PostureTransition};
pub use replicas::{
    ACK_CHANNEL, DISPATCH_CHANNEL, NewReplica, Renewal, ReplicaRecord, SIGNAL_CHANNEL, Signal,
    SignalKind,
};
pub use rotations::{AgentEvent, NewAgentKeys, RotationRecord};
pub use router_key_acks::RouterKeyAck;
pub use router_keys::{
    RotationEnd, RotationOutcome, RouterKeyRecord, RouterKeyRotationRecord, RouterKeyStatus,
};
pub use sealed::{
    ROUTER_KEYS, ROUTER_SECRETS, RewriteError, Rewritten, SEALED_COLUMNS, SealedColumn, SealedValue,
};
pub use sqlx::Error as SqlxError;
pub use webhooks::{
    AttemptEnd, AttemptResult, DeliveryFilter, MAX_ERROR_CHARS, NewDelivery, SecurityEvent,
    SecurityEventType, WEBHOOK_CHANNEL, WebhookDelivery, security_event_id,
};
pub use workspaces::{
    CANDIDATE, Decision, DeclaredWorkspace, GRANTED, REJECTED, Transition, WITHDRAWN,
    WorkspaceDecision,
};
