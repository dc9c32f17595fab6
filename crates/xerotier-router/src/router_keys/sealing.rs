//! The one place a router key's secret becomes the text stored in `router_keys.secret_sealed`
//! and back. Every write and read of that column goes through a [`RouterKeySealer`], so sealing
//! at rest (an AEAD under the master key, SPEC §9) is plugged in here and nowhere else.

use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, thiserror::Error)]
pub enum SealingError {
    /// The stored text cannot be opened (wrong master key, tampered row). Never carries the
    /// secret or the sealed text.
    #[error("router key {kid}: the stored secret cannot be opened: {detail}")]
    Open { kid: String, detail: String },
    #[error("router key {kid}: the secret cannot be sealed: {detail}")]
    Seal { kid: String, detail: String },
}

/// How secrets are sealed: under the router's master key (every router), or as is (unit tests
/// of the service's logic only).
#[derive(Debug, Clone, Default)]
enum Mode {
    #[default]
    Plain,
    /// An AEAD under the master key; the associated data names the row
    /// (`router_keys.<kid>`), so a sealed secret moved to another row does not open.
    Sealed(xerotier_seal::Sealer),
}

/// Seals and opens router key secrets; bound to the key id so that a sealed secret moved to
/// another row does not open there (once an AEAD is plugged in, the kid is its associated data).
#[derive(Debug, Clone, Default)]
pub struct RouterKeySealer {
    mode: Mode,
}

impl RouterKeySealer {
    /// Stores the text as is.
    pub fn plaintext() -> Self {
        Self { mode: Mode::Plain }
    }

    /// Seals under the router's master key.
    pub fn sealed(sealer: xerotier_seal::Sealer) -> Self {
        Self { mode: Mode::Sealed(sealer) }
    }

    pub fn seal(&self, kid: &str, secret: &SecretString) -> Result<String, SealingError> {
        match &self.mode {
            Mode::Sealed(sealer) => sealer
                .seal_str(&xerotier_store::ROUTER_KEYS.secret_name(kid), secret.expose_secret())
                .map_err(|e| SealingError::Seal { kid: kid.into(), detail: e.to_string() }),
            Mode::Plain => {
                let text = secret.expose_secret();
                if text.is_empty() {
                    return Err(SealingError::Seal { kid: kid.into(), detail: "empty".into() });
                }
                Ok(text.to_string())
            }
        }
    }

    pub fn open(&self, kid: &str, sealed: &str) -> Result<SecretString, SealingError> {
        match &self.mode {
            Mode::Sealed(sealer) => sealer
                .open_str(&xerotier_store::ROUTER_KEYS.secret_name(kid), sealed)
                .map_err(|e| SealingError::Open { kid: kid.into(), detail: e.to_string() }),
            Mode::Plain => {
                if sealed.is_empty() {
                    return Err(SealingError::Open { kid: kid.into(), detail: "empty".into() });
                }
                Ok(SecretString::from(sealed.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn plaintext_sealing_round_trips_and_hides_the_secret_from_debug() {
        let sealer = RouterKeySealer::plaintext();
        let sealed = sealer.seal("jks-0123456789abcdef", &SecretString::from("ab12")).unwrap();
        let opened = sealer.open("jks-0123456789abcdef", &sealed).unwrap();
        assert_eq!(opened.expose_secret(), "ab12");
        assert!(!format!("{opened:?}").contains("ab12"));
        assert!(sealer.open("jks-0123456789abcdef", "").is_err());
    }
}
