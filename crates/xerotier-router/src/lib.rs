//! The Xerotier router: HTTP API, authentication, audit log.
//!
//! `server::run` is the daemon; [`http::app`] is the HTTP application, usable in-process by
//! tests; [`AppState`] wires the store, the injected clock and entropy, and the services.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod exec;
pub mod health;
pub mod http;
pub mod key_cache;
pub mod metrics;
pub mod server;

use std::sync::Arc;

use xerotier_core::{IdGenerator, SharedClock, SharedEntropy};
use xerotier_store::{Backend, Store};

use crate::api_keys::ApiKeyService;
use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::key_cache::KeyCache;
use crate::metrics::Metrics;

/// Everything a request handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    store: Store,
    auth: Authenticator,
    audit: AuditLog,
    api_keys: ApiKeyService,
    metrics: Metrics,
}

impl AppState {
    pub fn new(store: Store, clock: SharedClock, entropy: SharedEntropy) -> Self {
        let ids = IdGenerator::new(clock.clone(), entropy.clone());
        let audit = AuditLog::new(store.clone(), clock.clone(), ids);
        // Only a store this process owns alone can be cached (see key_cache).
        let cache = Arc::new(KeyCache::new(store.backend() == Backend::Sqlite));
        let api_keys =
            ApiKeyService::new(store.clone(), clock.clone(), entropy, audit.clone(), cache.clone());
        let auth = Authenticator::new(store.clone(), clock, cache);
        Self(Arc::new(Inner { store, auth, audit, api_keys, metrics: Metrics::default() }))
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    pub fn auth(&self) -> &Authenticator {
        &self.0.auth
    }

    pub fn audit(&self) -> &AuditLog {
        &self.0.audit
    }

    pub fn api_keys(&self) -> &ApiKeyService {
        &self.0.api_keys
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }
}
