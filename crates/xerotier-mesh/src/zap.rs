//! The ZAP handler (RFC 27): decides every CURVE handshake from the allow-list alone.
//! It never touches the database, so a slow store cannot stall handshakes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::{AllowList, MeshError};

const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";
/// How often the thread looks at its stop flag while idle.
const POLL_MS: i64 = 100;

/// Binds the ZAP endpoint on `context` and serves it on a thread. Returns once bound, so the
/// caller can bind its CURVE server knowing no handshake can bypass the handler.
pub(crate) fn start(
    context: &zmq::Context,
    allow: AllowList,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, MeshError> {
    let socket = context.socket(zmq::REP)?;
    socket.set_linger(0)?;
    socket.bind(ZAP_ENDPOINT).map_err(|e| MeshError::ZapStart(e.to_string()))?;
    std::thread::Builder::new()
        .name("mesh-zap".into())
        .spawn(move || {
            crate::socket::block_signals_on_this_thread();
            serve(socket, allow, stop)
        })
        .map_err(|e| MeshError::Thread(e.to_string()))
}

fn serve(socket: zmq::Socket, allow: AllowList, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match socket.poll(zmq::POLLIN, POLL_MS) {
            Ok(0) | Err(zmq::Error::EINTR) => continue,
            Ok(_) => {}
            Err(err) => {
                tracing::error!(error = %err, "ZAP poll failed");
                return;
            }
        }
        let request = match socket.recv_multipart(0) {
            Ok(frames) => frames,
            Err(err) => {
                tracing::error!(error = %err, "ZAP receive failed");
                return;
            }
        };
        let reply = decide(&request, &allow);
        if let Err(err) = socket.send_multipart(reply, 0) {
            tracing::error!(error = %err, "ZAP reply failed");
            return;
        }
    }
}

/// Request: version, request id, domain, address, routing id, mechanism, credentials…
/// Reply: version, request id, status code, status text, user id, metadata.
fn decide(request: &[Vec<u8>], allow: &AllowList) -> Vec<Vec<u8>> {
    let request_id = request.get(1).cloned().unwrap_or_default();
    let deny = |code: &str, text: &str| {
        vec![
            b"1.0".to_vec(),
            request_id.clone(),
            code.as_bytes().to_vec(),
            text.as_bytes().to_vec(),
            Vec::new(),
            Vec::new(),
        ]
    };
    if request.len() < 7 || request[0] != b"1.0" {
        return deny("500", "malformed ZAP request");
    }
    if request[5] != b"CURVE" {
        return deny("400", "only CURVE is accepted");
    }
    let Ok(key) = <[u8; 32]>::try_from(request[6].as_slice()) else {
        return deny("400", "bad client key");
    };
    if allow.agent_for(&key).is_none() {
        tracing::debug!(key = %z85::encode(key), "mesh handshake refused: key not allowed");
        return deny("400", "key not allowed");
    }
    // The user id is the key itself: the I/O thread maps it back to the agent on every message,
    // so a key removed after the handshake stops working at once.
    vec![
        b"1.0".to_vec(),
        request_id,
        b"200".to_vec(),
        b"OK".to_vec(),
        z85::encode(key).into_bytes(),
        Vec::new(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(mechanism: &[u8], key: &[u8]) -> Vec<Vec<u8>> {
        vec![
            b"1.0".to_vec(),
            b"7".to_vec(),
            b"xerotier".to_vec(),
            b"127.0.0.1".to_vec(),
            Vec::new(),
            mechanism.to_vec(),
            key.to_vec(),
        ]
    }

    #[test]
    fn only_allowed_curve_keys_pass() {
        let allow = AllowList::default();
        allow.allow([5; 32], "agt_a");
        let ok = decide(&request(b"CURVE", &[5; 32]), &allow);
        assert_eq!(ok[2], b"200");
        assert_eq!(ok[4], z85::encode([5u8; 32]).into_bytes());
        assert_eq!(decide(&request(b"CURVE", &[6; 32]), &allow)[2], b"400");
        assert_eq!(decide(&request(b"PLAIN", &[5; 32]), &allow)[2], b"400");
        assert_eq!(decide(&request(b"CURVE", &[5; 3]), &allow)[2], b"400");
        assert_eq!(decide(&[b"1.0".to_vec()], &allow)[2], b"500");
    }
}
