//! The router daemon: open the store, bootstrap, serve until SIGTERM/SIGINT.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use xerotier_core::{OsEntropy, SharedClock, SharedEntropy, SystemClock};
use xerotier_seal::{SealError, Sealer};
use xerotier_store::{Store, redact_url, sqlite_path};
use xerotier_tls::{CertSource, ServerTls};

use crate::AppState;
use crate::config::{HttpMode, RouterConfig};
use crate::fleet::identity::IdentityError;
use crate::master_key::MasterKeyFailure;
use crate::tls_reload;
use crate::webhooks::WebhookReload;

/// Written to the state dir once the HTTP listener is bound: the actual address (useful with
/// `--listen 127.0.0.1:0`).
pub const HTTP_ADDR_FILE: &str = "http.addr";
/// Written to the state dir once the mesh endpoint is bound: the address agents are given.
pub const MESH_ADDR_FILE: &str = "mesh.addr";

/// How long in-flight HTTP requests get to finish after SIGTERM before the router stops
/// waiting for them (live event streams end at once).
const HTTP_DRAIN: Duration = Duration::from_secs(10);
/// How long the mesh's tasks get to finish the frame or pass they are on.
const TASKS_DRAIN: Duration = Duration::from_secs(10);

/// The router's own TLS certificate: issued by the CA in the store (sealed), or on the first
/// start by the CA a standalone certificate directory holds (an upgrade), or by a new one;
/// the bootstrap then imports it.
async fn own_tls(
    state: &AppState,
    dir: &std::path::Path,
    sans: &[String],
    clock: &SharedClock,
) -> anyhow::Result<ServerTls> {
    let now = clock.now_millis() / 1000;
    let ca = match state.router_keys.current_tls_ca().await.context("reading the TLS CA")? {
        Some(ca) => ca,
        None => match xerotier_tls::files_ca(dir).context("reading the TLS CA files")? {
            Some(ca) => ca,
            None => {
                tracing::info!("created the router's private TLS CA");
                xerotier_tls::new_ca("Xerotier router CA", now)?
            }
        },
    };
    ServerTls::from_ca(dir.to_path_buf(), sans.to_vec(), ca, now)
        .context("issuing the TLS certificate")
}

/// Runs the router until SIGTERM/SIGINT (or a dead mesh thread), then stops in order: HTTP
/// drains, background tasks finish and are joined, the mesh threads stop, and only then does
/// the store close, so nothing is written to a closed store.
pub async fn run(config: RouterConfig) -> anyhow::Result<()> {
    // First: without its master key the router can read none of its secrets, so it refuses
    // before it creates or touches anything.
    let master_key = crate::master_key::load(config.master_key.as_ref())?;
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating state dir {}", config.state_dir.display()))?;
    std::fs::set_permissions(&config.state_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting state dir {}", config.state_dir.display()))?;

    // The one place production time and randomness are wired in.
    let clock: SharedClock = Arc::new(SystemClock);
    // Test builds only: a replica whose clock is off (`test_faults::offset_clock`).
    #[cfg(feature = "test-faults")]
    let clock = crate::test_faults::offset_clock(clock);
    // The operator's certificate is read before anything else; the router's own CA lives in
    // the store, sealed, and is read once the store is open.
    let operator_tls = match &config.http {
        HttpMode::Tls(source @ CertSource::Operator { .. }) => Some(Arc::new(
            ServerTls::load(source.clone(), clock.now_millis() / 1000)
                .context("loading the TLS certificate")?,
        )),
        _ => None,
    };
    let fleet = config.fleet.clone();
    let ca_pin = fleet.tls_ca_pin.clone();

    let store_url = config.store_url();
    let _owner = lock_sqlite_store(store_url.expose_secret())?;
    let store = Store::connect(store_url.expose_secret()).await.with_context(|| {
        format!("opening the state store {}", redact_url(store_url.expose_secret()))
    })?;
    tracing::info!(backend = store.backend().name(), "state store ready");
    let entropy: SharedEntropy = Arc::new(OsEntropy);
    let sealer = Sealer::new(master_key, entropy.clone());
    tracing::info!(kek_id = sealer.kek_id(), "router secrets sealed under this master key");
    let state = AppState::load(store.clone(), clock.clone(), entropy, sealer, fleet, config.limits)
        .await
        .map_err(|err| match err {
            IdentityError::Seal(err @ SealError::WrongKey { .. }) => {
                anyhow::Error::new(MasterKeyFailure::WrongKey(err))
            }
            err => anyhow::Error::new(err),
        })
        .context("loading the router identity")?;

    // The router's own keys: import the identity's on the first start, then serve what
    // `router_keys` says (a rotation in progress included) before anything is served.
    let tls = match &config.http {
        HttpMode::Tls(CertSource::Generated { dir, sans }) => {
            Some(Arc::new(own_tls(&state, dir, sans, &clock).await?))
        }
        HttpMode::Tls(CertSource::Operator { .. }) => operator_tls,
        HttpMode::Insecure => None,
    };
    ca_pin.set(tls.as_ref().map(|tls| tls.ca_pin()));
    if let Some(tls) = &tls {
        state.link.attach_server_tls(tls.clone());
    }
    let tls_ca = match &tls {
        Some(tls) => tls.generated_ca().context("reading the router's TLS CA")?,
        None => None,
    };
    state
        .router_keys
        .bootstrap(&state.link.identity, tls_ca.as_ref())
        .await
        .context("importing the router keys")?;
    if let HttpMode::Tls(CertSource::Generated { dir, .. }) = &config.http
        && xerotier_tls::remove_files_ca_key(dir).context("removing the TLS CA key file")?
    {
        tracing::info!(
            dir = %dir.display(),
            "the TLS CA's private key is kept sealed in the store only; its file was removed"
        );
    }
    state.router_keys.reconcile_all().await.context("applying the router keys")?;

    #[cfg(feature = "test-faults")]
    crate::test_faults::arm(&state);

    match state.api_keys.bootstrap(&config.state_dir).await {
        Ok(Some(path)) => tracing::info!(
            file = %path.display(),
            "bootstrap admin API key created (scopes management,execution); its value is in the file only"
        ),
        Ok(None) => tracing::debug!("store already bootstrapped"),
        Err(err) => return Err(anyhow::anyhow!("bootstrapping the admin key: {err}")),
    }

    // Bound before the mesh starts, so the replica registers with its real address.
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding HTTP listener on {}", config.listen))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let https_url = config.public_url.clone().unwrap_or_else(|| format!("{scheme}://{local}"));

    let policy = state.posture.policy();
    tracing::info!(
        profile = policy.profile.map_or("none", |p| p.as_str()),
        "credential policy: {}",
        policy
            .rules()
            .iter()
            .map(|r| format!(
                "{} {} ({})",
                r.kind,
                r.max_age_ms.map_or_else(|| "none".into(), xerotier_posture::format_duration),
                r.name
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for warning in &policy.warnings {
        tracing::warn!("{warning}");
    }

    state.webhooks.configure(config.webhooks.clone()).context("configuring the webhooks")?;
    let shutdown = CancellationToken::new();
    let mut mesh = crate::mesh_runtime::start(state.runtime_deps(), https_url, &shutdown).await?;
    let last_used = state.gate.auth.spawn_last_used_writer(shutdown.child_token());
    let grace_watch = state.api_keys.spawn_grace_watch(shutdown.child_token());
    let webhook_reload =
        WebhookReload { service: state.webhooks.clone(), config_file: config.config_file.clone() };
    let reloads = tls_reload::spawn_sighup_reloads(
        tls.clone(),
        &ca_pin,
        &clock,
        webhook_reload,
        shutdown.child_token(),
    );
    let renewal = tls
        .clone()
        .map(|tls| tls_reload::spawn_renewal(tls, &ca_pin, &clock, shutdown.child_token()));
    let stream_watch = state.streams.spawn_watch(shutdown.child_token());
    let key_sweep =
        state.router_keys.spawn_sweep(std::time::Duration::from_secs(1), shutdown.child_token());
    let event_listener = state.events.spawn_listener(shutdown.child_token());
    let numbering = state.events.spawn_numbering(shutdown.child_token());
    let webhooks = state
        .webhooks
        .spawn_dispatcher(state.link.replica_id.clone(), shutdown.child_token())
        .await
        .context("starting the webhook dispatcher")?;
    if !config.webhooks.webhooks.is_empty() {
        tracing::info!(webhooks = config.webhooks.webhooks.len(), "webhook dispatcher started");
    }
    xerotier_credentials::write_secret_file(
        &config.state_dir.join(MESH_ADDR_FILE),
        format!("{}\n", state.link.advertised_mesh_addr()).as_bytes(),
    )
    .context("writing the mesh address file")?;

    xerotier_credentials::write_secret_file(
        &config.state_dir.join(HTTP_ADDR_FILE),
        format!("{local}\n").as_bytes(),
    )
    .context("writing the address file")?;
    match &tls {
        Some(tls) => tracing::info!(
            addr = %local, ca = %tls.ca_pin(),
            "HTTPS API listening on https://{local} (clients trust the CA with this fingerprint)"
        ),
        None => tracing::warn!(
            addr = %local,
            "plain HTTP API listening on http://{local} (--insecure-http; loopback only)"
        ),
    }
    notify(&[sd_notify::NotifyState::Ready]);

    let events = state.events.clone();
    let exec = state.exec.clone();
    let app = crate::http::app(state);
    let stopping = CancellationToken::new();
    let mut fatal = None;
    let serve = tokio::spawn(crate::http::listener::serve(
        listener,
        tls.as_ref().map(|tls| tls.config()),
        app,
        stopping.clone(),
    ));
    tokio::select! {
        () = shutdown_signal() => {}
        message = mesh.fatal.recv() => {
            let message = message.unwrap_or_else(|| "mesh runtime ended".into());
            tracing::error!(%message, "mesh failed; stopping the router");
            fatal = Some(message);
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    // Live event streams would hold HTTP open forever: end them, then drain the rest.
    events.close();
    exec.close_output_streams();
    stopping.cancel();
    match tokio::time::timeout(HTTP_DRAIN, serve).await {
        Ok(Ok(())) => tracing::info!("HTTP drained"),
        Ok(Err(err)) => tracing::error!(error = %err, "HTTP server task failed"),
        Err(_) => tracing::warn!("HTTP requests still open after {HTTP_DRAIN:?}; abandoned"),
    }
    shutdown.cancel();
    mesh.stop(TASKS_DRAIN).await;
    let tasks = [
        ("last-used writer", Some(last_used)),
        ("grace-window watch", Some(grace_watch)),
        ("live stream watch", Some(stream_watch)),
        ("router key sweep", Some(key_sweep)),
        ("event listener", Some(event_listener)),
        ("event and audit numbering", Some(numbering)),
        ("reload handler", Some(reloads)),
        ("TLS renewal", renewal),
        ("webhook dispatcher", Some(webhooks)),
    ];
    for (name, task) in tasks {
        let Some(task) = task else { continue };
        if let Err(err) = task.await {
            tracing::error!(task = name, error = %err, "task failed");
        }
    }
    store.close().await;
    if let Some(message) = fatal {
        anyhow::bail!("mesh failed: {message}");
    }
    tracing::info!("router stopped");
    Ok(())
}

/// A SQLite store belongs to one router process: the key cache relies on seeing every change.
/// The lock is held until the returned file is dropped (process exit).
pub fn lock_sqlite_store(url: &str) -> anyhow::Result<Option<std::fs::File>> {
    let Some(db) = sqlite_path(url) else { return Ok(None) };
    let lock_path = PathBuf::from(format!("{}.lock", db.display()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another router is already using the SQLite store {} (lock {}); \
             several routers must share a PostgreSQL database (--database-url postgres://…)",
            db.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(err)) => {
            Err(err).with_context(|| format!("locking {}", lock_path.display()))
        }
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::debug!(error = %err, "sd_notify failed");
    }
}

async fn shutdown_signal() {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight requests"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: finishing in-flight requests"),
    }
}
