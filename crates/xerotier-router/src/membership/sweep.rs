//! The failover sweep: every live replica runs it; the store's conditional updates make each
//! release happen once however many run it at once.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exec::ExecService;

/// A replica counts as dead for an agent this long, plus four of the agent's lease intervals,
/// after its lease ended (by the database's clock): time for the agent to notice (three silent
/// lease intervals), connect to another replica and have that one's buffered lease renewal
/// stored, which takes the agent off the dead replica: from then on that replica reconciles
/// what the agent reports holding, and the sweep leaves the agent alone.
pub const DEAD_REPLICA_GRACE_MS: i64 = 30_000;
/// How often the sweep looks.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub fn spawn(exec: ExecService, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(SWEEP_EVERY) => {}
            }
            match exec.release_work_of_dead_replicas(DEAD_REPLICA_GRACE_MS).await {
                Ok(released) if !released.is_empty() => tracing::warn!(
                    agents = released.agents.len(),
                    requeued = released.requeued.len(),
                    failed = released.failed.len(),
                    "released the work of agents whose router replica died"
                ),
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "failover sweep failed; retrying"),
            }
        }
    })
}
