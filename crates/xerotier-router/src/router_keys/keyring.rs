//! This replica's join-key keyring: the key new join keys are signed with, and every key whose
//! join keys are still accepted (chosen by the token header's `kid`). The join-signing rollout
//! swaps it whole on every reconcile; until the first one, the router identity's signer is used.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use xerotier_core::UnixMillis;
use xerotier_credentials::{JoinTokenError, JoinTokenSigner};
use xerotier_proto::join_keys::JoinKeyClaims;

#[derive(Debug)]
struct Ring {
    signing: Arc<JoinTokenSigner>,
    verifying: HashMap<String, Arc<JoinTokenSigner>>,
}

/// A token signed now: its `kid` is recorded on the join key's row.
#[derive(Debug)]
pub struct SignedToken {
    pub kid: String,
    pub token: String,
}

#[derive(Debug, Default)]
pub struct JoinKeyring {
    ring: RwLock<Option<Arc<Ring>>>,
}

impl JoinKeyring {
    /// Makes `signing` the key new join keys carry and `verifying` (which should include it)
    /// the keys whose join keys are accepted.
    pub fn set(&self, signing: Arc<JoinTokenSigner>, verifying: Vec<Arc<JoinTokenSigner>>) {
        let mut verifying: HashMap<String, Arc<JoinTokenSigner>> =
            verifying.into_iter().map(|s| (s.kid().to_string(), s)).collect();
        verifying.insert(signing.kid().to_string(), signing.clone());
        let ring = Arc::new(Ring { signing, verifying });
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Some(ring);
    }

    fn ring(&self) -> Option<Arc<Ring>> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The kid new join keys carry (`fallback`'s before the first reconcile).
    pub fn signing_kid(&self, fallback: &JoinTokenSigner) -> String {
        self.ring().map_or_else(|| fallback.kid().to_string(), |r| r.signing.kid().to_string())
    }

    /// The kids whose join keys this replica accepts.
    pub fn verifying_kids(&self, fallback: &JoinTokenSigner) -> Vec<String> {
        match self.ring() {
            Some(ring) => {
                let mut kids: Vec<String> = ring.verifying.keys().cloned().collect();
                kids.sort();
                kids
            }
            None => vec![fallback.kid().to_string()],
        }
    }

    pub fn issue(
        &self,
        fallback: &JoinTokenSigner,
        claims: &JoinKeyClaims,
    ) -> Result<SignedToken, JoinTokenError> {
        let ring = self.ring();
        let signer = ring.as_ref().map_or(fallback, |r| r.signing.as_ref());
        Ok(SignedToken { kid: signer.kid().to_string(), token: signer.issue(claims)? })
    }

    /// Verifies `token` against the key its header names. A kid this replica does not accept
    /// (a dropped key, an unknown one) is a bad signature, like a forged signature under a
    /// known kid.
    pub fn verify(
        &self,
        fallback: &JoinTokenSigner,
        token: &str,
        now: UnixMillis,
    ) -> Result<JoinKeyClaims, JoinTokenError> {
        let Some(ring) = self.ring() else { return fallback.verify(token, now) };
        // Each signer refuses a token whose header names another kid before any other check
        // but the algorithm's, so an error other than `BadSignature` comes from the key the
        // token names (or from the algorithm check, the same for all): report that one.
        let mut refusal = JoinTokenError::BadSignature;
        for signer in ring.verifying.values() {
            match signer.verify(token, now) {
                Ok(claims) => return Ok(claims),
                Err(JoinTokenError::BadSignature) => {}
                Err(other) => refusal = other,
            }
        }
        Err(refusal)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use xerotier_core::SeededEntropy;
    use xerotier_credentials::SigningKeyPair;
    use xerotier_proto::join_keys::{JOIN_KEY_AUDIENCE, JOIN_KEY_ISSUER};

    use super::*;

    fn claims() -> JoinKeyClaims {
        JoinKeyClaims {
            iss: JOIN_KEY_ISSUER.into(),
            aud: JOIN_KEY_AUDIENCE.into(),
            jti: "jk_01".into(),
            iat: 0,
            exp: 100,
            name: "n".into(),
            region: None,
            role: "execution".into(),
            router_addr: "tcp://r:1".into(),
            router_curve_key: "k".into(),
            workspaces: Vec::new(),
            require_approval: false,
            tls_ca: None,
        }
    }

    fn signer(seed: u64) -> Arc<JoinTokenSigner> {
        let pair = SigningKeyPair::generate(&SeededEntropy::new(seed));
        Arc::new(JoinTokenSigner::new(&pair).unwrap())
    }

    #[test]
    fn the_keyring_signs_with_one_key_and_accepts_the_kids_it_holds() {
        let (old, new) = (signer(1), signer(2));
        let ring = JoinKeyring::default();
        ring.set(old.clone(), vec![old.clone()]);
        let by_old = ring.issue(&old, &claims()).unwrap();
        assert_eq!(by_old.kid, old.kid());
        // Update servers: signs with the new key, still accepts the old one.
        ring.set(new.clone(), vec![old.clone()]);
        let by_new = ring.issue(&old, &claims()).unwrap();
        assert_eq!(by_new.kid, new.kid());
        assert!(ring.verify(&old, &by_old.token, 0).is_ok());
        assert!(ring.verify(&old, &by_new.token, 0).is_ok());
        assert_eq!(ring.verify(&old, &by_new.token, 200_000), Err(JoinTokenError::Expired));
        // The old key dropped: its tokens are refused.
        ring.set(new.clone(), Vec::new());
        assert_eq!(ring.verify(&old, &by_old.token, 0), Err(JoinTokenError::BadSignature));
    }
}
