//! The router's mesh endpoint: a CURVE ROUTER socket behind the ZAP allow-list.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use std::thread::JoinHandle;

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use xerotier_core::{SharedClock, UnixMillis};
use xerotier_credentials::CurveKeyPair;
use xerotier_proto::mesh::{self, Frame, MAX_FRAME_BYTES};

use crate::socket::require_curve;
use crate::{AllowList, MeshError, zap};

const POLL_MS: i64 = 100;
/// Messages one connection may have waiting in the router (its ROUTER pipe's high-water mark).
const INBOUND_PER_PEER: i32 = 256;
/// Messages read in one round before the outbound queue is served again: a busy inbound side
/// never holds back the answers (lease acknowledgements) waiting to go out.
const INBOUND_PER_ROUND: usize = 256;
/// Messages over their agent's cap read before the I/O thread stops reading for
/// `OVER_CAP_PAUSE_MS`. Reading a flood only to drop it costs its CURVE decryption and a read
/// per message; pausing instead lets the flooder's pipe fill, libzmq stop reading its
/// connection, and its own sends block. Other agents' messages wait at most one pause, and
/// are read in turn with the flooder's (libzmq's ROUTER socket reads its peers round-robin).
const OVER_CAP_PER_PAUSE: u32 = 16;
const OVER_CAP_PAUSE_MS: i64 = 1;
static NEXT_OUTBOUND: AtomicU64 = AtomicU64::new(0);

/// Why an inbound message never reached the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// No `User-Id`, or a key no longer on the allow-list (revoked or rotated away).
    Unauthorized,
    /// Not a decodable frame, or a frame of another protocol version.
    Malformed,
    /// The frame names another agent than the key it came with.
    Spoofed,
    /// Not exactly [routing id, payload].
    BadEnvelope,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Unauthorized => "unauthorized",
            DropReason::Malformed => "malformed",
            DropReason::Spoofed => "spoofed",
            DropReason::BadEnvelope => "bad_envelope",
        }
    }
}

#[derive(Debug)]
pub enum MeshEvent {
    /// An authenticated frame. `curve_key` is the key the session was opened with.
    Frame {
        agent_id: String,
        curve_key: [u8; 32],
        routing_id: Vec<u8>,
        frame: Frame,
    },
    Dropped {
        reason: DropReason,
        agent_id: Option<String>,
    },
    /// A mesh thread died; the router must not keep serving without it.
    Fatal(String),
    /// Nothing to deliver (a message over its agent's cap); never sent to the application.
    Skipped,
}

/// Sends frames to connected agents. Cheap to clone.
#[derive(Clone)]
pub struct MeshHandle {
    outbound: Arc<Mutex<zmq::Socket>>,
}

impl std::fmt::Debug for MeshHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshHandle").finish_non_exhaustive()
    }
}

impl MeshHandle {
    /// Queues `frame` for the peer with `routing_id`. Unroutable peers are dropped silently by
    /// the ROUTER socket (the agent reconnects and says hello again).
    pub fn send(&self, routing_id: &[u8], frame: &Frame) -> Result<(), MeshError> {
        let payload = mesh::encode(frame);
        let socket = self.outbound.lock();
        // Never block the caller (an async task): a full queue means the I/O thread is gone or
        // far behind, and the agent resynchronises on reconnect.
        socket.send(routing_id, zmq::SNDMORE | zmq::DONTWAIT)?;
        socket.send(payload, zmq::DONTWAIT)?;
        Ok(())
    }
}

/// A per-agent cap on inbound messages, applied by the I/O thread before a message is decoded
/// or queued for the application: one agent flooding the endpoint can fill neither the event
/// queue nor the application's time, so other agents' frames are never queued behind it. Set
/// well above the application's own limits, which decide (and report) what a flood is.
#[derive(Debug, Clone)]
pub struct InboundCap {
    /// Messages per second per agent, sustained.
    pub per_second: u32,
    /// Messages an agent may send at once.
    pub burst: u32,
    /// The clock the cap refills by.
    pub clock: SharedClock,
}

/// Messages over each agent's [`InboundCap`], dropped by the I/O thread (for metrics).
#[derive(Debug, Default)]
pub struct CapDrops(AtomicU64);

impl CapDrops {
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One agent's allowance, in thousandths of a message.
#[derive(Debug)]
struct Allowance {
    milli: u64,
    at: UnixMillis,
}

/// The I/O thread's view of every agent's allowance.
struct Caps {
    cap: InboundCap,
    agents: HashMap<String, Allowance>,
    drops: Arc<CapDrops>,
}

impl Caps {
    /// Takes one message from `agent_id`'s allowance; false when it has none left.
    fn admit(&mut self, agent_id: &str) -> bool {
        let now = self.cap.clock.now_millis();
        let full = u64::from(self.cap.burst) * 1_000;
        let rate = u64::from(self.cap.per_second);
        if self.agents.len() > MAX_CAPPED_AGENTS && !self.agents.contains_key(agent_id) {
            // Only agents that were allowed at handshake reach here; forget idle allowances.
            self.agents.retain(|_, a| now - a.at < 60_000);
        }
        let allowance =
            self.agents.entry(agent_id.to_string()).or_insert(Allowance { milli: full, at: now });
        let elapsed = u64::try_from(now - allowance.at).unwrap_or(0);
        allowance.milli = (allowance.milli + elapsed * rate).min(full);
        allowance.at = allowance.at.max(now);
        if allowance.milli >= 1_000 {
            allowance.milli -= 1_000;
            return true;
        }
        self.drops.0.fetch_add(1, Ordering::Relaxed);
        false
    }
}

/// Allowances kept before idle ones are forgotten.
const MAX_CAPPED_AGENTS: usize = 100_000;

/// A running mesh endpoint. Dropping it stops its threads.
#[derive(Debug)]
pub struct MeshServer {
    endpoint: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    cap_drops: Arc<CapDrops>,
    rekey: MeshRekey,
}

/// Changes the CURVE key a running [`MeshServer`] serves (the router's mesh key rotation,
/// SPEC §9). Cheap to clone. The I/O thread applies a request between two polls: it closes
/// the ROUTER socket and binds a new one on the same endpoint with the new key, so every
/// session on the old key ends (its agent reconnects, and must know the new key to get in)
/// while the outbound queue, a separate socket, keeps what was queued.
#[derive(Clone, Default)]
pub struct MeshRekey {
    pending: Arc<Mutex<Option<(u64, SecretString)>>>,
    requested: Arc<AtomicU64>,
    applied: Arc<AtomicU64>,
}

impl std::fmt::Debug for MeshRekey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshRekey")
            .field("requested", &self.requested.load(Ordering::Relaxed))
            .field("applied", &self.applied.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl MeshRekey {
    /// Asks the I/O thread to serve `keys` from now on; returns the request's number (see
    /// [`Self::applied`]). A later request replaces one not yet applied.
    pub fn serve(&self, keys: &CurveKeyPair) -> u64 {
        let mut pending = self.pending.lock();
        let number = self.requested.fetch_add(1, Ordering::Relaxed) + 1;
        *pending = Some((number, keys.secret_z85()));
        number
    }

    /// The number of the last request the I/O thread applied (0 before any).
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    fn take(&self) -> Option<(u64, SecretString)> {
        self.pending.lock().take()
    }
}

/// What the I/O thread needs to re-bind its ROUTER socket.
struct Rebind<'a> {
    context: &'a zmq::Context,
    endpoint: &'a str,
    rekey: &'a MeshRekey,
}

/// How long a re-bind waits for the closed socket's port to be released (libzmq closes it on
/// its own I/O thread, shortly after the socket is dropped).
const REBIND_ATTEMPTS: u32 = 250;
const REBIND_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// The CURVE ROUTER socket, bound at `bind`, serving `secret`.
fn bind_router(
    context: &zmq::Context,
    secret: &SecretString,
    bind: &str,
) -> Result<zmq::Socket, MeshError> {
    let router = context.socket(zmq::ROUTER)?;
    router.set_curve_server(true)?;
    router.set_curve_secretkey(secret.expose_secret().as_bytes())?;
    router.set_zap_domain("xerotier")?;
    router.set_maxmsgsize(i64::try_from(MAX_FRAME_BYTES).unwrap_or(i64::MAX))?;
    router.set_linger(0)?;
    router.set_sndhwm(100_000)?;
    // Per connection: what one peer can have waiting before libzmq stops reading its TCP
    // stream. Small, so a peer the I/O thread reads slowly (see `OVER_CAP_PER_PAUSE`) is held
    // back by its own transport, and what it can make the router buffer stays bounded
    // (`INBOUND_PER_PEER` × `MAX_FRAME_BYTES`).
    router.set_rcvhwm(INBOUND_PER_PEER)?;
    router.set_heartbeat_ivl(5_000)?;
    router.set_heartbeat_timeout(15_000)?;
    router.bind(bind).map_err(|source| MeshError::Bind { addr: bind.to_string(), source })?;
    Ok(router)
}

/// Closes `old` and binds a socket serving `secret` on the same endpoint, retrying while the
/// port is still held by the closing socket.
fn rebind(
    old: zmq::Socket,
    rebind: &Rebind<'_>,
    secret: &SecretString,
) -> Result<zmq::Socket, MeshError> {
    drop(old);
    let mut attempt = 0;
    loop {
        match bind_router(rebind.context, secret, rebind.endpoint) {
            Ok(socket) => return Ok(socket),
            Err(MeshError::Bind { source: zmq::Error::EADDRINUSE, .. })
                if attempt < REBIND_ATTEMPTS =>
            {
                attempt += 1;
                std::thread::sleep(REBIND_PAUSE);
            }
            Err(err) => return Err(err),
        }
    }
}

impl MeshServer {
    /// Starts the ZAP handler, then binds the CURVE ROUTER socket at `bind` (`tcp://host:port`,
    /// port 0 picks one). Inbound events arrive on the returned receiver.
    pub fn start(
        bind: &str,
        server_keys: &CurveKeyPair,
        allow: AllowList,
    ) -> Result<(Self, MeshHandle, mpsc::Receiver<MeshEvent>), MeshError> {
        Self::start_capped(bind, server_keys, allow, None)
    }

    /// As [`Self::start`], with a per-agent [`InboundCap`] applied in the I/O thread.
    pub fn start_capped(
        bind: &str,
        server_keys: &CurveKeyPair,
        allow: AllowList,
        cap: Option<InboundCap>,
    ) -> Result<(Self, MeshHandle, mpsc::Receiver<MeshEvent>), MeshError> {
        require_curve()?;
        let context = zmq::Context::new();
        let stop = Arc::new(AtomicBool::new(false));
        let zap_thread = zap::start(&context, allow.clone(), stop.clone())?;

        let router = bind_router(&context, &server_keys.secret_z85(), bind)?;
        let endpoint = match router.get_last_endpoint()? {
            Ok(endpoint) => endpoint,
            Err(_) => bind.to_string(),
        };

        let outbound_addr =
            format!("inproc://xerotier-mesh-out-{}", NEXT_OUTBOUND.fetch_add(1, Ordering::Relaxed));
        let pull = context.socket(zmq::PULL)?;
        pull.set_rcvhwm(100_000)?;
        pull.bind(&outbound_addr)?;
        let push = context.socket(zmq::PUSH)?;
        push.set_sndhwm(100_000)?;
        push.set_linger(0)?;
        push.connect(&outbound_addr)?;

        let (events_tx, events_rx) = mpsc::channel(100_000);
        let io_stop = stop.clone();
        let cap_drops = Arc::new(CapDrops::default());
        let mut caps =
            cap.map(|cap| Caps { cap, agents: HashMap::new(), drops: cap_drops.clone() });
        let fatal_tx = events_tx.clone();
        let rekey = MeshRekey::default();
        let io_rekey = rekey.clone();
        let io_endpoint = endpoint.clone();
        let io_thread = std::thread::Builder::new()
            .name("mesh-io".into())
            .spawn(move || {
                crate::socket::block_signals_on_this_thread();
                let endpoint =
                    Rebind { context: &context, endpoint: &io_endpoint, rekey: &io_rekey };
                if let Err(err) =
                    pump(router, &pull, &allow, caps.as_mut(), &events_tx, &io_stop, &endpoint)
                {
                    let _ = fatal_tx.blocking_send(MeshEvent::Fatal(format!("mesh I/O: {err}")));
                }
                // Keep the context alive until the sockets are gone.
                drop(context);
            })
            .map_err(|e| MeshError::Thread(e.to_string()))?;
        let server =
            Self { endpoint, stop, threads: vec![zap_thread, io_thread], cap_drops, rekey };
        Ok((server, MeshHandle { outbound: Arc::new(Mutex::new(push)) }, events_rx))
    }

    /// The bound endpoint, e.g. `tcp://127.0.0.1:41234`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// True while both threads run. A dead ZAP thread means handshakes would hang, so the
    /// router treats this turning false as fatal.
    pub fn is_healthy(&self) -> bool {
        self.threads.iter().all(|t| !t.is_finished())
    }

    /// Changes the key this endpoint serves (see [`MeshRekey`]).
    pub fn rekey(&self) -> MeshRekey {
        self.rekey.clone()
    }

    /// Messages dropped so far by the per-agent [`InboundCap`].
    pub fn cap_drops(&self) -> u64 {
        self.cap_drops.count()
    }

    /// Stops the ZAP and I/O threads and waits for them (each polls its stop flag every
    /// 100 ms and never blocks on a full event queue, so this takes at most about that long).
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for MeshServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn pump(
    mut router: zmq::Socket,
    outbound: &zmq::Socket,
    allow: &AllowList,
    mut caps: Option<&mut Caps>,
    events: &mpsc::Sender<MeshEvent>,
    stop: &AtomicBool,
    endpoint: &Rebind<'_>,
) -> Result<(), MeshError> {
    let mut over_cap = 0u32;
    while !stop.load(Ordering::Relaxed) {
        if over_cap >= OVER_CAP_PER_PAUSE {
            over_cap = 0;
            serve_outbound_only(outbound, &router)?;
        }
        if let Some((number, secret)) = endpoint.rekey.take() {
            // What was queued before the rekey (the new key set, told to every live session)
            // goes out on the old sessions first; the old socket lingers to deliver it.
            forward(outbound, &router)?;
            router.set_linger(REKEY_LINGER_MS)?;
            router = rebind(router, endpoint, &secret)?;
            endpoint.rekey.applied.store(number, Ordering::Release);
        }
        let router = &router;
        let mut items = [router.as_poll_item(zmq::POLLIN), outbound.as_poll_item(zmq::POLLIN)];
        match zmq::poll(&mut items, POLL_MS) {
            Ok(_) => {}
            // A signal is not a failure: poll again.
            Err(zmq::Error::EINTR) => continue,
            Err(err) => return Err(err.into()),
        }
        let (inbound_ready, outbound_ready) = (items[0].is_readable(), items[1].is_readable());
        if inbound_ready {
            for _ in 0..INBOUND_PER_ROUND {
                let Some(event) = receive(router, allow, caps.as_deref_mut())? else { break };
                if matches!(event, MeshEvent::Skipped) {
                    over_cap += 1;
                    if over_cap >= OVER_CAP_PER_PAUSE {
                        break;
                    }
                    continue;
                }
                if !deliver(events, event, stop) {
                    return Ok(()); // the application is gone, or we are stopping
                }
            }
        }
        if outbound_ready {
            forward(outbound, router)?;
        }
    }
    Ok(())
}

/// The pause of [`OVER_CAP_PER_PAUSE`]: waits up to [`OVER_CAP_PAUSE_MS`] for the outbound
/// queue only, and forwards what it holds.
fn serve_outbound_only(outbound: &zmq::Socket, router: &zmq::Socket) -> Result<(), MeshError> {
    let mut items = [outbound.as_poll_item(zmq::POLLIN)];
    match zmq::poll(&mut items, OVER_CAP_PAUSE_MS) {
        Ok(_) | Err(zmq::Error::EINTR) => {}
        Err(err) => return Err(err.into()),
    }
    if items[0].is_readable() {
        forward(outbound, router)?;
    }
    Ok(())
}

/// How long a socket closed by a rekey keeps delivering what was queued on its sessions.
const REKEY_LINGER_MS: i32 = 2_000;

/// Sends everything waiting on the outbound queue through `router`.
fn forward(outbound: &zmq::Socket, router: &zmq::Socket) -> Result<(), MeshError> {
    while let Ok(parts) = outbound.recv_multipart(zmq::DONTWAIT) {
        if let [routing_id, payload] = parts.as_slice() {
            // A peer that went away makes this fail with EHOSTUNREACH only with
            // ROUTER_MANDATORY, which is off: the frame is dropped and the agent will
            // resynchronise on reconnect.
            router.send(routing_id, zmq::SNDMORE | zmq::DONTWAIT)?;
            router.send(payload, zmq::DONTWAIT)?;
        }
    }
    Ok(())
}

/// Hands an event to the application, waiting while its queue is full but never past a stop
/// request (a blocking send here once kept a stopping router from ever joining this thread).
fn deliver(events: &mpsc::Sender<MeshEvent>, event: MeshEvent, stop: &AtomicBool) -> bool {
    let mut event = event;
    loop {
        match events.try_send(event) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(back)) => {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                event = back;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
}

/// Reads one message if one is waiting, and decides whether the application may see it.
fn receive(
    router: &zmq::Socket,
    allow: &AllowList,
    caps: Option<&mut Caps>,
) -> Result<Option<MeshEvent>, MeshError> {
    let routing = match router.recv_msg(zmq::DONTWAIT) {
        Ok(message) => message,
        Err(zmq::Error::EAGAIN) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    let mut parts = vec![routing];
    while parts.last().is_some_and(|m| m.get_more()) {
        parts.push(router.recv_msg(0)?);
    }
    let dropped = |reason, agent_id| Ok(Some(MeshEvent::Dropped { reason, agent_id }));
    if parts.len() != 2 {
        return dropped(DropReason::BadEnvelope, None);
    }
    let Some(mut payload) = parts.pop() else { return dropped(DropReason::BadEnvelope, None) };
    let routing_id = parts.pop().map(|m| m.to_vec()).unwrap_or_default();
    let key = payload
        .gets("User-Id")
        .and_then(|z| z85::decode(z).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    let Some(key) = key else { return dropped(DropReason::Unauthorized, None) };
    let Some(agent_id) = allow.agent_for(&key) else {
        return dropped(DropReason::Unauthorized, None);
    };
    // Over its cap: dropped here, before decoding or queueing, and only counted (an event per
    // message would queue the flood it stops).
    if let Some(caps) = caps
        && !caps.admit(&agent_id)
    {
        return Ok(Some(MeshEvent::Skipped));
    }
    let frame = match mesh::decode(&payload) {
        Ok(frame) => frame,
        Err(_) => return dropped(DropReason::Malformed, Some(agent_id)),
    };
    let claimed = match &frame {
        Frame::Hello { agent_id, .. } | Frame::LeaseRenewal { agent_id, .. } => Some(agent_id),
        _ => None,
    };
    if claimed.is_some_and(|claimed| *claimed != agent_id) {
        return dropped(DropReason::Spoofed, Some(agent_id));
    }
    Ok(Some(MeshEvent::Frame { agent_id, curve_key: key, routing_id, frame }))
}

#[cfg(test)]
mod cap_tests {
    use std::sync::Arc;

    use xerotier_core::ManualClock;

    use super::*;

    #[test]
    fn an_agent_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let clock = Arc::new(ManualClock::new(1_000));
        let drops = Arc::new(CapDrops::default());
        let cap = InboundCap { per_second: 100, burst: 10, clock: clock.clone() };
        let mut caps = Caps { cap, agents: HashMap::new(), drops: drops.clone() };
        assert_eq!((0..50).filter(|_| caps.admit("agt_flood")).count(), 10, "the burst");
        assert_eq!(drops.count(), 40);
        assert!(caps.admit("agt_honest"), "another agent has its own allowance");
        clock.advance_millis(100);
        assert_eq!((0..50).filter(|_| caps.admit("agt_flood")).count(), 10, "100/s for 0.1 s");
        clock.advance_millis(-50);
        assert!(!caps.admit("agt_flood"), "a clock going back refills nothing");
    }
}
