//! Frames on the CURVE mesh: MessagePack, each one an [`Envelope`] with a version tag.
//!
//! This module is the only place that knows frame layouts: everything else calls
//! [`encode`] and [`decode`].

use serde::{Deserialize, Serialize};

/// The version every frame carries; a frame of another version is refused.
pub const MESH_PROTOCOL_VERSION: u8 = 1;
/// Frames above this size are refused (and the socket is told to drop such messages).
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

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
    /// Router → agent: its credentials were revoked; it must re-enroll with a new join key.
    Revoked { reason: String },
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
    let envelope: Envelope =
        rmp_serde::from_slice(bytes).map_err(|e| FrameError::Malformed(e.to_string()))?;
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
    }

    #[test]
    fn garbage_wrong_version_and_oversized_frames_are_refused() {
        assert!(matches!(decode(b"\xc1\xc1"), Err(FrameError::Malformed(_))));
        let other =
            rmp_serde::to_vec_named(&Envelope { v: 9, frame: Frame::LeaseAck { seq: 1 } }).unwrap();
        assert_eq!(decode(&other), Err(FrameError::Version(9)));
        assert!(matches!(decode(&vec![0u8; MAX_FRAME_BYTES + 1]), Err(FrameError::TooLarge(_))));
    }
}
