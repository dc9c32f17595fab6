//! Join keys as JWTs: EdDSA (Ed25519) signatures by the router's join-key signing key, `kid` in
//! the header. Expiry is checked against the injected clock, not the library's wall clock.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use xerotier_core::{IdKind, UnixMillis, is_valid_id};
use xerotier_proto::join_keys::{JOIN_KEY_AUDIENCE, JOIN_KEY_ISSUER, JoinKeyClaims};

use crate::keys::{SigningKeyPair, fingerprint};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinTokenError {
    #[error("the join key is not a well-formed token")]
    Malformed,
    #[error("the join key uses a refused algorithm (only EdDSA is accepted)")]
    WrongAlgorithm,
    #[error("the join key was not signed by this router")]
    BadSignature,
    #[error("the join key is for another audience")]
    WrongAudience,
    #[error("the join key was issued by someone else")]
    WrongIssuer,
    #[error("the join key has expired")]
    Expired,
    #[error("cannot sign the join key: {0}")]
    Signing(String),
}

/// Signs and verifies join key tokens.
pub struct JoinTokenSigner {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl fmt::Debug for JoinTokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinTokenSigner").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl JoinTokenSigner {
    pub fn new(key: &SigningKeyPair) -> Result<Self, JoinTokenError> {
        let der =
            key.signing_key().to_pkcs8_der().map_err(|e| JoinTokenError::Signing(e.to_string()))?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let decoding = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(key.public_bytes()))
            .map_err(|e| JoinTokenError::Signing(e.to_string()))?;
        Ok(Self {
            kid: format!("jks-{}", &fingerprint(&key.public_bytes())[..16]),
            encoding,
            decoding,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn issue(&self, claims: &JoinKeyClaims) -> Result<String, JoinTokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| JoinTokenError::Signing(e.to_string()))
    }

    /// Verifies algorithm, key id, signature, issuer, audience and expiry (at `now`).
    pub fn verify(&self, token: &str, now: UnixMillis) -> Result<JoinKeyClaims, JoinTokenError> {
        // Read `alg` ourselves first: the library cannot even represent `none`.
        let alg = raw_header_alg(token.trim()).ok_or(JoinTokenError::Malformed)?;
        if alg != "EdDSA" {
            return Err(JoinTokenError::WrongAlgorithm);
        }
        let header =
            jsonwebtoken::decode_header(token.trim()).map_err(|_| JoinTokenError::Malformed)?;
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(JoinTokenError::BadSignature);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[JOIN_KEY_AUDIENCE]);
        validation.set_issuer(&[JOIN_KEY_ISSUER]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        // Expiry is decided by the injected clock below.
        validation.validate_exp = false;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<JoinKeyClaims>(token.trim(), &self.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => JoinTokenError::BadSignature,
                ErrorKind::InvalidAlgorithm => JoinTokenError::WrongAlgorithm,
                ErrorKind::InvalidAudience => JoinTokenError::WrongAudience,
                ErrorKind::InvalidIssuer => JoinTokenError::WrongIssuer,
                _ => JoinTokenError::Malformed,
            })?;
        if now >= data.claims.exp.saturating_mul(1000) {
            return Err(JoinTokenError::Expired);
        }
        Ok(data.claims)
    }
}

/// The join key id a token *claims* (`jti`), read without verifying anything: for labelling a
/// refused enrollment attempt only, never for a decision. Returned only when it has the exact
/// join-key id format (`jk_` + 26 characters of the id alphabet), so an attacker cannot put
/// arbitrary text into the audit log through it.
pub fn unverified_join_key_id(token: &str) -> Option<String> {
    const MAX_TOKEN_BYTES: usize = 8 * 1024;
    let token = token.trim();
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let mut parts = token.split('.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let payload: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    let jti = payload.get("jti")?.as_str()?;
    is_valid_id(IdKind::JoinKey, jti).then(|| jti.to_string())
}

/// The claims a token carries, read without verifying its signature: for the agent, which
/// holds no key to verify with and trusts the token because the operator handed it over (as
/// kubeadm trusts its discovery hash). The router never decides anything from this.
pub fn unverified_claims(token: &str) -> Result<JoinKeyClaims, JoinTokenError> {
    const MAX_TOKEN_BYTES: usize = 8 * 1024;
    let token = token.trim();
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JoinTokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JoinTokenError::Malformed);
    };
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| JoinTokenError::Malformed)?;
    serde_json::from_slice(&payload).map_err(|_| JoinTokenError::Malformed)
}

fn raw_header_alg(token: &str) -> Option<String> {
    let header = URL_SAFE_NO_PAD.decode(token.split('.').next()?).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    header.get("alg")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use xerotier_core::SeededEntropy;

    use super::*;

    fn claims(exp: i64) -> JoinKeyClaims {
        JoinKeyClaims {
            iss: JOIN_KEY_ISSUER.into(),
            aud: JOIN_KEY_AUDIENCE.into(),
            jti: "jk_1".into(),
            iat: 1_000,
            exp,
            name: "xem-fleet-02".into(),
            region: Some("us-east".into()),
            role: "execution".into(),
            router_addr: "tcp://router:5555".into(),
            router_curve_key: "x".repeat(40),
            workspaces: vec!["kubernetes-prod".into()],
            require_approval: false,
            tls_ca: None,
        }
    }

    fn signer(seed: u64) -> JoinTokenSigner {
        JoinTokenSigner::new(&SigningKeyPair::generate(&SeededEntropy::new(seed))).unwrap()
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn the_agent_reads_the_pins_of_the_token_it_was_handed() {
        let mut claims = claims(2_000_000_000);
        claims.tls_ca = Some(format!("sha256:{}", "ab".repeat(32)));
        let token = signer(1).issue(&claims).unwrap();
        assert_eq!(unverified_claims(&token).unwrap(), claims);
        assert_eq!(unverified_claims(&format!("  {token}\n")).unwrap(), claims);
        for bad in [
            String::new(),
            "a.b".to_string(),
            format!("{token}.extra"),
            format!("x.{}.y", b64(&serde_json::json!({"jti": "jk_x"}))),
            format!("{token}{}", "A".repeat(9000)),
        ] {
            assert!(matches!(unverified_claims(&bad), Err(JoinTokenError::Malformed)), "{bad:.40}");
        }
    }

    #[test]
    fn issued_token_verifies_until_expiry() {
        let s = signer(1);
        let token = s.issue(&claims(2_000)).unwrap();
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["kid"], s.kid());
        assert_eq!(s.verify(&token, 1_999_999).unwrap(), claims(2_000));
        assert_eq!(s.verify(&token, 2_000_000), Err(JoinTokenError::Expired));
    }

    #[test]
    fn token_of_another_router_is_refused() {
        let token = signer(1).issue(&claims(2_000)).unwrap();
        assert_eq!(signer(2).verify(&token, 0), Err(JoinTokenError::BadSignature));
    }

    #[test]
    fn tampered_claims_are_refused() {
        let s = signer(1);
        let token = s.issue(&claims(2_000)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = serde_json::to_value(claims(9_999_999)).unwrap();
        forged["role"] = "execution".into();
        let tampered = format!("{}.{}.{}", parts[0], b64(&forged), parts[2]);
        assert_eq!(s.verify(&tampered, 0), Err(JoinTokenError::BadSignature));
    }

    #[test]
    fn none_and_hs256_are_refused() {
        let s = signer(1);
        let body = b64(&serde_json::to_value(claims(2_000)).unwrap());
        let none = format!("{}.{body}.", b64(&serde_json::json!({"alg": "none", "kid": s.kid()})));
        assert_eq!(s.verify(&none, 0), Err(JoinTokenError::WrongAlgorithm));
        let hs = jsonwebtoken::encode(
            &Header { kid: Some(s.kid().into()), ..Header::new(Algorithm::HS256) },
            &claims(2_000),
            &EncodingKey::from_secret(b"guessable"),
        )
        .unwrap();
        assert_eq!(s.verify(&hs, 0), Err(JoinTokenError::WrongAlgorithm));
    }

    #[test]
    fn wrong_audience_and_garbage_are_refused() {
        let s = signer(1);
        let mut other = claims(2_000);
        other.aud = "someone-else".into();
        assert_eq!(s.verify(&s.issue(&other).unwrap(), 0), Err(JoinTokenError::WrongAudience));
        assert_eq!(s.verify("not-a-token", 0), Err(JoinTokenError::Malformed));
    }

    #[test]
    fn the_claimed_join_key_id_is_read_only_when_it_looks_like_one() {
        let s = signer(1);
        let id = "jk_01jbxq5e4y6n2v3r8t9w0z1a2b";
        let mut c = claims(2_000);
        c.jti = id.into();
        let token = s.issue(&c).unwrap();
        assert_eq!(unverified_join_key_id(&token).as_deref(), Some(id));
        // Forged by anyone: still only a label, read the same way.
        let forged = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none"})),
            b64(&serde_json::json!({"jti": id}))
        );
        assert_eq!(unverified_join_key_id(&forged).as_deref(), Some(id));
        for jti in [
            "jk_1",
            "key_01jbxq5e4y6n2v3r8t9w0z1a2b",
            "jk_01jbxq5e4y6n2v3r8t9w0z1a2b\n",
            "jk_01JBXQ5E4Y6N2V3R8T9W0Z1A2B",
        ] {
            let t = format!("x.{}.y", b64(&serde_json::json!({ "jti": jti })));
            assert_eq!(unverified_join_key_id(&t), None, "{jti}");
        }
        for t in [
            "",
            "garbage",
            "..",
            "a.!!!.b",
            &format!("a.{}.b", b64(&serde_json::json!({ "jti": 5 }))),
        ] {
            assert_eq!(unverified_join_key_id(t), None, "{t}");
        }
    }
}
