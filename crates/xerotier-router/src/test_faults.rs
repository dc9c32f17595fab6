//! Test builds only (cargo feature `test-faults`): lets an end-to-end test switch off the
//! router's argument check, so that the XEM's own check can be shown to hold against a router
//! that does not do its part. `scripts/check-release-no-test-faults.sh` proves none of this is
//! in a release binary.

use crate::AppState;

const ENV_VAR: &str = "XEROTIER_ROUTER_TEST_FAULT";
const SKIP_ARGUMENT_CHECK: &str = "skip_argument_check";

/// Arms the fault the environment names, loudly.
pub fn arm(state: &AppState) {
    if std::env::var(ENV_VAR).as_deref() == Ok(SKIP_ARGUMENT_CHECK) {
        tracing::warn!(fault = SKIP_ARGUMENT_CHECK, "TEST FAULT: tool arguments are not checked");
        state.exec.skip_argument_check();
    }
}
