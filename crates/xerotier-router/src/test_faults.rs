//! Test builds only (cargo feature `test-faults`): lets an end-to-end test make the router
//! misbehave towards its agents, so that the XEM's own checks can be shown to hold against a
//! router that does not do its part (or is not the router at all). One fault at a time:
//! - `skip_argument_check`: tool arguments are dispatched unchecked;
//! - `send_hostile_invocation_ids`: every dispatch is preceded by `Invoke` frames whose ids
//!   are hostile ([`hostile_invocation_ids`]).
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

const MESH_PHASE_FILE_ENV: &str = "XEROTIER_ROUTER_TEST_MESH_PHASE_FILE";
/// How often the mesh phase file is re-read.
const MESH_PHASE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Until the router key phase service drives it (SPEC §9), an end-to-end test drives the mesh
/// key rollout itself: `XEROTIER_ROUTER_TEST_MESH_PHASE_FILE` names a file holding
/// `<phase> <seed>`, re-read every 100 ms; on a change this replica reconciles the mesh
/// rollout with the identity's key as `current` and a key made from `seed` as `next`
/// (`completed` serves the new key alone, the old one retired). None of it without the env.
pub fn spawn_mesh_phase_watch(
    state: &AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let path = std::path::PathBuf::from(std::env::var_os(MESH_PHASE_FILE_ENV)?);
    tracing::warn!(file = %path.display(), "TEST FAULT: the mesh key phase is read from a file");
    let rollout = crate::router_keys::mesh::MeshRollout::new(
        state.link.clone(),
        state.store.clone(),
        state.clock.clone(),
    );
    let link = state.link.clone();
    Some(tokio::spawn(async move {
        let mut applied = String::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(MESH_PHASE_POLL) => {}
            }
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let text = text.trim().to_string();
            if text == applied {
                continue;
            }
            match mesh_state(&link, &text) {
                Some(state) => match crate::router_keys::KindRollout::reconcile(&rollout, &state)
                    .await
                {
                    Ok(()) => tracing::warn!(phase = %text, "TEST FAULT: mesh key phase applied"),
                    Err(err) => tracing::error!(error = %err, "TEST FAULT: mesh key phase failed"),
                },
                None => tracing::error!(phase = %text, "TEST FAULT: unreadable mesh key phase"),
            }
            applied = text;
        }
    }))
}

fn mesh_state(
    link: &crate::mesh_link::MeshLink,
    text: &str,
) -> Option<crate::router_keys::rollout::RouterKeyState> {
    use crate::router_keys::rollout::{
        RotationPhase, RouterKeyKind, RouterKeyMaterial, RouterKeyState,
    };
    use secrecy::{ExposeSecret, SecretString};
    let (phase, seed) = text.split_once(' ')?;
    let seed: u64 = seed.trim().parse().ok()?;
    let material = |keys: &xerotier_credentials::CurveKeyPair| RouterKeyMaterial {
        kid: crate::router_keys::mesh::mesh_kid(&keys.public_bytes()),
        public: keys.public_z85(),
        secret: SecretString::from(keys.secret_hex().expose_secret().to_string()),
        created_at: 0,
    };
    let old = material(&link.identity.mesh_keys);
    let new = material(&xerotier_credentials::CurveKeyPair::generate(
        &xerotier_core::SeededEntropy::new(seed),
    ));
    let (phase, current, next, verify_only) = match phase {
        "completed" => (RotationPhase::Standby, new, None, vec![old]),
        other => (RotationPhase::parse(other)?, old, Some(new), Vec::new()),
    };
    Some(RouterKeyState {
        kind: RouterKeyKind::Mesh,
        phase,
        rotation_id: None,
        current,
        next,
        verify_only,
    })
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
