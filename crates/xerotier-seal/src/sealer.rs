//! Seal and open named secrets: `xs1:<kek-id>:<base64(nonce || ciphertext || tag)>`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use secrecy::SecretString;
use xerotier_core::SharedEntropy;
use zeroize::Zeroizing;

use crate::MasterKey;

/// What every sealed value starts with (format version 1).
pub const SEALED_PREFIX: &str = "xs1:";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Associated data = this prefix + the secret's name: a value moved to another name fails.
const AAD_DOMAIN: &[u8] = b"xerotier-seal/v1\0";

/// Why a sealed value did not open. Names the secret and key ids only, never any bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "the store's secrets are sealed under master key {sealed_under}; this router was given \
         {given} (secret {name})"
    )]
    WrongKey { name: String, sealed_under: String, given: String },
    #[error("sealed secret {name} is malformed: {detail}")]
    Malformed { name: String, detail: &'static str },
    #[error(
        "sealed secret {name} does not authenticate under master key {kek_id}: it was altered, \
         truncated or copied from another secret"
    )]
    Tampered { name: String, kek_id: String },
    #[error("secret {name} is not sealed")]
    NotSealed { name: String },
    #[error("sealing secret {name} failed")]
    Seal { name: String },
}

/// True when `text` is in the sealed form (it may still fail to open).
pub fn is_sealed(text: &str) -> bool {
    text.starts_with(SEALED_PREFIX)
}

/// The master key id a sealed value names, when it is in the sealed form.
pub fn sealed_kek_id(text: &str) -> Option<&str> {
    text.strip_prefix(SEALED_PREFIX)?.split(':').next()
}

/// Seals and opens secrets under one master key. Cheap to clone.
#[derive(Clone)]
pub struct Sealer {
    key: MasterKey,
    entropy: SharedEntropy,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer").field("kek_id", &self.key.id()).finish_non_exhaustive()
    }
}

impl Sealer {
    pub fn new(key: MasterKey, entropy: SharedEntropy) -> Self {
        Self { key, entropy }
    }

    /// The id of the master key this sealer uses.
    pub fn kek_id(&self) -> &str {
        self.key.id()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(self.key.bytes()))
    }

    /// Seals `plaintext` as the secret called `name`.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.entropy.fill(&mut nonce);
        let aad = aad(name);
        let ciphertext = self
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: &aad })
            .map_err(|_| SealError::Seal { name: name.to_string() })?;
        let mut body = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&ciphertext);
        Ok(format!("{SEALED_PREFIX}{}:{}", self.key.id(), STANDARD_NO_PAD.encode(body)))
    }

    /// Seals a text secret (e.g. a key's hex form).
    pub fn seal_str(&self, name: &str, plaintext: &str) -> Result<String, SealError> {
        self.seal(name, plaintext.as_bytes())
    }

    /// Opens the sealed secret called `name`: its bytes, zeroed on drop.
    pub fn open(&self, name: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let malformed = |detail| SealError::Malformed { name: name.to_string(), detail };
        let rest = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or_else(|| SealError::NotSealed { name: name.to_string() })?;
        let (kek_id, body) = rest.split_once(':').ok_or_else(|| malformed("no key id"))?;
        if kek_id.len() != 16 || !kek_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed("the key id is not 16 hex characters"));
        }
        if kek_id != self.key.id() {
            return Err(SealError::WrongKey {
                name: name.to_string(),
                sealed_under: kek_id.to_string(),
                given: self.key.id().to_string(),
            });
        }
        let body = STANDARD_NO_PAD.decode(body).map_err(|_| malformed("not base64"))?;
        if body.len() < NONCE_LEN + TAG_LEN {
            return Err(malformed("too short"));
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let aad = aad(name);
        self.cipher()
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| SealError::Tampered {
                name: name.to_string(),
                kek_id: self.key.id().to_string(),
            })
    }

    /// Opens a sealed text secret.
    pub fn open_str(&self, name: &str, sealed: &str) -> Result<SecretString, SealError> {
        let bytes = self.open(name, sealed)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| SealError::Malformed { name: name.to_string(), detail: "not text" })?;
        Ok(SecretString::from(text.to_string()))
    }
}

fn aad(name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + name.len());
    aad.extend_from_slice(AAD_DOMAIN);
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use secrecy::ExposeSecret;
    use xerotier_core::SeededEntropy;

    use super::*;

    fn sealer(seed: u64) -> Sealer {
        let entropy: SharedEntropy = Arc::new(SeededEntropy::new(seed));
        Sealer::new(MasterKey::generate(entropy.as_ref()), entropy)
    }

    const SECRET: &str = "5f1e0c0ffee5f1e0c0ffee5f1e0c0ffee5f1e0c0ffee5f1e0c0ffee5f1e0c0f";

    #[test]
    fn round_trip_and_the_sealed_text_shows_nothing_of_the_secret() {
        let s = sealer(1);
        let sealed = s.seal_str("router_secrets.mesh_curve", SECRET).unwrap();
        assert!(is_sealed(&sealed));
        assert_eq!(sealed_kek_id(&sealed), Some(s.kek_id()));
        assert!(sealed.starts_with(&format!("xs1:{}:", s.kek_id())), "{sealed}");
        assert!(!sealed.contains(SECRET) && !sealed.contains(&SECRET[..12]));
        let opened = s.open_str("router_secrets.mesh_curve", &sealed).unwrap();
        assert_eq!(opened.expose_secret(), SECRET);
        let again = s.seal_str("router_secrets.mesh_curve", SECRET).unwrap();
        assert_ne!(again, sealed, "a fresh nonce every time");
        assert_eq!(s.open(&"n".repeat(3), &s.seal("nnn", b"").unwrap()).unwrap().len(), 0);
    }

    #[test]
    fn a_wrong_key_is_named_by_ids_only() {
        let (a, b) = (sealer(1), sealer(2));
        let sealed = a.seal_str("x", SECRET).unwrap();
        let err = b.open("x", &sealed).unwrap_err();
        assert_eq!(
            err,
            SealError::WrongKey {
                name: "x".into(),
                sealed_under: a.kek_id().into(),
                given: b.kek_id().into()
            }
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "the store's secrets are sealed under master key {}; this router was given {}",
                a.kek_id(),
                b.kek_id()
            )),
            "{text}"
        );
    }

    #[test]
    fn a_changed_byte_anywhere_in_the_body_fails_to_open() {
        let s = sealer(3);
        let sealed = s.seal_str("x", SECRET).unwrap();
        let header = format!("xs1:{}:", s.kek_id());
        let body = STANDARD_NO_PAD.decode(&sealed[header.len()..]).unwrap();
        for i in 0..body.len() {
            let mut bad = body.clone();
            bad[i] ^= 0x01;
            let tampered = format!("{header}{}", STANDARD_NO_PAD.encode(&bad));
            assert!(matches!(s.open("x", &tampered), Err(SealError::Tampered { .. })), "byte {i}");
        }
    }

    #[test]
    fn a_truncated_value_fails_to_open() {
        let s = sealer(4);
        let sealed = s.seal_str("x", SECRET).unwrap();
        let header = format!("xs1:{}:", s.kek_id());
        let body = STANDARD_NO_PAD.decode(&sealed[header.len()..]).unwrap();
        for len in [0, 1, NONCE_LEN, NONCE_LEN + TAG_LEN - 1, NONCE_LEN + TAG_LEN, body.len() - 1] {
            let cut = format!("{header}{}", STANDARD_NO_PAD.encode(&body[..len]));
            let err = s.open("x", &cut).unwrap_err();
            assert!(
                matches!(err, SealError::Tampered { .. } | SealError::Malformed { .. }),
                "length {len}: {err}"
            );
        }
        assert!(s.open("x", &sealed[..sealed.len() - 3]).is_err());
    }

    #[test]
    fn a_value_moved_to_another_name_fails_to_open() {
        let s = sealer(5);
        let mesh = s.seal_str("router_secrets.mesh_curve", SECRET).unwrap();
        let err = s.open("router_secrets.join_signing", &mesh).unwrap_err();
        assert!(matches!(err, SealError::Tampered { .. }), "{err}");
        assert!(err.to_string().contains("copied from another secret"), "{err}");
    }

    #[test]
    fn malformed_text_is_refused_without_echoing_it() {
        let s = sealer(6);
        let id = s.kek_id().to_string();
        let cases = [
            (SECRET.to_string(), "not sealed"),
            ("xs1:".to_string(), "no key id"),
            ("xs1:nothex!nothex!:AAAA".to_string(), "16 hex"),
            (format!("xs1:{id}"), "no key id"),
            (format!("xs1:{id}:%%%%"), "not base64"),
            (format!("xs1:{id}:"), "too short"),
            (format!("xs2:{id}:AAAA"), "not sealed"),
        ];
        for (text, expected) in cases {
            let err = s.open("x", &text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains(SECRET), "{err}");
        }
        let not_text = s.seal("x", &[0xff, 0xfe]).unwrap();
        assert!(matches!(s.open_str("x", &not_text), Err(SealError::Malformed { .. })));
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let s = sealer(7);
        let shown = format!("{s:?}");
        assert!(shown.contains(s.kek_id()), "{shown}");
        assert!(!shown.contains("bytes"), "{shown}");
    }
}
