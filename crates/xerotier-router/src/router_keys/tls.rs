//! The TLS CA's rollout (SPEC §9): which CA issues the certificate this replica's HTTPS
//! listener presents, which CAs clients are told to trust (the `ca.pem` bundle for operators,
//! `Frame::RouterKeys` pins for agents, acknowledged durably), and how far agents have moved.
//!
//! | phase          | issues  | presented after the CA        | clients trust  | moved when            |
//! |----------------|---------|-------------------------------|----------------|-----------------------|
//! | standby/init   | current | —                             | [current]      | —                     |
//! | update_clients | current | —                             | [current, next]| the ack holds `next`  |
//! | update_servers | next    | next signed by current, current | [next, current]| —                   |
//! | rollback       | current | —                             | [current]      | —                     |
//!
//! In `update_servers` the new CA is also presented cross-signed by the old one, so a client
//! that still trusts only the old CA (an operator who has not refreshed its CA file, a join key
//! minted before the switch) accepts the new certificate; after `standby` only the new CA is
//! presented. Only the router's own CA rotates: the operator's certificate (`--tls-cert`) is
//! replaced by its owner.

use std::sync::Arc;

use xerotier_core::SharedClock;
use xerotier_store::Store;
use xerotier_tls::{CaMaterial, CaPlan, ca_fingerprint, cert_der};

use super::mesh;
use super::rollout::{
    KindRollout, RolloutError, RolloutFuture, RolloutProgress, RotationPhase, RouterKeyKind,
    RouterKeyMaterial, RouterKeyState,
};
use crate::mesh_link::MeshLink;

/// What a replica presents and tells for `state`: the issuing CA, the others clients trust,
/// and the CA the issuing one is cross-signed by.
pub fn plan(
    state: &RouterKeyState,
) -> Result<(&RouterKeyMaterial, Vec<&RouterKeyMaterial>, Option<&RouterKeyMaterial>), RolloutError>
{
    let next = || {
        state.next.as_ref().ok_or_else(|| {
            RolloutError::Failed(format!(
                "TLS CA rotation in {} without a new CA",
                state.phase.as_str()
            ))
        })
    };
    Ok(match state.phase {
        RotationPhase::Standby | RotationPhase::Init | RotationPhase::Rollback => {
            (&state.current, Vec::new(), None)
        }
        RotationPhase::UpdateClients => (&state.current, vec![next()?], None),
        RotationPhase::UpdateServers => (next()?, vec![&state.current], Some(&state.current)),
    })
}

/// `sha256:<hex>` of a CA certificate in PEM.
pub fn pin_of(public_pem: &str) -> Result<String, RolloutError> {
    let der = cert_der(public_pem).map_err(|e| RolloutError::Failed(e.to_string()))?;
    Ok(ca_fingerprint(&der))
}

/// A TLS kind's key as the CA it is.
pub fn ca(key: &RouterKeyMaterial) -> CaMaterial {
    CaMaterial { cert_pem: key.public.clone(), key_pem: key.secret.clone() }
}

/// The TLS kind's [`KindRollout`].
#[derive(Debug, Clone)]
pub struct TlsRollout {
    link: Arc<MeshLink>,
    store: Store,
    clock: SharedClock,
}

impl TlsRollout {
    pub fn new(link: Arc<MeshLink>, store: Store, clock: SharedClock) -> Self {
        Self { link, store, clock }
    }

    async fn apply(&self, state: &RouterKeyState) -> Result<(), RolloutError> {
        let Some(tls) = self.link.server_tls() else { return Ok(()) };
        if !tls.is_generated() {
            return Ok(());
        }
        let (issuing, others, cross) = plan(state)?;
        let (issuing_ca, cross_ca) = (ca(issuing), cross.map(ca));
        let ca_plan = CaPlan {
            issuing: &issuing_ca,
            also_trusted: others.iter().map(|k| k.public.as_str()).collect(),
            cross_signed_by: cross_ca.as_ref(),
        };
        let now = self.clock.now_millis() / 1000;
        let changed =
            tls.adopt_ca(&ca_plan, now).map_err(|e| RolloutError::Failed(e.to_string()))?;
        self.link.settings.tls_ca_pin.set(Some(tls.ca_pin()));
        if changed {
            tracing::info!(
                kid = %issuing.kid, phase = state.phase.as_str(),
                "the HTTPS certificate is now issued by this router CA"
            );
        }
        let mut pins = vec![pin_of(&issuing.public)?];
        for other in &others {
            pins.push(pin_of(&other.public)?);
        }
        if self.link.set_tls_ca_pins(pins) {
            let told = self.link.announce_router_keys();
            tracing::info!(
                phase = state.phase.as_str(),
                agents = told,
                "router TLS CAs sent to live sessions"
            );
        }
        Ok(())
    }

    async fn measure(&self, state: &RouterKeyState) -> Result<RolloutProgress, RolloutError> {
        // Only update_clients waits for agents (to trust the new CA); the servers' switch and
        // the old CA's drop wait for nobody: the cross-signed chain covers stragglers.
        let moving = match (state.phase, &state.next) {
            (RotationPhase::UpdateClients, Some(next)) => {
                Some((mesh::ack_holds as mesh::MovedWhen, next.kid.as_str()))
            }
            _ => None,
        };
        mesh::live_progress(&self.store, self.clock.now_millis(), moving).await
    }
}

impl KindRollout for TlsRollout {
    fn kind(&self) -> RouterKeyKind {
        RouterKeyKind::Tls
    }

    fn unavailable(&self) -> Option<String> {
        match self.link.server_tls() {
            None => {
                Some("the router serves plain HTTP (--insecure-http): there is no TLS CA".into())
            }
            Some(tls) if !tls.is_generated() => Some(
                "the router presents the operator's certificate (--tls-cert): its owner rotates \
                 it by replacing the files and sending SIGHUP"
                    .into(),
            ),
            Some(_) => None,
        }
    }

    fn reconcile<'a>(&'a self, state: &'a RouterKeyState) -> RolloutFuture<'a, ()> {
        Box::pin(self.apply(state))
    }

    fn progress<'a>(&'a self, state: &'a RouterKeyState) -> RolloutFuture<'a, RolloutProgress> {
        Box::pin(self.measure(state))
    }
}
