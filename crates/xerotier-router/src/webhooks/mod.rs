//! Outbound webhooks for security events (issue 13, alerting).
//!
//! The store writes a security event into its outbox in the transaction of the audit record
//! it comes from (`xerotier_store::SecurityEventType::of`). Every replica's [`dispatcher`]
//! turns new events into one durable delivery per matching webhook (the same on every
//! replica: one row per webhook and event), claims due deliveries under a lease (one replica
//! at a time), POSTs them signed (`xerotier_credentials::webhook_signature`) and records
//! each attempt: `delivered` on a 2xx, otherwise retried with backoff until the attempt limit
//! makes it `failed`. Delivery is at least once: a receiver de-duplicates by
//! `X-Xerotier-Delivery`.
//!
//! The webhooks are read from the config file at start only: the router re-reads its TLS
//! certificate on SIGHUP, not its config file.

pub mod dispatcher;
pub mod handlers;
pub mod settings;

use std::sync::Arc;

use parking_lot::RwLock;

use xerotier_core::{IdGenerator, SharedClock, SharedEntropy};
use xerotier_store::{DeliveryFilter, PageRequest, PageSlice, Store, WebhookDelivery};

use crate::metrics::Metrics;
use crate::service_error::ServiceError;
pub use settings::{Webhook, WebhookSettings};

/// The configured webhooks and their deliveries.
#[derive(Debug, Clone)]
pub struct WebhookService {
    store: Store,
    clock: SharedClock,
    entropy: SharedEntropy,
    ids: IdGenerator,
    metrics: Metrics,
    /// Set once at start ([`WebhookService::configure`]); swappable for a future reload.
    settings: Arc<RwLock<Arc<WebhookSettings>>>,
}

impl WebhookService {
    pub fn new(
        store: Store,
        clock: SharedClock,
        entropy: SharedEntropy,
        ids: IdGenerator,
        metrics: Metrics,
    ) -> Self {
        let settings = Arc::new(RwLock::new(Arc::new(WebhookSettings::default())));
        Self { store, clock, entropy, ids, metrics, settings }
    }

    /// Installs the webhooks of the config file (before the dispatcher starts).
    pub fn configure(&self, settings: WebhookSettings) {
        *self.settings.write() = Arc::new(settings);
    }

    /// The webhooks and delivery settings in force.
    pub fn current(&self) -> Arc<WebhookSettings> {
        self.settings.read().clone()
    }

    pub fn webhooks(&self) -> Vec<Webhook> {
        self.current().webhooks.clone()
    }

    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        page: &PageRequest,
    ) -> Result<PageSlice<WebhookDelivery>, ServiceError> {
        Ok(self.store.list_webhook_deliveries(filter, page).await?)
    }
}
