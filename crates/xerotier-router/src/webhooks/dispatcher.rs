//! The background task that delivers security events to webhooks.
//!
//! Each pass: (1) fan-out: for every webhook, the events committed after its cursor become
//! one delivery each when the webhook subscribes to them (a row per webhook and event, so two
//! replicas doing this at once create it once); (2) claim due deliveries under a lease, as
//! many as there are free slots (`max_in_flight`), and attempt each on its own task, so a
//! receiver that hangs holds one slot for at most the timeout and never blocks another
//! webhook's delivery. Each pass reads the webhooks in force afresh, so a SIGHUP reload
//! applies from the next pass; a reload, or a retry an operator asks for, wakes it before its
//! poll interval. On PostgreSQL every replica's dispatcher also wakes on `NOTIFY
//! xerotier_webhooks`, sent when any replica commits a security event or retries a delivery
//! and heard by the replica's listener (`replication::task`) with the other channels, so an
//! event is delivered at once whichever replica wrote it; the poll is a safety net.

use std::collections::HashMap;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use xerotier_core::IdKind;
use xerotier_credentials::webhook_signature;
use xerotier_store::{AttemptEnd, AttemptResult, NewDelivery, StoreError, WebhookDelivery};

use super::WebhookService;
use super::settings::{DeliverySettings, Webhook, WebhookSettings};

/// Events read per webhook per pass.
const FAN_OUT_BATCH: u32 = 200;
/// The most of a receiver's answer kept as the delivery's error.
const BODY_EXCERPT_BYTES: usize = 120;

/// What one attempt's outcome is counted as in `xerotier_router_webhook_deliveries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Retry,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retry => "retry",
            Outcome::Failed => "failed",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot build the HTTP client for webhook {name}: {message}")]
    Client { name: String, message: String },
}

/// One HTTP client per webhook: its own CA, no redirects (a receiver cannot send the signed
/// event elsewhere), the attempt timeout.
pub(crate) fn clients(
    settings: &WebhookSettings,
) -> Result<HashMap<String, reqwest::Client>, DispatchError> {
    let timeout = Duration::from_millis(settings.delivery.timeout_ms);
    let mut clients = HashMap::new();
    for hook in &settings.webhooks {
        let fail = |message: String| DispatchError::Client { name: hook.name.clone(), message };
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("xerotier-router/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &hook.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| fail(format!("ca_file: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        clients.insert(hook.name.clone(), builder.build().map_err(|e| fail(e.to_string()))?);
    }
    Ok(clients)
}

impl WebhookService {
    /// Starts the dispatcher. A webhook seen for the first time starts at the events committed
    /// so far: its cursor is fixed here, before the router serves a request, so that nothing
    /// done through this router after its start can fall before the cursor (the first pass
    /// comes a poll interval later); one added by a reload gets its cursor in the reload. The
    /// task runs without webhooks too (a reload may add some), and then touches nothing.
    pub async fn spawn_dispatcher(
        &self,
        owner: String,
        cancel: CancellationToken,
    ) -> Result<JoinHandle<()>, DispatchError> {
        for hook in &self.current().webhooks {
            self.store.webhook_cursor(&hook.name).await?;
        }
        let service = self.clone();
        Ok(tokio::spawn(async move { service.run(owner, cancel).await }))
    }

    async fn run(self, owner: String, cancel: CancellationToken) {
        let mut in_flight: JoinSet<()> = JoinSet::new();
        loop {
            let poll = Duration::from_millis(self.current().delivery.poll_interval_ms);
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(poll) => {}
                () = self.wake.notified() => {}
            }
            while in_flight.try_join_next().is_some() {}
            // One snapshot per pass: a reload in the middle of it applies from the next.
            let active = self.active();
            let settings = &active.settings;
            if settings.webhooks.is_empty() {
                // Nothing configured: deliveries of webhooks configured before stay as they
                // are (pending ones resume if their webhook comes back).
                continue;
            }
            let delivery = &settings.delivery;
            // Long enough for one attempt and its bookkeeping; a replica that dies mid-attempt
            // gives the delivery back when it runs out.
            let lease_ms = i64::try_from(delivery.timeout_ms.saturating_mul(2))
                .unwrap_or(i64::MAX)
                .saturating_add(5_000);
            if let Err(err) = self.fan_out(settings).await {
                tracing::warn!(error = %err, "webhook fan-out failed; retried next pass");
            }
            let busy = u32::try_from(in_flight.len()).unwrap_or(u32::MAX);
            let free = delivery.max_in_flight.saturating_sub(busy);
            if free > 0 {
                let now = self.clock.now_millis();
                match self.store.claim_deliveries(&owner, now, lease_ms, free).await {
                    Ok(claimed) => {
                        for d in claimed {
                            let hook = settings.webhook(&d.webhook);
                            let client = active.clients.get(&d.webhook);
                            let (Some(hook), Some(client)) = (hook, client) else {
                                self.settle_unconfigured(&owner, &d).await;
                                continue;
                            };
                            let (service, owner) = (self.clone(), owner.clone());
                            let (hook, client) = (hook.clone(), client.clone());
                            let max_attempts = delivery.max_attempts;
                            let backoff = delivery.clone();
                            in_flight.spawn(async move {
                                service
                                    .attempt(&owner, &client, &hook, max_attempts, &backoff, d)
                                    .await
                            });
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "claiming webhook deliveries failed"),
                }
            }
            match self.store.pending_webhook_deliveries().await {
                Ok(n) => self.metrics.webhook_pending(n),
                Err(err) => tracing::debug!(error = %err, "counting pending deliveries failed"),
            }
        }
        // Whatever is in flight is dropped; its lease runs out and it is attempted again.
        in_flight.abort_all();
        while in_flight.join_next().await.is_some() {}
    }

    /// Creates the deliveries of every event after each webhook's cursor.
    async fn fan_out(&self, settings: &WebhookSettings) -> Result<(), StoreError> {
        for hook in &settings.webhooks {
            let cursor = self.store.webhook_cursor(&hook.name).await?;
            let events = self.store.security_events_after(cursor, FAN_OUT_BATCH).await?;
            let Some((last, _)) = events.last() else { continue };
            let last = *last;
            let deliveries: Vec<NewDelivery> = events
                .into_iter()
                .filter(|(_, e)| hook.events.matches(&e.event_type))
                .map(|(_, e)| NewDelivery {
                    id: self.ids.next(IdKind::Delivery),
                    event_id: e.id,
                    event_type: e.event_type,
                })
                .collect();
            let now = self.clock.now_millis();
            self.store.enqueue_deliveries(&hook.name, last, &deliveries, now).await?;
        }
        Ok(())
    }

    /// A delivery whose webhook left the config: it cannot be sent, and is not kept pending.
    async fn settle_unconfigured(&self, owner: &str, d: &WebhookDelivery) {
        let result = AttemptResult {
            at: self.clock.now_millis(),
            status_code: None,
            error: Some("the webhook is no longer configured".into()),
            end: AttemptEnd::Failed,
        };
        if let Err(err) = self.store.finish_attempt(&d.id, owner, &result).await {
            tracing::warn!(delivery = %d.id, error = %err, "could not settle a delivery");
        }
    }

    /// One attempt of `d`, recorded.
    async fn attempt(
        &self,
        owner: &str,
        client: &reqwest::Client,
        hook: &Webhook,
        max_attempts: u32,
        backoff: &DeliverySettings,
        d: WebhookDelivery,
    ) {
        let sent = match self.store.security_event(&d.event_id).await {
            Ok(Some(event)) => self.post(client, hook, &d, event.payload.into_bytes()).await,
            Ok(None) => Sent { status: None, error: Some("the event is gone".into()), ok: false },
            Err(err) => {
                tracing::warn!(delivery = %d.id, error = %err, "reading the event failed");
                return; // the lease runs out and it is tried again
            }
        };
        let now = self.clock.now_millis();
        let attempts = d.attempts.saturating_add(1);
        let end = if sent.ok {
            AttemptEnd::Delivered
        } else if attempts >= i64::from(max_attempts) {
            AttemptEnd::Failed
        } else {
            AttemptEnd::Retry(now.saturating_add(self.backoff_ms(backoff, attempts)))
        };
        let outcome = match end {
            AttemptEnd::Delivered => Outcome::Delivered,
            AttemptEnd::Retry(_) => Outcome::Retry,
            AttemptEnd::Failed => Outcome::Failed,
        };
        let result = AttemptResult { at: now, status_code: sent.status, error: sent.error, end };
        match self.store.finish_attempt(&d.id, owner, &result).await {
            Ok(Some(_)) => {
                self.metrics.webhook_delivery(&d.webhook, outcome.as_str());
                if outcome == Outcome::Failed {
                    tracing::warn!(webhook = %d.webhook, delivery = %d.id, event = %d.event_type, attempts, "webhook delivery failed after its last attempt");
                }
            }
            Ok(None) => {
                tracing::info!(delivery = %d.id, "lease lost before the attempt was recorded; another replica has it")
            }
            Err(err) => {
                tracing::warn!(delivery = %d.id, error = %err, "recording a webhook attempt failed")
            }
        }
    }

    async fn post(
        &self,
        client: &reqwest::Client,
        hook: &Webhook,
        d: &WebhookDelivery,
        body: Vec<u8>,
    ) -> Sent {
        let timestamp = self.clock.now_millis().div_euclid(1000);
        let signature = webhook_signature::sign(hook.secret(), timestamp, &body);
        let request = client
            .post(&hook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Xerotier-Event", &d.event_type)
            .header("X-Xerotier-Delivery", &d.id)
            .header("X-Xerotier-Timestamp", timestamp.to_string())
            .header("X-Xerotier-Signature", signature)
            .body(body);
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                Sent { status: Some(i64::from(response.status().as_u16())), error: None, ok: true }
            }
            Ok(mut response) => {
                let status = response.status();
                // A bounded excerpt of the first chunk, never the whole body.
                let excerpt = match response.chunk().await {
                    Ok(Some(bytes)) => {
                        let cut = &bytes[..bytes.len().min(BODY_EXCERPT_BYTES)];
                        String::from_utf8_lossy(cut).into_owned()
                    }
                    _ => String::new(),
                };
                Sent {
                    status: Some(i64::from(status.as_u16())),
                    error: Some(
                        format!("HTTP {status}: {excerpt}").trim_end_matches(": ").to_string(),
                    ),
                    ok: false,
                }
            }
            // Without the URL: it may carry a token in its query.
            Err(err) => {
                let kind = if err.is_timeout() {
                    "timed out"
                } else if err.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                };
                let detail = err.without_url().to_string();
                Sent { status: None, error: Some(format!("{kind}: {detail}")), ok: false }
            }
        }
    }

    /// Exponential backoff with jitter: the initial delay doubled per attempt made, capped,
    /// then scaled by a random factor in [0.75, 1.25) so replicas and receivers recovering
    /// together are not hit in step.
    fn backoff_ms(&self, settings: &DeliverySettings, attempts_made: i64) -> i64 {
        backoff_ms(settings, attempts_made, {
            let mut b = [0u8; 2];
            self.entropy.fill(&mut b);
            u16::from_le_bytes(b)
        })
    }
}

/// Delay before the attempt after `attempts_made`, for a random `jitter` (0-65535).
pub fn backoff_ms(settings: &DeliverySettings, attempts_made: i64, jitter: u16) -> i64 {
    let exponent = u32::try_from(attempts_made.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let base =
        settings.backoff_initial_ms.saturating_mul(1u64 << exponent).min(settings.backoff_max_ms);
    // base × (0.75 + 0.5 × jitter/65536), in integers.
    let scaled = u128::from(base) * (49_152 + u128::from(jitter) / 2) / 65_536;
    i64::try_from(scaled).unwrap_or(i64::MAX).max(1)
}

/// What an attempt came to.
struct Sent {
    status: Option<i64>,
    error: Option<String>,
    ok: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered_within_a_quarter() {
        let s = DeliverySettings::default();
        let mid = |n| backoff_ms(&s, n, 32_768);
        assert_eq!((mid(1), mid(2), mid(3)), (30_000, 60_000, 120_000));
        assert_eq!(mid(20), 1_800_000, "capped");
        assert_eq!(backoff_ms(&s, 1, 0), 22_500);
        assert_eq!(backoff_ms(&s, 1, u16::MAX), 37_499);
        // The default schedule: 7 waits between 8 attempts, about an hour in all.
        let total: i64 = (1..8).map(mid).sum();
        assert!((3_600_000..=4_000_000).contains(&total), "{total}");
    }
}
