use std::fmt;

use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use xerotier_core::{Entropy, IdKind, is_valid_id};

const VALUE_PREFIX: &str = "xero_";
const SECRET_BYTES: usize = 32;
/// Domain separation: a verifier of an API key can never collide with a hash used elsewhere.
const VERIFIER_DOMAIN: &[u8] = b"xerotier/api-key-verifier/v1\0";

/// A presented or freshly issued key value: `xero_<key id suffix>_<64 hex secret>`.
///
/// The key id is embedded so the router finds the record by primary key, then checks the secret
/// against the stored verifier in constant time. Parsing hashes the secret at once: only its
/// verifier is kept, so the presented secret is never copied onto the heap.
pub struct ApiKeyValue {
    key_id: String,
    verifier: Verifier,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiKeyValueError {
    #[error("an API key starts with \"xero_\"")]
    MissingPrefix,
    #[error("the API key is malformed")]
    Malformed,
}

impl ApiKeyValue {
    pub fn parse(text: &str) -> Result<Self, ApiKeyValueError> {
        let rest = text.trim().strip_prefix(VALUE_PREFIX).ok_or(ApiKeyValueError::MissingPrefix)?;
        let (id_suffix, secret) = rest.split_once('_').ok_or(ApiKeyValueError::Malformed)?;
        let mut key_id = String::with_capacity(IdKind::ApiKey.prefix().len() + id_suffix.len());
        key_id.push_str(IdKind::ApiKey.prefix());
        key_id.push_str(id_suffix);
        let secret_ok = secret.len() == SECRET_BYTES * 2
            && secret.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_valid_id(IdKind::ApiKey, &key_id) || !secret_ok {
            return Err(ApiKeyValueError::Malformed);
        }
        Ok(Self { key_id, verifier: Verifier::of_secret(secret) })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn verifier(&self) -> Verifier {
        self.verifier.clone()
    }
}

impl fmt::Debug for ApiKeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyValue").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// A new secret for a key: the full value, shown once, and the verifier, stored.
pub struct IssuedSecret {
    pub value: SecretString,
    pub verifier: Verifier,
}

impl fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedSecret").field("verifier", &self.verifier).finish_non_exhaustive()
    }
}

impl IssuedSecret {
    pub fn generate(key_id: &str, entropy: &dyn Entropy) -> Self {
        let mut raw = zeroize::Zeroizing::new([0u8; SECRET_BYTES]);
        entropy.fill(raw.as_mut());
        let secret = zeroize::Zeroizing::new(hex::encode(raw.as_ref()));
        let suffix = key_id.strip_prefix(IdKind::ApiKey.prefix()).unwrap_or(key_id);
        let value = SecretString::from(format!("{VALUE_PREFIX}{suffix}_{}", secret.as_str()));
        Self { verifier: Verifier::of_secret(&secret), value }
    }
}

/// What is stored instead of a secret: SHA-256 over a domain prefix and the secret. Keys carry
/// 256 bits of entropy, so a fast hash is the right verifier (nothing to brute-force).
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier([u8; 32]);

impl Verifier {
    fn of_secret(secret: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(VERIFIER_DOMAIN);
        hasher.update(secret.as_bytes());
        Self(hasher.finalize().into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    /// Constant-time comparison; never use `==` on verifiers of presented secrets.
    pub fn matches(&self, other: &Verifier) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier(..)")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use xerotier_core::{IdGenerator, ManualClock, SeededEntropy};

    use secrecy::ExposeSecret;

    use super::*;

    fn issue() -> (String, IssuedSecret) {
        let entropy = Arc::new(SeededEntropy::new(3));
        let ids = IdGenerator::new(Arc::new(ManualClock::new(1_700_000_000_000)), entropy.clone());
        let id = ids.next(IdKind::ApiKey);
        let issued = IssuedSecret::generate(&id, entropy.as_ref());
        (id, issued)
    }

    #[test]
    fn issued_value_parses_back_to_its_key_and_verifier() {
        let (id, issued) = issue();
        let value = issued.value.expose_secret();
        assert!(value.starts_with("xero_"));
        let parsed = ApiKeyValue::parse(value).unwrap();
        assert_eq!(parsed.key_id(), id);
        assert!(parsed.verifier().matches(&issued.verifier));
    }

    #[test]
    fn tampered_secret_does_not_match() {
        let (_, issued) = issue();
        let mut value = issued.value.expose_secret().to_string();
        let last = value.pop().unwrap();
        value.push(if last == '0' { '1' } else { '0' });
        let parsed = ApiKeyValue::parse(&value).unwrap();
        assert!(!parsed.verifier().matches(&issued.verifier));
    }

    #[test]
    fn malformed_values_are_refused() {
        assert_eq!(ApiKeyValue::parse("sk_live").unwrap_err(), ApiKeyValueError::MissingPrefix);
        assert_eq!(ApiKeyValue::parse("xero_").unwrap_err(), ApiKeyValueError::Malformed);
        assert_eq!(ApiKeyValue::parse("xero_abc_def").unwrap_err(), ApiKeyValueError::Malformed);
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let (_, issued) = issue();
        let secret = issued.value.expose_secret().to_string();
        let parsed = ApiKeyValue::parse(&secret).unwrap();
        let tail = &secret[secret.len() - 64..];
        for shown in
            [format!("{issued:?}"), format!("{parsed:?}"), format!("{:?}", issued.verifier)]
        {
            assert!(!shown.contains(tail), "{shown}");
        }
    }

    #[test]
    fn verifier_hex_round_trip() {
        let (_, issued) = issue();
        let back = Verifier::from_hex(&issued.verifier.to_hex()).unwrap();
        assert!(back.matches(&issued.verifier));
        assert!(Verifier::from_hex("zz").is_none());
    }
}
