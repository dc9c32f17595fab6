//! Stopping: SIGTERM stops new work and gives in-flight invocations the grace period; what is
//! still running then is killed. Either way every result is sent before the agent exits, so
//! the router records an end for each invocation rather than losing it.

use std::ops::ControlFlow;
use std::time::Duration;

use xerotier_mesh::ClientEvent;
use xerotier_proto::mesh::Frame;

use super::{Session, Step, notify};
use crate::agent::Exit;
use crate::work::WorkEvent;

/// After the shutdown grace period, how long killed invocations get to report.
const KILLED_RESULTS_WAIT: Duration = Duration::from_secs(5);
/// How long a stopping agent waits for the router to acknowledge its last results.
const RESULT_ACK_WAIT: Duration = Duration::from_secs(2);

impl Session {
    /// Stops taking work; in-flight invocations get the grace period to finish.
    pub(super) fn begin_shutdown(&mut self) {
        notify(&[sd_notify::NotifyState::Stopping]);
        self.work.stop_accepting();
        tracing::info!(
            running = self.work.running(),
            grace_seconds = self.shutdown_grace.as_secs(),
            "SIGTERM: draining in-flight invocations"
        );
        self.drain_deadline = Some(tokio::time::Instant::now() + self.shutdown_grace);
    }

    /// Draining, nothing left running, and connected to say so.
    pub(super) fn drained(&self) -> bool {
        self.drain_deadline.is_some() && self.work.running() == 0 && self.link.is_some()
    }

    /// Everything drained in time: say goodbye.
    pub(super) async fn stop(mut self) -> Exit {
        notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!("stopping");
        self.flush_results().await;
        Exit::Stopped
    }

    /// The grace period is over: kill the remaining invocations, then send their results.
    pub(super) async fn grace_over(&mut self) -> Step {
        tracing::warn!(
            running = self.work.running(),
            "shutdown grace period over; killing the remaining invocations"
        );
        self.work.cancel_all();
        let deadline = tokio::time::Instant::now() + KILLED_RESULTS_WAIT;
        while self.work.running() > 0 {
            match tokio::time::timeout_at(deadline, self.work_events.recv()).await {
                Ok(Some(WorkEvent::Finished(result))) => {
                    let frame = self.work.finished(result);
                    self.send(&frame)?;
                }
                Ok(Some(WorkEvent::Send(frame))) => self.send(&frame)?,
                Ok(None) | Err(_) => break,
            }
        }
        tracing::info!("stopping");
        // As after a drain in time: the mesh client discards unsent frames when it closes, so
        // exiting right after the send could lose the killed invocations' results and leave
        // them `running` on the router.
        self.flush_results().await;
        Ok(ControlFlow::Break(Exit::Stopped))
    }

    /// Gives the router a moment to acknowledge the last results, so they are not re-reported
    /// as lost after a restart. Bounded: the router may be away.
    async fn flush_results(&mut self) {
        let deadline = tokio::time::Instant::now() + RESULT_ACK_WAIT;
        for frame in self.work.unacknowledged() {
            if self.send(&frame).is_err() {
                return;
            }
        }
        let Some(link) = self.link.as_mut() else { return };
        while !self.work.in_flight().is_empty() {
            match tokio::time::timeout_at(deadline, link.events.recv()).await {
                Ok(Some(ClientEvent::Frame(Frame::ResultAck { invocation_id }))) => {
                    self.work.acknowledged(&invocation_id)
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    }
}
