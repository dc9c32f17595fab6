//! The agent's life: keys, enrollment (once), then a CURVE session with lease renewals until
//! SIGTERM or revocation.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};
use xerotier_core::{OsEntropy, SystemClock};
use xerotier_credentials::{CurveKeyPair, SigningKeyPair};
use xerotier_mesh::{ClientEvent, ClientKeys, MeshClient};
use xerotier_proto::agents::CapabilityManifest;
use xerotier_proto::mesh::Frame;
use xerotier_proto::workspace_credentials::ReloadReport;

use crate::catalog::Catalog;
use crate::config::XemConfig;
use crate::credentials::CredentialStore;
use crate::enroll::{Enrollment, enroll};
use crate::identity::{self, Identity};
use crate::reload;
use crate::rotation;
use crate::work::{Work, WorkEvent};

/// The agent concludes its key is no longer accepted after this many consecutive handshake
/// refusals spread over at least [`REJECTED_FOR_AT_LEAST`]: three times the router's default
/// allow-list refresh, so an agent enrolled through one replica and connecting to another is
/// not mistaken for a revoked one.
const REJECTIONS_BEFORE_GIVING_UP: u32 = 3;
const REJECTED_FOR_AT_LEAST: Duration = Duration::from_secs(6);

/// 0.5 s, 1 s, then 2 s between handshake retries.
fn rejection_backoff(rejections: u32) -> Duration {
    Duration::from_millis((250u64 << rejections.min(3)).min(2_000))
}
/// After the shutdown grace period, how long killed invocations get to report.
const KILLED_RESULTS_WAIT: Duration = Duration::from_secs(5);
/// How long a stopping agent waits for the router to acknowledge its last results.
const RESULT_ACK_WAIT: Duration = Duration::from_secs(2);

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
) -> anyhow::Result<Identity> {
    if let Some(identity) = identity::load(&config.state_dir)? {
        tracing::info!(agent_id = %identity.agent_id, "enrolled identity found; no join key needed");
        return Ok(identity);
    }
    let Some(join_key) = &config.join_key else {
        bail!(
            "this host is not enrolled and no join_key is configured (set join_key in the config or XEM_JOIN_KEY)"
        );
    };
    let Some(router_url) = &config.router_url else {
        bail!("this host is not enrolled and no router_url is configured");
    };
    let registration_name = match config.registration_name.clone().or_else(host_name) {
        Some(name) => name,
        None => bail!("set registration_name: the host name could not be read"),
    };
    let identity = enroll(Enrollment {
        router_url,
        join_key,
        registration_name: &registration_name,
        curve,
        signing,
        manifest,
        lease_renewal_interval_ms: config.lease_renewal_interval_ms,
    })
    .await?;
    identity::save(&config.state_dir, &identity)?;
    tracing::info!(agent_id = %identity.agent_id, mesh = %identity.mesh_addr, "enrolled");
    Ok(identity)
}

pub async fn run(config: XemConfig) -> anyhow::Result<Exit> {
    ensure_private_dir(&config.state_dir)?;
    for key_path in [&config.curve_key_path, &config.signing_key_path] {
        if let Some(dir) = parent_of(key_path) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    let catalog = Catalog::load(&config.tools_dir)
        .with_context(|| format!("tools_dir {}", config.tools_dir.display()))?;
    let credentials =
        Arc::new(CredentialStore::new(config.credentials_dir.clone(), catalog.credential_refs()));
    let curve = CurveKeyPair::load_or_create(&config.curve_key_path, &OsEntropy)
        .with_context(|| format!("CURVE key {}", config.curve_key_path.display()))?;
    let signing = SigningKeyPair::load_or_create(&config.signing_key_path, &OsEntropy)
        .with_context(|| format!("signing key {}", config.signing_key_path.display()))?;
    let manifest = catalog.manifest();
    let manifest_hash = manifest.hash();
    let identity = identity(&config, &curve, &signing, &manifest).await?;

    // Per-invocation directories hold credential copies; a crash may have left some behind.
    let run_dir = config.state_dir.join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("clearing {}", run_dir.display()))?;
    }
    ensure_private_dir(&run_dir)?;
    let max_concurrent = usize::try_from(config.max_concurrent_executions).unwrap_or(usize::MAX);
    let (mut work, mut work_events) =
        Work::new(Arc::new(catalog), credentials, max_concurrent, run_dir, Arc::new(SystemClock));
    let mut last_reload = work.reload("startup").await;
    log_reload(&last_reload);
    let mut reload_seq = 1;
    record_reload(&config.state_dir, reload_seq, &last_reload);
    reload::write_pid(&config.state_dir)?;

    let fault = TestFault::from_env();
    let mut curve = curve;
    let (mut client, mut events) = connect(&identity, &curve)?;
    let hello = Frame::Hello {
        agent_id: identity.agent_id.clone(),
        xem_version: env!("CARGO_PKG_VERSION").to_string(),
        manifest_hash: manifest_hash.clone(),
        manifest_version: manifest.version,
    };
    let manifest_frame =
        Frame::Manifest { agent_id: identity.agent_id.clone(), manifest: manifest.clone() };
    // Hello goes out on every handshake (the `Connected` event), including the first.
    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(agent_id = %identity.agent_id, mesh = %identity.mesh_addr, "connecting to the router mesh");

    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut lease = tokio::time::interval(Duration::from_millis(config.lease_renewal_interval_ms));
    let mut seq: u64 = 0;
    let mut rejections = 0;
    let mut first_rejection: Option<tokio::time::Instant> = None;
    let mut last_ack: Option<Frame> = None;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    loop {
        if drain_deadline.is_some() && work.running() == 0 {
            break;
        }
        let deadline = drain_deadline;
        tokio::select! {
            _ = lease.tick() => {
                seq += 1;
                client.send(&Frame::LeaseRenewal {
                    agent_id: identity.agent_id.clone(),
                    seq,
                    in_flight: work.in_flight(),
                    manifest_hash: manifest_hash.clone(),
                    manifest_version: manifest.version,
                })?;
                for frame in work.unacknowledged() {
                    client.send(&frame)?;
                }
            }
            event = work_events.recv() => match event {
                Some(WorkEvent::Send(frame)) => client.send(&frame)?,
                Some(WorkEvent::Finished(result)) => {
                    tracing::info!(invocation_id = %result.invocation_id, status = result.status.as_str(), "invocation ended");
                    client.send(&work.finished(result))?;
                }
                None => bail!("the invocation runner stopped"),
            },
            event = events.recv() => match event {
                Some(ClientEvent::Connected) => {
                    rejections = 0;
                    first_rejection = None;
                    tracing::info!("mesh session established");
                    client.send(&hello)?;
                    client.send(&manifest_frame)?;
                    client.send(&Frame::CredentialsReloaded { report: last_reload.clone() })?;
                }
                Some(ClientEvent::AuthRejected) => {
                    rejections += 1;
                    let first = *first_rejection.get_or_insert_with(tokio::time::Instant::now);
                    tracing::warn!(rejections, "the router refused this agent's CURVE key");
                    if rejections >= REJECTIONS_BEFORE_GIVING_UP && first.elapsed() >= REJECTED_FOR_AT_LEAST {
                        work.cancel_all();
                        return Ok(Exit::Revoked("the router no longer accepts this agent's CURVE key".into()));
                    }
                    // libzmq does not retry a connection the server refused at the handshake;
                    // retry ourselves after a pause: the refusal may be transient (a replica
                    // that has not yet re-read its allow-list after an enrollment elsewhere).
                    drop(client);
                    tokio::time::sleep(rejection_backoff(rejections)).await;
                    (client, events) = connect(&identity, &curve)?;
                }
                Some(ClientEvent::Disconnected) => tracing::warn!("mesh session lost; reconnecting"),
                Some(ClientEvent::Frame(Frame::Revoked { reason })) => {
                    work.cancel_all();
                    return Ok(Exit::Revoked(reason));
                }
                Some(ClientEvent::Frame(Frame::LeaseAck { seq })) => tracing::trace!(seq, "lease renewed"),
                Some(ClientEvent::Frame(Frame::Invoke { invocation_id, tool, workspace, args_json })) => {
                    tracing::info!(%invocation_id, %tool, %workspace, "invocation received");
                    if let Some(refusal) = work.invoke(invocation_id, &tool, &workspace, args_json) {
                        client.send(&refusal)?;
                    }
                }
                Some(ClientEvent::Frame(Frame::CancelInvocation { invocation_id })) => {
                    tracing::info!(%invocation_id, "cancel requested by the router");
                    work.cancel(&invocation_id);
                }
                Some(ClientEvent::Frame(Frame::ResultAck { invocation_id })) => work.acknowledged(&invocation_id),
                Some(ClientEvent::Frame(Frame::RotateCurve { request_id, nonce })) => {
                    tracing::info!(%request_id, "CURVE rotation requested by the router");
                    if fault == Some(TestFault::NeverAck) {
                        continue;
                    }
                    let pending = rotation::pending_for(&config.curve_key_path, &request_id, &OsEntropy)?;
                    fault_point(fault, TestFault::CrashBeforeAck);
                    let ack = match fault {
                        Some(TestFault::ForgeWrongKey) => rotation::acknowledgement(&identity.agent_id, &request_id, &nonce, &pending.key, &SigningKeyPair::generate(&OsEntropy)),
                        Some(TestFault::ForgeWrongNonce) => rotation::acknowledgement(&identity.agent_id, &request_id, "not-the-nonce", &pending.key, &signing),
                        Some(TestFault::ReplayPreviousAck) if last_ack.is_some() => last_ack.clone().unwrap_or(Frame::LeaseAck { seq: 0 }),
                        _ => rotation::acknowledgement(&identity.agent_id, &request_id, &nonce, &pending.key, &signing),
                    };
                    client.send(&ack)?;
                    last_ack = Some(ack);
                    fault_point(fault, TestFault::CrashAfterAck);
                }
                Some(ClientEvent::Frame(Frame::RotationPromoted { request_id })) => {
                    let Some(pending) = rotation::load_pending(&config.curve_key_path)? else {
                        tracing::debug!(%request_id, "promotion for a key already in use");
                        continue;
                    };
                    if pending.request_id != request_id {
                        tracing::warn!(%request_id, pending = %pending.request_id, "promotion for another request; ignored");
                        continue;
                    }
                    fault_point(fault, TestFault::CrashAfterPromotion);
                    rotation::promote(&config.curve_key_path, &pending)?;
                    curve = pending.key;
                    // Reconnect on the new key; the router retires the old one when it sees us.
                    drop(client);
                    (client, events) = connect(&identity, &curve)?;
                    tracing::info!(%request_id, "switched to the promoted CURVE key");
                }
                Some(ClientEvent::Frame(Frame::RotationFailed { request_id, reason })) => {
                    tracing::warn!(%request_id, %reason, "CURVE rotation failed; keeping the current key");
                    if rotation::load_pending(&config.curve_key_path)?.is_some_and(|p| p.request_id == request_id) {
                        rotation::discard(&config.curve_key_path)?;
                    }
                }
                Some(ClientEvent::Frame(other)) => tracing::debug!(?other, "unexpected frame from the router"),
                Some(ClientEvent::Malformed(err)) => tracing::warn!(error = %err, "malformed frame from the router"),
                None => bail!("the mesh client stopped"),
            },
            _ = hangup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                last_reload = work.reload("sighup").await;
                log_reload(&last_reload);
                reload_seq += 1;
                record_reload(&config.state_dir, reload_seq, &last_reload);
                client.send(&Frame::CredentialsReloaded { report: last_reload.clone() })?;
                let status = if last_reload.ok { "credentials reloaded".to_string() } else { reload_failure_summary(&last_reload) };
                notify(&[sd_notify::NotifyState::Status(&status), sd_notify::NotifyState::Ready]);
            }
            _ = sleep_until(deadline) => {
                tracing::warn!(running = work.running(), "shutdown grace period over; killing the remaining invocations");
                work.cancel_all();
                return finish_shutdown(&mut work, &mut work_events, &client).await;
            }
            _ = term.recv(), if drain_deadline.is_none() => {
                drain_deadline = Some(begin_shutdown(&mut work, config.shutdown_grace_seconds));
            }
            _ = interrupt.recv(), if drain_deadline.is_none() => {
                drain_deadline = Some(begin_shutdown(&mut work, config.shutdown_grace_seconds));
            }
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping");
    flush_results(&mut work, &mut events, &client).await;
    Ok(Exit::Stopped)
}

/// Stops taking work; in-flight invocations get `grace_seconds` to finish.
fn begin_shutdown(work: &mut Work, grace_seconds: u64) -> tokio::time::Instant {
    notify(&[sd_notify::NotifyState::Stopping]);
    work.stop_accepting();
    tracing::info!(
        running = work.running(),
        grace_seconds,
        "SIGTERM: draining in-flight invocations"
    );
    tokio::time::Instant::now() + Duration::from_secs(grace_seconds)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// After the grace period: collect the killed invocations' results and send them.
async fn finish_shutdown(
    work: &mut Work,
    work_events: &mut tokio::sync::mpsc::Receiver<WorkEvent>,
    client: &MeshClient,
) -> anyhow::Result<Exit> {
    let deadline = tokio::time::Instant::now() + KILLED_RESULTS_WAIT;
    while work.running() > 0 {
        match tokio::time::timeout_at(deadline, work_events.recv()).await {
            Ok(Some(WorkEvent::Finished(result))) => client.send(&work.finished(result))?,
            Ok(Some(WorkEvent::Send(frame))) => client.send(&frame)?,
            Ok(None) | Err(_) => break,
        }
    }
    tracing::info!("stopping");
    Ok(Exit::Stopped)
}

/// Gives the router a moment to acknowledge the last results, so they are not re-reported as
/// lost after a restart. Bounded: the router may be away.
async fn flush_results(
    work: &mut Work,
    events: &mut tokio::sync::mpsc::Receiver<ClientEvent>,
    client: &MeshClient,
) {
    let deadline = tokio::time::Instant::now() + RESULT_ACK_WAIT;
    for frame in work.unacknowledged() {
        if client.send(&frame).is_err() {
            return;
        }
    }
    while !work.in_flight().is_empty() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(ClientEvent::Frame(Frame::ResultAck { invocation_id }))) => {
                work.acknowledged(&invocation_id)
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

fn log_reload(report: &ReloadReport) {
    for file in &report.files {
        match &file.error {
            None => {
                tracing::info!(credentials_ref = %file.credentials_ref, generation = file.generation, sha256 = file.sha256.as_deref().unwrap_or("-"), trigger = %report.trigger, "credential loaded")
            }
            Some(error) => {
                tracing::error!(credentials_ref = %file.credentials_ref, generation = file.generation, %error, trigger = %report.trigger, "credential NOT reloaded; the last good version stays in use")
            }
        }
    }
}

/// For `xerotier-xem reload` (systemd's ExecReload), which waits for this to report.
fn record_reload(state_dir: &Path, seq: u64, report: &ReloadReport) {
    let status = reload::ReloadStatus { seq, pid: std::process::id(), report: report.clone() };
    if let Err(err) = reload::write_status(state_dir, &status) {
        tracing::warn!(error = %format!("{err:#}"), "could not record the reload status");
    }
}

fn reload_failure_summary(report: &ReloadReport) -> String {
    let failed: Vec<&str> =
        report.files.iter().filter(|f| !f.ok).map(|f| f.credentials_ref.as_str()).collect();
    format!("credential reload FAILED for: {}", failed.join(", "))
}

fn connect(
    identity: &Identity,
    curve: &CurveKeyPair,
) -> anyhow::Result<(MeshClient, tokio::sync::mpsc::Receiver<ClientEvent>)> {
    let keys = ClientKeys::new(curve, &identity.router_curve_key);
    Ok(MeshClient::connect(&identity.mesh_addr, &keys)?)
}

/// Fault injection for the end-to-end tests of crash safety, set with
/// `XEROTIER_XEM_TEST_FAULT`. Never set in production; the agent logs loudly when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestFault {
    CrashBeforeAck,
    CrashAfterAck,
    CrashAfterPromotion,
    NeverAck,
    ForgeWrongKey,
    ForgeWrongNonce,
    ReplayPreviousAck,
}

impl TestFault {
    fn from_env() -> Option<Self> {
        let value = std::env::var("XEROTIER_XEM_TEST_FAULT").ok()?;
        let fault = match value.as_str() {
            "crash_before_ack" => Self::CrashBeforeAck,
            "crash_after_ack" => Self::CrashAfterAck,
            "crash_after_promotion" => Self::CrashAfterPromotion,
            "never_ack" => Self::NeverAck,
            "forge_wrong_key" => Self::ForgeWrongKey,
            "forge_wrong_nonce" => Self::ForgeWrongNonce,
            "replay_previous_ack" => Self::ReplayPreviousAck,
            _ => return None,
        };
        tracing::warn!(
            ?fault,
            "TEST FAULT INJECTION ENABLED (XEROTIER_XEM_TEST_FAULT); never use in production"
        );
        Some(fault)
    }
}

/// Dies like `kill -9` would, at the named point, when that fault is injected.
fn fault_point(active: Option<TestFault>, point: TestFault) {
    if active == Some(point) {
        tracing::error!(?point, "test fault: aborting");
        std::process::abort();
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::debug!(error = %err, "sd_notify failed");
    }
}
