//! The router's side of the CURVE mesh, below both the fleet and tool execution.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use xerotier_core::UnixMillis;
use xerotier_credentials::CurveKeyPair;
use xerotier_mesh::{AllowList, MeshHandle, MeshRekey};
use xerotier_proto::mesh::{Frame, RouterMeshKey};
use xerotier_store::Heartbeat;

use crate::fleet::RouterIdentity;

/// `sha256:<hex>` of the CA the router's HTTPS presents now; empty when it serves plain HTTP.
/// Shared: a reload that changes the CA is seen by the next join key minted.
#[derive(Debug, Clone, Default)]
pub struct CaPin(Arc<parking_lot::RwLock<Option<String>>>);

impl CaPin {
    pub fn get(&self) -> Option<String> {
        self.0.read().clone()
    }

    pub fn set(&self, pin: Option<String>) {
        *self.0.write() = pin;
    }
}

/// What the mesh key rollout decided this replica serves.
#[derive(Debug)]
pub struct ServingKeys {
    pub keys: CurveKeyPair,
    pub kid: String,
    /// In the order agents are to try them; the served key is among them.
    pub accept: Vec<RouterMeshKey>,
    /// Kids no longer accepted that a signed key fetch may still hold.
    pub retired: Vec<String>,
}

/// Fleet policy, from the router's configuration.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// Where the mesh endpoint binds, `tcp://host:port`.
    pub mesh_bind: String,
    /// The address written into join keys when `--router-addr` is not given [default: the
    /// bound endpoint].
    pub mesh_public_addr: Option<String>,
    pub join_key_default_ttl_seconds: u64,
    pub join_key_max_ttl_seconds: u64,
    /// `inference` or `execution`.
    pub default_agent_role: String,
    /// How often buffered lease renewals are written to the store.
    pub heartbeat_flush_ms: u64,
    /// How long this replica's own lease on the shared database lasts: a replica that cannot
    /// renew it (cut off, or stalled) within this is fenced, and a revoke waits at most about
    /// this long for a replica that stopped answering.
    pub replica_lease_ms: u64,
    /// How long a CURVE rotation waits for the agent's signed acknowledgement.
    pub curve_rotation_ack_timeout_ms: u64,
    /// Each agent's control frames (everything but invocation output) per second, sustained;
    /// past it they are dropped (`mesh_frames_dropped{reason="rate_limited"}`).
    pub mesh_agent_frames_per_second: u32,
    /// Each agent's control frames at once (the token bucket's size).
    pub mesh_agent_frame_burst: u32,
    /// Each agent's invocation output chunks per second, sustained.
    pub mesh_agent_output_frames_per_second: u32,
    /// Each agent's invocation output chunks at once.
    pub mesh_agent_output_frame_burst: u32,
    /// More control frames than this dropped over the rate within `mesh_flood_window_ms`
    /// silences the agent for `mesh_flood_cooldown_ms` (`disconnected_flooding`).
    pub mesh_flood_drops: u32,
    pub mesh_flood_window_ms: u64,
    pub mesh_flood_cooldown_ms: u64,
    /// The CA the HTTPS listener presents, carried in every join key so the agent enrolls
    /// only with this router; follows certificate reloads.
    pub tls_ca_pin: CaPin,
    /// The credential rotation policy the posture report and monitor judge by.
    pub credential_policy: xerotier_posture::PolicyConfig,
    /// How often the posture monitor recomputes the gauges and announces transitions.
    pub posture_interval_ms: u64,
    /// How long the mesh key a completed rotation replaced stays accepted by the signed key
    /// fetch (SPEC §9: default 7 days).
    pub mesh_key_overlap_ms: i64,
}

impl Default for FleetSettings {
    fn default() -> Self {
        Self {
            mesh_bind: "tcp://127.0.0.1:5555".into(),
            mesh_public_addr: None,
            join_key_default_ttl_seconds: 600,
            join_key_max_ttl_seconds: 86_400,
            default_agent_role: "execution".into(),
            heartbeat_flush_ms: 1_000,
            replica_lease_ms: 6_000,
            curve_rotation_ack_timeout_ms: 30_000,
            // An honest XEM sends a lease renewal every 100 ms at the fastest, plus 2-3 frames
            // per invocation: 200/s is 20 times its renewals and 60 invocations a second.
            mesh_agent_frames_per_second: 200,
            mesh_agent_frame_burst: 400,
            // 20 concurrent tools' whole stdout (64 KiB each) at once in 80-byte lines.
            mesh_agent_output_frames_per_second: 4_000,
            mesh_agent_output_frame_burst: 16_384,
            mesh_flood_drops: 1_000,
            mesh_flood_window_ms: 10_000,
            mesh_flood_cooldown_ms: 30_000,
            tls_ca_pin: CaPin::default(),
            credential_policy: xerotier_posture::PolicyConfig::default(),
            posture_interval_ms: 60_000,
            mesh_key_overlap_ms: crate::router_keys::service::DEFAULT_MESH_KEY_OVERLAP_MS,
        }
    }
}

/// The router's side of the mesh: its settings and identity, the allow-list, the live
/// sessions and the lease renewals not yet written. Shared by `fleet` and `exec`, which send to
/// agents through it; it depends on neither.
#[derive(Debug)]
pub struct MeshLink {
    pub settings: FleetSettings,
    pub identity: RouterIdentity,
    /// This replica's own id (`rtr_…`), new at every start: what the registry
    /// (`router_replicas`) and each agent's session holder (`agents.replica_id`) name.
    pub replica_id: String,
    pub allow: AllowList,
    /// The join-key signing keys in force on this replica (`router_keys::JoinSigningRollout`).
    pub join_keyring: crate::router_keys::keyring::JoinKeyring,
    mesh: OnceLock<(MeshHandle, String)>,
    /// Changes the key the running endpoint serves.
    rekey: OnceLock<MeshRekey>,
    /// The HTTPS listener's certificate, when the router serves TLS: what the TLS CA rollout
    /// (`router_keys::tls`) re-issues during a CA rotation.
    server_tls: OnceLock<Arc<xerotier_tls::ServerTls>>,
    /// The mesh key this replica serves and the set agents are told to accept, as the mesh
    /// key rollout last reconciled them (`router_keys::mesh`); `None` until then, when the
    /// identity's key is both.
    serving: parking_lot::RwLock<Option<ServingKeys>>,
    /// The TLS CAs agents are told to trust (`router_keys::tls`); empty while the router has
    /// no CA of its own in the store (agents keep their enrollment pin).
    tls_trust: parking_lot::RwLock<Vec<String>>,
    /// The latest routing id of each connected agent.
    sessions: Mutex<HashMap<String, Vec<u8>>>,
    /// Lease renewals not yet written to the store.
    pending_heartbeats: PendingHeartbeats,
}

/// Lease renewals seen on this replica and not yet committed to the store, newest per agent.
#[derive(Debug, Default)]
struct PendingHeartbeats(Mutex<HashMap<String, Heartbeat>>);

impl PendingHeartbeats {
    fn note(&self, beat: Heartbeat) {
        self.0.lock().insert(beat.agent_id.clone(), beat);
    }

    fn to_store(&self) -> Vec<Heartbeat> {
        self.0.lock().values().cloned().collect()
    }

    fn stored(&self, stored: &[Heartbeat]) {
        let mut pending = self.0.lock();
        for beat in stored {
            if pending.get(&beat.agent_id).is_some_and(|current| current.at == beat.at) {
                pending.remove(&beat.agent_id);
            }
        }
    }

    fn latest_at(&self, agent_id: &str) -> Option<UnixMillis> {
        self.0.lock().get(agent_id).map(|b| b.at)
    }
}

impl MeshLink {
    pub fn new(settings: FleetSettings, identity: RouterIdentity, replica_id: String) -> Self {
        Self {
            settings,
            identity,
            replica_id,
            allow: AllowList::default(),
            join_keyring: Default::default(),
            mesh: OnceLock::new(),
            rekey: OnceLock::new(),
            server_tls: OnceLock::new(),
            serving: parking_lot::RwLock::new(None),
            tls_trust: parking_lot::RwLock::new(Vec::new()),
            sessions: Mutex::default(),
            pending_heartbeats: PendingHeartbeats::default(),
        }
    }

    pub(crate) fn attach_mesh(&self, handle: MeshHandle, endpoint: String) {
        let _ = self.mesh.set((handle, endpoint));
    }

    /// The mesh address agents are told to connect to.
    pub fn advertised_mesh_addr(&self) -> String {
        if let Some(addr) = &self.settings.mesh_public_addr {
            return addr.clone();
        }
        match self.mesh.get() {
            Some((_, endpoint)) => endpoint.clone(),
            None => self.settings.mesh_bind.clone(),
        }
    }

    /// The mesh key this replica serves now (Z85): what enrollment answers and join keys pin.
    pub fn router_curve_public_z85(&self) -> String {
        match &*self.serving.read() {
            Some(serving) => serving.keys.public_z85(),
            None => self.identity.mesh_keys.public_z85(),
        }
    }

    /// The id of the mesh key this replica serves now.
    pub fn serving_mesh_kid(&self) -> String {
        match &*self.serving.read() {
            Some(serving) => serving.kid.clone(),
            None => crate::router_keys::mesh::mesh_kid(&self.identity.mesh_keys.public_bytes()),
        }
    }

    /// Attaches the HTTPS listener's certificate (once, at start, before the router keys are
    /// reconciled).
    pub fn attach_server_tls(&self, tls: Arc<xerotier_tls::ServerTls>) {
        if self.server_tls.set(tls).is_err() {
            tracing::warn!("the TLS certificate was attached twice; the first stays");
        }
    }

    pub fn server_tls(&self) -> Option<&Arc<xerotier_tls::ServerTls>> {
        self.server_tls.get()
    }

    /// The TLS CA pins agents are told to trust (`sha256:…`), the serving CA first.
    pub fn tls_ca_pins(&self) -> Vec<String> {
        self.tls_trust.read().clone()
    }

    /// Replaces the TLS CA pins agents are told; true when they changed.
    pub(crate) fn set_tls_ca_pins(&self, pins: Vec<String>) -> bool {
        let mut guard = self.tls_trust.write();
        let changed = *guard != pins;
        *guard = pins;
        changed
    }

    /// What agents are told (`Frame::RouterKeys`): the mesh keys, and the TLS CAs.
    pub fn router_keys_frame(&self) -> Frame {
        Frame::RouterKeys { keys: self.router_mesh_keys(), tls_ca_pins: self.tls_ca_pins() }
    }

    /// The key ids an agent holding exactly [`Self::router_keys_frame`] acknowledges.
    pub fn announced_kids(&self) -> Vec<String> {
        xerotier_proto::mesh::router_keys_kids(&self.router_mesh_keys(), &self.tls_ca_pins())
    }

    /// Sends [`Self::router_keys_frame`] to every live session here; returns how many.
    pub fn announce_router_keys(&self) -> usize {
        let frame = self.router_keys_frame();
        self.session_agents().iter().filter(|agent| self.send_to(agent, &frame)).count()
    }

    /// The router mesh keys agents are told to accept, in the order to try them.
    pub fn router_mesh_keys(&self) -> Vec<RouterMeshKey> {
        match &*self.serving.read() {
            Some(serving) => serving.accept.clone(),
            None => {
                let public = self.identity.mesh_keys.public_bytes();
                vec![RouterMeshKey {
                    kid: crate::router_keys::mesh::mesh_kid(&public),
                    public_key: self.identity.mesh_keys.public_z85(),
                }]
            }
        }
    }

    /// Keys no longer served that a key fetch may still name (within the overlap window).
    pub fn retired_mesh_kids(&self) -> Vec<String> {
        match &*self.serving.read() {
            Some(serving) => serving.retired.clone(),
            None => Vec::new(),
        }
    }

    /// The key pair the endpoint is to serve (a copy: the running endpoint keeps its own).
    pub(crate) fn serving_mesh_keys(&self) -> Result<CurveKeyPair, xerotier_credentials::KeyError> {
        use secrecy::ExposeSecret;
        let guard = self.serving.read();
        let keys = match &*guard {
            Some(serving) => &serving.keys,
            None => &self.identity.mesh_keys,
        };
        CurveKeyPair::from_secret_hex(keys.secret_hex().expose_secret())
    }

    /// Serve `serving` from now on. Returns whether the served key or the accepted set
    /// changed. A changed key reaches the running endpoint only with [`Self::rekey_endpoint`],
    /// so that the caller can first tell live sessions the new set on the old key (a session
    /// ends with the rekey). An endpoint started later reads [`Self::serving_mesh_keys`].
    pub(crate) fn set_serving(&self, serving: ServingKeys) -> (bool, bool) {
        let mut guard = self.serving.write();
        let before_key = match &*guard {
            Some(old) => old.keys.public_bytes(),
            None => self.identity.mesh_keys.public_bytes(),
        };
        let before_set = match &*guard {
            Some(old) => old.accept.clone(),
            None => Vec::new(),
        };
        let key_changed = before_key != serving.keys.public_bytes();
        let set_changed = before_set != serving.accept;
        *guard = Some(serving);
        (key_changed, set_changed)
    }

    /// Hands the key [`Self::set_serving`] chose to the running endpoint (if it runs yet).
    pub(crate) fn rekey_endpoint(&self) {
        if let (Some(rekey), Some(serving)) = (self.rekey.get(), &*self.serving.read()) {
            rekey.serve(&serving.keys);
        }
    }

    /// `started_with` is the public key the endpoint was started on: a reconcile between
    /// reading the keys for the start and this attach is applied now, not lost.
    pub(crate) fn attach_rekey(
        &self,
        rekey: MeshRekey,
        started_with: [u8; 32],
    ) -> Result<(), xerotier_credentials::KeyError> {
        let _ = self.rekey.set(rekey.clone());
        let keys = self.serving_mesh_keys()?;
        if keys.public_bytes() != started_with {
            rekey.serve(&keys);
        }
        Ok(())
    }

    pub(crate) fn note_session(&self, agent_id: &str, routing_id: Vec<u8>) {
        self.sessions.lock().insert(agent_id.to_string(), routing_id);
    }

    pub(crate) fn note_heartbeat(&self, beat: Heartbeat) {
        self.pending_heartbeats.note(beat);
    }

    /// The lease renewals to write. They stay pending (and count for the agent's status) until
    /// [`Self::heartbeats_stored`]: a reader between the take and the commit would otherwise
    /// see neither and take a live agent for a disconnected one.
    pub(crate) fn heartbeats_to_store(&self) -> Vec<Heartbeat> {
        self.pending_heartbeats.to_store()
    }

    /// `stored` is committed: each is dropped unless a newer renewal replaced it meanwhile.
    pub(crate) fn heartbeats_stored(&self, stored: &[Heartbeat]) {
        self.pending_heartbeats.stored(stored);
    }

    /// The newest lease renewal seen here but maybe not yet stored.
    pub fn pending_heartbeat_at(&self, agent_id: &str) -> Option<UnixMillis> {
        self.pending_heartbeats.latest_at(agent_id)
    }

    pub fn connected_sessions(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Sends `frame` to the agent's live session, if it has one on this replica.
    pub(crate) fn send_to(&self, agent_id: &str, frame: &Frame) -> bool {
        let routing_id = self.sessions.lock().get(agent_id).cloned();
        match (routing_id, self.mesh.get()) {
            (Some(routing_id), Some((handle, _))) => match handle.send(&routing_id, frame) {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(%agent_id, error = %err, "mesh send failed");
                    false
                }
            },
            _ => false,
        }
    }

    pub(crate) fn send_raw(&self, routing_id: &[u8], frame: &Frame) {
        if let Some((handle, _)) = self.mesh.get()
            && let Err(err) = handle.send(routing_id, frame)
        {
            tracing::warn!(error = %err, "mesh send failed");
        }
    }

    /// Ends the agent's session on this replica: tells it why, forgets its routing id.
    pub(crate) fn end_session(&self, agent_id: &str, reason: &str) {
        self.send_to(agent_id, &Frame::Revoked { reason: reason.to_string() });
        self.sessions.lock().remove(agent_id);
    }

    /// Forgets the agent's session on this replica without telling it anything (a flooding
    /// agent is silenced, not revoked: it keeps its identity).
    pub(crate) fn forget_session(&self, agent_id: &str) {
        self.sessions.lock().remove(agent_id);
    }

    /// Whether the agent's session is on this replica.
    pub fn has_session(&self, agent_id: &str) -> bool {
        self.sessions.lock().contains_key(agent_id)
    }

    pub(crate) fn session_agents(&self) -> Vec<String> {
        self.sessions.lock().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(agent_id: &str, at: UnixMillis) -> Heartbeat {
        Heartbeat {
            agent_id: agent_id.into(),
            at,
            manifest_hash: String::new(),
            manifest_version: 1,
            replica_id: "rtr_test".into(),
        }
    }

    /// A renewal counts for its agent until its write commits, and a newer one that arrives
    /// during the write is not lost with the older one.
    #[test]
    fn a_renewal_stays_pending_until_stored_and_a_newer_one_survives_the_older_commit() {
        let pending = PendingHeartbeats::default();
        pending.note(beat("agt_a", 10));
        pending.note(beat("agt_b", 11));
        let writing = pending.to_store();
        assert_eq!(writing.len(), 2);
        assert_eq!(pending.latest_at("agt_a"), Some(10), "still visible while being written");
        pending.note(beat("agt_a", 20));
        pending.stored(&writing);
        assert_eq!(pending.latest_at("agt_a"), Some(20), "the newer renewal is kept");
        assert_eq!(pending.latest_at("agt_b"), None, "the stored one is dropped");
        pending.stored(&pending.to_store());
        assert_eq!(pending.latest_at("agt_a"), None);
    }
}
