//! The agent's invocations: accepted from the router, run up to `max_concurrent_executions` at
//! once, results kept until the router acknowledges them.
//!
//! Each invocation takes its workspace credential snapshot when it starts (not when it is
//! accepted), so a reload while it waits for a slot is honoured, and one while it runs is not
//! seen by it. Results are re-sent with every lease renewal until acknowledged, so a router
//! restart loses none.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, watch};
use xerotier_core::SharedClock;
use xerotier_proto::invocation::{InvocationResult, InvocationStatus};
use xerotier_proto::mesh::Frame;
use xerotier_proto::workspace_credentials::ReloadReport;

use crate::catalog::Catalog;
use crate::credentials::CredentialStore;
use crate::executor::{self, ExecRequest, OutputChunk, Stream};
use crate::metrics::XemMetrics;

/// What the agent's event loop needs to hear from running invocations.
#[derive(Debug)]
pub enum WorkEvent {
    /// A frame to send to the router (started, output).
    Send(Frame),
    /// An invocation ended.
    Finished(InvocationResult),
}

#[derive(Debug)]
pub struct Work {
    catalog: Arc<Catalog>,
    credentials: Arc<CredentialStore>,
    permits: Arc<Semaphore>,
    run_dir: PathBuf,
    /// Accepted and not yet finished: the handle that cancels each.
    active: HashMap<String, watch::Sender<bool>>,
    /// Finished, not yet acknowledged by the router.
    unacked: HashMap<String, InvocationResult>,
    events: mpsc::Sender<WorkEvent>,
    accepting: bool,
    clock: SharedClock,
    metrics: XemMetrics,
}

impl Work {
    pub fn new(
        catalog: Arc<Catalog>,
        credentials: Arc<CredentialStore>,
        max_concurrent: usize,
        run_dir: PathBuf,
        clock: SharedClock,
        metrics: XemMetrics,
    ) -> (Self, mpsc::Receiver<WorkEvent>) {
        let (events, receiver) = mpsc::channel(1024);
        let work = Self {
            catalog,
            credentials,
            permits: Arc::new(Semaphore::new(max_concurrent)),
            run_dir,
            active: HashMap::new(),
            unacked: HashMap::new(),
            events,
            accepting: true,
            clock,
            metrics,
        };
        (work, receiver)
    }

    /// Accepts an invocation, or answers why not (the router requeues a refusal).
    pub fn invoke(
        &mut self,
        invocation_id: String,
        tool: &str,
        workspace: &str,
        args_json: String,
    ) -> Option<Frame> {
        if self.active.contains_key(&invocation_id) || self.unacked.contains_key(&invocation_id) {
            return None;
        }
        let refuse = |reason: String| {
            self.metrics.invocation_refused();
            Some(Frame::InvocationRefused { invocation_id: invocation_id.clone(), reason })
        };
        if !self.accepting {
            return refuse("the agent is shutting down".into());
        }
        let Some(tool) = self.catalog.tool(tool).cloned() else {
            return refuse(format!("unknown tool {tool:?}"));
        };
        let Some(workspace) = self.catalog.workspace(workspace).cloned() else {
            return refuse(format!("unknown workspace {workspace:?}"));
        };
        // The router checked the arguments against this agent's definition; a router is not
        // trusted to have done so. Refused arguments never reach a process.
        if let Err(why) = check_arguments(&tool.args_schema, &args_json) {
            tracing::warn!(%invocation_id, tool = %tool.name, "arguments refused: {why}");
            let now = self.clock.now_millis();
            let result = InvocationResult {
                invocation_id: invocation_id.clone(),
                status: InvocationStatus::Failed,
                exit_code: None,
                stdout: String::new(),
                stderr: String::new(),
                stdout_truncated: false,
                stderr_truncated: false,
                error: Some(format!("invalid_arguments: {why}")),
                started_at_ms: now,
                finished_at_ms: now,
                credential_generation: 0,
            };
            return Some(self.finished(result));
        }
        let (cancel_tx, cancel_rx) = watch::channel(false);
        self.active.insert(invocation_id.clone(), cancel_tx);
        let context = Running {
            invocation_id,
            permits: self.permits.clone(),
            credentials: self.credentials.clone(),
            events: self.events.clone(),
            run_dir: self.run_dir.clone(),
            clock: self.clock.clone(),
        };
        tokio::spawn(context.run(tool, workspace, args_json, cancel_rx));
        None
    }

    pub fn cancel(&self, invocation_id: &str) {
        if let Some(cancel) = self.active.get(invocation_id) {
            let _ = cancel.send(true);
        }
    }

    pub fn cancel_all(&self) {
        for cancel in self.active.values() {
            let _ = cancel.send(true);
        }
    }

    /// Keeps the result until the router acknowledges it; returns the frame to send now.
    pub fn finished(&mut self, result: InvocationResult) -> Frame {
        self.metrics.invocation_finished(&result.status);
        self.active.remove(&result.invocation_id);
        self.unacked.insert(result.invocation_id.clone(), result.clone());
        Frame::InvocationFinished { result }
    }

    pub fn acknowledged(&mut self, invocation_id: &str) {
        self.unacked.remove(invocation_id);
    }

    /// Everything this agent holds, for the lease renewal.
    pub fn in_flight(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.active.keys().chain(self.unacked.keys()).cloned().collect();
        ids.sort();
        ids
    }

    pub fn unacknowledged(&self) -> Vec<Frame> {
        self.unacked.values().map(|r| Frame::InvocationFinished { result: r.clone() }).collect()
    }

    pub fn running(&self) -> usize {
        self.active.len()
    }

    pub fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    /// Re-reads every credential file (blocking I/O, off the event loop).
    pub async fn reload(&self, trigger: &'static str) -> ReloadReport {
        let credentials = self.credentials.clone();
        match tokio::task::spawn_blocking(move || credentials.reload(trigger)).await {
            Ok(report) => report,
            Err(err) => ReloadReport {
                trigger: trigger.to_string(),
                ok: false,
                files: vec![xerotier_proto::workspace_credentials::CredentialFileReport {
                    credentials_ref: "*".into(),
                    ok: false,
                    sha256: None,
                    generation: 0,
                    mtime_ms: None,
                    error: Some(format!("reload task failed: {err}")),
                }],
            },
        }
    }
}

/// The arguments as the tool's own schema accepts them: a JSON object that validates.
fn check_arguments(args_schema: &serde_json::Value, args_json: &str) -> Result<(), String> {
    let args: serde_json::Value =
        serde_json::from_str(args_json).map_err(|e| format!("not JSON: {e}"))?;
    if !args.is_object() {
        return Err("arguments must be a JSON object".into());
    }
    xerotier_proto::schema::validate(args_schema, &args)
        .map_err(|e| format!("arguments do not match the tool's schema: {e}"))
}

/// One accepted invocation, from waiting for a slot to its result.
struct Running {
    invocation_id: String,
    permits: Arc<Semaphore>,
    credentials: Arc<CredentialStore>,
    events: mpsc::Sender<WorkEvent>,
    run_dir: PathBuf,
    clock: SharedClock,
}

impl Running {
    async fn run(
        self,
        tool: crate::catalog::ToolBundle,
        workspace: crate::catalog::WorkspaceDecl,
        args_json: String,
        mut cancel: watch::Receiver<bool>,
    ) {
        let accepted_at = self.clock.now_millis();
        let permit = tokio::select! {
            permit = self.permits.clone().acquire_owned() => permit.ok(),
            _ = cancel.wait_for(|c| *c) => None,
        };
        let Some(_permit) = permit else {
            let result = self.ended_early(
                accepted_at,
                InvocationStatus::Cancelled,
                "cancelled before it started",
            );
            let _ = self.events.send(WorkEvent::Finished(result)).await;
            return;
        };
        let credential = self.credentials.snapshot(&workspace.credentials_ref);
        let Some(credential) = credential else {
            let why = format!(
                "workspace {} has no usable credential {:?} (see the last reload report)",
                workspace.id, workspace.credentials_ref
            );
            let result = self.ended_early(accepted_at, InvocationStatus::Failed, &why);
            let _ = self.events.send(WorkEvent::Finished(result)).await;
            return;
        };
        let _ = self
            .events
            .send(WorkEvent::Send(Frame::InvocationStarted {
                invocation_id: self.invocation_id.clone(),
                credential_generation: credential.generation,
            }))
            .await;
        let (output_tx, mut output_rx) = mpsc::channel::<OutputChunk>(64);
        let forward_events = self.events.clone();
        let forward = tokio::spawn(async move {
            while let Some(chunk) = output_rx.recv().await {
                let stream = match chunk.stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr => "stderr",
                };
                let frame = Frame::InvocationOutput {
                    invocation_id: chunk.invocation_id,
                    stream: stream.to_string(),
                    chunk: chunk.bytes,
                };
                if forward_events.send(WorkEvent::Send(frame)).await.is_err() {
                    return;
                }
            }
        });
        let request = ExecRequest {
            invocation_id: self.invocation_id.clone(),
            tool,
            workspace,
            credential: Some(credential),
            args_json,
            run_dir: self.run_dir.clone(),
        };
        let result = executor::execute(request, Some(output_tx), cancel, self.clock.clone()).await;
        // Output frames go out before the result, so a watcher sees all of it.
        let _ = forward.await;
        let _ = self.events.send(WorkEvent::Finished(result)).await;
    }

    fn ended_early(&self, at: i64, status: InvocationStatus, why: &str) -> InvocationResult {
        InvocationResult {
            invocation_id: self.invocation_id.clone(),
            status,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            error: Some(why.to_string()),
            started_at_ms: at,
            finished_at_ms: self.clock.now_millis(),
            credential_generation: 0,
        }
    }
}

#[cfg(test)]
mod argument_tests {
    use super::check_arguments;

    #[test]
    fn arguments_outside_the_tools_own_schema_are_refused() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"kind": {"type": "string", "enum": ["pods", "services"]}},
            "required": ["kind"],
            "additionalProperties": false
        });
        assert!(check_arguments(&schema, r#"{"kind":"pods"}"#).is_ok());
        for hostile in [
            r#"{"kind":"secrets"}"#,
            r#"{"kind":"pods","extra":"--kubeconfig=/etc/passwd"}"#,
            r#"{}"#,
            r#"["kind","pods"]"#,
            "not json",
        ] {
            assert!(check_arguments(&schema, hostile).is_err(), "{hostile}");
        }
    }
}
