//! Frames on the CURVE mesh: MessagePack, each one an [`Envelope`] with a version tag.
//!
//! This module is the only place that knows frame layouts: everything else calls
//! [`encode`] and [`decode`].

use serde::{Deserialize, Serialize};

use crate::agents::CapabilityManifest;
use crate::invocation::InvocationResult;
use crate::workspace_credentials::ReloadReport;

/// The version every frame carries; a frame of another version is refused.
pub const MESH_PROTOCOL_VERSION: u8 = 1;
/// Frames above this size are refused (and the socket is told to drop such messages).
pub const MAX_FRAME_BYTES: usize = 256 * 1024;
/// Frames nested deeper than this (maps and arrays, the envelope included) are refused, so
/// decoding cannot exhaust a thread's stack. The same limit as `serde_json`'s, so whatever a
/// frame carries can be stored as JSON and read back.
pub const MAX_NESTING: usize = 128;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u8,
    pub frame: Frame,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Frame {
    /// Agent → router, on (re)connect.
    Hello { agent_id: String, xem_version: String, manifest_hash: String, manifest_version: u64 },
    /// Agent → router, every `lease_renewal_interval_ms`.
    LeaseRenewal {
        agent_id: String,
        seq: u64,
        in_flight: Vec<String>,
        manifest_hash: String,
        manifest_version: u64,
    },
    /// Router → agent.
    LeaseAck { seq: u64 },
    /// Router → agent, after every hello: the mesh address of every live replica, to fail
    /// over to. At most [`MAX_REPLICA_ADDRS`]; the agent checks each (`formats::is_mesh_addr`)
    /// and refuses the whole list if any is not one.
    Replicas { mesh_addrs: Vec<String> },
    /// Router → agent: its credentials were revoked; it must re-enroll with a new join key.
    Revoked { reason: String },
    /// Router → agent: generate a fresh CURVE key pair, keep it pending, acknowledge.
    RotateCurve { request_id: String, nonce: String },
    /// Agent → router: `payload` is an encoded [`RotateAckPayload`]; `signature` is the agent's
    /// Ed25519 signature over [`rotate_ack_signing_input`] of exactly those bytes.
    RotateAck {
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// Router → agent: the new key is promoted; switch to it and reconnect.
    RotationPromoted { request_id: String },
    /// Router → agent: the rotation ended without promotion; discard the pending key.
    RotationFailed { request_id: String, reason: String },
    /// Agent → router, after every hello: the full capability manifest (hello carries its
    /// hash only).
    Manifest { agent_id: String, manifest: CapabilityManifest },
    /// Router → agent: run this tool in this workspace. `args_json` was validated against the
    /// tool's schema by the router.
    Invoke { invocation_id: String, tool: String, workspace: String, args_json: String },
    /// Router → agent: stop this invocation (its process group is killed).
    CancelInvocation { invocation_id: String },
    /// Agent → router: it started, with this generation of its workspace credential.
    InvocationStarted { invocation_id: String, credential_generation: u64 },
    /// Agent → router: output as it is produced (`stream` is `stdout` or `stderr`).
    InvocationOutput {
        invocation_id: String,
        stream: String,
        #[serde(with = "serde_bytes")]
        chunk: Vec<u8>,
    },
    /// Agent → router: how it ended. Re-sent until acknowledged.
    InvocationFinished { result: InvocationResult },
    /// Agent → router: it will not run this one (unknown tool or workspace, shutting down);
    /// the router puts it back in the queue.
    InvocationRefused { invocation_id: String, reason: String },
    /// Router → agent: the result is recorded; stop re-sending it.
    ResultAck { invocation_id: String },
    /// Agent → router: what a credentials reload (startup, SIGHUP) did.
    CredentialsReloaded { report: ReloadReport },
    /// Router → agent, over the authenticated session: the router's mesh CURVE public keys the
    /// agent must accept, in the order to try them (a staged rotation of the router's mesh key,
    /// SPEC §9). At most [`MAX_ROUTER_MESH_KEYS`]; the agent checks every entry
    /// (`formats::is_router_key_id`, `formats::is_curve_public_key`) and refuses the whole set if
    /// any is not one, or if the set is empty.
    ///
    /// `tls_ca_pins` (`sha256:<hex>`, at most [`MAX_ROUTER_TLS_CAS`]) are the TLS CAs the agent
    /// is to trust for the router's HTTPS (the signed key fetch) during and after a CA rotation;
    /// empty when the router has no CA of its own to rotate (then the enrollment pin stays).
    RouterKeys {
        keys: Vec<RouterMeshKey>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tls_ca_pins: Vec<String>,
    },
    /// Agent → router: the set above is saved durably (its identity file); `kids` are the key
    /// ids it now holds, in its order: the mesh keys' `mks-` ids, then the TLS CAs' `tls-` ids
    /// ([`tls_kid_of_pin`]).
    RouterKeysAck { kids: Vec<String> },
}

/// The most router mesh keys an agent holds at once: the serving key and the one being rolled
/// in (or out).
pub const MAX_ROUTER_MESH_KEYS: usize = 2;

/// The most TLS CAs an agent trusts at once: the serving CA and the one being rolled in (or out).
pub const MAX_ROUTER_TLS_CAS: usize = 2;

/// The router key id of a TLS CA from its pin: `tls-` and the first 16 hex digits of the
/// certificate's SHA-256 (the router derives the same id from the certificate). `None` when
/// `pin` is not `sha256:` and 64 lowercase hex digits.
pub fn tls_kid_of_pin(pin: &str) -> Option<String> {
    let hex = pin.strip_prefix("sha256:")?;
    let well_formed =
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    well_formed.then(|| format!("tls-{}", &hex[..16]))
}

/// The key ids an agent that holds `keys` and trusts `tls_ca_pins` acknowledges
/// (`Frame::RouterKeysAck`): the mesh keys' kids in their order, then the TLS CAs' kids. The
/// router compares a stored acknowledgement with the same list for the set it announces.
pub fn router_keys_kids(keys: &[RouterMeshKey], tls_ca_pins: &[String]) -> Vec<String> {
    let mesh = keys.iter().map(|k| k.kid.clone());
    mesh.chain(tls_ca_pins.iter().filter_map(|pin| tls_kid_of_pin(pin))).collect()
}

/// One of the router's mesh CURVE public keys, named by its key id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouterMeshKey {
    /// `mks-` and 16 lowercase hex digits of the key's fingerprint ([`crate::formats::ROUTER_KEY_ID`]).
    #[schema(pattern = "^mks-[0-9a-f]{16}$")]
    pub kid: String,
    /// Z85.
    #[schema(min_length = 40, max_length = 40)]
    pub public_key: String,
}

/// The most replica addresses an agent accepts in one list (a longer list is refused whole).
pub const MAX_REPLICA_ADDRS: usize = 32;

/// What a rotation acknowledgement binds: agent, request, the router's nonce and the agent's
/// two new keys. It is signed with the agent's current (old) signing key; the new signing key
/// takes over at promotion, so each rotation's proof chains to the one before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateAckPayload {
    pub agent_id: String,
    pub request_id: String,
    pub nonce: String,
    /// The new CURVE public key, Z85.
    pub new_public_key: String,
    /// The new Ed25519 signing public key, 64 hex digits
    /// ([`crate::formats::is_signing_public_key`]); it must differ from the current one.
    pub new_signing_public_key: String,
}

/// Domain separation: an acknowledgement signature can never be valid as anything else.
pub const ROTATE_ACK_DOMAIN: &[u8] = b"xerotier/curve-rotate-ack/v1\0";

pub fn encode_ack_payload(payload: &RotateAckPayload) -> Vec<u8> {
    rmp_serde::to_vec_named(payload).unwrap_or_default()
}

pub fn decode_ack_payload(bytes: &[u8]) -> Result<RotateAckPayload, FrameError> {
    rmp_serde::from_slice(bytes).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// The bytes that are signed and verified: the domain prefix, then the payload as received.
pub fn rotate_ack_signing_input(payload: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(ROTATE_ACK_DOMAIN.len() + payload.len());
    input.extend_from_slice(ROTATE_ACK_DOMAIN);
    input.extend_from_slice(payload);
    input
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES} byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("unsupported protocol version {0}")]
    Version(u8),
}

pub fn encode(frame: &Frame) -> Vec<u8> {
    let envelope = Envelope { v: MESH_PROTOCOL_VERSION, frame: frame.clone() };
    // Serializing these plain types to a Vec cannot fail; an empty frame is refused by peers.
    rmp_serde::to_vec_named(&envelope).unwrap_or_default()
}

pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(bytes.len()));
    }
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes);
    deserializer.set_max_depth(MAX_NESTING);
    let envelope = Envelope::deserialize(&mut deserializer)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if envelope.v != MESH_PROTOCOL_VERSION {
        return Err(FrameError::Version(envelope.v));
    }
    Ok(envelope.frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frame = Frame::LeaseRenewal {
            agent_id: "agt_x".into(),
            seq: 7,
            in_flight: vec!["inv_1".into()],
            manifest_hash: "abc".into(),
            manifest_version: 2,
        };
        assert_eq!(decode(&encode(&frame)).unwrap(), frame);
        let keys = Frame::RouterKeys {
            keys: vec![RouterMeshKey {
                kid: "mks-0123456789abcdef".into(),
                public_key: "x".repeat(40),
            }],
            tls_ca_pins: vec![format!("sha256:{}", "ab".repeat(32))],
        };
        assert_eq!(decode(&encode(&keys)).unwrap(), keys);
    }

    #[test]
    fn garbage_wrong_version_and_oversized_frames_are_refused() {
        assert!(matches!(decode(b"\xc1\xc1"), Err(FrameError::Malformed(_))));
        let other =
            rmp_serde::to_vec_named(&Envelope { v: 9, frame: Frame::LeaseAck { seq: 1 } }).unwrap();
        assert_eq!(decode(&other), Err(FrameError::Version(9)));
        assert!(matches!(decode(&vec![0u8; MAX_FRAME_BYTES + 1]), Err(FrameError::TooLarge(_))));
    }

    /// A `Manifest` frame whose tool schema is `depth` one-element MessagePack arrays deep.
    fn nested_manifest_frame(depth: usize) -> Vec<u8> {
        let manifest = CapabilityManifest {
            version: 1,
            tools: vec![crate::agents::ManifestTool {
                name: "t".into(),
                description: String::new(),
                risk: "read".into(),
                timeout_seconds: 1,
                args_schema: serde_json::Value::String("PLACEHOLDER".into()),
            }],
            workspaces: vec![],
        };
        let bytes = encode(&Frame::Manifest { agent_id: "agt_1".into(), manifest });
        let placeholder = b"\xabPLACEHOLDER";
        let at = bytes.windows(placeholder.len()).position(|w| w == placeholder).unwrap();
        let mut nested = bytes[..at].to_vec();
        nested.extend(std::iter::repeat_n(0x91u8, depth)); // fixarray of one element
        nested.push(0xc0); // nil
        nested.extend_from_slice(&bytes[at + placeholder.len()..]);
        nested
    }

    #[test]
    fn deeply_nested_frames_are_refused_without_exhausting_the_stack() {
        // Found while writing the `mesh_frame` fuzz target (fuzz/). Decoding recurses once per
        // nesting level and the mesh I/O threads have the default 2 MiB stack; with only
        // rmp-serde's own limit (1024 levels) a 1 KiB frame overflowed it in a debug build
        // and aborted the process; any enrolled agent can send such a frame to the router.
        let decode_on_mesh_thread = |bytes: Vec<u8>| {
            std::thread::Builder::new()
                .stack_size(2 * 1024 * 1024)
                .spawn(move || decode(&bytes))
                .unwrap()
                .join()
                .unwrap()
        };
        let shallow = decode_on_mesh_thread(nested_manifest_frame(MAX_NESTING - 10));
        assert!(matches!(shallow, Ok(Frame::Manifest { .. })), "{shallow:?}");
        for depth in [MAX_NESTING, 1_000, 100_000] {
            let deep = decode_on_mesh_thread(nested_manifest_frame(depth));
            assert!(matches!(deep, Err(FrameError::Malformed(_))), "{depth}: {deep:?}");
        }
    }
}
