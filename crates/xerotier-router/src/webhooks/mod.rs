//! Outbound webhooks for security events (issue 13, alerting).
//!
//! The store writes a security event into its outbox in the transaction of the audit record
//! it comes from (`xerotier_store::SecurityEventType::of`). Every replica's [`dispatcher`]
//! turns new events into one durable delivery per matching webhook (the same on every
//! replica: one row per webhook and event), claims due deliveries under a lease (one replica
//! at a time), POSTs them signed (`xerotier_credentials::webhook_signature`) and records
//! each attempt: `delivered` on a 2xx, otherwise retried with backoff until the attempt limit
//! makes it `failed`. Delivery is at least once: a receiver de-duplicates by
//! `X-Xerotier-Delivery`. An operator can put a settled delivery back to pending
//! ([`WebhookService::retry_delivery`]); the dispatcher is woken to attempt it at once.
//!
//! The webhooks are read from the config file at start, and again on SIGHUP
//! ([`WebhookService::reload`], called by `tls_reload`'s SIGHUP task): a valid file replaces
//! the set in force (the dispatcher picks it up on its next pass), an invalid or unreadable
//! one changes nothing.

pub mod dispatcher;
pub mod handlers;
pub mod settings;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use secrecy::ExposeSecret;
use tokio::sync::Notify;

use xerotier_core::{IdGenerator, IdKind, SharedClock, SharedEntropy, is_valid_id};
use xerotier_store::{DeliveryFilter, Outcome, PageRequest, PageSlice, Store, WebhookDelivery};

use crate::audit::{AuditContext, AuditLog, Change, Target};
use crate::metrics::Metrics;
use crate::service_error::ServiceError;
use dispatcher::DispatchError;
pub use settings::{Webhook, WebhookSettings};

/// The webhooks in force with the HTTP client of each, swapped together so that a pass of the
/// dispatcher never sees one without the other.
#[derive(Debug, Default)]
struct Active {
    settings: Arc<WebhookSettings>,
    clients: HashMap<String, reqwest::Client>,
}

/// The configured webhooks and their deliveries.
#[derive(Debug, Clone)]
pub struct WebhookService {
    store: Store,
    clock: SharedClock,
    entropy: SharedEntropy,
    ids: IdGenerator,
    metrics: Metrics,
    audit: AuditLog,
    /// Set at start ([`WebhookService::configure`]), replaced on SIGHUP
    /// ([`WebhookService::reload`]).
    active: Arc<RwLock<Arc<Active>>>,
    /// Wakes the dispatcher before its poll interval: after a reload, and so that a retried
    /// delivery goes out at once.
    wake: Arc<Notify>,
}

/// What a reload changed, by webhook name (never a secret or a URL: a URL may carry a token).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The same name with another URL, events, secret or CA.
    pub changed: Vec<String>,
    /// `webhook_delivery:` changed.
    pub delivery_changed: bool,
}

impl ReloadSummary {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.delivery_changed
    }
}

/// Why a reload kept the webhooks in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
}

impl WebhookService {
    pub fn new(
        store: Store,
        clock: SharedClock,
        entropy: SharedEntropy,
        ids: IdGenerator,
        metrics: Metrics,
        audit: AuditLog,
    ) -> Self {
        let active = Arc::new(RwLock::new(Arc::new(Active::default())));
        Self { store, clock, entropy, ids, metrics, audit, active, wake: Arc::new(Notify::new()) }
    }

    /// Installs the webhooks of the config file (before the dispatcher starts). Refused, and
    /// nothing installed, when a webhook's HTTP client cannot be built (its CA file).
    pub fn configure(&self, settings: WebhookSettings) -> Result<(), DispatchError> {
        let clients = dispatcher::clients(&settings)?;
        *self.active.write() = Arc::new(Active { settings: Arc::new(settings), clients });
        Ok(())
    }

    /// Re-reads the webhooks from `config_file` and puts them in force: deliveries created
    /// from now on follow the new set. Nothing changes when the file cannot be read, does not
    /// parse, or a webhook in it is refused (the same checks as at start); the error says why.
    /// A webhook new to the store starts at the events committed so far, as at start.
    pub async fn reload(
        &self,
        config_file: &std::path::Path,
    ) -> Result<ReloadSummary, ReloadError> {
        let settings = crate::config::webhooks_from_file(config_file)?;
        let clients = dispatcher::clients(&settings)?;
        for hook in &settings.webhooks {
            self.store.webhook_cursor(&hook.name).await.map_err(DispatchError::from)?;
        }
        let summary = {
            let mut active = self.active.write();
            let summary = compare(&active.settings, &settings);
            *active = Arc::new(Active { settings: Arc::new(settings), clients });
            summary
        };
        self.wake.notify_one();
        Ok(summary)
    }

    /// Wakes the dispatcher before its poll interval (another replica's event or retry).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The webhooks and delivery settings in force.
    pub fn current(&self) -> Arc<WebhookSettings> {
        self.active.read().settings.clone()
    }

    fn active(&self) -> Arc<Active> {
        self.active.read().clone()
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

    /// Puts the settled (delivered or failed) delivery `id` back to pending with a fresh
    /// attempt count, audited with `reason`, and wakes the dispatcher so it is attempted at
    /// once. The id is checked against its format before anything is looked up. With
    /// `dry_run`, the same checks and refusals, and the delivery as it is: nothing changes and
    /// nothing is audited.
    pub async fn retry_delivery(
        &self,
        context: &AuditContext,
        id: &str,
        reason: Option<&str>,
        dry_run: bool,
    ) -> Result<WebhookDelivery, ServiceError> {
        if !is_valid_id(IdKind::Delivery, id) {
            // The id is not echoed: it is the caller's arbitrary input, of any length.
            return Err(ServiceError::invalid(
                "the delivery id must be `del_` followed by 26 characters of lowercase \
                 Crockford base32 (as `xeroctl webhooks deliveries` lists them)",
                "id",
            ));
        }
        let reason = crate::validate::reason(reason)?;
        let Some(current) = self.store.webhook_delivery(id).await? else {
            let err = ServiceError::NotFound(format!("webhook delivery {id}"));
            return Err(self.refused(context, &retry_change(id, None, reason), dry_run, err).await);
        };
        let refusal = if current.status == "pending" {
            Some(ServiceError::DeliveryPending(id.to_string()))
        } else if self.current().webhook(&current.webhook).is_none() {
            // Its webhook was removed by a reload: the dispatcher would only fail it again.
            Some(ServiceError::WebhookNotConfigured {
                delivery: id.to_string(),
                webhook: current.webhook.clone(),
            })
        } else {
            None
        };
        if let Some(err) = refusal {
            return Err(self
                .refused(context, &retry_change(id, Some(&current.webhook), reason), dry_run, err)
                .await);
        }
        if dry_run {
            return Ok(current);
        }
        let change = retry_change(id, Some(&current.webhook), reason).details(serde_json::json!({
            "from": current.status,
            "attempts": current.attempts,
            "event_id": current.event_id,
            "event_type": current.event_type,
        }));
        let entry = self.audit.entry(context, &change, Outcome::Success);
        let now = self.clock.now_millis();
        let Some(retried) = self.store.retry_delivery(id, now, &entry).await? else {
            // Settled when read, pending now: another operator retried it meanwhile.
            let err = ServiceError::DeliveryPending(id.to_string());
            return Err(self.refused(context, &change, false, err).await);
        };
        self.wake.notify_one();
        // Other replicas' dispatchers too (PostgreSQL): whichever has a free slot sends it.
        if let Err(err) = self.store.notify_webhooks().await {
            tracing::warn!(delivery = %id, error = %err, "could not wake other replicas' webhook dispatchers; they poll");
        }
        tracing::info!(
            delivery = %id, webhook = %retried.webhook, event = %retried.event_type,
            from = %current.status, actor = %context.actor_label(),
            "webhook delivery put back to pending by an operator"
        );
        Ok(retried)
    }
}

impl WebhookService {
    /// Records a refused retry (not a dry run's: that changes and records nothing) and gives
    /// the error back.
    async fn refused(
        &self,
        context: &AuditContext,
        change: &Change<'_>,
        dry_run: bool,
        err: ServiceError,
    ) -> ServiceError {
        if !dry_run {
            self.audit.record_failure(context, change.clone(), &err).await;
        }
        err
    }
}

/// The audited change of a retry of delivery `id` (of `webhook`, once it is known).
fn retry_change<'a>(id: &'a str, webhook: Option<&'a str>, reason: Option<&'a str>) -> Change<'a> {
    let target = Target { kind: "webhook_delivery", id: Some(id), name: webhook };
    Change::new("webhook_delivery.retry", target).reason(reason)
}

/// What changed from `old` to `new`, by name.
fn compare(old: &WebhookSettings, new: &WebhookSettings) -> ReloadSummary {
    let find = |set: &WebhookSettings, name: &str| set.webhook(name).cloned();
    let mut summary = ReloadSummary {
        delivery_changed: old.delivery != new.delivery,
        ..ReloadSummary::default()
    };
    for hook in &new.webhooks {
        match find(old, &hook.name) {
            None => summary.added.push(hook.name.clone()),
            Some(before) if !same(&before, hook) => summary.changed.push(hook.name.clone()),
            Some(_) => {}
        }
    }
    for hook in &old.webhooks {
        if find(new, &hook.name).is_none() {
            summary.removed.push(hook.name.clone());
        }
    }
    summary
}

fn same(a: &Webhook, b: &Webhook) -> bool {
    a.url == b.url
        && a.events == b.events
        && a.ca_pem == b.ca_pem
        && xerotier_credentials::secrets_equal(a.secret.expose_secret(), b.secret.expose_secret())
}

/// What SIGHUP re-reads the webhooks from: the service and the `--config` file, if any.
#[derive(Debug, Clone)]
pub struct WebhookReload {
    pub service: WebhookService,
    pub config_file: Option<PathBuf>,
}

impl WebhookReload {
    /// Reloads and logs the outcome: what changed (names only), or why the webhooks in force
    /// were kept.
    pub async fn run(&self, why: &str) {
        let Some(path) = &self.config_file else {
            tracing::info!(why, "no --config file: no webhooks to re-read");
            return;
        };
        match self.service.reload(path).await {
            Ok(summary) if summary.is_empty() => {
                tracing::info!(why, config = %path.display(), "webhooks re-read; unchanged");
            }
            Ok(summary) => tracing::info!(
                why, config = %path.display(), added = ?summary.added, removed = ?summary.removed,
                changed = ?summary.changed, delivery_settings_changed = summary.delivery_changed,
                webhooks = self.service.current().webhooks.len(),
                "webhooks reloaded; new deliveries follow the new set"
            ),
            Err(err) => tracing::error!(
                why, config = %path.display(), error = %err,
                "webhooks not reloaded; the webhooks in force so far stay"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use secrecy::SecretSlice;
    use settings::{DeliverySettings, EventFilter};

    fn hook(name: &str, url: &str, secret: &[u8]) -> Webhook {
        Webhook {
            name: name.into(),
            url: url.into(),
            events: EventFilter::All,
            secret: Arc::new(SecretSlice::from(secret.to_vec())),
            ca_pem: None,
        }
    }

    #[test]
    fn a_reload_names_what_was_added_removed_and_changed_secrets_included() {
        let old = WebhookSettings {
            webhooks: vec![
                hook("kept", "https://a.example/", b"s1"),
                hook("gone", "https://b.example/", b"s1"),
                hook("rekeyed", "https://c.example/", b"s1"),
                hook("moved", "https://d.example/", b"s1"),
            ],
            delivery: DeliverySettings::default(),
        };
        let new = WebhookSettings {
            webhooks: vec![
                hook("kept", "https://a.example/", b"s1"),
                hook("rekeyed", "https://c.example/", b"s2"),
                hook("moved", "https://e.example/", b"s1"),
                hook("new", "https://f.example/", b"s1"),
            ],
            delivery: DeliverySettings::default(),
        };
        let summary = compare(&old, &new);
        assert_eq!(summary.added, ["new"]);
        assert_eq!(summary.removed, ["gone"]);
        assert_eq!(summary.changed, ["rekeyed", "moved"]);
        assert!(!summary.delivery_changed);
        assert!(compare(&new, &new).is_empty());
        // What is logged names webhooks, never a secret.
        assert!(!format!("{summary:?}").contains("s2"));
    }
}
