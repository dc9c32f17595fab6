//! End-to-end tests: the real `xerotier-router`, `xerotier-xem` and `xeroctl` binaries, each
//! test body that involves the store run against the embedded SQLite store and against
//! PostgreSQL (see `harness::backends`).
//!
//! One test binary with modules, so that the harness is compiled once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests drive real processes on the real clock: deadlines and random names decide nothing in
// the code under test.
#![allow(clippy::disallowed_methods)]

mod fleet_harness;
mod harness;
mod tcp_proxy;

mod agents;
mod api_keys;
mod cli;
mod cli_conventions;
mod clones;
mod contract;
mod credential_expiry;
mod enroll_attempts;
mod enrollment;
mod exec;
mod exec_accountability;
mod grace_evidence;
mod grants;
mod join_keys;
mod key_hygiene;
mod lockout;
mod mesh;
mod mesh_fairness;
mod mesh_keys;
mod operations;
mod posture;
mod protocol;
mod replica_order;
mod replica_signals;
mod replicas;
mod request_hygiene;
mod rotation;
mod router;
mod router_keys;
mod runbook;
mod sealed_keys;
mod security;
mod seed;
mod shutdown;
mod signing_rotation;
mod streams;
mod tls;
mod tls_rotation;
mod webhooks;
mod xem;
mod xem_host;
mod xem_host_files;
mod xem_shutdown;
