//! The agent's half of CURVE rotation: a pending key that survives crashes, a signed
//! acknowledgement, and the switch once the router has promoted the key.

use std::path::{Path, PathBuf};

use anyhow::Context;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use xerotier_core::Entropy;
use xerotier_credentials::{CurveKeyPair, SigningKeyPair, write_secret_file};
use xerotier_proto::mesh::{Frame, RotateAckPayload, encode_ack_payload, rotate_ack_signing_input};

#[derive(Serialize, Deserialize)]
struct PendingFile {
    request_id: String,
    secret_hex: String,
}

/// A generated key waiting for promotion.
#[derive(Debug)]
pub struct PendingKey {
    pub request_id: String,
    pub key: CurveKeyPair,
}

pub fn pending_path(curve_key_path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.pending", curve_key_path.display()))
}

pub fn load_pending(curve_key_path: &Path) -> anyhow::Result<Option<PendingKey>> {
    let path = pending_path(curve_key_path);
    if !path.exists() {
        return Ok(None);
    }
    let text = xerotier_credentials::read_secret_file(&path)?;
    let file: PendingFile = serde_json::from_str(text.expose_secret())
        .with_context(|| format!("{} is corrupt", path.display()))?;
    let key = CurveKeyPair::from_secret_hex(&file.secret_hex)?;
    Ok(Some(PendingKey { request_id: file.request_id, key }))
}

/// The pending key for `request_id`: the one already on disk (a re-sent instruction after a
/// crash), or a fresh one, stored durably before anything is acknowledged.
pub fn pending_for(
    curve_key_path: &Path,
    request_id: &str,
    entropy: &dyn Entropy,
) -> anyhow::Result<PendingKey> {
    if let Some(pending) = load_pending(curve_key_path)?
        && pending.request_id == request_id
    {
        return Ok(pending);
    }
    let key = CurveKeyPair::generate(entropy);
    let file = PendingFile {
        request_id: request_id.to_string(),
        secret_hex: key.secret_hex().expose_secret().to_string(),
    };
    let text = zeroize::Zeroizing::new(serde_json::to_vec(&file)?);
    write_secret_file(&pending_path(curve_key_path), &text)?;
    Ok(PendingKey { request_id: request_id.to_string(), key })
}

/// The acknowledgement frame: the payload bytes, signed with the domain prefix.
pub fn acknowledgement(
    agent_id: &str,
    request_id: &str,
    nonce: &str,
    new_key: &CurveKeyPair,
    signing: &SigningKeyPair,
) -> Frame {
    let payload = encode_ack_payload(&RotateAckPayload {
        agent_id: agent_id.to_string(),
        request_id: request_id.to_string(),
        nonce: nonce.to_string(),
        new_public_key: new_key.public_z85(),
    });
    let signature = signing.sign(&rotate_ack_signing_input(&payload)).to_vec();
    Frame::RotateAck { payload, signature }
}

/// What an honest acknowledgement is made of, less the new key.
#[derive(Debug, Clone, Copy)]
pub struct Ack<'a> {
    pub agent_id: &'a str,
    pub request_id: &'a str,
    pub nonce: &'a str,
    pub signing: &'a SigningKeyPair,
}

impl Ack<'_> {
    /// The acknowledgement of `new_key`.
    pub fn sign(&self, new_key: &CurveKeyPair) -> Frame {
        acknowledgement(self.agent_id, self.request_id, self.nonce, new_key, self.signing)
    }
}

/// Makes the pending key the agent's key: written over the key file atomically, then the
/// pending file is removed. A crash between the two leaves the new key in place and a pending
/// file that a later rotation replaces.
pub fn promote(curve_key_path: &Path, pending: &PendingKey) -> anyhow::Result<()> {
    pending.key.save(curve_key_path)?;
    discard(curve_key_path)
}

pub fn discard(curve_key_path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(pending_path(curve_key_path)) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use xerotier_core::SeededEntropy;
    use xerotier_credentials::verify_signature;
    use xerotier_proto::mesh::decode_ack_payload;

    use super::*;

    #[test]
    fn pending_key_survives_and_is_reused_for_the_same_request() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("curve.hex");
        let entropy = SeededEntropy::new(1);
        let first = pending_for(&key_path, "r1", &entropy).unwrap();
        let again = pending_for(&key_path, "r1", &entropy).unwrap();
        assert_eq!(first.key.public_bytes(), again.key.public_bytes());
        let other = pending_for(&key_path, "r2", &entropy).unwrap();
        assert_ne!(first.key.public_bytes(), other.key.public_bytes());
        promote(&key_path, &other).unwrap();
        assert!(!pending_path(&key_path).exists());
        assert_eq!(CurveKeyPair::load(&key_path).unwrap().public_bytes(), other.key.public_bytes());
    }

    #[test]
    fn acknowledgement_is_signed_over_the_payload_bytes() {
        let entropy = SeededEntropy::new(2);
        let signing = SigningKeyPair::generate(&entropy);
        let key = CurveKeyPair::generate(&entropy);
        let Frame::RotateAck { payload, signature } =
            acknowledgement("agt_a", "r1", "n1", &key, &signing)
        else {
            panic!("not an ack")
        };
        assert!(verify_signature(
            &signing.public_hex(),
            &rotate_ack_signing_input(&payload),
            &signature
        ));
        assert!(
            !verify_signature(&signing.public_hex(), &payload, &signature),
            "domain prefix is required"
        );
        let body = decode_ack_payload(&payload).unwrap();
        assert_eq!((body.agent_id.as_str(), body.nonce.as_str()), ("agt_a", "n1"));
    }
}
