//! The execution API, `/v1/exec/*` (scope `execution`).

//! Each handler takes the one service it needs and maps its answer to a view. Containment
//! (`pause-exec`) and the fleet's credential ages are management routes, served here because
//! their services live in this area.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use xerotier_core::format_rfc3339;
use xerotier_proto::invocation::{
    InvocationQuery, InvocationStatus, InvocationView, InvokeRequest, OutputChunk, OutputCursor,
    OutputQuery,
};
use xerotier_proto::pauses::{PauseExecRequest, PauseList, PauseView};
use xerotier_proto::tools::{ToolDetail, ToolList};
use xerotier_proto::{ErrorEnvelope, Page};
use xerotier_store::PauseRecord;

use super::output_stream::OutputEvent;
use super::pauses::PauseService;
use super::service::{ExecService, Invocation, InvocationSearch, Viewer};
use crate::audit::AuditContext;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::extract::{JsonBody, QueryParams};
use crate::http::pagination::{into_page, page_request};
use crate::live_streams::LiveStreams;
use crate::validate;

/// Tools offered by the online agents of the fleet (every replica's).
#[utoipa::path(
    get,
    path = "/v1/exec/tools",
    tag = "exec",
    responses(
        (status = 200, description = "Tools offered by online agents", body = ToolList),
    ),
    security(("api_key" = []))
)]
pub async fn list_tools(State(exec): State<ExecService>) -> Json<ToolList> {
    Json(exec.tools().await)
}

/// One tool: its argument schema and the agents that offer it.
#[utoipa::path(
    get,
    path = "/v1/exec/tools/{name}",
    tag = "exec",
    params(("name" = String, Path, description = "Tool name")),
    responses(
        (status = 200, description = "The tool", body = ToolDetail),
        (status = 404, description = "No online agent offers it", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn get_tool(
    State(exec): State<ExecService>,
    Path(name): Path<String>,
) -> Result<Json<ToolDetail>, ApiError> {
    Ok(Json(exec.tool(&name).await?))
}

/// Invoke a tool in a workspace. Arguments are checked against the tool's schema before
/// anything is queued; the invocation is dispatched to an online, unpaused agent.
#[utoipa::path(
    post,
    path = "/v1/exec/invocations",
    tag = "exec",
    request_body = InvokeRequest,
    responses(
        (status = 202, description = "Queued; audited (`invocation.create`: the key, the request id, the tool and workspace)", body = InvocationView),
        (status = 400, description = "Bad request or arguments (`invalid_arguments`); a refusal is audited too", body = ErrorEnvelope),
        (status = 404, description = "Unknown tool or workspace", body = ErrorEnvelope),
        (status = 503, description = "No online agent serves it (`no_agent_available`, retryable)", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn create_invocation(
    State(exec): State<ExecService>,
    context: AuditContext,
    JsonBody(request): JsonBody<InvokeRequest>,
) -> Result<(StatusCode, Json<InvocationView>), ApiError> {
    let created = exec.create(&context, request).await?;
    Ok((StatusCode::ACCEPTED, Json(invocation(created))))
}

/// Invocations, oldest first, with filters: those the calling key created, or every one for
/// a key with the `management` scope.
#[utoipa::path(
    get,
    path = "/v1/exec/invocations",
    tag = "exec",
    params(InvocationQuery),
    responses(
        (status = 200, description = "One page of the invocations this key may see (its own; all with the management scope)", body = Page<InvocationView>),
        (status = 400, description = "Bad filter", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn list_invocations(
    State(exec): State<ExecService>,
    caller: Principal,
    QueryParams(query): QueryParams<InvocationQuery>,
) -> Result<Json<Page<InvocationView>>, ApiError> {
    let page = page_request(query.limit, query.after, "inv_")?;
    validate::optional(query.agent_id.as_deref(), |a| validate::id("agt_", a, "agent_id"))?;
    validate::optional(query.workspace.as_deref(), |w| validate::catalog_name(w, "workspace"))?;
    validate::optional(query.tool.as_deref(), |t| validate::catalog_name(t, "tool"))?;
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => Some(InvocationStatus::parse(text).ok_or_else(|| {
            ApiError::invalid(
                "status must be queued, running, succeeded, failed, cancelled or timed_out",
                "status",
            )
        })?),
    };
    let search = InvocationSearch {
        status,
        agent_id: query.agent_id,
        workspace: query.workspace,
        tool: query.tool,
    };
    let slice = exec.list(&viewer(&caller), search, &page).await?;
    Ok(Json(into_page(slice, |i| i.record.id.clone(), invocation)))
}

/// One invocation and its output (while it runs, the output so far). A key without the
/// `management` scope sees only the invocations it created.
#[utoipa::path(
    get,
    path = "/v1/exec/invocations/{id}",
    tag = "exec",
    params(("id" = String, Path, description = "Invocation id, `inv_…`")),
    responses(
        (status = 200, description = "The invocation", body = InvocationView),
        (status = 404, description = "No such invocation, or one another key created (without the management scope)", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn get_invocation(
    State(exec): State<ExecService>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<Json<InvocationView>, ApiError> {
    Ok(Json(invocation(exec.get(&viewer(&caller), &id).await?)))
}

/// An invocation's output as a server-sent events stream, from where the reader stands
/// (`Last-Event-ID`, or `after`) until it ends. Events: `status` (first, then at each change;
/// an invocation whose `stdout`/`stderr` are left empty), `output` (an `OutputChunk`), and
/// `end` (how it ended, output fields empty), after which the stream closes. Every event's id
/// is the output cursor after it (`<stdout bytes>:<stderr bytes>`), so a reader that
/// reconnects with `Last-Event-ID` gets each piece of output exactly once. Output streams live
/// from the replica the agent is connected to; on another replica it comes when the
/// invocation ends.
#[utoipa::path(
    get,
    path = "/v1/exec/invocations/{id}/output",
    tag = "exec",
    params(
        ("id" = String, Path, description = "Invocation id, `inv_…`"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^[0-9]{1,19}:[0-9]{1,19}$", description = "Resume after this event id (an output cursor)"),
        OutputQuery,
    ),
    responses(
        (status = 200, description = "Events `status`, `output` (data: OutputChunk) and `end` (data: InvocationView without output)", content_type = "text/event-stream", body = OutputChunk),
        (status = 400, description = "Not an output cursor (`invalid_request`)", body = ErrorEnvelope),
        (status = 404, description = "No such invocation (or another key's, without `management`)", body = ErrorEnvelope),
        (status = 429, description = "The key holds its limit of live streams (`too_many_streams`)", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn invocation_output(
    State(exec): State<ExecService>,
    State(streams): State<LiveStreams>,
    caller: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<OutputQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let resume = crate::http::extract::resume_point(&headers, query.after);
    let from = match resume {
        Some(text) => text.parse::<OutputCursor>().map_err(|m| ApiError::invalid(m, "after"))?,
        None => OutputCursor::default(),
    };
    let viewer = viewer(&caller);
    // The stream holds its lease while it runs, and ends when its key stops authenticating.
    let lease = streams.open(&caller)?;
    let ended = lease.ended();
    let stream =
        exec.follow_output(&viewer, &id, from).await?.take_until(ended).map(move |event| {
            let _held = &lease;
            Ok(output_event(event))
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn output_event(event: OutputEvent) -> Event {
    let (kind, cursor, data) = match event {
        OutputEvent::Status(state, cursor) => ("status", cursor, view_json(invocation(state))),
        OutputEvent::Output(chunk, cursor) => ("output", cursor, chunk_json(&chunk)),
        OutputEvent::End(state, cursor) => ("end", cursor, view_json(invocation(state))),
    };
    Event::default().id(cursor.to_string()).event(kind).data(data)
}

fn view_json(view: InvocationView) -> String {
    serde_json::to_string(&view).unwrap_or_default()
}

fn chunk_json(chunk: &OutputChunk) -> String {
    serde_json::to_string(chunk).unwrap_or_default()
}

/// Cancel an invocation: at once if it has not started, else its agent kills the tool.
/// Audited (`invocation.cancel`), refusals too. A key without the `management` scope cancels
/// only the invocations it created.
#[utoipa::path(
    post,
    path = "/v1/exec/invocations/{id}/cancel",
    tag = "exec",
    params(("id" = String, Path, description = "Invocation id, `inv_…`")),
    responses(
        (status = 200, description = "Cancelled, or cancellation requested", body = InvocationView),
        (status = 404, description = "No such invocation, or one another key created (without the management scope)", body = ErrorEnvelope),
        (status = 409, description = "Already ended (`invocation_finished`)", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn cancel_invocation(
    State(exec): State<ExecService>,
    caller: Principal,
    context: AuditContext,
    Path(id): Path<String>,
) -> Result<Json<InvocationView>, ApiError> {
    Ok(Json(invocation(exec.cancel(&context, &viewer(&caller), &id).await?)))
}

/// Whose invocations the caller sees.
fn viewer(caller: &Principal) -> Viewer {
    Viewer::of(&caller.key_id, &caller.scopes)
}

/// Stop dispatching to an agent (or one workspace on it). Idempotent.
#[utoipa::path(
    post,
    path = "/v1/management/agents/{id}/pause-exec",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id, `agt_…`")),
    request_body(content = Option<PauseExecRequest>, description = "Optional workspace and reason"),
    responses(
        (status = 200, description = "The pause in force", body = PauseView),
        (status = 404, description = "No such agent or workspace", body = ErrorEnvelope),
        (status = 409, description = "The agent is revoked", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn pause_exec(
    State(pauses): State<PauseService>,
    context: AuditContext,
    Path(agent_id): Path<String>,
    body: Option<JsonBody<PauseExecRequest>>,
) -> Result<Json<PauseView>, ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    let workspace = request.workspace.as_deref();
    let pause = pauses.pause(&context, &agent_id, workspace, request.reason.as_deref()).await?;
    Ok(Json(pause_view(pause)))
}

/// Resume dispatch; answers with the pauses still in force on the agent.
#[utoipa::path(
    post,
    path = "/v1/management/agents/{id}/resume-exec",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id, `agt_…`")),
    request_body(content = Option<PauseExecRequest>, description = "Optional workspace"),
    responses(
        (status = 200, description = "Pauses still in force", body = PauseList),
        (status = 404, description = "No such agent", body = ErrorEnvelope),
        (status = 409, description = "Not paused (`not_paused`)", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn resume_exec(
    State(pauses): State<PauseService>,
    context: AuditContext,
    Path(agent_id): Path<String>,
    body: Option<JsonBody<PauseExecRequest>>,
) -> Result<Json<PauseList>, ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    let workspace = request.workspace.as_deref();
    let left = pauses.resume(&context, &agent_id, workspace, request.reason.as_deref()).await?;
    Ok(Json(pause_list(left)))
}

/// The pauses in force on an agent.
#[utoipa::path(
    get,
    path = "/v1/management/agents/{id}/pauses",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id, `agt_…`")),
    responses((status = 200, description = "Pauses in force", body = PauseList)),
    security(("api_key" = []))
)]
pub async fn list_pauses(
    State(pauses): State<PauseService>,
    Path(agent_id): Path<String>,
) -> Result<Json<PauseList>, ApiError> {
    Ok(Json(pause_list(pauses.list(&agent_id).await?)))
}

fn pause_view(record: PauseRecord) -> PauseView {
    PauseView {
        agent_id: record.agent_id,
        workspace: record.workspace,
        paused_at: format_rfc3339(record.paused_at),
        paused_by: record.paused_by,
        reason: record.reason,
    }
}

fn pause_list(records: Vec<PauseRecord>) -> PauseList {
    PauseList { pauses: records.into_iter().map(pause_view).collect() }
}

/// How an invocation appears in the API: while it runs, with the output streamed so far.
pub fn invocation(invocation: Invocation) -> InvocationView {
    let Invocation { record, live } = invocation;
    let status = InvocationStatus::parse(&record.status).unwrap_or(InvocationStatus::Failed);
    let (stdout, stderr, stdout_truncated, stderr_truncated) = match live {
        Some(live) => (
            String::from_utf8_lossy(&live.stdout).into_owned(),
            String::from_utf8_lossy(&live.stderr).into_owned(),
            live.stdout_truncated,
            live.stderr_truncated,
        ),
        None => (record.stdout, record.stderr, record.stdout_truncated, record.stderr_truncated),
    };
    InvocationView {
        status,
        args: serde_json::from_str(&record.args).unwrap_or(serde_json::Value::Null),
        created_at: format_rfc3339(record.created_at),
        dispatched_at: record.dispatched_at.map(format_rfc3339),
        started_at: record.started_at.map(format_rfc3339),
        finished_at: record.finished_at.map(format_rfc3339),
        exit_code: record.exit_code.and_then(|c| i32::try_from(c).ok()),
        credential_generation: record.credential_generation.and_then(|g| u64::try_from(g).ok()),
        cancel_requested: record.cancel_requested_at.is_some(),
        id: record.id,
        tool: record.tool,
        workspace: record.workspace,
        agent_id: record.agent_id,
        created_by: record.created_by,
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        error: record.error,
    }
}
