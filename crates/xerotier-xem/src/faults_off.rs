//! The stand-in for `crate::test_faults` when the `test-faults` feature is off: every hook does
//! nothing, so a release build carries no fault code and never reads the environment for one.

use xerotier_core::Entropy;
use xerotier_proto::mesh::Frame;

use crate::rotation::{Ack, PendingKey};

#[derive(Debug, Default)]
pub struct Faults;

impl Faults {
    #[inline(always)]
    pub fn load() -> Self {
        Self
    }

    #[inline(always)]
    pub fn withhold_ack(&self) -> bool {
        false
    }

    #[inline(always)]
    pub fn pending_stored(&self) {}

    #[inline(always)]
    pub fn ack_sent(&self) {}

    #[inline(always)]
    pub fn promotion_received(&self) {}

    #[inline(always)]
    pub fn between_key_files(&self) {}

    #[inline(always)]
    pub fn acknowledgement(
        &mut self,
        honest: Ack<'_>,
        pending: &PendingKey,
        _entropy: &dyn Entropy,
    ) -> Frame {
        honest.sign(pending)
    }
}
