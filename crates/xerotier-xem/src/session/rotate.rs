//! The session's half of CURVE rotation: the router asks for a new key, the agent stores a
//! pending CURVE key and signing key and acknowledges them signed with its current signing
//! key, then switches to both once the router has promoted them.
//! The test-fault hooks mark the points the crash-safety tests kill or forge at.

use super::Session;
use crate::metrics::RotationOutcome;
use crate::rotation::{self, Ack};

impl Session {
    pub(super) fn on_rotate(&mut self, request_id: &str, nonce: &str) -> anyhow::Result<()> {
        tracing::info!(%request_id, "CURVE rotation requested by the router");
        if self.faults.withhold_ack() {
            return Ok(());
        }
        // Durable before acknowledged: a crash after the ack must find the same key again.
        let pending = rotation::pending_for(&self.curve_key_path, request_id, &*self.entropy)?;
        self.faults.pending_stored();
        let honest =
            Ack { agent_id: &self.identity.agent_id, request_id, nonce, signing: &self.signing };
        let ack = self.faults.acknowledgement(honest, &pending, &*self.entropy);
        self.send(&ack)?;
        self.metrics.rotation(RotationOutcome::Acknowledged);
        self.faults.ack_sent();
        Ok(())
    }

    pub(super) fn on_promoted(&mut self, request_id: &str) -> anyhow::Result<()> {
        let Some(pending) = rotation::load_pending(&self.curve_key_path)? else {
            tracing::debug!(%request_id, "promotion for a key already in use");
            return Ok(());
        };
        if pending.request_id != request_id {
            tracing::warn!(%request_id, pending = %pending.request_id, "promotion for another request; ignored");
            return Ok(());
        }
        self.faults.promotion_received();
        let paths =
            rotation::KeyPaths { curve: &self.curve_key_path, signing: &self.signing_key_path };
        let faults = &self.faults;
        rotation::promote(paths, &pending, || faults.between_key_files())?;
        self.curve = pending.key;
        // The new signing key proves the next rotation; the old one verifies nothing any more.
        self.signing = pending.signing;
        // Reconnect on the new key; the router retires the old one when it sees us.
        self.connect()?;
        self.metrics.rotation(RotationOutcome::Promoted);
        tracing::info!(%request_id, "switched to the promoted CURVE and signing keys");
        Ok(())
    }

    pub(super) fn on_rotation_failed(
        &mut self,
        request_id: &str,
        reason: &str,
    ) -> anyhow::Result<()> {
        tracing::warn!(%request_id, %reason, "CURVE rotation failed; keeping the current key");
        self.metrics.rotation(RotationOutcome::Failed);
        if rotation::load_pending(&self.curve_key_path)?.is_some_and(|p| p.request_id == request_id)
        {
            rotation::discard(&self.curve_key_path)?;
        }
        Ok(())
    }
}
