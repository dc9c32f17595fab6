//! The agent's life: keys, enrollment (once), then a [`Session`] with the router until SIGTERM
//! or revocation. This file is the startup; the session's inputs are handled in `session`.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::ExposeSecret;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use xerotier_core::{SharedClock, SharedEntropy};
use xerotier_credentials::{CurveKeyPair, SigningKeyPair, read_secret_file};
use xerotier_proto::agents::CapabilityManifest;
use xerotier_sandbox::LandlockStatus;

use crate::catalog::Catalog;
use crate::config::XemConfig;
use crate::credentials::CredentialStore;
use crate::enroll::{Enrollment, enroll};
use crate::identity::{self, Identity};
use crate::metrics::{self, XemMetrics};
use crate::sandbox::Sandbox;
use crate::session::{Session, Setup, notify};
use crate::work::Work;
use crate::{reload, watch};

/// How long the background tasks (metrics server, watch) get to end after the session.
const TASKS_STOP: Duration = Duration::from_secs(2);

/// Time and randomness, made once in `main.rs` (the one wiring place) and handed down, so
/// nothing in the agent reaches for the system's own.
#[derive(Debug, Clone)]
pub struct Deps {
    pub clock: SharedClock,
    pub entropy: SharedEntropy,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM or SIGINT.
    Stopped,
    /// The router revoked this agent; it must re-enroll with a new join key.
    Revoked(String),
}

fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))
}

fn parent_of(path: &Path) -> Option<&Path> {
    path.parent().filter(|p| !p.as_os_str().is_empty())
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The identity on disk, or a fresh enrollment with the configured join key.
async fn identity(
    config: &XemConfig,
    curve: &CurveKeyPair,
    signing: &SigningKeyPair,
    manifest: &CapabilityManifest,
    clock: SharedClock,
) -> anyhow::Result<Identity> {
    if let Some(identity) = identity::load(&config.state_dir)? {
        tracing::info!(agent_id = %identity.agent_id, "enrolled identity found; no join key needed");
        return Ok(identity);
    }
    let join_key = match (&config.join_key, &config.join_key_file) {
        (Some(key), _) => key.clone(),
        (None, Some(file)) => read_secret_file(file)
            .with_context(|| format!("reading join_key_file {}", file.display()))?,
        (None, None) => bail!(
            "this host is not enrolled and no join key is configured (set join_key_file, or \
             join_key, in the config, or XEM_JOIN_KEY_FILE)"
        ),
    };
    let Some(router_url) = &config.router_url else {
        bail!("this host is not enrolled and no router_url is configured");
    };
    let registration_name = match config.registration_name.clone().or_else(host_name) {
        Some(name) => name,
        None => bail!("set registration_name: the host name could not be read"),
    };
    let (identity, mesh_addrs) = enroll(Enrollment {
        router_url,
        join_key: join_key.expose_secret(),
        registration_name: &registration_name,
        curve,
        signing,
        manifest,
        lease_renewal_interval_ms: config.lease_renewal_interval_ms,
        clock,
    })
    .await?;
    identity::save(&config.state_dir, &identity)?;
    crate::replicas::Replicas::save_enrolled(&config.state_dir, &identity.mesh_addr, mesh_addrs);
    tracing::info!(agent_id = %identity.agent_id, mesh = %identity.mesh_addr, "enrolled");
    Ok(identity)
}

/// The optional background tasks, started before anything else can fail late: the metrics
/// server (`metrics_listen`) and the credentials watch (`credentials_watch`), whose batches
/// of renamed files the session receives.
struct Background {
    tasks: Vec<JoinHandle<()>>,
    replaced: Option<mpsc::Receiver<BTreeSet<String>>>,
}

async fn start_background(
    config: &XemConfig,
    credentials: &CredentialStore,
    metrics: &XemMetrics,
    shutdown: &CancellationToken,
) -> anyhow::Result<Background> {
    let mut tasks = Vec::new();
    if let Some(addr) = config.metrics_listen {
        let listener =
            metrics::bind(addr).await.with_context(|| format!("metrics_listen {addr}"))?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
        tasks.push(metrics::spawn_server(listener, metrics.clone(), shutdown.clone()));
    }
    let mut replaced = None;
    if config.credentials_watch {
        let (tx, rx) = mpsc::channel(16);
        tasks.push(watch::spawn(credentials.dir(), credentials.refs(), tx, shutdown.clone())?);
        tracing::info!(dir = %credentials.dir().display(), "watching for credential files renamed into place");
        replaced = Some(rx);
    }
    Ok(Background { tasks, replaced })
}

pub async fn run(config: XemConfig, deps: Deps) -> anyhow::Result<Exit> {
    prepare_dirs(&config)?;
    let catalog = Catalog::load(&config.tools_dir)
        .with_context(|| format!("tools_dir {}", config.tools_dir.display()))?;
    let credentials =
        Arc::new(CredentialStore::new(config.credentials_dir.clone(), catalog.credential_refs()));
    let metrics = XemMetrics::new(deps.clock.clone());
    // The background tasks end with the agent, whichever way it ends (an early error too).
    let shutdown = CancellationToken::new();
    let _stop_background = shutdown.clone().drop_guard();
    let background = start_background(&config, &credentials, &metrics, &shutdown).await?;
    let (curve, signing) = load_keys(&config, &deps.entropy)?;
    let manifest = catalog.manifest();
    let identity = identity(&config, &curve, &signing, &manifest, deps.clock.clone()).await?;
    check_tool_views(&config, &catalog)?;
    let sandbox = prepare_sandbox(&config)?;
    for tool in catalog.tools() {
        sandbox.check_reachable(&tool.name, &tool.executable)?;
    }
    let max_concurrent = usize::try_from(config.max_concurrent_executions).unwrap_or(usize::MAX);
    let max_argument_bytes = usize::try_from(config.max_argument_bytes).unwrap_or(usize::MAX);
    let (agent_id, mesh_addr) = (identity.agent_id.clone(), identity.mesh_addr.clone());
    let (work, work_events) = Work::new(
        Arc::new(catalog),
        credentials.clone(),
        max_concurrent,
        Arc::new(sandbox),
        max_argument_bytes,
        deps.clock.clone(),
        metrics.clone(),
    );
    let setup = Setup {
        identity,
        curve,
        signing,
        manifest,
        curve_key_path: config.curve_key_path.clone(),
        signing_key_path: config.signing_key_path.clone(),
        state_dir: config.state_dir.clone(),
        lease_interval: Duration::from_millis(config.lease_renewal_interval_ms),
        shutdown_grace: Duration::from_secs(config.shutdown_grace_seconds),
        entropy: deps.entropy,
        clock: deps.clock.clone(),
        credentials,
        metrics,
        replaced: background.replaced,
    };
    let mut session = Session::new(setup, work, work_events).await;
    reload::write_pid(&config.state_dir)?;
    session.connect()?;
    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(%agent_id, mesh = %mesh_addr, "connecting to the router mesh");
    let exit = session.run().await;
    shutdown.cancel();
    for task in background.tasks {
        if tokio::time::timeout(TASKS_STOP, task).await.is_err() {
            tracing::warn!("a background task did not stop in time");
        }
    }
    exit
}

/// The state dir (private) and the key files' directories.
fn prepare_dirs(config: &XemConfig) -> anyhow::Result<()> {
    ensure_private_dir(&config.state_dir)?;
    for key_path in [&config.curve_key_path, &config.signing_key_path] {
        if let Some(dir) = parent_of(key_path) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    Ok(())
}

/// The agent's CURVE and signing keys, created at the first start. A rotation's promotion
/// that a crash cut between the two key files is finished first, so the keys loaded are the
/// pair the router holds.
fn load_keys(
    config: &XemConfig,
    entropy: &SharedEntropy,
) -> anyhow::Result<(CurveKeyPair, SigningKeyPair)> {
    if config.curve_key_path.exists() {
        let paths = crate::rotation::KeyPaths {
            curve: &config.curve_key_path,
            signing: &config.signing_key_path,
        };
        if crate::rotation::finish_interrupted(paths).context("finishing a key promotion")? {
            tracing::info!("finished a key promotion interrupted by a restart");
        }
    }
    let curve = CurveKeyPair::load_or_create(&config.curve_key_path, &**entropy)
        .with_context(|| format!("CURVE key {}", config.curve_key_path.display()))?;
    let signing = SigningKeyPair::load_or_create(&config.signing_key_path, &**entropy)
        .with_context(|| format!("signing key {}", config.signing_key_path.display()))?;
    Ok((curve, signing))
}

/// Tool runners kept started ahead of time (at most `max_concurrent_executions`).
const READY_RUNNERS: u64 = 2;

/// A tool may read its whole bundle and its `sandbox.read_paths`: none of them may hold the
/// agent's own secrets or another invocation's directory.
fn check_tool_views(config: &XemConfig, catalog: &Catalog) -> anyhow::Result<()> {
    let protected = [
        ("run_dir", &config.run_dir),
        ("state_dir", &config.state_dir),
        ("credentials_dir", &config.credentials_dir),
        ("curve_key_path", &config.curve_key_path),
        ("signing_key_path", &config.signing_key_path),
    ];
    for tool in catalog.tools() {
        let bundle = tool.executable.parent().map(Path::to_path_buf);
        for readable in bundle.iter().chain(&tool.sandbox.read_paths) {
            for (name, path) in protected {
                let path = path.canonicalize().unwrap_or_else(|_| path.clone());
                if path.starts_with(readable) {
                    bail!(
                        "tool {}: it may read {}, which holds {name} {}; move one of them",
                        tool.name,
                        readable.display(),
                        path.display()
                    );
                }
            }
        }
    }
    Ok(())
}

/// Tools run as `tool_user` through the runner; the probe proves it works here before the
/// agent takes any work, and says how far Landlock narrows what tools see.
fn prepare_sandbox(config: &XemConfig) -> anyhow::Result<Sandbox> {
    // A few runners wait started, so a tool's start is one exec; bursts start more.
    let ready = usize::try_from(config.max_concurrent_executions.min(READY_RUNNERS)).unwrap_or(1);
    let sandbox =
        Sandbox::prepare(&config.tool_user, config.tool_runner.as_deref(), &config.run_dir, ready)
            .context("preparing tool isolation")?;
    let uid = sandbox.identity.map(|i| i.uid);
    match sandbox.landlock {
        LandlockStatus::Unavailable => tracing::warn!(
            tool_user = %sandbox.tool_user, ?uid,
            "Landlock is not available on this kernel: tools are confined by unix permissions \
             only, and tools with sandbox.landlock: required will not start"
        ),
        status => tracing::info!(
            tool_user = %sandbox.tool_user, ?uid, landlock = status.as_str(),
            run_dir = %sandbox.run_dir().display(), "tools run isolated"
        ),
    }
    Ok(sandbox)
}
