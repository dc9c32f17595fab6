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
    #[error("TLS CA rotation is not available in this version")]
    Unsupported,
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
        RouterKeyKind::Tls => Err(MaterialError::Unsupported),
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

pub fn generate(kind: RouterKeyKind, entropy: &dyn Entropy) -> Result<NewKey, MaterialError> {
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
        RouterKeyKind::Tls => Err(MaterialError::Unsupported),
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
        for kind in [RouterKeyKind::Mesh, RouterKeyKind::JoinSigning] {
            let key = generate(kind, &entropy).unwrap();
            assert!(xerotier_proto::formats::is_router_key_id(&key.kid), "{}", key.kid);
            assert_eq!(key.kid, key_id(kind, &key.public).unwrap());
        }
        assert!(matches!(generate(RouterKeyKind::Tls, &entropy), Err(MaterialError::Unsupported)));
    }
}
