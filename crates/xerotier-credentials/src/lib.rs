//! Secret material and how it is handled.
//!
//! Secrets live in [`secrecy`] wrappers (redacted `Debug`, zeroized on drop), are stored only as
//! verifiers, are compared in constant time, and reach disk only through [`write_secret_file`].

mod api_key;
mod join_token;
mod keys;
mod secret_file;
pub mod webhook_signature;

pub use api_key::{ApiKeyValue, ApiKeyValueError, IssuedSecret, Verifier};
pub use join_token::{JoinTokenError, JoinTokenSigner, unverified_claims, unverified_join_key_id};
pub use keys::{
    CurveKeyPair, KeyError, SigningKeyPair, curve_public_z85, fingerprint, is_weak_curve_public,
    parse_agent_curve_public, parse_curve_public, parse_signing_public, verify_signature,
};
pub use secret_file::{
    SecretFileError, read_secret_file, write_file_atomically, write_secret_file,
};

/// Whether two secrets are equal, in time that depends on their lengths only, never on where
/// they first differ (so a comparison against a secret leaks nothing of it).
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod secrets_equal_tests {
    use super::secrets_equal;

    #[test]
    fn equal_only_when_every_byte_and_the_length_match() {
        assert!(secrets_equal(b"whsec-one", b"whsec-one"));
        assert!(secrets_equal(b"", b""));
        assert!(!secrets_equal(b"whsec-one", b"whsec-onf"));
        assert!(!secrets_equal(b"whsec-one", b"whsec-on"));
        assert!(!secrets_equal(b"", b"x"));
    }
}
