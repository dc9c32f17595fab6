//! The agent's half of CURVE rotation: a pending key pair that survives crashes, a signed
//! acknowledgement, and the switch once the router has promoted the key.
//!
//! A rotation moves two keys together: the CURVE key and the Ed25519 signing key that proves
//! the agent's acknowledgements. One pending file holds both, so they are generated, kept and
//! discarded as one; at promotion the CURVE key file is replaced first, then the signing key
//! file, then the pending file is removed. A crash anywhere in between is finished at the next
//! start by [`finish_interrupted`].

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
    /// The new Ed25519 signing key's secret, hex.
    signing_secret_hex: String,
}

/// A generated key pair waiting for promotion: the new CURVE key and the new signing key.
#[derive(Debug)]
pub struct PendingKey {
    pub request_id: String,
    pub key: CurveKeyPair,
    pub signing: SigningKeyPair,
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
    let signing = SigningKeyPair::from_secret_hex(&file.signing_secret_hex)?;
    Ok(Some(PendingKey { request_id: file.request_id, key, signing }))
}

/// The pending keys for `request_id`: the ones already on disk (a re-sent instruction after a
/// crash), or fresh ones, stored durably (0600, atomically) before anything is acknowledged.
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
    let signing = SigningKeyPair::generate(entropy);
    let file = PendingFile {
        request_id: request_id.to_string(),
        secret_hex: key.secret_hex().expose_secret().to_string(),
        signing_secret_hex: signing.secret_hex().expose_secret().to_string(),
    };
    let text = zeroize::Zeroizing::new(serde_json::to_vec(&file)?);
    write_secret_file(&pending_path(curve_key_path), &text)?;
    Ok(PendingKey { request_id: request_id.to_string(), key, signing })
}

/// The acknowledgement frame: the payload bytes (binding both new public keys), signed with
/// the domain prefix by the agent's current signing key.
pub fn acknowledgement(
    agent_id: &str,
    request_id: &str,
    nonce: &str,
    new_key: &CurveKeyPair,
    new_signing_public: &str,
    signing: &SigningKeyPair,
) -> Frame {
    let payload = encode_ack_payload(&RotateAckPayload {
        agent_id: agent_id.to_string(),
        request_id: request_id.to_string(),
        nonce: nonce.to_string(),
        new_public_key: new_key.public_z85(),
        new_signing_public_key: new_signing_public.to_string(),
    });
    let signature = signing.sign(&rotate_ack_signing_input(&payload)).to_vec();
    Frame::RotateAck { payload, signature }
}

/// What an honest acknowledgement is made of, less the new keys.
#[derive(Debug, Clone, Copy)]
pub struct Ack<'a> {
    pub agent_id: &'a str,
    pub request_id: &'a str,
    pub nonce: &'a str,
    /// The current signing key, which signs.
    pub signing: &'a SigningKeyPair,
}

impl Ack<'_> {
    /// The acknowledgement of the pending keys.
    pub fn sign(&self, pending: &PendingKey) -> Frame {
        acknowledgement(
            self.agent_id,
            self.request_id,
            self.nonce,
            &pending.key,
            &pending.signing.public_hex(),
            self.signing,
        )
    }
}

/// The key files a promotion replaces.
#[derive(Debug, Clone, Copy)]
pub struct KeyPaths<'a> {
    pub curve: &'a Path,
    pub signing: &'a Path,
}

/// Makes the pending keys the agent's keys: the CURVE key written over its file atomically,
/// then the signing key over its file, then the pending file removed. `between` runs between
/// the two replaces (the crash-safety tests kill there). A crash at any point leaves a pending
/// file whose CURVE key is either not yet in place (the router re-sends the promotion when the
/// agent says hello on its old key) or already in place ([`finish_interrupted`] completes it).
pub fn promote(
    paths: KeyPaths<'_>,
    pending: &PendingKey,
    between: impl FnOnce(),
) -> anyhow::Result<()> {
    pending.key.save(paths.curve)?;
    between();
    pending.signing.save(paths.signing)?;
    discard(paths.curve)
}

/// At startup: a promotion interrupted after the CURVE key file was replaced (the pending
/// CURVE key is the current one) is finished, so the signing key always moves with the CURVE
/// key the router now holds. Returns whether there was one to finish.
pub fn finish_interrupted(paths: KeyPaths<'_>) -> anyhow::Result<bool> {
    let Some(pending) = load_pending(paths.curve)? else { return Ok(false) };
    let current = CurveKeyPair::load(paths.curve)?;
    if current.public_bytes() != pending.key.public_bytes() {
        return Ok(false);
    }
    pending.signing.save(paths.signing)?;
    discard(paths.curve)?;
    Ok(true)
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
        let signing_path = dir.path().join("signing.hex");
        let paths = KeyPaths { curve: &key_path, signing: &signing_path };
        let first = pending_for(&key_path, "r1", &entropy).unwrap();
        let again = pending_for(&key_path, "r1", &entropy).unwrap();
        assert_eq!(first.key.public_bytes(), again.key.public_bytes());
        assert_eq!(first.signing.public_hex(), again.signing.public_hex());
        let other = pending_for(&key_path, "r2", &entropy).unwrap();
        assert_ne!(first.key.public_bytes(), other.key.public_bytes());
        assert_ne!(first.signing.public_hex(), other.signing.public_hex());
        promote(paths, &other, || {}).unwrap();
        assert!(!pending_path(&key_path).exists());
        assert_eq!(CurveKeyPair::load(&key_path).unwrap().public_bytes(), other.key.public_bytes());
        assert_eq!(
            SigningKeyPair::load_or_create(&signing_path, &entropy).unwrap().public_hex(),
            other.signing.public_hex()
        );
    }

    #[cfg(unix)]
    #[test]
    fn pending_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("curve.hex");
        pending_for(&key_path, "r1", &SeededEntropy::new(5)).unwrap();
        let mode = std::fs::metadata(pending_path(&key_path)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_promotion_interrupted_between_the_key_files_is_finished_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let entropy = SeededEntropy::new(3);
        let key_path = dir.path().join("curve.hex");
        let signing_path = dir.path().join("signing.hex");
        let paths = KeyPaths { curve: &key_path, signing: &signing_path };
        CurveKeyPair::load_or_create(&key_path, &entropy).unwrap();
        let old_signing = SigningKeyPair::load_or_create(&signing_path, &entropy).unwrap();
        // Pending but not promoted: nothing to finish, the old keys stay.
        let pending = pending_for(&key_path, "r1", &entropy).unwrap();
        assert!(!finish_interrupted(paths).unwrap());
        assert!(pending_path(&key_path).exists());
        assert_eq!(
            SigningKeyPair::load_or_create(&signing_path, &entropy).unwrap().public_hex(),
            old_signing.public_hex()
        );
        // The CURVE key file was replaced, then the agent died: the signing key follows.
        pending.key.save(&key_path).unwrap();
        assert!(finish_interrupted(paths).unwrap());
        assert!(!pending_path(&key_path).exists());
        assert_eq!(
            SigningKeyPair::load_or_create(&signing_path, &entropy).unwrap().public_hex(),
            pending.signing.public_hex()
        );
        assert!(!finish_interrupted(paths).unwrap());
    }

    #[test]
    fn acknowledgement_is_signed_over_the_payload_bytes() {
        let entropy = SeededEntropy::new(2);
        let signing = SigningKeyPair::generate(&entropy);
        let key = CurveKeyPair::generate(&entropy);
        let next = SigningKeyPair::generate(&entropy);
        let Frame::RotateAck { payload, signature } =
            acknowledgement("agt_a", "r1", "n1", &key, &next.public_hex(), &signing)
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
        assert_eq!(body.new_signing_public_key, next.public_hex());
    }
}
