//! Each agent's event log: appended by the fleet, read as JSON pages or followed live (SSE).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::sync::Notify;
use xerotier_core::{IdGenerator, IdKind, SharedClock, format_rfc3339};
use xerotier_proto::events::{AgentEventView, EventQuery};
use xerotier_proto::{ErrorEnvelope, Page};
use xerotier_store::{AgentEvent, PageRequest, Store};

use crate::AppState;
use crate::error::ApiError;
use crate::http::extract::QueryParams;
use crate::http::pagination::{into_page, page_request};

/// How often a live stream looks at the store when nothing was appended here (events written
/// by another replica).
const STREAM_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct EventLog {
    store: Store,
    clock: SharedClock,
    ids: IdGenerator,
    appended: Arc<Notify>,
}

impl EventLog {
    pub fn new(store: Store, clock: SharedClock, ids: IdGenerator) -> Self {
        Self { store, clock, ids, appended: Arc::new(Notify::new()) }
    }

    /// An event to be written (with [`Self::append`] or inside a store transaction, followed by
    /// [`Self::written`]).
    pub fn event(
        &self,
        agent_id: &str,
        event_type: &str,
        request_id: Option<&str>,
        details: serde_json::Value,
    ) -> AgentEvent {
        AgentEvent {
            id: self.ids.next(IdKind::Event),
            agent_id: agent_id.to_string(),
            at: self.clock.now_millis(),
            event_type: event_type.to_string(),
            request_id: request_id.map(str::to_string),
            details: (!details.is_null()).then(|| details.to_string()),
        }
    }

    /// Wakes live streams after events were committed.
    pub fn written(&self) {
        self.appended.notify_waiters();
    }

    /// Best effort: the event log is a record for operators; a failure to write one is logged,
    /// never fails the operation it describes.
    pub async fn append(
        &self,
        agent_id: &str,
        event_type: &str,
        request_id: Option<&str>,
        details: serde_json::Value,
    ) {
        let event = self.event(agent_id, event_type, request_id, details);
        match self.store.append_event(&event).await {
            Ok(()) => self.written(),
            Err(err) => {
                tracing::warn!(%agent_id, %event_type, error = %err, "could not record agent event")
            }
        }
    }
}

pub fn view(event: AgentEvent) -> AgentEventView {
    AgentEventView {
        at: format_rfc3339(event.at),
        details: event.details.as_deref().and_then(|d| serde_json::from_str(d).ok()),
        id: event.id,
        agent_id: event.agent_id,
        event_type: event.event_type,
        request_id: event.request_id,
    }
}

/// The agent's events: a JSON page, or with `Accept: text/event-stream` a live SSE stream that
/// resumes after `Last-Event-ID` (or `after`).
#[utoipa::path(
    get,
    path = "/v1/management/agents/{id}/events",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id, `agt_…`"), EventQuery),
    responses(
        (status = 200, description = "A page of events (JSON) or a live stream (text/event-stream)", body = Page<AgentEventView>),
        (status = 404, description = "No such agent", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn agent_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<EventQuery>,
) -> Result<Response, ApiError> {
    if state.store().agent(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("agent {id}")));
    }
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_stream {
        let page = page_request(query.limit, query.after)?;
        let slice = state.store().list_events(&id, &page).await?;
        return Ok(Json(into_page(slice, |e| e.id.clone(), view)).into_response());
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(query.after);
    let log = state.events().clone();
    Ok(Sse::new(follow(log, id, resume)).keep_alive(KeepAlive::default()).into_response())
}

fn follow(
    log: EventLog,
    agent_id: String,
    after: Option<String>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        (log, agent_id, after, Vec::<AgentEvent>::new()),
        |(log, agent_id, mut after, mut buffer)| async move {
            loop {
                if let Some(event) = buffer.pop() {
                    after = Some(event.id.clone());
                    let id = event.id.clone();
                    let kind = event.event_type.clone();
                    let data = serde_json::to_string(&view(event)).unwrap_or_default();
                    let sse = Event::default().id(id).event(kind).data(data);
                    return Some((Ok(sse), (log, agent_id, after, buffer)));
                }
                // Register for wake-ups before reading, so an append between the read and the wait
                // is not missed.
                let appended = log.appended.clone();
                let notified = appended.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let page = PageRequest { limit: 100, after: after.clone() };
                match log.store.list_events(&agent_id, &page).await {
                    Ok(slice) if !slice.items.is_empty() => {
                        buffer = slice.items;
                        buffer.reverse();
                        continue;
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(%agent_id, error = %err, "event stream read failed; retrying")
                    }
                }
                let _ = tokio::time::timeout(STREAM_POLL, notified).await;
            }
        },
    )
}
