//! Invocations: created over HTTP, dispatched to an online agent over the mesh, reconciled
//! with what the agents report.
//!
//! The store decides every state change (claim, start, finish, cancel are conditional updates),
//! so replicas sharing a database never run one invocation twice. What lives in memory is only
//! what this replica's agents told it: their offers, the output streamed so far, and which
//! invocations each of them holds.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use xerotier_core::{IdGenerator, IdKind, SharedClock, UnixMillis, is_valid_id};
use xerotier_proto::agents::{CapabilityManifest, ManifestTool};
use xerotier_proto::invocation::{
    InvocationResult, InvocationStatus, InvokeRequest, MAX_ARGUMENT_BYTES, MAX_OUTPUT_BYTES,
};
use xerotier_proto::mesh::Frame;
use xerotier_proto::schema;
use xerotier_proto::tools::{ToolDetail, ToolList};
use xerotier_proto::{Scope, Scopes};
use xerotier_store::{
    AgentRecord, CancelOutcome, DeclaredWorkspace, GRANTED, InvocationEnd, InvocationFilter,
    InvocationRecord, JoinKeyRecord, NewInvocation, PageRequest, PageSlice, PauseRecord, Store,
    StoreError, Transition, WorkspaceDecision,
};

use super::fleet_offers::FleetOffers;
use super::offers::{AgentOffer, Offers};
use super::timeline;
use crate::audit::{AuditContext, AuditLog, Change, Target};
use crate::mesh_link::MeshLink;
use crate::service_error::ServiceError;
use crate::validate;

/// How long an agent that refused an invocation (it is shutting down, say) is left alone.
const REFUSAL_BACKOFF_MS: i64 = 2_000;
/// Unclaimed invocations looked at per dispatch pass.
const DISPATCH_BATCH: u32 = 200;

/// Output streamed so far by a running invocation (bounded like the final result).
#[derive(Debug, Default, Clone)]
pub struct LiveOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// An invocation as stored, with the output streamed so far while it runs.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub record: InvocationRecord,
    pub live: Option<LiveOutput>,
}

/// Whose invocations a caller sees (and may cancel): a key with the `management` scope every
/// one; any other key only those it created. Another key's invocation is *not found*, so its
/// id is not even confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    All,
    CreatedBy(String),
}

impl Viewer {
    pub fn of(key_id: &str, scopes: &Scopes) -> Self {
        if scopes.contains(Scope::Management) {
            Viewer::All
        } else {
            Viewer::CreatedBy(key_id.to_string())
        }
    }

    /// The key whose invocations only are seen, if restricted.
    pub fn owner(&self) -> Option<&str> {
        match self {
            Viewer::All => None,
            Viewer::CreatedBy(key_id) => Some(key_id),
        }
    }

    pub fn sees(&self, record: &InvocationRecord) -> bool {
        self.owner().is_none_or(|key_id| record.created_by.as_deref() == Some(key_id))
    }
}

/// What `GET /v1/exec/invocations` filters on.
#[derive(Debug, Clone, Default)]
pub struct InvocationSearch {
    pub status: Option<InvocationStatus>,
    pub agent_id: Option<String>,
    pub workspace: Option<String>,
    pub tool: Option<String>,
}

fn append_bounded(buffer: &mut Vec<u8>, truncated: &mut bool, chunk: &[u8]) {
    let room = MAX_OUTPUT_BYTES.saturating_sub(buffer.len());
    if chunk.len() > room {
        *truncated = true;
    }
    buffer.extend_from_slice(&chunk[..chunk.len().min(room)]);
}

#[derive(Debug, Default)]
struct Tracking {
    /// agent id → invocations it holds (claimed for it or running) → when they were claimed.
    held: HashMap<String, HashMap<String, UnixMillis>>,
    live: HashMap<String, LiveOutput>,
    /// agent id → no dispatch to it before this time.
    refused_until: HashMap<String, UnixMillis>,
}

/// Committed records kept for readers that have not taken them yet; a reader that falls further
/// behind reads the store instead. Small on purpose: a record holds up to twice
/// [`MAX_OUTPUT_BYTES`], and a stalled reader (a client that stopped reading) keeps the slots it
/// has not taken, so this bounds what such readers can hold to 8 MiB.
const RECORDS_KEPT: usize = 64;

/// Wakes the readers of invocations' output (`output_stream.rs`): output appended here, or an
/// invocation's state changed in the store; `closed` ends every reader when the router stops.
#[derive(Debug)]
pub(super) struct OutputSignals {
    pub(super) output: Notify,
    /// Some state change the reader must read from the store (a cancel, a requeue, a verdict
    /// of the router's own).
    pub(super) state: Notify,
    /// An invocation started or ended through this replica: the record as committed. Its
    /// readers take it instead of reading the store again, and other readers need not wake.
    pub(super) records: broadcast::Sender<Arc<InvocationRecord>>,
    pub(super) closed: CancellationToken,
}

impl Default for OutputSignals {
    fn default() -> Self {
        Self {
            output: Notify::new(),
            state: Notify::new(),
            records: broadcast::channel(RECORDS_KEPT).0,
            closed: CancellationToken::new(),
        }
    }
}

/// The execution service: a handle to one shared state (handlers receive a copy per request,
/// so a copy is one reference count).
#[derive(Debug, Clone)]
pub struct ExecService(Arc<ExecState>);

impl std::ops::Deref for ExecService {
    type Target = ExecState;

    fn deref(&self) -> &ExecState {
        &self.0
    }
}

#[derive(Debug)]
pub struct ExecState {
    store: Store,
    clock: SharedClock,
    ids: IdGenerator,
    audit: AuditLog,
    link: Arc<MeshLink>,
    offers: Arc<Offers>,
    /// Other replicas' agents, read from the store when none here can take an invocation.
    fleet: FleetOffers,
    tracking: Arc<Mutex<Tracking>>,
    wake: Arc<Notify>,
    signals: Arc<OutputSignals>,
    check_arguments: Arc<std::sync::atomic::AtomicBool>,
    /// Test builds only (`send_hostile_invocation_ids`).
    #[cfg(feature = "test-faults")]
    hostile_ids: Arc<std::sync::atomic::AtomicBool>,
}

fn is_paused(pauses: &[PauseRecord], agent_id: &str, workspace: &str) -> bool {
    pauses
        .iter()
        .any(|p| p.agent_id == agent_id && p.workspace.as_deref().is_none_or(|w| w == workspace))
}

impl ExecService {
    pub fn new(
        store: Store,
        clock: SharedClock,
        ids: IdGenerator,
        audit: AuditLog,
        link: Arc<MeshLink>,
    ) -> Self {
        let fleet = FleetOffers::new(store.clone(), clock.clone());
        Self(Arc::new(ExecState {
            store,
            clock,
            ids,
            audit,
            link,
            offers: Arc::default(),
            fleet,
            tracking: Arc::default(),
            wake: Arc::default(),
            signals: Arc::default(),
            check_arguments: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            #[cfg(feature = "test-faults")]
            hostile_ids: Arc::default(),
        }))
    }

    /// Test builds only: lets arguments through unchecked, so that the XEM's own check can be
    /// shown to hold. Not compiled into a release binary.
    #[cfg(feature = "test-faults")]
    pub fn skip_argument_check(&self) {
        self.check_arguments.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Test builds only: every dispatch is preceded by `Invoke` frames whose invocation ids are
    /// hostile (a path, `..`, overlong, non-ASCII), so that the XEM's refusal can be shown.
    #[cfg(feature = "test-faults")]
    pub fn send_hostile_invocation_ids(&self) {
        self.hostile_ids.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    #[cfg(feature = "test-faults")]
    fn send_hostile_frames(&self, agent_id: &str, invocation: &InvocationRecord) {
        if !self.hostile_ids.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        for invocation_id in crate::test_faults::hostile_invocation_ids() {
            let frame = Frame::Invoke {
                invocation_id,
                tool: invocation.tool.clone(),
                workspace: invocation.workspace.clone(),
                args_json: invocation.args.clone(),
            };
            self.link.send_to(agent_id, &frame);
        }
    }

    #[cfg(not(feature = "test-faults"))]
    fn send_hostile_frames(&self, _agent_id: &str, _invocation: &InvocationRecord) {}

    fn checks_arguments(&self) -> bool {
        self.check_arguments.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Woken whenever dispatch may find something new to do.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Ends every output stream (at shutdown, before HTTP drains).
    pub fn close_output_streams(&self) {
        self.signals.closed.cancel();
    }

    pub(super) fn signals(&self) -> Arc<OutputSignals> {
        self.signals.clone()
    }

    /// An invocation changed through another replica (a cancel): if its agent's session is
    /// here and it has not ended, the agent is told; readers here look again.
    pub fn on_changed_elsewhere(&self, record: &InvocationRecord) {
        if record.cancel_requested_at.is_some()
            && record.finished_at.is_none()
            && let Some(agent_id) = &record.agent_id
        {
            let frame = Frame::CancelInvocation { invocation_id: record.id.clone() };
            if self.link.send_to(agent_id, &frame) {
                tracing::info!(invocation_id = %record.id, %agent_id, "cancel requested on another replica sent to the agent");
            }
        }
        self.state_changed();
    }

    /// An invocation's state changed in the store: its output readers look again.
    fn state_changed(&self) {
        self.signals.state.notify_waiters();
    }

    /// An invocation's state changed in the store, to `record`: its output readers take it.
    fn committed(&self, record: InvocationRecord) {
        // No receiver (nobody follows an output stream) is not an error.
        let _ = self.signals.records.send(Arc::new(record));
    }

    /// The invocation as stored, without the output held here.
    pub(super) async fn record(&self, id: &str) -> Result<InvocationRecord, ServiceError> {
        self.store
            .invocation(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("invocation {id}")))
    }

    /// The output streamed so far by an invocation running on an agent of this replica.
    pub(super) fn live_output(&self, id: &str) -> Option<LiveOutput> {
        self.tracking.lock().live.get(id).cloned()
    }

    /// What online agents offer: this replica's (as they told it), and on PostgreSQL the
    /// other replicas' (as the store has them, read at most once a second).
    pub async fn tools(&self) -> ToolList {
        let now = self.clock.now_millis();
        match self.with_elsewhere().await {
            Some(fleet) => ToolList { tools: fleet.tools(now) },
            None => ToolList { tools: self.offers.tools(now) },
        }
    }

    pub async fn tool(&self, name: &str) -> Result<ToolDetail, ServiceError> {
        let now = self.clock.now_millis();
        let found = match self.with_elsewhere().await {
            Some(fleet) => fleet.tool(name, now),
            None => self.offers.tool(name, now),
        };
        found.ok_or_else(|| ServiceError::ToolNotFound(name.to_string()))
    }

    /// This replica's offers plus other replicas' agents, or `None` when there are no other
    /// replicas to read (SQLite) or the store cannot be read (then this replica's alone).
    async fn with_elsewhere(&self) -> Option<Offers> {
        let fleet = self.elsewhere().await?;
        for offer in self.offers.all() {
            fleet.upsert(offer);
        }
        Some(fleet)
    }

    /// Other replicas' agents (PostgreSQL), or `None` on SQLite or when the store cannot be
    /// read (logged).
    async fn elsewhere(&self) -> Option<Offers> {
        if !self.fleet.applies() {
            return None;
        }
        self.fleet
            .remote(&self.offers)
            .await
            .inspect_err(
                |err| tracing::warn!(error = %err, "could not read other replicas' agents"),
            )
            .ok()
    }

    /// Validates the request against what online agents offer, then queues it with its audit
    /// record (`invocation.create`: the caller's key, request id, tool and workspace). Nothing
    /// is created when no online agent could ever run it; the refusal is recorded `failed`
    /// with the code the caller gets.
    ///
    /// When an agent can take it now (the one dispatch would pick: least busy, online,
    /// unpaused, accepting the arguments), it is claimed for that agent in the same transaction
    /// and sent at once: one commit instead of two, and no wait for a dispatch pass. Otherwise
    /// (that agent is paused, say) it waits in the queue for dispatch, as before.
    pub async fn create(
        &self,
        context: &AuditContext,
        request: InvokeRequest,
    ) -> Result<Invocation, ServiceError> {
        let id = self.ids.next(IdKind::Invocation);
        timeline!(id, "create.begin");
        let target = Target { kind: "invocation", id: Some(&id), name: None };
        let details = serde_json::json!({ "tool": request.tool, "workspace": request.workspace });
        let change = Change::new("invocation.create", target).creating().details(details);
        let (args, accepting, elsewhere) = match self.admit(&request).await {
            Ok(admitted) => admitted,
            Err(err) => {
                self.audit.record_failure(context, change, &err).await;
                return Err(err);
            }
        };
        let now = self.clock.now_millis();
        // Another replica's agent is claimed by that replica's dispatch, not from here.
        let claimed_by =
            if elsewhere { None } else { self.agent_for_now(accepting, &request.workspace, now) };
        timeline!(id, "create.chosen");
        let new = NewInvocation {
            id: id.clone(),
            tool: request.tool,
            workspace: request.workspace,
            args: args.to_string(),
            created_at: now,
            created_by: context.actor_key_id().map(str::to_string),
            claimed_by,
        };
        let record = self
            .audit
            .audited(context, change, |entry| async move {
                self.store.create_invocation(&new, &entry).await
            })
            .await?;
        timeline!(record.id, "create.committed");
        tracing::info!(invocation_id = %record.id, tool = %record.tool, workspace = %record.workspace, agent_id = record.agent_id.as_deref().unwrap_or("-"), actor = %context.actor_label(), "invocation queued");
        match &record.agent_id {
            Some(agent_id) => {
                self.hold(agent_id, &record.id, now);
                match self.send_invoke(agent_id, &record).await {
                    Ok(true) => {}
                    // Back in the queue: one dispatch pass places it elsewhere (or later).
                    Ok(false) => self.wake(),
                    // Created all the same, so the caller's answer stands; the agent's lease
                    // renewals (which will not list it) give it back to the queue.
                    Err(err) => {
                        tracing::warn!(invocation_id = %record.id, %agent_id, error = %err, "could not requeue an invocation its agent could not be sent")
                    }
                }
            }
            None if elsewhere => {
                // The durable row is the invocation; this only spares the other replicas'
                // dispatch its next pass.
                if let Err(err) = self.store.notify_dispatch().await {
                    tracing::debug!(error = %err, "could not wake other replicas' dispatch");
                }
            }
            None => self.wake(),
        }
        Ok(self.with_live(record))
    }

    /// The agent to claim an invocation for as it is created, among the agents that
    /// `accepting` says would run it: the least busy one not backing off after a refusal.
    /// Pauses are not read here: the creating statement checks the chosen agent's own (so a
    /// pause committed before it always counts), and leaves the invocation to dispatch, which
    /// then picks among the unpaused agents, when that agent is paused.
    fn agent_for_now(
        &self,
        accepting: Vec<String>,
        workspace: &str,
        now: UnixMillis,
    ) -> Option<String> {
        self.least_busy(accepting, &[], workspace, now)
    }

    /// Sends a claimed invocation to its agent; one whose agent has no session here goes back
    /// to the queue (false). Dispatch is not woken for it here: a pass that woke itself for an
    /// agent it keeps failing to reach would spin.
    async fn send_invoke(
        &self,
        agent_id: &str,
        invocation: &InvocationRecord,
    ) -> Result<bool, StoreError> {
        self.send_hostile_frames(agent_id, invocation);
        let frame = Frame::Invoke {
            invocation_id: invocation.id.clone(),
            tool: invocation.tool.clone(),
            workspace: invocation.workspace.clone(),
            args_json: invocation.args.clone(),
        };
        if self.link.send_to(agent_id, &frame) {
            timeline!(invocation.id, "dispatch.sent");
            return Ok(true);
        }
        // Held until it is back in the queue: if that write fails, the agent's lease renewals
        // (which do not list it) give it back later.
        self.store.requeue_invocation(&invocation.id, agent_id).await?;
        self.release(agent_id, &invocation.id);
        Ok(false)
    }

    /// The arguments of `request` when some online agent could run it, else why not; with
    /// the online agents that serve it and accept them under their own definition, and whether
    /// those are other replicas' agents (none of this replica's could run it).
    async fn admit(
        &self,
        request: &InvokeRequest,
    ) -> Result<(serde_json::Value, Vec<String>, bool), ServiceError> {
        let args = self.checked_args(request)?;
        match accepting_in(
            &self.offers,
            request,
            &args,
            self.checks_arguments(),
            self.clock.now_millis(),
        ) {
            Ok(accepting) => Ok((args, accepting, false)),
            Err(here) => match self.accepting_elsewhere(request, &args).await {
                Some(Ok(accepting)) => Ok((args, accepting, true)),
                // Some agent elsewhere serves it but refuses these arguments: that says more.
                Some(Err(err @ ServiceError::InvalidArguments { .. })) => Err(err),
                _ => Err(here),
            },
        }
    }

    /// What other replicas' agents would accept (PostgreSQL only), or `None`.
    async fn accepting_elsewhere(
        &self,
        request: &InvokeRequest,
        args: &serde_json::Value,
    ) -> Option<Result<Vec<String>, ServiceError>> {
        let remote = self.elsewhere().await?;
        Some(accepting_in(&remote, request, args, self.checks_arguments(), self.clock.now_millis()))
    }

    /// The request's own shape: a malformed name or argument object is the caller's mistake
    /// (400), whatever the fleet looks like now.
    fn checked_args(&self, request: &InvokeRequest) -> Result<serde_json::Value, ServiceError> {
        validate::catalog_name(&request.tool, "tool")?;
        validate::catalog_name(&request.workspace, "workspace")?;
        let args = request.args.clone().unwrap_or_else(|| serde_json::json!({}));
        if !args.is_object() {
            return Err(ServiceError::InvalidArguments {
                message: "args must be a JSON object".into(),
                param: "args".into(),
            });
        }
        let size = args.to_string().len();
        if size > MAX_ARGUMENT_BYTES {
            return Err(ServiceError::InvalidArguments {
                message: format!(
                    "args are {size} bytes serialised; the limit is {MAX_ARGUMENT_BYTES}"
                ),
                param: "args".into(),
            });
        }
        Ok(args)
    }

    /// One invocation, if `viewer` may see it; another key's is not found.
    pub async fn get(&self, viewer: &Viewer, id: &str) -> Result<Invocation, ServiceError> {
        let record = self
            .store
            .invocation(id)
            .await?
            .filter(|record| viewer.sees(record))
            .ok_or_else(|| ServiceError::NotFound(format!("invocation {id}")))?;
        Ok(self.with_live(record))
    }

    /// One page of the invocations `viewer` may see.
    pub async fn list(
        &self,
        viewer: &Viewer,
        search: InvocationSearch,
        page: &PageRequest,
    ) -> Result<PageSlice<Invocation>, ServiceError> {
        let filter = InvocationFilter {
            created_by: viewer.owner().map(str::to_string),
            status: search.status.map(|s| s.as_str().to_string()),
            agent_id: search.agent_id,
            workspace: search.workspace,
            tool: search.tool,
        };
        let slice = self.store.list_invocations(&filter, page).await?;
        Ok(slice.map(|r| self.with_live(r)))
    }

    /// Cancels at once when no agent has it yet; otherwise tells the agent to kill it.
    /// Audited (`invocation.cancel`) with the change; a refusal (not found, which another
    /// key's invocation is too, or already ended) is recorded `failed`.
    pub async fn cancel(
        &self,
        context: &AuditContext,
        viewer: &Viewer,
        id: &str,
    ) -> Result<Invocation, ServiceError> {
        // A malformed id is named in no record (it could be anything the caller typed).
        let target_id = is_valid_id(IdKind::Invocation, id).then_some(id);
        let target = Target { kind: "invocation", id: target_id, name: None };
        let change = Change::new("invocation.cancel", target);
        if target_id.is_none() {
            // Recorded, but never looked up: the store has no such id (PostgreSQL would refuse
            // some, a NUL in it, with a server error).
            let err = ServiceError::NotFound(format!("invocation {id:?}"));
            self.audit.record_failure(context, change, &err).await;
            return Err(err);
        }
        let now = self.clock.now_millis();
        let owner = viewer.owner();
        let outcome = self
            .audit
            .audited(context, change.clone(), |entry| async move {
                self.store.cancel_invocation(id, now, owner, &entry).await
            })
            .await?;
        self.state_changed();
        match outcome {
            CancelOutcome::Cancelled(record) => {
                tracing::info!(invocation_id = %record.id, actor = %context.actor_label(), "invocation cancelled before dispatch");
                Ok(self.with_live(record))
            }
            CancelOutcome::Requested(record) => {
                tracing::info!(invocation_id = %record.id, actor = %context.actor_label(), "invocation cancel requested");
                if let Some(agent_id) = &record.agent_id {
                    let frame = Frame::CancelInvocation { invocation_id: record.id.clone() };
                    if !self.link.send_to(agent_id, &frame) {
                        tracing::warn!(invocation_id = %record.id, %agent_id, "cancel recorded; the agent is not connected here");
                    }
                }
                Ok(self.with_live(record))
            }
            CancelOutcome::AlreadyFinished(record) => {
                let err = ServiceError::InvocationFinished(format!(
                    "invocation {} already ended ({})",
                    record.id, record.status
                ));
                self.audit.record_failure(context, change, &err).await;
                Err(err)
            }
        }
    }

    /// The record, and while it runs the output streamed so far (held here, not stored).
    fn with_live(&self, record: InvocationRecord) -> Invocation {
        let running = record.status == InvocationStatus::Running.as_str();
        let live = running.then(|| self.tracking.lock().live.get(&record.id).cloned()).flatten();
        Invocation { record, live }
    }

    // -----------------------------------------------------------------------------------------
    // Dispatch
    // -----------------------------------------------------------------------------------------

    /// One pass: hands each unclaimed invocation to the least busy online, unpaused agent that
    /// serves its tool and workspace. What finds no agent stays queued for a later pass.
    pub async fn dispatch_once(&self) -> Result<usize, StoreError> {
        let queued = self.store.unclaimed_invocations(DISPATCH_BATCH).await?;
        if queued.is_empty() {
            return Ok(0);
        }
        let pauses = self.store.exec_pauses(None).await?;
        let mut dispatched = 0;
        for invocation in queued {
            let now = self.clock.now_millis();
            let serving = self.offers.candidates(&invocation.tool, &invocation.workspace, now);
            let accepting = self.accepting(&invocation, &serving);
            if accepting.is_empty() && !serving.is_empty() {
                self.refuse_arguments(&invocation, &serving).await?;
                continue;
            }
            let Some(agent_id) = self.least_busy(accepting, &pauses, &invocation.workspace, now)
            else {
                continue;
            };
            timeline!(invocation.id, "dispatch.chosen");
            if !self.store.claim_invocation(&invocation.id, &agent_id, now).await? {
                continue;
            }
            timeline!(invocation.id, "dispatch.claimed");
            self.hold(&agent_id, &invocation.id, now);
            if self.send_invoke(&agent_id, &invocation).await? {
                dispatched += 1;
            }
        }
        Ok(dispatched)
    }

    /// The serving agents whose own definition of the tool accepts the invocation's arguments.
    fn accepting(
        &self,
        invocation: &InvocationRecord,
        serving: &[(String, ManifestTool)],
    ) -> Vec<String> {
        let args: serde_json::Value =
            serde_json::from_str(&invocation.args).unwrap_or(serde_json::Value::Null);
        serving
            .iter()
            .filter(|(_, tool)| {
                !self.checks_arguments() || schema::validate(&tool.args_schema, &args).is_ok()
            })
            .map(|(agent, _)| agent.clone())
            .collect()
    }

    /// No agent that serves the invocation accepts its arguments (definitions changed since it
    /// was queued): it ends `failed` rather than run anywhere.
    async fn refuse_arguments(
        &self,
        invocation: &InvocationRecord,
        serving: &[(String, ManifestTool)],
    ) -> Result<(), StoreError> {
        let args: serde_json::Value =
            serde_json::from_str(&invocation.args).unwrap_or(serde_json::Value::Null);
        let why = serving
            .iter()
            .find_map(|(_, tool)| schema::validate(&tool.args_schema, &args).err())
            .map(|e| e.to_string())
            .unwrap_or_default();
        let error = format!("invalid_arguments: no agent serving it accepts them: {why}");
        let end = failed_without_running(error, self.clock.now_millis());
        if let Some(record) = self.store.finish_invocation(&invocation.id, None, &end).await? {
            tracing::warn!(invocation_id = %invocation.id, "no serving agent accepts the arguments; failed");
            self.committed(record);
        }
        Ok(())
    }

    fn least_busy(
        &self,
        candidates: Vec<String>,
        pauses: &[PauseRecord],
        workspace: &str,
        now: UnixMillis,
    ) -> Option<String> {
        let tracking = self.tracking.lock();
        candidates
            .into_iter()
            .filter(|agent| !is_paused(pauses, agent, workspace))
            .filter(|agent| tracking.refused_until.get(agent).is_none_or(|until| *until <= now))
            .min_by_key(|agent| tracking.held.get(agent).map_or(0, HashMap::len))
    }

    fn hold(&self, agent_id: &str, invocation_id: &str, at: UnixMillis) {
        self.tracking
            .lock()
            .held
            .entry(agent_id.to_string())
            .or_default()
            .insert(invocation_id.to_string(), at);
    }

    fn release(&self, agent_id: &str, invocation_id: &str) {
        let mut tracking = self.tracking.lock();
        if let Some(held) = tracking.held.get_mut(agent_id) {
            held.remove(invocation_id);
        }
        tracking.live.remove(invocation_id);
    }

    fn holds(&self, agent_id: &str, invocation_id: &str) -> bool {
        self.tracking.lock().held.get(agent_id).is_some_and(|h| h.contains_key(invocation_id))
    }

    // -----------------------------------------------------------------------------------------
    // What agents report
    // -----------------------------------------------------------------------------------------

    /// An agent (re)connected: learn what it offers and which invocations it holds.
    pub async fn on_hello(&self, agent_id: &str) -> Result<(), StoreError> {
        let now = self.clock.now_millis();
        let Some(agent) = self.store.agent(agent_id).await? else {
            return Ok(());
        };
        let manifest: CapabilityManifest =
            serde_json::from_str(&agent.manifest).unwrap_or_default();
        let decisions = self.ensure_declared(&agent, &manifest, now).await?;
        let served = served(&agent, &manifest, decisions);
        self.offers.upsert(AgentOffer {
            agent_id: agent.id.clone(),
            agent_name: agent.name,
            manifest,
            lease_interval_ms: agent.lease_interval_ms,
            last_seen: now,
            served,
        });
        let held = self.store.invocations_held_by(agent_id).await?;
        {
            let mut tracking = self.tracking.lock();
            let entry = tracking.held.entry(agent_id.to_string()).or_default();
            for invocation in held {
                entry.entry(invocation.id).or_insert(invocation.dispatched_at.unwrap_or(now));
            }
            tracking.refused_until.remove(agent_id);
        }
        self.wake();
        Ok(())
    }

    pub fn on_seen(&self, agent_id: &str) {
        self.offers.seen(agent_id, self.clock.now_millis());
    }

    /// The agent's full manifest (its hello carries only the hash). Workspaces it declares
    /// beyond its grants, or with new tool definitions, become candidates; returns those
    /// changes (for the agent's event log).
    pub async fn on_manifest(
        &self,
        agent_id: &str,
        manifest: CapabilityManifest,
    ) -> Result<Vec<Transition>, StoreError> {
        let json = serde_json::to_string(&manifest).unwrap_or_default();
        let hash = manifest.hash();
        let version = i64::try_from(manifest.version).unwrap_or(i64::MAX);
        self.store.update_agent_manifest(agent_id, &json, &hash, version).await?;
        let declared = declared_workspaces(&manifest);
        let changed = self
            .store
            .declare_workspaces(agent_id, &declared, None, self.clock.now_millis())
            .await?;
        self.offers.set_manifest(agent_id, manifest);
        self.reload_served(agent_id).await?;
        self.wake();
        Ok(changed)
    }

    /// The agent's workspace decisions. Enrollment records the declared workspaces right after
    /// the agent; if the router stopped in between, the first hello records them, with the
    /// join key's grant.
    async fn ensure_declared(
        &self,
        agent: &AgentRecord,
        manifest: &CapabilityManifest,
        now: UnixMillis,
    ) -> Result<Vec<WorkspaceDecision>, StoreError> {
        let decisions = self.store.agent_workspaces(&agent.id).await?;
        if manifest.workspaces.is_empty() || !decisions.is_empty() {
            return Ok(decisions);
        }
        let grant = match self.store.join_key(&agent.join_key_id).await? {
            Some(key) => granted_by(&key),
            None => Vec::new(),
        };
        let declared = declared_workspaces(manifest);
        self.store
            .declare_workspaces(&agent.id, &declared, Some((&agent.join_key_id, &grant)), now)
            .await?;
        self.store.agent_workspaces(&agent.id).await
    }

    /// Re-reads what one agent may serve (after a decision about it).
    pub async fn reload_served(&self, agent_id: &str) -> Result<(), StoreError> {
        let agent = self.store.agent(agent_id).await?;
        self.reload_served_from(agent_id, agent.as_ref()).await
    }

    /// [`Self::reload_served`] with the agent's row already read (`None`: no such agent).
    pub async fn reload_served_from(
        &self,
        agent_id: &str,
        agent: Option<&AgentRecord>,
    ) -> Result<(), StoreError> {
        let Some(agent) = agent else {
            self.offers.set_served(agent_id, BTreeSet::new());
            return Ok(());
        };
        let manifest: CapabilityManifest =
            serde_json::from_str(&agent.manifest).unwrap_or_default();
        let decisions = self.store.agent_workspaces(agent_id).await?;
        self.offers.set_served(agent_id, served(agent, &manifest, decisions));
        self.wake();
        Ok(())
    }

    /// Re-reads what every agent known here may serve, in one query: decisions made through
    /// other replicas reach this one's dispatch within one refresh.
    pub async fn refresh_served(&self) -> Result<(), StoreError> {
        let grants = self.store.servable_grants().await?;
        for (agent_id, definitions) in self.offers.definitions() {
            let served = grants
                .iter()
                .filter(|g| g.agent_id == agent_id && g.definitions_hash == definitions)
                .map(|g| g.workspace.clone())
                .collect();
            self.offers.set_served(&agent_id, served);
        }
        Ok(())
    }

    pub async fn on_started(
        &self,
        agent_id: &str,
        invocation_id: &str,
        credential_generation: u64,
    ) -> Result<(), StoreError> {
        timeline!(invocation_id, "started.received");
        let generation = i64::try_from(credential_generation).unwrap_or(i64::MAX);
        let now = self.clock.now_millis();
        if let Some(record) =
            self.store.start_invocation(invocation_id, agent_id, now, generation).await?
        {
            timeline!(invocation_id, "started.committed");
            self.hold(agent_id, invocation_id, now);
            self.tracking.lock().live.insert(invocation_id.to_string(), LiveOutput::default());
            self.committed(record);
        } else {
            tracing::debug!(%agent_id, %invocation_id, "start report for an invocation this agent does not hold");
        }
        Ok(())
    }

    pub fn on_output(&self, agent_id: &str, invocation_id: &str, stream: &str, chunk: &[u8]) {
        if !self.holds(agent_id, invocation_id) {
            return;
        }
        let mut tracking = self.tracking.lock();
        let live = tracking.live.entry(invocation_id.to_string()).or_default();
        match stream {
            "stdout" => append_bounded(&mut live.stdout, &mut live.stdout_truncated, chunk),
            "stderr" => append_bounded(&mut live.stderr, &mut live.stderr_truncated, chunk),
            _ => {}
        }
        drop(tracking);
        self.signals.output.notify_waiters();
    }

    /// Records the result (once; re-sent results change nothing) and acknowledges it, so the
    /// agent stops re-sending.
    pub async fn on_finished(
        &self,
        agent_id: &str,
        result: InvocationResult,
    ) -> Result<(), StoreError> {
        timeline!(result.invocation_id, "finished.received");
        let mut end = InvocationEnd {
            status: result.status.as_str().to_string(),
            exit_code: result.exit_code.map(i64::from),
            stdout: truncate_text(result.stdout),
            stderr: truncate_text(result.stderr),
            stdout_truncated: result.stdout_truncated,
            stderr_truncated: result.stderr_truncated,
            error: result.error,
            started_at: Some(result.started_at_ms),
            finished_at: result.finished_at_ms,
            credential_generation: i64::try_from(result.credential_generation).ok(),
        };
        if !result.status.is_terminal() {
            end.status = InvocationStatus::Failed.as_str().into();
            end.error = Some(format!("agent reported a non-terminal result ({})", end.status));
        }
        let recorded =
            self.store.finish_invocation(&result.invocation_id, Some(agent_id), &end).await?;
        self.release(agent_id, &result.invocation_id);
        match recorded {
            Some(record) => {
                timeline!(result.invocation_id, "finished.committed");
                self.committed(record);
            }
            None => {
                tracing::debug!(%agent_id, invocation_id = %result.invocation_id, "duplicate or foreign result ignored");
            }
        }
        self.link
            .send_to(agent_id, &Frame::ResultAck { invocation_id: result.invocation_id.clone() });
        self.wake();
        Ok(())
    }

    /// The agent will not run it: back to the queue, and that agent is left alone briefly.
    pub async fn on_refused(
        &self,
        agent_id: &str,
        invocation_id: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        tracing::info!(%agent_id, %invocation_id, %reason, "agent refused an invocation; requeued");
        self.release(agent_id, invocation_id);
        self.tracking
            .lock()
            .refused_until
            .insert(agent_id.to_string(), self.clock.now_millis() + REFUSAL_BACKOFF_MS);
        self.store.requeue_invocation(invocation_id, agent_id).await?;
        self.state_changed();
        self.wake();
        Ok(())
    }

    /// A lease renewal lists what the agent holds. An invocation it no longer lists (past a
    /// grace period for frames in flight) was lost: requeued if it never started, failed if it
    /// was running (the agent restarted or crashed).
    pub async fn on_lease(
        &self,
        agent_id: &str,
        in_flight: &[String],
        grace_ms: i64,
    ) -> Result<(), StoreError> {
        let now = self.clock.now_millis();
        let listed: HashSet<&str> = in_flight.iter().map(String::as_str).collect();
        let missing: Vec<String> = self
            .tracking
            .lock()
            .held
            .get(agent_id)
            .map(|held| {
                held.iter()
                    .filter(|(id, at)| !listed.contains(id.as_str()) && now - **at > grace_ms)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default();
        for invocation_id in missing {
            self.lost(
                agent_id,
                &invocation_id,
                "the agent no longer reports it (it restarted or crashed)",
            )
            .await?;
        }
        Ok(())
    }

    /// The agent was silenced for a while (it flooded the mesh): no new dispatch until it is
    /// served again and its offer reloaded. What it holds stays with it; its lease renewals
    /// reconcile that when they resume.
    pub fn on_agent_silenced(&self, agent_id: &str) {
        self.offers.remove(agent_id);
    }

    /// The agent is gone for good (revoked): what it held is requeued or failed.
    pub async fn on_agent_removed(&self, agent_id: &str, why: &str) -> Result<(), StoreError> {
        self.offers.remove(agent_id);
        let held = self.store.invocations_held_by(agent_id).await?;
        for invocation in held {
            self.lost(agent_id, &invocation.id, why).await?;
        }
        self.tracking.lock().held.remove(agent_id);
        Ok(())
    }

    /// Agents whose replica died (its lease over for `grace_ms`) and who have not come back
    /// through another replica: what they held is requeued (never started) or failed
    /// (started), each once whichever replica sweeps (the store's conditional updates).
    pub async fn release_work_of_dead_replicas(
        &self,
        grace_ms: i64,
    ) -> Result<xerotier_store::ReleasedWork, StoreError> {
        let released =
            self.store.release_work_of_dead_replicas(grace_ms, self.clock.now_millis()).await?;
        if released.is_empty() {
            return Ok(released);
        }
        {
            let mut tracking = self.tracking.lock();
            for agent_id in &released.agents {
                tracking.held.remove(agent_id);
            }
            for record in &released.failed {
                tracking.live.remove(&record.id);
            }
        }
        for invocation_id in &released.requeued {
            tracing::warn!(%invocation_id, "unstarted invocation of an agent whose replica died requeued");
        }
        for record in &released.failed {
            tracing::warn!(invocation_id = %record.id, agent_id = record.agent_id.as_deref().unwrap_or("-"), "running invocation of an agent whose replica died failed");
            self.committed(record.clone());
        }
        self.state_changed();
        self.wake();
        Ok(released)
    }

    async fn lost(&self, agent_id: &str, invocation_id: &str, why: &str) -> Result<(), StoreError> {
        self.release(agent_id, invocation_id);
        if self.store.requeue_invocation(invocation_id, agent_id).await? {
            tracing::warn!(%agent_id, %invocation_id, %why, "unstarted invocation requeued");
            self.state_changed();
            self.wake();
            return Ok(());
        }
        let end = failed_without_running(
            format!("lost on agent {agent_id}: {why}"),
            self.clock.now_millis(),
        );
        if let Some(record) =
            self.store.finish_invocation(invocation_id, Some(agent_id), &end).await?
        {
            tracing::warn!(%agent_id, %invocation_id, %why, "running invocation lost");
            self.committed(record);
        }
        Ok(())
    }
}

/// An end the router records itself: failed, with no output or exit code of a tool.
fn failed_without_running(error: String, at: UnixMillis) -> InvocationEnd {
    InvocationEnd {
        status: InvocationStatus::Failed.as_str().into(),
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        error: Some(error),
        started_at: None,
        finished_at: at,
        credential_generation: None,
    }
}

/// What an agent may be given: its granted workspaces, for its current tool definitions, if
/// it is an approved, unquarantined `execution` agent. Nothing it merely declares.
pub(super) fn served(
    agent: &AgentRecord,
    manifest: &CapabilityManifest,
    decisions: Vec<WorkspaceDecision>,
) -> BTreeSet<String> {
    let may_work = agent.role == "execution"
        && agent.approval == "approved"
        && agent.revoked_at.is_none()
        && agent.quarantined_at.is_none();
    if !may_work {
        return BTreeSet::new();
    }
    let definitions = manifest.definitions_hash();
    decisions
        .into_iter()
        .filter(|d| d.state == GRANTED && d.definitions_hash == definitions)
        .filter(|d| manifest.declares_workspace(&d.workspace))
        .map(|d| d.workspace)
        .collect()
}

/// The workspaces a stored join key grants.
pub fn granted_by(record: &JoinKeyRecord) -> Vec<String> {
    record
        .grant_workspaces
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default()
}

/// Each declared workspace with the definitions of the tools the agent would run there (an
/// agent's tools serve all of its workspaces).
pub fn declared_workspaces(manifest: &CapabilityManifest) -> Vec<DeclaredWorkspace> {
    let definitions_hash = manifest.definitions_hash();
    let tools = serde_json::to_string(&manifest.tools).unwrap_or_default();
    manifest
        .workspaces
        .iter()
        .map(|w| DeclaredWorkspace {
            workspace: w.id.clone(),
            definitions_hash: definitions_hash.clone(),
            tools: tools.clone(),
        })
        .collect()
}

/// Agents bound their output; this keeps a misbehaving one from storing more.
fn truncate_text(mut text: String) -> String {
    if text.len() > MAX_OUTPUT_BYTES {
        let mut cut = MAX_OUTPUT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// The agents among `offers` that serve the request and accept `args` under their own
/// definition of the tool, or why none does.
fn accepting_in(
    offers: &Offers,
    request: &InvokeRequest,
    args: &serde_json::Value,
    checks_arguments: bool,
    now: UnixMillis,
) -> Result<Vec<String>, ServiceError> {
    if offers.online(now).is_empty() {
        return Err(ServiceError::NoAgentAvailable(
            "no agent is online; see `xeroctl agents`".into(),
        ));
    }
    let candidates = offers.candidates(&request.tool, &request.workspace, now);
    if candidates.is_empty() {
        return Err(match offers.knows(&request.tool, &request.workspace, now) {
            (false, _) => ServiceError::ToolNotFound(request.tool.clone()),
            (_, false) => ServiceError::WorkspaceNotFound(request.workspace.clone()),
            _ => ServiceError::NoAgentAvailable(format!(
                "no online agent offers tool {:?} in workspace {:?}",
                request.tool, request.workspace
            )),
        });
    }
    // Queued only if some agent that serves it accepts these arguments under its own
    // definition; dispatch then picks among those agents only.
    let mut refusal = None;
    let accepting: Vec<String> = candidates
        .iter()
        .filter(|(_, tool)| {
            !checks_arguments
                || match schema::validate(&tool.args_schema, args) {
                    Ok(()) => true,
                    Err(err) => {
                        refusal.get_or_insert(err);
                        false
                    }
                }
        })
        .map(|(agent, _)| agent.clone())
        .collect();
    if let (true, Some(err)) = (accepting.is_empty(), refusal) {
        return Err(ServiceError::InvalidArguments {
            message: format!("arguments do not match the schema of {}: {err}", request.tool),
            param: format!("args{}", err.path),
        });
    }
    Ok(accepting)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_output_is_bounded_and_marks_truncation() {
        let mut buffer = Vec::new();
        let mut truncated = false;
        append_bounded(&mut buffer, &mut truncated, &vec![b'a'; MAX_OUTPUT_BYTES - 1]);
        assert!(!truncated);
        append_bounded(&mut buffer, &mut truncated, b"bcd");
        assert!(truncated);
        assert_eq!(buffer.len(), MAX_OUTPUT_BYTES);
        assert_eq!(buffer.last(), Some(&b'b'));
    }

    #[test]
    fn agent_wide_and_workspace_pauses_both_block() {
        let pause = |workspace: Option<&str>| PauseRecord {
            agent_id: "agt_a".into(),
            workspace: workspace.map(str::to_string),
            paused_at: 0,
            paused_by: None,
            reason: None,
        };
        assert!(is_paused(&[pause(None)], "agt_a", "prod"));
        assert!(is_paused(&[pause(Some("prod"))], "agt_a", "prod"));
        assert!(!is_paused(&[pause(Some("prod"))], "agt_a", "staging"));
        assert!(!is_paused(&[pause(None)], "agt_b", "prod"));
    }
}
