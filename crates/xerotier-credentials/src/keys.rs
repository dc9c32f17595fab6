//! Agent and router key pairs: Curve25519 (CURVE transport identity) and Ed25519 (signatures),
//! kept on disk as hex of the secret, 0600.

use std::fmt;
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
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

/// Parses a Z85 CURVE public key (40 characters), without judging it (display, the allow-list
/// loaded from the store). What an agent offers as its identity goes through
/// [`parse_agent_curve_public`].
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

/// Parses a CURVE public key an agent offers as its identity (enrollment, rotation): refuses
/// the all-zero key and every low-order point, on which any Diffie-Hellman result is known.
pub fn parse_agent_curve_public(z85_text: &str) -> Result<[u8; 32], KeyError> {
    let key = parse_curve_public(z85_text)?;
    if is_weak_curve_public(&key) {
        return Err(KeyError::InvalidPublic {
            what: "CURVE public key (Z85)",
            detail: "a low-order point (weak key)".into(),
        });
    }
    Ok(key)
}

/// Whether an X25519 public key is a low-order point (all-zero included, non-canonical
/// encodings too): a clamped scalar is a multiple of 8, so the shared secret with such a point
/// is all zeros whatever the secret (`was_contributory` is false).
pub fn is_weak_curve_public(key: &[u8; 32]) -> bool {
    let probe = StaticSecret::from([0x5a; 32]);
    !probe.diffie_hellman(&PublicKey::from(*key)).was_contributory()
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

/// Verifies an Ed25519 signature by a hex public key, strictly: a weak (small-order) key is
/// refused, and `verify_strict` refuses non-canonical and small-order signature components, so
/// no signature verifies for more than one message-key pair by construction.
pub fn verify_signature(public_hex: &str, message: &[u8], signature: &[u8]) -> bool {
    let Ok(bytes) = hex::decode(public_hex) else { return false };
    let Ok(bytes) = <[u8; 32]>::try_from(bytes) else { return false };
    let Ok(key) = VerifyingKey::from_bytes(&bytes) else { return false };
    if key.is_weak() {
        return false;
    }
    let Ok(signature) = Signature::from_slice(signature) else { return false };
    key.verify_strict(message, &signature).is_ok()
}

/// Parses a hex Ed25519 public key (64 characters).
pub fn parse_signing_public(text: &str) -> Result<[u8; 32], KeyError> {
    let invalid = |detail: &str| KeyError::InvalidPublic {
        what: "Ed25519 public key (hex)",
        detail: detail.to_string(),
    };
    let bytes = hex::decode(text.trim()).map_err(|_| invalid("not hex"))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| invalid("expected 32 bytes"))?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| invalid("not a curve point"))?;
    if key.is_weak() {
        return Err(invalid("a small-order point (weak key)"));
    }
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

    /// The eight small-order points of edwards25519 in their canonical encodings, plus the
    /// non-canonical zero with the sign bit.
    const SMALL_ORDER_ED25519: [&str; 8] = [
        // identity (order 1)
        "0100000000000000000000000000000000000000000000000000000000000000",
        // order 2: y = -1
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        // order 4: y = 0, both signs of x
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        // order 8
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    ];

    #[test]
    fn small_order_ed25519_keys_are_refused() {
        for hex_key in SMALL_ORDER_ED25519 {
            let bytes: [u8; 32] = hex::decode(hex_key).unwrap().try_into().unwrap();
            // Each is a point dalek decodes, and calls weak: the test list is right.
            let key = VerifyingKey::from_bytes(&bytes).unwrap();
            assert!(key.is_weak(), "{hex_key}");
            assert!(parse_signing_public(hex_key).is_err(), "{hex_key} accepted as a signing key");
            assert!(!verify_signature(hex_key, b"anything", &[0u8; 64]), "{hex_key}");
        }
    }

    #[test]
    fn a_signature_that_fits_every_message_under_the_identity_key_is_refused() {
        let identity = SMALL_ORDER_ED25519[0];
        // R = identity, s = 0: [s]B = R + [k]A holds for every message when A is the identity.
        let mut forged = [0u8; 64];
        forged[0] = 1;
        let key =
            VerifyingKey::from_bytes(&hex::decode(identity).unwrap().try_into().unwrap()).unwrap();
        let signature = Signature::from_bytes(&forged);
        use ed25519_dalek::Verifier as _;
        assert!(key.verify(b"any message", &signature).is_ok(), "the lax check is fooled");
        assert!(!verify_signature(identity, b"any message", &forged), "the strict one is not");
        assert!(!verify_signature(identity, b"another message", &forged));
    }

    /// Low-order X25519 points (u-coordinates), including non-canonical encodings (u >= p) and
    /// the same points with the ignored top bit set.
    const LOW_ORDER_X25519: [&str; 9] = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
    ];

    #[test]
    fn low_order_curve_keys_are_refused() {
        for hex_key in LOW_ORDER_X25519 {
            let bytes: [u8; 32] = hex::decode(hex_key).unwrap().try_into().unwrap();
            assert!(is_weak_curve_public(&bytes), "{hex_key}");
            let z85_text = curve_public_z85(&bytes);
            assert!(parse_curve_public(&z85_text).is_ok(), "still parses for display");
            assert!(parse_agent_curve_public(&z85_text).is_err(), "{hex_key} accepted");
        }
        let honest = CurveKeyPair::generate(&SeededEntropy::new(3));
        assert!(!is_weak_curve_public(&honest.public_bytes()));
        assert_eq!(parse_agent_curve_public(&honest.public_z85()).unwrap(), honest.public_bytes());
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
