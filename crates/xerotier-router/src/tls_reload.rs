//! What SIGHUP reloads, and keeping the presented certificate current: SIGHUP re-reads the
//! operator's certificate files (or renews the generated certificate if due) and the webhooks
//! of the config file; an hourly check renews the generated certificate before expiry.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use xerotier_core::SharedClock;
use xerotier_tls::{Reloaded, ServerTls};

use crate::mesh_link::CaPin;
use crate::webhooks::WebhookReload;

/// How often the generated certificate's expiry is looked at.
const RENEWAL_CHECK: Duration = Duration::from_secs(3_600);

/// Reloads on SIGHUP until `shutdown`: the TLS certificate, then the webhooks. `systemctl
/// reload` sends it (the default action would kill the router). Each part that cannot reload
/// keeps what is in force and logs why; neither stops the router.
pub fn spawn_sighup_reloads(
    tls: Option<Arc<ServerTls>>,
    pin: &CaPin,
    clock: &SharedClock,
    webhooks: WebhookReload,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let (pin, clock) = (pin.clone(), clock.clone());
    tokio::spawn(async move {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP");
            return;
        };
        while shutdown.run_until_cancelled(hup.recv()).await.flatten().is_some() {
            notify(sd_notify::NotifyState::Reloading);
            match &tls {
                Some(tls) => reload(tls, &pin, &clock, "SIGHUP"),
                None => tracing::info!("SIGHUP: plain HTTP, no certificate to reload"),
            }
            webhooks.run("SIGHUP").await;
            notify(sd_notify::NotifyState::Ready);
        }
    })
}

/// Renews the generated server certificate when it is due, checking hourly until `shutdown`.
pub fn spawn_renewal(
    tls: Arc<ServerTls>,
    pin: &CaPin,
    clock: &SharedClock,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let (pin, clock) = (pin.clone(), clock.clone());
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(RENEWAL_CHECK);
        while shutdown.run_until_cancelled(ticks.tick()).await.is_some() {
            if tls.renewal_due(clock.now_millis() / 1000) {
                reload(&tls, &pin, &clock, "renewal");
            }
        }
    })
}

fn reload(tls: &ServerTls, pin: &CaPin, clock: &SharedClock, why: &str) {
    let before = tls.ca_pin();
    let outcome = tls.reload(clock.now_millis() / 1000);
    pin.set(Some(tls.ca_pin()));
    match outcome {
        Ok(Reloaded::Replaced { ca_pin }) if ca_pin != before => tracing::warn!(
            why, ca = %ca_pin, previous_ca = %before,
            "TLS certificate replaced under a different CA: join keys minted before pin the old \
             CA and their agents cannot enroll; mint new ones"
        ),
        Ok(Reloaded::Replaced { ca_pin }) => {
            tracing::info!(why, ca = %ca_pin, not_after = ?tls.not_after(), "TLS certificate replaced");
        }
        Ok(Reloaded::Unchanged) => tracing::info!(why, "TLS certificate current; nothing to renew"),
        Err(err) => tracing::error!(
            why, error = %err,
            "TLS reload failed; the certificate presented so far stays in place"
        ),
    }
}

fn notify(state: sd_notify::NotifyState<'_>) {
    if let Err(err) = sd_notify::notify(false, &[state]) {
        tracing::debug!(error = %err, "sd_notify failed");
    }
}
