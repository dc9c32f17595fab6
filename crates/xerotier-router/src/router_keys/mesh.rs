//! The mesh key's rollout (SPEC §9): which CURVE key this replica's mesh endpoint serves, which
//! keys its agents are told to accept (`Frame::RouterKeys`, acknowledged durably with
//! `Frame::RouterKeysAck`), and how far the fleet has moved, from the store so every replica
//! answers alike.
//!
//! | phase          | served  | agents accept     | moved when                          |
//! |----------------|---------|-------------------|-------------------------------------|
//! | standby/init   | current | [current]         | —                                   |
//! | update_clients | current | [current, next]   | the agent's ack holds `next`        |
//! | update_servers | next    | [next, current]   | the agent said hello on `next`      |
//! | rollback       | current | [current]         | —                                   |

use std::sync::Arc;

use secrecy::ExposeSecret;
use xerotier_core::{SharedClock, UnixMillis};
use xerotier_credentials::CurveKeyPair;
use xerotier_proto::mesh::{MAX_ROUTER_MESH_KEYS, MAX_ROUTER_TLS_CAS, RouterMeshKey};
use xerotier_store::{AgentRecord, RouterKeyAck, Store};

use super::rollout::{
    KindRollout, RolloutError, RolloutFuture, RolloutProgress, RotationPhase, RouterKeyKind,
    RouterKeyMaterial, RouterKeyState,
};
use crate::mesh_link::{MeshLink, ServingKeys};

/// `mks-` and the first 16 hex digits of the key's fingerprint (`formats::ROUTER_KEY_ID`).
pub fn mesh_kid(public: &[u8; 32]) -> String {
    let print = xerotier_credentials::fingerprint(public);
    format!("mks-{}", &print[..16.min(print.len())])
}

/// An agent counts towards a phase's progress while it is *live*: not revoked, and its last
/// lease renewal is younger than three of its own lease intervals (the bound past which the
/// router shows it `disconnected`). An agent that is offline is not waited for: it catches up
/// with a signed key fetch within the overlap window.
const LIVE_INTERVALS: i64 = 3;
/// Agents heard within this long are read before the per-agent bound is applied.
const LIVE_READ_WINDOW_MS: i64 = 10 * 60_000;

/// What a replica serves and tells its agents for `state`, and the keys a key fetch may still
/// hold besides them.
pub fn plan(
    state: &RouterKeyState,
) -> Result<(RouterKeyMaterial, Vec<RouterMeshKey>), RolloutError> {
    let key =
        |m: &RouterKeyMaterial| RouterMeshKey { kid: m.kid.clone(), public_key: m.public.clone() };
    let next = || {
        state.next.clone().ok_or_else(|| {
            RolloutError::Failed(format!(
                "mesh rotation in {} without a new key",
                state.phase.as_str()
            ))
        })
    };
    let planned = match state.phase {
        RotationPhase::Standby | RotationPhase::Init | RotationPhase::Rollback => {
            (state.current.clone(), vec![key(&state.current)])
        }
        RotationPhase::UpdateClients => {
            let next = next()?;
            (state.current.clone(), vec![key(&state.current), key(&next)])
        }
        RotationPhase::UpdateServers => {
            let next = next()?;
            let accept = vec![key(&next), key(&state.current)];
            (next, accept)
        }
    };
    debug_assert!(planned.1.len() <= MAX_ROUTER_MESH_KEYS);
    Ok(planned)
}

/// The mesh kind's [`KindRollout`].
#[derive(Debug, Clone)]
pub struct MeshRollout {
    link: Arc<MeshLink>,
    store: Store,
    clock: SharedClock,
}

impl MeshRollout {
    pub fn new(link: Arc<MeshLink>, store: Store, clock: SharedClock) -> Self {
        Self { link, store, clock }
    }

    async fn apply(&self, state: &RouterKeyState) -> Result<(), RolloutError> {
        let (serve, accept) = plan(state)?;
        let keys = CurveKeyPair::from_secret_hex(serve.secret.expose_secret())
            .map_err(|_| RolloutError::Failed(format!("mesh key {} is unusable", serve.kid)))?;
        if keys.public_z85() != serve.public {
            return Err(RolloutError::Failed(format!(
                "mesh key {}: its secret does not match its public key",
                serve.kid
            )));
        }
        let retired = state.verify_only.iter().map(|m| m.kid.clone()).collect();
        let kid = serve.kid.clone();
        let (key_changed, set_changed) = self.link.set_serving(ServingKeys {
            keys,
            kid: kid.clone(),
            accept: accept.clone(),
            retired,
        });
        if set_changed {
            // Live sessions learn the set first, on the key they are connected with (the
            // endpoint sends what was queued before it rekeys); an agent not connected here
            // learns it at its next hello (`MeshKeyAcks::on_hello`).
            let told = self.link.announce_router_keys();
            tracing::info!(
                phase = state.phase.as_str(),
                agents = told,
                "router mesh keys sent to live sessions"
            );
        }
        if key_changed {
            self.link.rekey_endpoint();
            tracing::info!(%kid, phase = state.phase.as_str(), "mesh endpoint now serves this router key");
        }
        Ok(())
    }

    async fn measure(&self, state: &RouterKeyState) -> Result<RolloutProgress, RolloutError> {
        let moving = state.next.as_ref().and_then(|next| {
            let moved_when: MovedWhen = match state.phase {
                RotationPhase::UpdateClients => ack_holds,
                RotationPhase::UpdateServers => came_in_on,
                _ => return None,
            };
            Some((moved_when, next.kid.as_str()))
        });
        live_progress(&self.store, self.clock.now_millis(), moving).await
    }
}

/// Whether an agent's stored acknowledgement shows it moved to the key `kid`.
pub(super) type MovedWhen = fn(&RouterKeyAck, &str) -> bool;

/// The agent acknowledged a set holding `kid` (update_clients, of the mesh key and the TLS CA).
pub(super) fn ack_holds(ack: &RouterKeyAck, kid: &str) -> bool {
    ack.kids.iter().any(|k| k == kid)
}

/// The agent said hello on the mesh key `kid` (update_servers).
fn came_in_on(ack: &RouterKeyAck, kid: &str) -> bool {
    ack.seen_kid.as_deref() == Some(kid)
}

/// How many live agents have moved to the key of `moving`, of all live agents; with `None`
/// the phase waits for nobody and every live agent counts as moved.
pub(super) async fn live_progress(
    store: &Store,
    now: UnixMillis,
    moving: Option<(MovedWhen, &str)>,
) -> Result<RolloutProgress, RolloutError> {
    let live = live_agents(store, now).await?;
    let total = u64::try_from(live.len()).unwrap_or(u64::MAX);
    let Some((moved_when, kid)) = moving else {
        return Ok(RolloutProgress { moved: total, total, ready: true });
    };
    let acks = store.router_key_acks().await?;
    let moved = live
        .iter()
        .filter(|agent| acks.iter().any(|ack| ack.agent_id == agent.id && moved_when(ack, kid)))
        .count();
    let moved = u64::try_from(moved).unwrap_or(u64::MAX);
    Ok(RolloutProgress { moved, total, ready: moved >= total })
}

/// Agents that are not revoked and renewed their lease within [`LIVE_INTERVALS`] of their
/// own intervals.
async fn live_agents(store: &Store, now: UnixMillis) -> Result<Vec<AgentRecord>, RolloutError> {
    let heard = store.agents_heard_since(now - LIVE_READ_WINDOW_MS).await?;
    Ok(heard
        .into_iter()
        .filter(|agent| {
            agent.last_heartbeat_at.is_some_and(|at| {
                now - at <= LIVE_INTERVALS.saturating_mul(agent.lease_interval_ms.max(1_000))
            })
        })
        .collect())
}

impl KindRollout for MeshRollout {
    fn kind(&self) -> RouterKeyKind {
        RouterKeyKind::Mesh
    }

    fn reconcile<'a>(&'a self, state: &'a RouterKeyState) -> RolloutFuture<'a, ()> {
        Box::pin(self.apply(state))
    }

    fn progress<'a>(&'a self, state: &'a RouterKeyState) -> RolloutFuture<'a, RolloutProgress> {
        Box::pin(self.measure(state))
    }
}

/// The frame handler's side of the rollout: tells a hello the key set it has not acknowledged,
/// records an acknowledgement, and records which key an agent came in on.
#[derive(Debug, Clone)]
pub struct MeshKeyAcks {
    link: Arc<MeshLink>,
    store: Store,
    clock: SharedClock,
}

impl MeshKeyAcks {
    pub fn new(link: Arc<MeshLink>, store: Store, clock: SharedClock) -> Self {
        Self { link, store, clock }
    }

    /// After a hello on this replica's serving key: re-sends the key set unless the agent
    /// acknowledged exactly it, and notes the key it came in on (once per change).
    pub async fn on_hello(&self, agent_id: &str, routing_id: &[u8]) {
        let kids = self.link.announced_kids();
        let serving = self.link.serving_mesh_kid();
        let ack = match self.store.router_key_ack(agent_id).await {
            Ok(ack) => ack,
            Err(err) => {
                tracing::warn!(%agent_id, error = %err, "could not read the agent's router key acknowledgement");
                None
            }
        };
        if ack.as_ref().is_none_or(|ack| ack.kids != kids) {
            self.link.send_raw(routing_id, &self.link.router_keys_frame());
        }
        if ack.as_ref().and_then(|ack| ack.seen_kid.as_deref()) != Some(serving.as_str())
            && let Err(err) =
                self.store.record_router_key_seen(agent_id, &serving, self.clock.now_millis()).await
        {
            tracing::warn!(%agent_id, error = %err, "could not record the router key the agent came in on");
        }
    }

    /// The agent saved `kids` durably. Recorded as sent when each is well formed, with at most
    /// [`MAX_ROUTER_MESH_KEYS`] mesh keys first and at most [`MAX_ROUTER_TLS_CAS`] TLS CAs after
    /// them (an agent's claim about itself: it can only misstate its own progress, which
    /// `--force` is for).
    pub async fn on_ack(&self, agent_id: &str, kids: Vec<String>) {
        if !well_formed_ack(&kids) {
            tracing::warn!(%agent_id, "malformed router key acknowledgement; dropped");
            return;
        }
        if let Err(err) =
            self.store.record_router_key_ack(agent_id, &kids, self.clock.now_millis()).await
        {
            tracing::warn!(%agent_id, error = %err, "could not record the agent's router key acknowledgement");
        } else {
            tracing::info!(%agent_id, kids = %kids.join(","), "agent holds the router mesh keys");
        }
    }
}

/// An acknowledgement's kids: 1..=[`MAX_ROUTER_MESH_KEYS`] `mks-` ids, then up to
/// [`MAX_ROUTER_TLS_CAS`] `tls-` ids, each a router key id.
fn well_formed_ack(kids: &[String]) -> bool {
    let mesh = kids.iter().take_while(|k| k.starts_with("mks-")).count();
    let tls = &kids[mesh..];
    (1..=MAX_ROUTER_MESH_KEYS).contains(&mesh)
        && tls.len() <= MAX_ROUTER_TLS_CAS
        && tls.iter().all(|k| k.starts_with("tls-"))
        && kids.iter().all(|k| xerotier_proto::formats::is_router_key_id(k))
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;
    use xerotier_core::SeededEntropy;

    use super::*;

    fn material(seed: u64) -> RouterKeyMaterial {
        let keys = CurveKeyPair::generate(&SeededEntropy::new(seed));
        RouterKeyMaterial {
            kid: mesh_kid(&keys.public_bytes()),
            public: keys.public_z85(),
            secret: SecretString::from(keys.secret_hex().expose_secret().to_string()),
            created_at: 0,
        }
    }

    fn state(phase: RotationPhase, next: bool) -> RouterKeyState {
        RouterKeyState {
            kind: RouterKeyKind::Mesh,
            phase,
            rotation_id: None,
            current: material(1),
            next: next.then(|| material(2)),
            verify_only: Vec::new(),
        }
    }

    #[test]
    fn each_phase_serves_and_announces_the_keys_of_the_table() {
        let (old, new) = (material(1).kid, material(2).kid);
        let cases = [
            (RotationPhase::Standby, false, &old, vec![&old]),
            (RotationPhase::Init, true, &old, vec![&old]),
            (RotationPhase::UpdateClients, true, &old, vec![&old, &new]),
            (RotationPhase::UpdateServers, true, &new, vec![&new, &old]),
            (RotationPhase::Rollback, true, &old, vec![&old]),
        ];
        for (phase, with_next, served, accept) in cases {
            let (serve, set) = plan(&state(phase, with_next)).unwrap();
            assert_eq!(&serve.kid, served, "{phase:?}");
            let kids: Vec<&String> = set.iter().map(|k| &k.kid).collect();
            assert_eq!(kids, accept, "{phase:?}");
            assert!(set.len() <= MAX_ROUTER_MESH_KEYS);
        }
        assert!(plan(&state(RotationPhase::UpdateServers, false)).is_err(), "no key to serve");
    }

    #[test]
    fn an_acknowledgement_names_mesh_keys_then_at_most_two_tls_cas() {
        let kids = |list: &[&str]| list.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        let (m1, m2, t1, t2) = (
            "mks-0123456789abcdef",
            "mks-fedcba9876543210",
            "tls-0123456789abcdef",
            "tls-1111111111111111",
        );
        assert!(well_formed_ack(&kids(&[m1])));
        assert!(well_formed_ack(&kids(&[m1, m2, t1, t2])));
        assert!(!well_formed_ack(&kids(&[])));
        assert!(!well_formed_ack(&kids(&[t1])), "no mesh key");
        assert!(!well_formed_ack(&kids(&[m1, t1, m2])), "mesh keys come first");
        assert!(!well_formed_ack(&kids(&[m1, m2, m2])), "three mesh keys");
        assert!(!well_formed_ack(&kids(&[m1, t1, t2, t1])), "three TLS CAs");
        assert!(!well_formed_ack(&kids(&[m1, "jks-0123456789abcdef"])));
        assert!(!well_formed_ack(&kids(&[m1, "tls-XYZ"])));
    }

    #[test]
    fn a_mesh_kid_is_a_router_key_id() {
        let kid = material(3).kid;
        assert!(xerotier_proto::formats::is_router_key_id(&kid), "{kid}");
        assert!(kid.starts_with("mks-"));
    }
}
