//! Test builds only (cargo feature `test-faults`): lets an end-to-end test make the router
//! misbehave towards its agents, so that the XEM's own checks can be shown to hold against a
//! router that does not do its part (or is not the router at all). One fault at a time:
//! - `skip_argument_check`: tool arguments are dispatched unchecked;
//! - `send_hostile_invocation_ids`: every dispatch is preceded by `Invoke` frames whose ids
//!   are hostile ([`hostile_invocation_ids`]);
//! - `ignore_promotion_reads`: a CURVE key promotion made on another replica is not read from
//!   the store on its signal or on the agent's hello (as if those reads were lost), so that
//!   the periodic full refresh can be shown to retire the old key by itself;
//! - `slow_signal_apply`: each signal from another replica is applied after a pause
//!   ([`SLOW_SIGNAL_APPLY_DELAY`]), so a burst of changes leaves this replica behind for a while.
//!
//! And, apart from those, a replica whose clock is off: `XEROTIER_ROUTER_TEST_CLOCK_OFFSET_MS`
//! (e.g. `-5000`) shifts every reading of the router's clock ([`offset_clock`]), so a test can
//! show that what a lagging replica writes is neither lost nor misordered.
//!
//! `scripts/check-release-no-test-faults.sh` proves none of this is in a release binary.

use std::sync::Arc;

use xerotier_core::{Clock, SharedClock, UnixMillis};

use crate::AppState;

const ENV_VAR: &str = "XEROTIER_ROUTER_TEST_FAULT";
const SKIP_ARGUMENT_CHECK: &str = "skip_argument_check";
const SEND_HOSTILE_INVOCATION_IDS: &str = "send_hostile_invocation_ids";
const IGNORE_PROMOTION_READS: &str = "ignore_promotion_reads";
const SLOW_SIGNAL_APPLY: &str = "slow_signal_apply";
/// The pause before each signal is applied under `slow_signal_apply`.
pub const SLOW_SIGNAL_APPLY_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

/// The pause the `slow_signal_apply` fault puts before each signal, when armed (loudly).
pub fn signal_apply_delay() -> Option<std::time::Duration> {
    if std::env::var(ENV_VAR).as_deref() != Ok(SLOW_SIGNAL_APPLY) {
        return None;
    }
    tracing::warn!(fault = SLOW_SIGNAL_APPLY, "TEST FAULT: each signal is applied after a pause");
    Some(SLOW_SIGNAL_APPLY_DELAY)
}
/// The absolute path among the hostile ids: the test checks nothing was made there.
const HOSTILE_PATH: &str = "/tmp/xerotier-hostile-invocation-id";

/// Arms the fault the environment names, loudly.
pub fn arm(state: &AppState) {
    match std::env::var(ENV_VAR).as_deref() {
        Ok(SKIP_ARGUMENT_CHECK) => {
            tracing::warn!(
                fault = SKIP_ARGUMENT_CHECK,
                "TEST FAULT: tool arguments are not checked"
            );
            state.exec.skip_argument_check();
        }
        Ok(SEND_HOSTILE_INVOCATION_IDS) => {
            tracing::warn!(
                fault = SEND_HOSTILE_INVOCATION_IDS,
                "TEST FAULT: hostile invocation ids are sent to agents"
            );
            state.exec.send_hostile_invocation_ids();
        }
        Ok(IGNORE_PROMOTION_READS) => {
            tracing::warn!(
                fault = IGNORE_PROMOTION_READS,
                "TEST FAULT: promotions are not read on signals or hellos"
            );
            state.rotations.ignore_promotion_reads();
        }
        _ => {}
    }
}

/// Ids a compromised router could send: an absolute path, parent references, an overlong
/// id, non-ASCII, an empty one, a near miss of the format.
pub fn hostile_invocation_ids() -> Vec<String> {
    vec![
        HOSTILE_PATH.to_string(),
        "../../../../tmp/xerotier-hostile-parent".to_string(),
        format!("inv_{}", "a".repeat(5000)),
        "inv_ÄÖÜäöüßàéîõûçñ0123456789".to_string(),
        String::new(),
        "inv_0123456789abcdefghjkmnpqr/".to_string(),
    ]
}

const CLOCK_OFFSET_ENV: &str = "XEROTIER_ROUTER_TEST_CLOCK_OFFSET_MS";

/// `clock`, shifted by the milliseconds `XEROTIER_ROUTER_TEST_CLOCK_OFFSET_MS` names (loudly);
/// `clock` itself when it names none.
pub fn offset_clock(clock: SharedClock) -> SharedClock {
    let Ok(text) = std::env::var(CLOCK_OFFSET_ENV) else { return clock };
    match text.trim().parse::<i64>() {
        Ok(offset_ms) => {
            tracing::warn!(offset_ms, "TEST FAULT: the router's clock is shifted");
            Arc::new(OffsetClock { base: clock, offset_ms })
        }
        Err(err) => {
            tracing::error!(value = %text, error = %err, "TEST FAULT: unreadable clock offset; ignored");
            clock
        }
    }
}

/// A clock `offset_ms` away from another.
#[derive(Debug)]
struct OffsetClock {
    base: SharedClock,
    offset_ms: i64,
}

impl Clock for OffsetClock {
    fn now_millis(&self) -> UnixMillis {
        self.base.now_millis().saturating_add(self.offset_ms)
    }
}

#[cfg(test)]
mod tests {
    use xerotier_core::ManualClock;

    use super::*;

    #[test]
    fn the_offset_clock_is_shifted_by_its_offset() {
        let clock = OffsetClock { base: Arc::new(ManualClock::new(10_000)), offset_ms: -5_000 };
        assert_eq!(clock.now_millis(), 5_000);
    }
}
