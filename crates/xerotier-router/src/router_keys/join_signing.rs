//! The join-key signing key's rollout: which key this replica signs new join keys with and
//! which it accepts. The old key signs until `update_servers`; the new one is accepted from
//! `update_clients` on (so every replica accepts it before any signs with it) and signs from
//! `update_servers` on; a `verify_only` key is accepted until the sweep drops it.

use std::sync::Arc;

use secrecy::ExposeSecret;
use xerotier_credentials::{JoinTokenSigner, SigningKeyPair};

use super::rollout::{
    KindRollout, RolloutError, RolloutFuture, RolloutProgress, RotationPhase, RouterKeyKind,
    RouterKeyMaterial, RouterKeyState,
};
use crate::mesh_link::MeshLink;

#[derive(Debug, Clone)]
pub struct JoinSigningRollout {
    link: Arc<MeshLink>,
}

impl JoinSigningRollout {
    pub fn new(link: Arc<MeshLink>) -> Self {
        Self { link }
    }
}

fn signer(key: &RouterKeyMaterial) -> Result<Arc<JoinTokenSigner>, RolloutError> {
    let pair = SigningKeyPair::from_secret_hex(key.secret.expose_secret())
        .map_err(|e| RolloutError::Failed(format!("join signing key {}: {e}", key.kid)))?;
    let signer = JoinTokenSigner::new(&pair)
        .map_err(|e| RolloutError::Failed(format!("join signing key {}: {e}", key.kid)))?;
    if signer.kid() != key.kid {
        return Err(RolloutError::Failed(format!(
            "join signing key {}: the secret belongs to {}",
            key.kid,
            signer.kid()
        )));
    }
    Ok(Arc::new(signer))
}

/// Which key signs and which are accepted in `state`.
pub fn keyring_for(
    state: &RouterKeyState,
) -> Result<(Arc<JoinTokenSigner>, Vec<Arc<JoinTokenSigner>>), RolloutError> {
    let current = signer(&state.current)?;
    let next = state.next.as_ref().map(signer).transpose()?;
    let mut verifying = vec![current.clone()];
    for key in &state.verify_only {
        verifying.push(signer(key)?);
    }
    let signing = match (state.phase, &next) {
        (RotationPhase::UpdateServers, Some(next)) => next.clone(),
        _ => current,
    };
    if let (RotationPhase::UpdateClients | RotationPhase::UpdateServers, Some(next)) =
        (state.phase, next)
    {
        verifying.push(next);
    }
    Ok((signing, verifying))
}

impl KindRollout for JoinSigningRollout {
    fn kind(&self) -> RouterKeyKind {
        RouterKeyKind::JoinSigning
    }

    fn reconcile<'a>(&'a self, state: &'a RouterKeyState) -> RolloutFuture<'a, ()> {
        Box::pin(async move {
            let (signing, verifying) = keyring_for(state)?;
            self.link.join_keyring.set(signing, verifying);
            Ok(())
        })
    }

    fn progress<'a>(&'a self, _state: &'a RouterKeyState) -> RolloutFuture<'a, RolloutProgress> {
        // Every replica applies the phase before the change returns (the phase change waits
        // for every live replica), so nothing is left to wait for.
        Box::pin(async move { Ok(RolloutProgress { moved: 0, total: 0, ready: true }) })
    }
}
