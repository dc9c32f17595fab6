use secrecy::{ExposeSecret, SecretString};
use xerotier_credentials::CurveKeyPair;

use crate::MeshError;

/// Keeps process-directed signals (SIGHUP on `systemctl reload`, SIGTERM) away from a mesh
/// thread: delivered here, one would interrupt a blocking ZeroMQ call with EINTR. The
/// application's signal handlers run on its other threads. Called first thing on each mesh
/// thread; libzmq's own I/O threads block signals themselves.
pub(crate) fn block_signals_on_this_thread() {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    if let Err(err) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), None) {
        tracing::warn!(error = %err, "could not block signals on a mesh thread");
    }
}

/// What a client needs to open a CURVE session.
#[derive(Debug)]
pub struct ClientKeys {
    pub public_z85: String,
    pub secret_z85: SecretString,
    pub server_public_z85: String,
}

impl ClientKeys {
    pub fn new(own: &CurveKeyPair, server_public_z85: &str) -> Self {
        Self {
            public_z85: own.public_z85(),
            secret_z85: own.secret_z85(),
            server_public_z85: server_public_z85.to_string(),
        }
    }
}

pub(crate) fn require_curve() -> Result<(), MeshError> {
    if zmq::has("curve") == Some(true) { Ok(()) } else { Err(MeshError::NoCurve) }
}

/// Configures a DEALER as a CURVE client that reconnects with backoff (100 ms to 5 s) and
/// notices a dead peer through ZMTP heartbeats.
pub fn configure_client_socket(socket: &zmq::Socket, keys: &ClientKeys) -> Result<(), MeshError> {
    require_curve()?;
    socket.set_curve_serverkey(keys.server_public_z85.as_bytes())?;
    socket.set_curve_publickey(keys.public_z85.as_bytes())?;
    socket.set_curve_secretkey(keys.secret_z85.expose_secret().as_bytes())?;
    socket.set_linger(0)?;
    socket.set_reconnect_ivl(100)?;
    socket.set_reconnect_ivl_max(5_000)?;
    socket.set_heartbeat_ivl(5_000)?;
    socket.set_heartbeat_timeout(15_000)?;
    socket.set_sndhwm(10_000)?;
    Ok(())
}

/// A socket monitor event: (event, value).
pub(crate) fn parse_monitor_event(frames: &[Vec<u8>]) -> Option<(zmq::SocketEvent, u32)> {
    let first = frames.first()?;
    if first.len() < 6 {
        return None;
    }
    let event = u16::from_le_bytes([first[0], first[1]]);
    let value = u32::from_le_bytes([first[2], first[3], first[4], first[5]]);
    Some((zmq::SocketEvent::from_raw(event), value))
}
