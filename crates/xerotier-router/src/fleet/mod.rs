//! The fleet: join keys, enrollment, agents, CURVE rotation and the per-agent event log.
//! `handlers` is the HTTP surface of all of them; the services know nothing of HTTP.

pub mod agents;
pub mod enroll;
pub mod enroll_attempts;
pub mod grants;
pub mod handlers;
pub mod identity;
pub mod join_keys;
mod promoted_keys;
pub mod rotation;
pub mod views;

pub use crate::mesh_link::FleetSettings;
pub use identity::RouterIdentity;
