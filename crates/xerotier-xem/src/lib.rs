//! The XEM execution agent: enrolls once with a join key, keeps its identity on disk, and holds
//! a CURVE session to the router with lease renewals.

pub mod agent;
pub mod catalog;
pub mod config;
pub mod credential_expiry;
pub mod credentials;
pub mod enroll;
pub mod executor;
#[cfg(not(feature = "test-faults"))]
mod faults_off;
pub mod identity;
pub mod metrics;
pub mod reload;
pub mod replicas;
pub mod rotation;
pub mod router_keys;
pub mod sandbox;
pub mod session;
#[cfg(feature = "test-faults")]
mod test_faults;
pub mod watch;
pub mod work;
