//! Which [`KindRollout`] carries out each kind's phases on this replica.

use std::collections::HashMap;
use std::sync::Arc;

use super::rollout::{KindRollout, RouterKeyKind};

#[derive(Clone, Default)]
pub struct RolloutRegistry {
    kinds: HashMap<RouterKeyKind, Arc<dyn KindRollout>>,
}

impl std::fmt::Debug for RolloutRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolloutRegistry").field("kinds", &self.kinds.keys()).finish()
    }
}

impl RolloutRegistry {
    pub fn register(&mut self, rollout: Arc<dyn KindRollout>) {
        self.kinds.insert(rollout.kind(), rollout);
    }

    pub fn get(&self, kind: RouterKeyKind) -> Option<&Arc<dyn KindRollout>> {
        self.kinds.get(&kind)
    }
}
