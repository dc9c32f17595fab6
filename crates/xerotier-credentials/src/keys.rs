//! Agent and router key pairs: Curve25519 (CURVE transport identity) and Ed25519 (signatures),
//! kept on disk as hex of the secret, 0600.

use std::fmt;
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use xerotier_core::Entropy;
use zeroize::Zeroizing;

use crate::secret_file::{SecretFileError, read_secret_file, write_secret_file};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    File(#[from] SecretFileError),
    #[error("{path}: not a 64-character hex secret key")]
    Malformed { path: String },
    #[error("not a valid {what}: {detail}")]
    InvalidPublic { what: &'static str, detail: String },
}

/// A Curve25519 key pair for ZeroMQ CURVE.
pub struct CurveKeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl CurveKeyPair {
    pub fn generate(entropy: &dyn Entropy) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        entropy.fill(bytes.as_mut());
        Self::from_secret(*bytes)
    }

    fn from_secret(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    pub fn public_bytes(&self) -> [u8; 32] {
        *self.public.as_bytes()
    }

    pub fn public_z85(&self) -> String {
        z85::encode(self.public.as_bytes())
    }

    /// The secret in the Z85 form libzmq's `CURVE_SECRETKEY` option takes.
    pub fn secret_z85(&self) -> SecretString {
        SecretString::from(z85::encode(self.secret.as_bytes()))
    }

    /// Loads the key at `path`, or creates it (0600, atomically) when the file does not exist.
    pub fn load_or_create(path: &Path, entropy: &dyn Entropy) -> Result<Self, KeyError> {
        load_or_create_secret(path, entropy).map(Self::from_secret)
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        load_secret(path).map(Self::from_secret)
    }

    /// From the hex form [`Self::secret_hex`] produces.
    pub fn from_secret_hex(text: &str) -> Result<Self, KeyError> {
        parse_hex_secret(text, "CURVE secret key").map(Self::from_secret)
    }

    pub fn secret_hex(&self) -> SecretString {
        SecretString::from(hex::encode(self.secret.as_bytes()))
    }

    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let text = Zeroizing::new(hex::encode(self.secret.as_bytes()));
        write_secret_file(path, format!("{}\n", text.as_str()).as_bytes())?;
        Ok(())
    }
}

impl fmt::Debug for CurveKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurveKeyPair").field("public", &self.public_z85()).finish_non_exhaustive()
    }
}

/// Parses a Z85 CURVE public key (40 characters).
pub fn parse_curve_public(z85_text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = z85::decode(z85_text.trim()).map_err(|e| KeyError::InvalidPublic {
        what: "CURVE public key (Z85)",
        detail: format!("{e:?}"),
    })?;
    bytes.try_into().map_err(|_| KeyError::InvalidPublic {
        what: "CURVE public key (Z85)",
        detail: "expected 32 bytes".into(),
    })
}

/// The Z85 text of a raw CURVE public key.
pub fn curve_public_z85(key: &[u8; 32]) -> String {
    z85::encode(key)
}

/// Short, stable fingerprint of a public key for display: SHA-256, first 16 bytes, hex.
pub fn fingerprint(public: &[u8]) -> String {
    hex::encode(&Sha256::digest(public)[..16])
}

/// An Ed25519 signing key.
pub struct SigningKeyPair {
    key: SigningKey,
}

impl SigningKeyPair {
    pub fn generate(entropy: &dyn Entropy) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        entropy.fill(seed.as_mut());
        Self { key: SigningKey::from_bytes(&seed) }
    }

    pub fn load_or_create(path: &Path, entropy: &dyn Entropy) -> Result<Self, KeyError> {
        load_or_create_secret(path, entropy).map(|seed| Self { key: SigningKey::from_bytes(&seed) })
    }

    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let text = Zeroizing::new(hex::encode(self.key.to_bytes()));
        write_secret_file(path, format!("{}\n", text.as_str()).as_bytes())?;
        Ok(())
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }

    /// From the hex form [`Self::secret_hex`] produces.
    pub fn from_secret_hex(text: &str) -> Result<Self, KeyError> {
        parse_hex_secret(text, "Ed25519 secret key")
            .map(|seed| Self { key: SigningKey::from_bytes(&seed) })
    }

    pub fn secret_hex(&self) -> SecretString {
        SecretString::from(hex::encode(self.key.to_bytes()))
    }

    pub fn public_bytes(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

impl fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyPair").field("public", &self.public_hex()).finish_non_exhaustive()
    }
}

/// Verifies an Ed25519 signature by a hex public key.
pub fn verify_signature(public_hex: &str, message: &[u8], signature: &[u8]) -> bool {
    let Ok(bytes) = hex::decode(public_hex) else { return false };
    let Ok(bytes) = <[u8; 32]>::try_from(bytes) else { return false };
    let Ok(key) = VerifyingKey::from_bytes(&bytes) else { return false };
    let Ok(signature) = Signature::from_slice(signature) else { return false };
    key.verify(message, &signature).is_ok()
}

/// Parses a hex Ed25519 public key (64 characters).
pub fn parse_signing_public(text: &str) -> Result<[u8; 32], KeyError> {
    let invalid = |detail: &str| KeyError::InvalidPublic {
        what: "Ed25519 public key (hex)",
        detail: detail.to_string(),
    };
    let bytes = hex::decode(text.trim()).map_err(|_| invalid("not hex"))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| invalid("expected 32 bytes"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| invalid("not a curve point"))?;
    Ok(bytes)
}

fn parse_hex_secret(text: &str, what: &'static str) -> Result<[u8; 32], KeyError> {
    let bytes = Zeroizing::new(
        hex::decode(text.trim())
            .map_err(|_| KeyError::InvalidPublic { what, detail: "not hex".into() })?,
    );
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| KeyError::InvalidPublic { what, detail: "expected 32 bytes".into() })
}

fn load_secret(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = read_secret_file(path)?;
    let bytes = Zeroizing::new(
        hex::decode(text.expose_secret())
            .map_err(|_| KeyError::Malformed { path: path.display().to_string() })?,
    );
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| KeyError::Malformed { path: path.display().to_string() })
}

fn load_or_create_secret(path: &Path, entropy: &dyn Entropy) -> Result<[u8; 32], KeyError> {
    if path.exists() {
        return load_secret(path);
    }
    let mut bytes = [0u8; 32];
    entropy.fill(&mut bytes);
    let text = Zeroizing::new(hex::encode(bytes));
    write_secret_file(path, format!("{}\n", text.as_str()).as_bytes())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use xerotier_core::SeededEntropy;

    use super::*;

    #[test]
    fn curve_key_is_created_0600_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent-curve-key.hex");
        let entropy = SeededEntropy::new(1);
        let created = CurveKeyPair::load_or_create(&path, &entropy).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = CurveKeyPair::load_or_create(&path, &entropy).unwrap();
        assert_eq!(created.public_bytes(), loaded.public_bytes());
        assert_eq!(parse_curve_public(&created.public_z85()).unwrap(), created.public_bytes());
        let secret = created.secret_z85();
        assert!(!format!("{created:?}").contains(secret.expose_secret()));
    }

    #[test]
    fn signatures_verify_only_for_the_signed_message_and_key() {
        let entropy = SeededEntropy::new(2);
        let key = SigningKeyPair::generate(&entropy);
        let other = SigningKeyPair::generate(&entropy);
        let signature = key.sign(b"message");
        assert!(verify_signature(&key.public_hex(), b"message", &signature));
        assert!(!verify_signature(&key.public_hex(), b"messagE", &signature));
        assert!(!verify_signature(&other.public_hex(), b"message", &signature));
        assert!(parse_signing_public(&key.public_hex()).is_ok());
        assert!(parse_signing_public("zz").is_err());
    }

    #[test]
    fn corrupt_key_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.hex");
        write_secret_file(&path, b"not hex").unwrap();
        assert!(matches!(
            CurveKeyPair::load_or_create(&path, &SeededEntropy::new(1)),
            Err(KeyError::Malformed { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"not hex");
    }
}
