//! The agent's invocations: accepted from the router, run up to `max_concurrent_executions` at
//! once, results kept until the router acknowledges them.
//!
//! Each invocation takes its workspace credential snapshot when it starts (not when it is
//! accepted), so a reload while it waits for a slot is honoured, and one while it runs is not
//! seen by it. Results are re-sent with every lease renewal until acknowledged, so a router
//! restart loses none.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, watch};
use xerotier_core::SharedClock;
use xerotier_proto::invocation::{InvocationResult, InvocationStatus};
use xerotier_proto::mesh::Frame;

use crate::catalog::Catalog;
use crate::credentials::CredentialStore;
use crate::executor::{self, ExecRequest, OutputChunk, Stream};
use crate::metrics::XemMetrics;
use crate::sandbox::{Sandbox, is_invocation_id};

/// A received id longer than this is not echoed back in the refusal (it is not an id).
const MAX_ECHOED_ID: usize = 64;

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
    sandbox: Arc<Sandbox>,
    /// Serialised arguments beyond this are refused (`max_argument_bytes`).
    max_argument_bytes: usize,
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
        sandbox: Arc<Sandbox>,
        max_argument_bytes: usize,
        clock: SharedClock,
        metrics: XemMetrics,
    ) -> (Self, mpsc::Receiver<WorkEvent>) {
        let (events, receiver) = mpsc::channel(1024);
        let work = Self {
            catalog,
            credentials,
            permits: Arc::new(Semaphore::new(max_concurrent)),
            sandbox,
            max_argument_bytes,
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
        // The id names a directory on this host: anything but the exact format is refused
        // before it touches anything, and reported (a router does not send these).
        if !is_invocation_id(&invocation_id) {
            let shown = bounded(&invocation_id);
            tracing::warn!(invocation_id = ?shown, bytes = invocation_id.len(), "malformed invocation id refused");
            self.metrics.invocation_refused();
            return Some(Frame::InvocationRefused {
                invocation_id: shown,
                reason: "malformed invocation id".into(),
            });
        }
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
            return refuse(format!("unknown tool {:?}", bounded(tool)));
        };
        let Some(workspace) = self.catalog.workspace(workspace).cloned() else {
            return refuse(format!("unknown workspace {:?}", bounded(workspace)));
        };
        tracing::info!(%invocation_id, tool = %tool.name, workspace = %workspace.id, "invocation received");
        // The router checked the arguments against this agent's definition; a router is not
        // trusted to have done so. Refused arguments never reach a process.
        let checked = if args_json.len() > self.max_argument_bytes {
            Err(format!(
                "the arguments are {} bytes serialised; this agent takes at most {}",
                args_json.len(),
                self.max_argument_bytes
            ))
        } else {
            check_arguments(&tool.args_schema, &args_json)
        };
        if let Err(why) = checked {
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
            sandbox: self.sandbox.clone(),
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
}

/// A received name, cut to a length fit for a log line or a refusal.
fn bounded(text: &str) -> String {
    text.chars().take(MAX_ECHOED_ID).collect()
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
    sandbox: Arc<Sandbox>,
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
            sandbox: self.sandbox.clone(),
        };
        let executed =
            executor::execute_leaving_dir(request, Some(output_tx), cancel, self.clock.clone())
                .await;
        // Output frames go out before the result, so a watcher sees all of it.
        let _ = forward.await;
        let _ = self.events.send(WorkEvent::Finished(executed.result)).await;
        // The runner for a later tool starts, and the directory goes, once this result is on
        // its way (the tool's processes are gone).
        self.sandbox.refill_runners();
        if let Some(dir) = executed.dir {
            let _ = tokio::task::spawn_blocking(move || dir.remove()).await;
        }
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
