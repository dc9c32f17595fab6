//! The router's own key material: the mesh CURVE key pair and the join-key signing key. Kept in
//! the store so that every replica of one database presents the same mesh identity and verifies
//! the same join keys.

use secrecy::ExposeSecret;
use xerotier_core::{Clock, Entropy};
use xerotier_credentials::{CurveKeyPair, JoinTokenSigner, SigningKeyPair};
use xerotier_store::Store;

#[derive(Debug)]
pub struct RouterIdentity {
    pub mesh_keys: CurveKeyPair,
    pub join_signer: JoinTokenSigner,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("store: {0}")]
    Store(#[from] xerotier_store::StoreError),
    #[error("stored router key {name} is unusable: {detail}")]
    Corrupt { name: &'static str, detail: String },
}

impl RouterIdentity {
    pub async fn load_or_create(
        store: &Store,
        clock: &dyn Clock,
        entropy: &dyn Entropy,
    ) -> Result<Self, IdentityError> {
        let now = clock.now_millis();
        let candidate = CurveKeyPair::generate(entropy);
        let stored =
            store.router_secret("mesh_curve", candidate.secret_hex().expose_secret(), now).await?;
        let mesh_keys = CurveKeyPair::from_secret_hex(&stored)
            .map_err(|e| IdentityError::Corrupt { name: "mesh_curve", detail: e.to_string() })?;
        let candidate = SigningKeyPair::generate(entropy);
        let stored = store
            .router_secret("join_signing", candidate.secret_hex().expose_secret(), now)
            .await?;
        let signing = SigningKeyPair::from_secret_hex(&stored)
            .map_err(|e| IdentityError::Corrupt { name: "join_signing", detail: e.to_string() })?;
        let join_signer = JoinTokenSigner::new(&signing)
            .map_err(|e| IdentityError::Corrupt { name: "join_signing", detail: e.to_string() })?;
        Ok(Self { mesh_keys, join_signer })
    }
}
