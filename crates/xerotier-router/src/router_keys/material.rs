//! A fresh key of each kind, and the id and fingerprint of a public key (formats::ROUTER_KEY_ID).

use secrecy::SecretString;
use xerotier_core::Entropy;
use xerotier_credentials::{
    CurveKeyPair, JoinTokenSigner, SigningKeyPair, fingerprint, parse_curve_public,
};

use super::rollout::RouterKeyKind;

/// A new key's halves in the kind's text forms.
#[derive(Debug)]
pub struct NewKey {
    pub kid: String,
    pub public: String,
    pub secret: SecretString,
}

#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("TLS CA: {0}")]
    Tls(#[from] xerotier_tls::TlsError),
    #[error("invalid public key: {0}")]
    Public(String),
    #[error("{0}")]
    Signer(String),
}

/// The raw public bytes of a public key in `kind`'s text form.
fn public_bytes(kind: RouterKeyKind, public: &str) -> Result<Vec<u8>, MaterialError> {
    match kind {
        RouterKeyKind::Mesh => parse_curve_public(public)
            .map(|b| b.to_vec())
            .map_err(|e| MaterialError::Public(e.to_string())),
        RouterKeyKind::JoinSigning => {
            hex::decode(public).map_err(|e| MaterialError::Public(e.to_string()))
        }
        RouterKeyKind::Tls => Ok(xerotier_tls::cert_der(public)?.to_vec()),
    }
}

/// Full fingerprint (32 hex) of a public key, as displayed.
pub fn key_fingerprint(kind: RouterKeyKind, public: &str) -> Result<String, MaterialError> {
    Ok(fingerprint(&public_bytes(kind, public)?))
}

/// `mks-`/`jks-`/`tls-` and the first 16 hex digits of the fingerprint.
pub fn key_id(kind: RouterKeyKind, public: &str) -> Result<String, MaterialError> {
    let fp = key_fingerprint(kind, public)?;
    Ok(format!("{}{}", kind.kid_prefix(), fp.get(..16).unwrap_or(&fp)))
}

/// A new key of `kind`; `now` dates a TLS CA, whose name carries it and a random suffix so
/// that no two of the router's CAs share a subject (a cross-signed CA is told apart by it).
pub fn generate(
    kind: RouterKeyKind,
    entropy: &dyn Entropy,
    now: xerotier_core::UnixMillis,
) -> Result<NewKey, MaterialError> {
    match kind {
        RouterKeyKind::Mesh => {
            let pair = CurveKeyPair::generate(entropy);
            let public = pair.public_z85();
            Ok(NewKey { kid: key_id(kind, &public)?, public, secret: pair.secret_hex() })
        }
        RouterKeyKind::JoinSigning => {
            let pair = SigningKeyPair::generate(entropy);
            let signer =
                JoinTokenSigner::new(&pair).map_err(|e| MaterialError::Signer(e.to_string()))?;
            let public = pair.public_hex();
            Ok(NewKey { kid: signer.kid().to_string(), public, secret: pair.secret_hex() })
        }
        RouterKeyKind::Tls => {
            let mut suffix = [0u8; 4];
            entropy.fill(&mut suffix);
            let name = format!(
                "Xerotier router CA {} {}",
                xerotier_core::format_rfc3339(now),
                hex::encode(suffix)
            );
            let ca = xerotier_tls::new_ca(&name, now / 1000)?;
            Ok(NewKey { kid: key_id(kind, &ca.cert_pem)?, public: ca.cert_pem, secret: ca.key_pem })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use xerotier_core::SeededEntropy;

    use super::*;

    #[test]
    fn key_ids_have_the_router_key_id_format_and_match_the_join_token_kid() {
        let entropy = SeededEntropy::new(4);
        for kind in [RouterKeyKind::Mesh, RouterKeyKind::JoinSigning, RouterKeyKind::Tls] {
            let key = generate(kind, &entropy, 1_800_000_000_000).unwrap();
            assert!(xerotier_proto::formats::is_router_key_id(&key.kid), "{}", key.kid);
            assert!(key.kid.starts_with(kind.kid_prefix()));
            assert_eq!(key.kid, key_id(kind, &key.public).unwrap());
        }
    }

    #[test]
    fn a_tls_kid_is_the_one_an_agent_derives_from_the_ca_pin() {
        let key = generate(RouterKeyKind::Tls, &SeededEntropy::new(5), 1_800_000_000_000).unwrap();
        let pin = xerotier_tls::ca_fingerprint(&xerotier_tls::cert_der(&key.public).unwrap());
        assert_eq!(xerotier_proto::mesh::tls_kid_of_pin(&pin), Some(key.kid));
    }
}
