//! The background task that executes operations: every tick it claims the operations whose
//! runner lease is free or ran out (on PostgreSQL, whichever replica claims first; exactly one
//! holds each at a time) and runs each in a task of its own. An operation therefore goes on
//! when the CLI that created it disconnects, and after a router restart or a replica's death.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::executor::Executor;

/// How often claimable operations are looked for.
const TICK: Duration = Duration::from_millis(250);

/// Starts the runner; it stops (each execution gives its lease up) when `shutdown` is
/// cancelled, and the handle ends once every execution has.
pub fn spawn(executor: Executor, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let running: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut executions = JoinSet::new();
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            while executions.try_join_next().is_some() {}
            let now = executor.operations.clock.now_millis();
            let claimable = match executor
                .operations
                .store
                .claimable_operations(&executor.replica_id, now)
                .await
            {
                Ok(ids) => ids,
                Err(err) => {
                    tracing::warn!(error = %err, "could not look for operations to run");
                    continue;
                }
            };
            for id in claimable {
                if running.lock().contains(&id) {
                    continue;
                }
                match executor.claim(&id).await {
                    Ok(Some(_)) => {}
                    Ok(None) => continue,
                    Err(err) => {
                        tracing::warn!(operation = %id, error = %err, "could not claim the operation");
                        continue;
                    }
                }
                running.lock().insert(id.clone());
                tracing::info!(operation = %id, "running operation");
                let (executor, shutdown, running) =
                    (executor.clone(), shutdown.clone(), running.clone());
                executions.spawn(async move {
                    executor.run(&id, &shutdown).await;
                    running.lock().remove(&id);
                });
            }
        }
        while executions.join_next().await.is_some() {}
    })
}
