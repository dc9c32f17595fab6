//! The agent's session with the router: the state kept between inputs, and one method per kind
//! of input — a frame from the router ([`Session::on_frame`]), news from the running work
//! ([`Session::on_work_event`]), a signal ([`Session::on_signal`]), a timer
//! ([`Session::on_timer`]), credential files renamed into place
//! ([`Session::on_credentials_replaced`], with `credentials_watch`). [`Session::run`] only waits for the next input and hands it over,
//! so each decision can be read (and changed) in one place.

mod credentials;
mod rotate;
mod router_keys;
mod shutdown;

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval};
use xerotier_core::{SharedClock, SharedEntropy};
use xerotier_credentials::{CurveKeyPair, SigningKeyPair};
use xerotier_mesh::{ClientEvent, ClientKeys, MeshClient};
use xerotier_proto::agents::CapabilityManifest;
use xerotier_proto::mesh::Frame;
use xerotier_proto::workspace_credentials::ReloadReport;

use crate::agent::Exit;
use crate::credentials::{CredentialStore, ReloadScope};
#[cfg(not(feature = "test-faults"))]
use crate::faults_off::Faults;
use crate::identity::Identity;
use crate::metrics::XemMetrics;
use crate::replicas::Replicas;
#[cfg(feature = "test-faults")]
use crate::test_faults::Faults;
use crate::work::{Work, WorkEvent};
use credentials::{log_reload, read_credentials, record_reload};

/// The agent concludes its key is no longer accepted after this many consecutive handshake
/// refusals spread over at least [`REJECTED_FOR_AT_LEAST`]: three times the router's default
/// allow-list refresh, so an agent enrolled through one replica and connecting to another is
/// not mistaken for a revoked one.
const REJECTIONS_BEFORE_GIVING_UP: u32 = 3;
const REJECTED_FOR_AT_LEAST: Duration = Duration::from_secs(6);

/// The session's replica is taken for dead, and the next one in the list is tried, after this
/// many lease intervals without a frame from it: the router's own bound, past which it shows
/// the agent `disconnected`.
const MISSED_ACKS_BEFORE_FAILOVER: u32 = 3;

/// 0.5 s, 1 s, then 2 s between handshake retries.
fn rejection_backoff(rejections: u32) -> Duration {
    Duration::from_millis((250u64 << rejections.min(3)).min(2_000))
}

/// Marks one step of an invocation's way through the agent: a debug event under the target
/// `xerotier_timeline`, off unless the log filter names it (`--log-level
/// warn,xerotier_timeline=debug`). With the router's it gives the per-layer breakdown of
/// `xerotier-bench exec-round-trip --timeline` (docs/BENCHMARKS.md).
macro_rules! timeline {
    ($id:expr, $step:literal) => {
        tracing::debug!(target: "xerotier_timeline", invocation_id = %$id, $step)
    };
}

/// What an input handler decided: go on, or end the agent's life with this exit.
type Step = anyhow::Result<ControlFlow<Exit>>;
const GO_ON: Step = Ok(ControlFlow::Continue(()));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: re-read the credential files.
    Reload,
    /// SIGTERM or SIGINT: drain and stop.
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Time to renew the lease (and re-send unacknowledged results).
    Lease,
    /// The pause after a refused handshake is over: connect again.
    Retry,
    /// The shutdown grace period is over: kill what still runs.
    GraceOver,
}

/// Everything the session is made from, gathered at startup.
#[derive(Debug)]
pub struct Setup {
    pub identity: Identity,
    pub curve: CurveKeyPair,
    pub signing: SigningKeyPair,
    pub manifest: CapabilityManifest,
    pub curve_key_path: PathBuf,
    /// Replaced with the CURVE key when a rotation is promoted.
    pub signing_key_path: PathBuf,
    pub state_dir: PathBuf,
    pub lease_interval: Duration,
    pub shutdown_grace: Duration,
    pub entropy: SharedEntropy,
    /// Signs the timestamp of a router key fetch.
    pub clock: SharedClock,
    /// The workspace credentials `Work` takes its snapshots from; the session reloads them.
    pub credentials: Arc<CredentialStore>,
    pub metrics: XemMetrics,
    /// Batches of credential files renamed into place (the watch); `None` without it.
    pub replaced: Option<mpsc::Receiver<BTreeSet<String>>>,
}

/// A live connection to the router's mesh endpoint.
#[derive(Debug)]
struct Link {
    client: MeshClient,
    events: mpsc::Receiver<ClientEvent>,
}

#[derive(Debug)]
pub struct Session {
    identity: Identity,
    curve: CurveKeyPair,
    signing: SigningKeyPair,
    curve_key_path: PathBuf,
    signing_key_path: PathBuf,
    state_dir: PathBuf,
    shutdown_grace: Duration,
    entropy: SharedEntropy,
    clock: SharedClock,
    /// Which router mesh key of the identity's set this connection tries (SPEC §9).
    key_index: usize,
    /// Whether the current connection completed a CURVE handshake.
    handshaken: bool,
    /// The router mesh key (Z85) the current connection was opened with.
    connected_key: String,
    /// Rounds through every key on every replica without a handshake; one full round means
    /// no key held works any more: the agent fetches the router's current keys.
    failed_rounds: usize,
    /// Set when that round is over: the next lease tick fetches.
    fetch_keys: bool,
    /// Said on every handshake: Hello, then the manifest.
    hello: Frame,
    manifest_frame: Frame,
    manifest_hash: String,
    manifest_version: u64,
    /// `None` only while waiting to retry a refused handshake.
    link: Option<Link>,
    retry_at: Option<Instant>,
    rejections: u32,
    first_rejection: Option<Instant>,
    lease: Interval,
    lease_seq: u64,
    /// The replicas this agent may connect to, and the one it is on.
    replicas: Replicas,
    /// When the current connection was opened or last heard from the router (a lease
    /// acknowledgement, or any other frame).
    last_heard: Instant,
    work: Work,
    work_events: mpsc::Receiver<WorkEvent>,
    credentials: Arc<CredentialStore>,
    replaced: Option<mpsc::Receiver<BTreeSet<String>>>,
    metrics: XemMetrics,
    last_reload: ReloadReport,
    reload_seq: u64,
    /// Set by SIGTERM: when the grace period for in-flight work ends.
    drain_deadline: Option<Instant>,
    faults: Faults,
}

impl Session {
    /// A session not yet connected, its credential files read for the first time.
    pub async fn new(setup: Setup, work: Work, work_events: mpsc::Receiver<WorkEvent>) -> Self {
        let last_reload = read_credentials(&setup.credentials, "startup", ReloadScope::All).await;
        log_reload(&last_reload);
        setup.metrics.reload(&last_reload);
        setup.metrics.session_connected(false);
        let reload_seq = 1;
        record_reload(&setup.state_dir, reload_seq, &last_reload);
        let agent_id = setup.identity.agent_id.clone();
        let manifest_hash = setup.manifest.hash();
        let replicas = Replicas::load(&setup.state_dir, &setup.identity.mesh_addr);
        Self {
            hello: Frame::Hello {
                agent_id: agent_id.clone(),
                xem_version: env!("CARGO_PKG_VERSION").to_string(),
                manifest_hash: manifest_hash.clone(),
                manifest_version: setup.manifest.version,
            },
            manifest_version: setup.manifest.version,
            manifest_frame: Frame::Manifest { agent_id, manifest: setup.manifest },
            manifest_hash,
            identity: setup.identity,
            curve: setup.curve,
            signing: setup.signing,
            curve_key_path: setup.curve_key_path,
            signing_key_path: setup.signing_key_path,
            state_dir: setup.state_dir,
            shutdown_grace: setup.shutdown_grace,
            entropy: setup.entropy,
            clock: setup.clock,
            key_index: 0,
            handshaken: false,
            connected_key: String::new(),
            failed_rounds: 0,
            fetch_keys: false,
            link: None,
            retry_at: None,
            rejections: 0,
            first_rejection: None,
            lease: tokio::time::interval(setup.lease_interval),
            lease_seq: 0,
            replicas,
            last_heard: Instant::now(),
            work,
            work_events,
            credentials: setup.credentials,
            replaced: setup.replaced,
            metrics: setup.metrics,
            last_reload,
            reload_seq,
            drain_deadline: None,
            faults: Faults::load(),
        }
    }

    /// Connects (or reconnects) with the current key. Hello goes out on the `Connected` event
    /// of every handshake, including the first.
    pub fn connect(&mut self) -> anyhow::Result<()> {
        // Close the old connection (its thread joined) before opening the next: the agent
        // never holds two sockets at once.
        self.link = None;
        self.metrics.session_connected(false);
        let router_key = self.router_key_to_try();
        let keys = ClientKeys::new(&self.curve, &router_key);
        let (client, events) = MeshClient::connect(self.replicas.current(), &keys)?;
        self.link = Some(Link { client, events });
        self.connected_key = router_key;
        self.handshaken = false;
        self.last_heard = Instant::now();
        Ok(())
    }

    /// Waits for inputs until the agent stops or is revoked.
    pub async fn run(mut self) -> anyhow::Result<Exit> {
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut hangup = signal(SignalKind::hangup())?;
        loop {
            if self.drained() {
                return Ok(self.stop().await);
            }
            // While a refused handshake waits for its retry, only the retry and a stop request
            // are heard; everything else waits (queued) for the new connection, as it would
            // for a session that is merely reconnecting.
            let connected = self.link.is_some();
            let draining = self.drain_deadline.is_some();
            let step = tokio::select! {
                _ = sleep_until(self.retry_at) => self.on_timer(Timer::Retry).await,
                _ = self.lease.tick(), if connected => self.on_timer(Timer::Lease).await,
                event = self.work_events.recv(), if connected => match event {
                    Some(event) => self.on_work_event(event),
                    None => Err(anyhow!("the invocation runner stopped")),
                },
                event = next_client_event(&mut self.link) => match event {
                    Some(event) => self.on_client_event(event),
                    None => Err(anyhow!("the mesh client stopped")),
                },
                _ = hangup.recv(), if connected => self.on_signal(Signal::Reload).await,
                names = next_replaced(&mut self.replaced), if connected => match names {
                    Some(names) => self.on_credentials_replaced(names).await,
                    None => {
                        // The watch logged why it stopped; SIGHUP still reloads.
                        self.replaced = None;
                        GO_ON
                    }
                },
                _ = sleep_until(self.drain_deadline), if connected => {
                    self.on_timer(Timer::GraceOver).await
                }
                _ = term.recv(), if !draining => self.on_signal(Signal::Stop).await,
                _ = interrupt.recv(), if !draining => self.on_signal(Signal::Stop).await,
            };
            self.metrics.set_running(self.work.running());
            if let ControlFlow::Break(exit) = step? {
                return Ok(exit);
            }
        }
    }

    pub async fn on_timer(&mut self, timer: Timer) -> Step {
        match timer {
            Timer::Lease => {
                self.renew_lease()?;
                if self.fetch_keys {
                    self.fetch_router_keys().await?;
                }
            }
            Timer::Retry => {
                self.retry_at = None;
                self.connect()?;
            }
            Timer::GraceOver => return self.grace_over().await,
        }
        GO_ON
    }

    pub async fn on_signal(&mut self, signal: Signal) -> Step {
        match signal {
            Signal::Reload => self.reload_on_sighup().await?,
            Signal::Stop => self.begin_shutdown(),
        }
        GO_ON
    }

    pub fn on_work_event(&mut self, event: WorkEvent) -> Step {
        match event {
            WorkEvent::Send(frame) => {
                self.send(&frame)?;
                if let Frame::InvocationStarted { invocation_id, .. } = &frame {
                    timeline!(invocation_id, "xem.started.sent");
                }
            }
            WorkEvent::Finished(result) => {
                let (invocation_id, status) = (result.invocation_id.clone(), result.status);
                let frame = self.work.finished(result);
                self.send(&frame)?;
                timeline!(invocation_id, "xem.finished.sent");
                // Logged once the result is on its way, not before.
                tracing::info!(%invocation_id, status = status.as_str(), "invocation ended");
            }
        }
        GO_ON
    }

    /// The mesh connection's news: handshakes, losses, and frames.
    fn on_client_event(&mut self, event: ClientEvent) -> Step {
        match event {
            ClientEvent::Connected => self.on_connected()?,
            ClientEvent::AuthRejected => return self.on_auth_rejected(),
            ClientEvent::Disconnected => {
                self.metrics.session_connected(false);
                if self.preferred_key_changed() {
                    // The router told this session a new key set whose first key is not the
                    // one this connection uses (a mesh key rotation's update_servers): the
                    // session ended because the router now serves that key. libzmq would
                    // retry the old one; reconnect on the preferred key at once.
                    tracing::info!(
                        "mesh session lost after a router key change; reconnecting on the router's preferred key"
                    );
                    self.key_index = 0;
                    self.connect()?;
                } else {
                    tracing::warn!("mesh session lost; reconnecting")
                }
            }
            ClientEvent::Frame(frame) => {
                self.last_heard = Instant::now();
                return self.on_frame(frame);
            }
            ClientEvent::Malformed(err) => {
                tracing::warn!(error = %err, "malformed frame from the router")
            }
        }
        GO_ON
    }

    pub fn on_frame(&mut self, frame: Frame) -> Step {
        match frame {
            Frame::Revoked { reason } => {
                self.work.cancel_all();
                return Ok(ControlFlow::Break(Exit::Revoked(reason)));
            }
            Frame::LeaseAck { seq } => tracing::trace!(seq, "lease renewed"),
            Frame::Replicas { mesh_addrs } => match self.replicas.update(mesh_addrs) {
                Ok(true) => {
                    tracing::info!(replicas = ?self.replicas.addrs(), "router replicas updated")
                }
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "the router's replica list was refused; the previous one stays")
                }
            },
            Frame::Invoke { invocation_id, tool, workspace, args_json } => {
                // Logged by `invoke` once checked: received strings are not logged whole.
                if crate::sandbox::is_invocation_id(&invocation_id) {
                    timeline!(invocation_id, "xem.invoke.received");
                }
                if let Some(refusal) = self.work.invoke(invocation_id, &tool, &workspace, args_json)
                {
                    self.send(&refusal)?;
                }
            }
            Frame::CancelInvocation { invocation_id } => {
                tracing::info!(%invocation_id, "cancel requested by the router");
                self.work.cancel(&invocation_id);
            }
            Frame::ResultAck { invocation_id } => {
                timeline!(invocation_id, "xem.result.acked");
                self.work.acknowledged(&invocation_id)
            }
            Frame::RotateCurve { request_id, nonce } => self.on_rotate(&request_id, &nonce)?,
            Frame::RotationPromoted { request_id } => self.on_promoted(&request_id)?,
            Frame::RotationFailed { request_id, reason } => {
                self.on_rotation_failed(&request_id, &reason)?
            }
            Frame::RouterKeys { keys, tls_ca_pins } => self.on_router_keys(keys, tls_ca_pins)?,
            other => tracing::debug!(?other, "unexpected frame from the router"),
        }
        GO_ON
    }

    fn on_connected(&mut self) -> anyhow::Result<()> {
        self.metrics.session_connected(true);
        self.rejections = 0;
        self.first_rejection = None;
        self.on_handshake();
        tracing::info!("mesh session established");
        self.send(&self.hello)?;
        self.send(&self.manifest_frame)?;
        self.send(&Frame::CredentialsReloaded { report: self.last_reload.clone() })
    }

    fn on_auth_rejected(&mut self) -> Step {
        self.metrics.session_connected(false);
        self.rejections += 1;
        let first = *self.first_rejection.get_or_insert_with(Instant::now);
        tracing::warn!(rejections = self.rejections, "the router refused this agent's CURVE key");
        if self.rejections >= REJECTIONS_BEFORE_GIVING_UP
            && first.elapsed() >= REJECTED_FOR_AT_LEAST
        {
            self.work.cancel_all();
            let why = "the router no longer accepts this agent's CURVE key";
            return Ok(ControlFlow::Break(Exit::Revoked(why.into())));
        }
        // libzmq does not retry a connection the server refused at the handshake; retry
        // ourselves after a pause: the refusal may be transient (a replica that has not yet
        // re-read its allow-list after an enrollment elsewhere).
        self.link = None;
        self.retry_at = Some(Instant::now() + rejection_backoff(self.rejections));
        GO_ON
    }

    fn renew_lease(&mut self) -> anyhow::Result<()> {
        let bound = self.lease.period() * MISSED_ACKS_BEFORE_FAILOVER;
        if self.last_heard.elapsed() > bound && !self.handshaken {
            // No handshake on this key within the bound: the router may serve another of the
            // keys held (a mesh key rotation); the next key, then the next replica.
            self.next_router_key();
            self.metrics.session_connected(false);
            return self.connect();
        }
        if self.last_heard.elapsed() > bound {
            // Its replica stopped answering (it died, or the path to it did): the next one.
            // What runs here keeps running; its results are re-sent on the new session, and
            // lease renewals there list what this agent holds.
            let from = self.replicas.current().to_string();
            let to = self.replicas.advance().to_string();
            tracing::warn!(%from, %to, silent_for = ?bound, "router replica not answering; failing over");
            self.metrics.session_connected(false);
            return self.connect();
        }
        self.lease_seq += 1;
        self.send(&Frame::LeaseRenewal {
            agent_id: self.identity.agent_id.clone(),
            seq: self.lease_seq,
            in_flight: self.work.in_flight(),
            manifest_hash: self.manifest_hash.clone(),
            manifest_version: self.manifest_version,
        })?;
        // Until the router acknowledges a result, it goes out again with every lease.
        for frame in self.work.unacknowledged() {
            self.send(&frame)?;
        }
        Ok(())
    }

    /// Queues `frame` for the router. Without a connection (only while a refused handshake
    /// waits for its retry, when nothing sends) it is dropped; results are kept by [`Work`]
    /// and go out again with the next lease.
    fn send(&self, frame: &Frame) -> anyhow::Result<()> {
        match &self.link {
            Some(link) => Ok(link.client.send(frame)?),
            None => {
                tracing::debug!("no mesh connection; frame dropped");
                Ok(())
            }
        }
    }
}

async fn next_client_event(link: &mut Option<Link>) -> Option<ClientEvent> {
    match link {
        Some(link) => link.events.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_replaced(
    replaced: &mut Option<mpsc::Receiver<BTreeSet<String>>>,
) -> Option<BTreeSet<String>> {
    match replaced {
        Some(replaced) => replaced.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

pub(crate) fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::debug!(error = %err, "sd_notify failed");
    }
}
