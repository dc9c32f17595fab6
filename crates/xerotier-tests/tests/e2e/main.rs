//! End-to-end tests: the real `xerotier-router` and `xeroctl` binaries, each test body run
//! against the embedded SQLite store and against PostgreSQL (see `harness::backends`).
//!
//! One test binary with modules, so that the harness is compiled once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

mod api_keys;
mod cli;
mod protocol;
mod router;
mod security;
mod seed;
