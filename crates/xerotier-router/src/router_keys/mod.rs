//! The router's own keys (SPEC §9): the mesh CURVE key, the join-key signing key and the TLS
//! CA, each rotated in phases.

pub mod fetch;
pub mod handlers;
pub mod mesh;
pub mod rollout;

pub use rollout::KindRollout;
