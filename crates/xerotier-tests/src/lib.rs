//! End-to-end tests of the Xerotier credential plane.
//!
//! The tests live in `tests/e2e/` (one test binary, `e2e`). They start the real
//! `xerotier-router` binary on a temporary state dir, once on the embedded SQLite store and once
//! on a fresh PostgreSQL database (when `XEROTIER_TEST_POSTGRES_URL` is set), and drive it over
//! HTTP, with the real `xeroctl` binary, with real `xerotier-xem` agents (each with all its paths
//! in its own temporary directory), and with raw ZeroMQ clients at the CURVE mesh endpoint. This
//! library is intentionally empty.
