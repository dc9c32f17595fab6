//! Fault injection for the end-to-end tests of CURVE rotation's crash safety, chosen with
//! `XEROTIER_XEM_TEST_FAULT`. Compiled only with the `test-faults` feature: a release build has
//! none of this, so no environment variable can make a production agent forge or crash.
//! `scripts/check-release-no-test-faults.sh` reads the names below out of this file and checks
//! that a release binary holds none of them.
//!
//! Without the feature, `crate::session` uses a no-op shim with the same methods.

use xerotier_core::Entropy;
use xerotier_credentials::SigningKeyPair;
use xerotier_proto::mesh::Frame;

use crate::rotation::{self, Ack, PendingKey};

const ENV_VAR: &str = "XEROTIER_XEM_TEST_FAULT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestFault {
    CrashBeforeAck,
    CrashAfterAck,
    CrashAfterPromotion,
    CrashBetweenKeyFiles,
    NeverAck,
    ForgeWrongKey,
    ForgeWrongNonce,
    ReplayPreviousAck,
}

impl TestFault {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "crash_before_ack" => Self::CrashBeforeAck,
            "crash_after_ack" => Self::CrashAfterAck,
            "crash_after_promotion" => Self::CrashAfterPromotion,
            "crash_between_key_files" => Self::CrashBetweenKeyFiles,
            "never_ack" => Self::NeverAck,
            "forge_wrong_key" => Self::ForgeWrongKey,
            "forge_wrong_nonce" => Self::ForgeWrongNonce,
            "replay_previous_ack" => Self::ReplayPreviousAck,
            _ => return None,
        })
    }
}

/// The injected fault, if any, and what a replay needs to remember.
#[derive(Debug, Default)]
pub struct Faults {
    active: Option<TestFault>,
    last_ack: Option<Frame>,
}

impl Faults {
    /// Reads the fault from the environment; the agent logs loudly when one is set.
    pub fn load() -> Self {
        let active = std::env::var(ENV_VAR).ok().and_then(|v| TestFault::parse(&v));
        if let Some(fault) = active {
            tracing::warn!(
                ?fault,
                "TEST FAULT INJECTION ENABLED (XEROTIER_XEM_TEST_FAULT); never use in production"
            );
        }
        Self { active, last_ack: None }
    }

    /// True when the agent must ignore a rotation request (never acknowledge it).
    pub fn withhold_ack(&self) -> bool {
        self.active == Some(TestFault::NeverAck)
    }

    /// Once the pending key is on disk, before the acknowledgement goes out.
    pub fn pending_stored(&self) {
        self.abort_at(TestFault::CrashBeforeAck);
    }

    /// Right after the acknowledgement went out.
    pub fn ack_sent(&self) {
        self.abort_at(TestFault::CrashAfterAck);
    }

    /// The router promoted the key; the agent has not yet written it over its key file.
    pub fn promotion_received(&self) {
        self.abort_at(TestFault::CrashAfterPromotion);
    }

    /// The promoted CURVE key is on disk; the signing key file is not yet replaced.
    pub fn between_key_files(&self) {
        self.abort_at(TestFault::CrashBetweenKeyFiles);
    }

    /// The acknowledgement to send: the honest one, or the injected forgery.
    pub fn acknowledgement(
        &mut self,
        honest: Ack<'_>,
        pending: &PendingKey,
        entropy: &dyn Entropy,
    ) -> Frame {
        let (key, next_signing) = (&pending.key, pending.signing.public_hex());
        let ack = match self.active {
            Some(TestFault::ForgeWrongKey) => {
                let stranger = SigningKeyPair::generate(entropy);
                rotation::acknowledgement(
                    honest.agent_id,
                    honest.request_id,
                    honest.nonce,
                    key,
                    &next_signing,
                    &stranger,
                )
            }
            Some(TestFault::ForgeWrongNonce) => rotation::acknowledgement(
                honest.agent_id,
                honest.request_id,
                "not-the-nonce",
                key,
                &next_signing,
                honest.signing,
            ),
            Some(TestFault::ReplayPreviousAck) if self.last_ack.is_some() => {
                self.last_ack.clone().unwrap_or(Frame::LeaseAck { seq: 0 })
            }
            _ => honest.sign(pending),
        };
        self.last_ack = Some(ack.clone());
        ack
    }

    /// Dies like `kill -9` would, when `point` is the injected fault.
    fn abort_at(&self, point: TestFault) {
        if self.active == Some(point) {
            tracing::error!(?point, "test fault: aborting");
            std::process::abort();
        }
    }
}
