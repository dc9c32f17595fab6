//! The session's side of a router mesh key rotation (SPEC §9): which of the held keys to try,
//! moving on when a handshake does not complete, adopting (durably, then acknowledging) the
//! set the router sends, and fetching the current set when none held works.

use xerotier_proto::mesh::{Frame, RouterMeshKey};

use super::Session;
use crate::router_keys;

impl Session {
    /// The Z85 router key this connection tries.
    pub(super) fn router_key_to_try(&self) -> String {
        let keys = router_keys::key_set(&self.identity);
        match keys.get(self.key_index).or_else(|| keys.first()) {
            Some(key) => key.public_key.clone(),
            None => self.identity.router_curve_key.clone(),
        }
    }

    /// Whether the router's preferred key (the first held) is not the one the current
    /// connection was opened with.
    pub(super) fn preferred_key_changed(&self) -> bool {
        router_keys::key_set(&self.identity).first().is_some_and(|key| {
            !self.connected_key.is_empty() && key.public_key != self.connected_key
        })
    }

    /// A handshake completed: the key it used goes to the front (a restart tries it first).
    pub(super) fn on_handshake(&mut self) {
        self.handshaken = true;
        self.failed_rounds = 0;
        self.fetch_keys = false;
        if self.key_index != 0 {
            match router_keys::promote(&self.state_dir, &mut self.identity, self.key_index) {
                Ok(()) => {
                    tracing::info!("connected on another router mesh key; it is now tried first")
                }
                Err(err) => tracing::warn!(error = %err, "could not save the router key order"),
            }
            self.key_index = 0;
        }
    }

    /// The handshake on the current key did not complete: the next key; after the last, the
    /// next replica; after every replica, a signed key fetch at the next lease tick.
    pub(super) fn next_router_key(&mut self) {
        let keys = router_keys::key_set(&self.identity).len().max(1);
        self.key_index += 1;
        if self.key_index < keys {
            tracing::warn!(
                key = self.key_index,
                "no handshake on this router mesh key; trying the next one held"
            );
            return;
        }
        self.key_index = 0;
        let from = self.replicas.current().to_string();
        let to = self.replicas.advance().to_string();
        tracing::warn!(%from, %to, "router replica not answering on any key held; failing over");
        self.failed_rounds += 1;
        if self.failed_rounds >= self.replicas.addrs().len().max(1) {
            self.fetch_keys = true;
        }
    }

    /// The router's key set: checked whole and saved durably, then acknowledged. A refused set
    /// leaves the held one (and says nothing: the router re-sends at the next hello).
    pub(super) fn on_router_keys(
        &mut self,
        keys: Vec<RouterMeshKey>,
        tls_ca_pins: Vec<String>,
    ) -> anyhow::Result<()> {
        let adopted =
            router_keys::adopt_with_pins(&self.state_dir, &mut self.identity, keys, tls_ca_pins);
        if let Err(err) = adopted {
            tracing::warn!(error = %err, "the router's mesh key set was refused; the held one stays");
            return Ok(());
        }
        // The live connection keeps the key it was opened with; the next one tries the
        // router's preferred key first (in update_servers the new key, which the router now
        // serves), so a session lost to the rekey comes back on the first attempt.
        self.key_index = 0;
        let kids = router_keys::held_kids(&self.identity);
        tracing::info!(kids = %kids.join(","), "router mesh keys saved");
        self.send(&Frame::RouterKeysAck { kids })
    }

    /// None of the held keys completed a handshake on any replica: ask the router over HTTPS
    /// for its current keys (signed with this agent's signing key), then reconnect.
    pub(super) async fn fetch_router_keys(&mut self) -> anyhow::Result<()> {
        self.fetch_keys = false;
        self.failed_rounds = 0;
        let fetched = router_keys::fetch(
            &self.state_dir,
            &mut self.identity,
            &self.signing,
            self.clock.clone(),
            self.entropy.clone(),
        )
        .await;
        match fetched {
            Ok(()) => {
                let kids: Vec<String> =
                    router_keys::key_set(&self.identity).into_iter().map(|k| k.kid).collect();
                tracing::info!(kids = %kids.join(","), "fetched the router's current mesh keys; reconnecting");
                self.key_index = 0;
                self.connect()
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not fetch the router's mesh keys; trying the held ones again");
                Ok(())
            }
        }
    }
}
