//! The agent's side of the mesh: one CURVE DEALER socket on its own thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use std::thread::JoinHandle;

use tokio::sync::mpsc;
use xerotier_proto::mesh::{self, Frame};

use crate::socket::parse_monitor_event;
use crate::{ClientKeys, MeshError, configure_client_socket};

const POLL_MS: i64 = 100;
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    Frame(Frame),
    /// The CURVE handshake succeeded (after every reconnect).
    Connected,
    Disconnected,
    /// The router refused our key at the handshake (revoked, rotated away, or unknown).
    AuthRejected,
    /// A frame from the router that could not be decoded.
    Malformed(String),
}

/// A connection to the router's mesh endpoint. Dropping it closes the connection.
pub struct MeshClient {
    outbound: Mutex<zmq::Socket>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _context: zmq::Context,
}

impl MeshClient {
    /// Connects (and keeps reconnecting) to `addr`, a `tcp://host:port` endpoint.
    pub fn connect(
        addr: &str,
        keys: &ClientKeys,
    ) -> Result<(Self, mpsc::Receiver<ClientEvent>), MeshError> {
        let context = zmq::Context::new();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let dealer = context.socket(zmq::DEALER)?;
        configure_client_socket(&dealer, keys)?;
        let monitor_addr = format!("inproc://xerotier-client-monitor-{id}");
        let events = zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw()
            | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH.to_raw()
            | zmq::SocketEvent::DISCONNECTED.to_raw();
        dealer.monitor(&monitor_addr, i32::from(events))?;
        let monitor = context.socket(zmq::PAIR)?;
        monitor.connect(&monitor_addr)?;
        dealer.connect(addr)?;

        let outbound_addr = format!("inproc://xerotier-client-out-{id}");
        let pull = context.socket(zmq::PULL)?;
        pull.bind(&outbound_addr)?;
        let push = context.socket(zmq::PUSH)?;
        push.set_linger(0)?;
        push.connect(&outbound_addr)?;

        let (tx, rx) = mpsc::channel(10_000);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mesh-client".into())
            .spawn(move || {
                crate::socket::block_signals_on_this_thread();
                if let Err(err) = pump(&dealer, &monitor, &pull, &tx, &thread_stop) {
                    tracing::error!(error = %err, "mesh client thread failed");
                }
            })
            .map_err(|e| MeshError::Thread(e.to_string()))?;
        let client =
            Self { outbound: Mutex::new(push), stop, thread: Some(thread), _context: context };
        Ok((client, rx))
    }

    /// Queues a frame for the router. Queued frames wait while disconnected (up to the
    /// high-water mark), so a lease renewal during a router restart is delivered on reconnect.
    pub fn send(&self, frame: &Frame) -> Result<(), MeshError> {
        let socket = self.outbound.lock();
        socket.send(mesh::encode(frame), 0)?;
        Ok(())
    }
}

impl std::fmt::Debug for MeshClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshClient").finish_non_exhaustive()
    }
}

impl Drop for MeshClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn pump(
    dealer: &zmq::Socket,
    monitor: &zmq::Socket,
    outbound: &zmq::Socket,
    events: &mpsc::Sender<ClientEvent>,
    stop: &AtomicBool,
) -> Result<(), MeshError> {
    while !stop.load(Ordering::Relaxed) {
        let mut items = [
            dealer.as_poll_item(zmq::POLLIN),
            monitor.as_poll_item(zmq::POLLIN),
            outbound.as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, POLL_MS) {
            Ok(_) => {}
            // A signal is not a failure: poll again.
            Err(zmq::Error::EINTR) => continue,
            Err(err) => return Err(err.into()),
        }
        let ready = [items[0].is_readable(), items[1].is_readable(), items[2].is_readable()];
        if ready[1] {
            while let Ok(frames) = monitor.recv_multipart(zmq::DONTWAIT) {
                let event = match parse_monitor_event(&frames) {
                    Some((zmq::SocketEvent::HANDSHAKE_SUCCEEDED, _)) => ClientEvent::Connected,
                    Some((zmq::SocketEvent::HANDSHAKE_FAILED_AUTH, _)) => ClientEvent::AuthRejected,
                    Some((zmq::SocketEvent::DISCONNECTED, _)) => ClientEvent::Disconnected,
                    _ => continue,
                };
                if events.blocking_send(event).is_err() {
                    return Ok(());
                }
            }
        }
        if ready[0] {
            while let Ok(payload) = dealer.recv_bytes(zmq::DONTWAIT) {
                let event = match mesh::decode(&payload) {
                    Ok(frame) => ClientEvent::Frame(frame),
                    Err(err) => ClientEvent::Malformed(err.to_string()),
                };
                if events.blocking_send(event).is_err() {
                    return Ok(());
                }
            }
        }
        if ready[2] {
            while let Ok(payload) = outbound.recv_bytes(zmq::DONTWAIT) {
                match dealer.send(payload, zmq::DONTWAIT) {
                    Ok(()) | Err(zmq::Error::EAGAIN) => {}
                    Err(err) => return Err(err.into()),
                }
            }
        }
    }
    Ok(())
}
