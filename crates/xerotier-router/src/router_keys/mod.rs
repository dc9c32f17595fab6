//! The router's own keys (SPEC §9): the mesh CURVE key, the join-key signing key and the TLS
//! CA, each rotated in phases.
//!
//! `service` holds the phases (store, audit, signals) and calls each kind's rollout
//! (`rollout::KindRollout`, looked up in `registry`); `join_signing` is the join-key signing
//! kind's rollout and `keyring` the keys it installs, `mesh` and `tls` the other kinds' rollouts; `sealing` is the one way a secret reaches
//! the `router_keys` table; `material` makes keys and their ids; `handlers`/`views` are HTTP.

pub mod fetch;
pub mod fetch_handlers;
pub mod handlers;
pub mod join_signing;
pub mod keyring;
pub mod material;
pub mod mesh;
pub mod registry;
pub mod rollout;
pub mod sealing;
pub mod service;
pub mod tls;
pub mod views;

pub use rollout::KindRollout;
pub use service::{RouterKeyParts, RouterKeyService};
