//! Tool execution: what online agents offer, invocations (create, dispatch, results, cancel),
//! and containment pauses.

pub mod credential_ages;
pub mod handlers;
pub mod offers;
pub mod pauses;
pub mod service;

use std::time::Duration;

pub use service::ExecService;

use crate::AppState;

/// Dispatch runs when woken (a new invocation, an agent connecting, a result, a resume) and at
/// least this often, for invocations queued through other replicas.
const DISPATCH_POLL: Duration = Duration::from_millis(500);

pub async fn dispatch_loop(state: AppState) {
    let wake = state.exec().wake_handle();
    loop {
        if let Err(err) = state.exec().dispatch_once().await {
            tracing::warn!(error = %err, "dispatch pass failed");
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(DISPATCH_POLL) => {}
        }
    }
}
