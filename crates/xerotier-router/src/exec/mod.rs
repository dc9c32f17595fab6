//! Tool execution: what online agents offer, invocations (create, dispatch, results, cancel),
//! and containment pauses.

pub mod credential_ages;
pub mod fleet_offers;
pub mod handlers;
pub mod offers;
pub mod output_stream;
pub mod pauses;
pub mod service;

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use service::ExecService;

/// Marks one step of an invocation's way through the router: a debug event under the target
/// `xerotier_timeline`, off unless the log filter names it (`--log-level
/// warn,xerotier_timeline=debug`). With the XEM's own steps it gives the per-layer breakdown of
/// `xerotier-bench exec-round-trip --timeline` (docs/BENCHMARKS.md).
macro_rules! timeline {
    ($id:expr, $step:literal) => {
        tracing::debug!(target: "xerotier_timeline", invocation_id = %$id, $step)
    };
}
pub(crate) use timeline;

/// Dispatch runs when woken (a new invocation, an agent connecting, a result, a resume) and at
/// least this often, for invocations queued through other replicas.
const DISPATCH_POLL: Duration = Duration::from_millis(500);

/// Hands queued invocations to agents until `shutdown`; a pass under way finishes first.
pub fn spawn_dispatch(exec: ExecService, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let wake = exec.wake_handle();
        while !shutdown.is_cancelled() {
            if let Err(err) = exec.dispatch_once().await {
                tracing::warn!(error = %err, "dispatch pass failed");
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(DISPATCH_POLL) => {}
                () = shutdown.cancelled() => {}
            }
        }
    })
}
