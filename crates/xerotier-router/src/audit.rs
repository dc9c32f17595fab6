//! Building audit records and serving the audit log.

use axum::Json;
use axum::extract::State;
use xerotier_core::{IdGenerator, IdKind, SharedClock, format_rfc3339, parse_rfc3339};
use xerotier_proto::Page;
use xerotier_proto::audit::{AuditQuery, AuditRecordView};
use xerotier_store::{AuditEntry, AuditFilter, Outcome, Store};

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::extract::{QueryParams, RequestContext};
use crate::http::pagination::page_request;

/// What an audited action acted on.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub kind: &'static str,
    /// Absent when the action failed before the target existed.
    pub id: Option<&'a str>,
    pub name: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Store,
    clock: SharedClock,
    ids: IdGenerator,
}

impl AuditLog {
    pub fn new(store: Store, clock: SharedClock, ids: IdGenerator) -> Self {
        Self { store, clock, ids }
    }

    /// A record to be committed together with the change it describes. One argument per audit
    /// field the caller decides; a builder would only rename them.
    #[expect(clippy::too_many_arguments)]
    pub fn entry(
        &self,
        actor: Option<&Principal>,
        context: &RequestContext,
        action: &str,
        target: Option<Target<'_>>,
        outcome: Outcome,
        reason: Option<&str>,
        details: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry {
            id: self.ids.next(IdKind::Audit),
            at: self.clock.now_millis(),
            actor_key_id: actor.map(|p| p.key_id.clone()),
            actor_name: actor.map(|p| p.name.clone()),
            action: action.to_string(),
            target_type: target.as_ref().map(|t| t.kind.to_string()),
            target_id: target.as_ref().and_then(|t| t.id.map(str::to_string)),
            target_name: target.as_ref().and_then(|t| t.name.map(str::to_string)),
            reason: reason.map(str::to_string),
            request_id: context.request_id.clone(),
            outcome: outcome.as_str().to_string(),
            client_addr: context.client_addr.clone(),
            details: (!details.is_null()).then(|| details.to_string()),
        }
    }

    /// Records a mutation the store refused (nothing changed), with the error code it answers.
    pub async fn record_failure(
        &self,
        actor: &Principal,
        context: &RequestContext,
        action: &str,
        target: Target<'_>,
        err: &xerotier_store::StoreError,
    ) {
        let details = serde_json::json!({ "error": ApiError::from_store_ref(err) });
        self.record_attempt(actor, context, action, Some(target), Outcome::Failed, details).await;
    }

    /// Records an attempt that changed nothing (denied, or failed). Best effort: the caller's
    /// answer does not depend on it, but a failure to record is logged.
    pub async fn record_attempt(
        &self,
        actor: &Principal,
        context: &RequestContext,
        action: &str,
        target: Option<Target<'_>>,
        outcome: Outcome,
        details: serde_json::Value,
    ) {
        let entry = self.entry(Some(actor), context, action, target, outcome, None, details);
        if let Err(err) = self.store.record_audit(&entry).await {
            tracing::warn!(%action, error = %err, "could not record audit attempt");
        }
    }
}

pub fn view(entry: AuditEntry) -> AuditRecordView {
    AuditRecordView {
        at: format_rfc3339(entry.at),
        details: entry.details.as_deref().and_then(|d| serde_json::from_str(d).ok()),
        id: entry.id,
        actor_key_id: entry.actor_key_id,
        actor_name: entry.actor_name,
        action: entry.action,
        target_type: entry.target_type,
        target_id: entry.target_id,
        target_name: entry.target_name,
        reason: entry.reason,
        request_id: entry.request_id,
        outcome: entry.outcome,
        client_addr: entry.client_addr,
    }
}

fn parse_time(text: Option<&str>, param: &str) -> Result<Option<i64>, ApiError> {
    text.map(|t| {
        parse_rfc3339(t).ok_or_else(|| {
            ApiError::invalid(format!("{param} must be an RFC 3339 timestamp, got {t:?}"), param)
        })
    })
    .transpose()
}

/// List audit records, oldest first, with filters.
#[utoipa::path(
    get,
    path = "/v1/management/audit",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "One page of audit records", body = Page<AuditRecordView>),
        (status = 400, description = "Bad filter", body = xerotier_proto::ErrorEnvelope),
        (status = 401, description = "Missing or invalid API key", body = xerotier_proto::ErrorEnvelope),
        (status = 403, description = "Key lacks the management scope", body = xerotier_proto::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn list_audit(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<AuditQuery>,
) -> Result<Json<Page<AuditRecordView>>, ApiError> {
    let page = page_request(query.limit, query.after.clone())?;
    if let Some(outcome) = &query.outcome
        && !["success", "denied", "failed"].contains(&outcome.as_str())
    {
        return Err(ApiError::invalid("outcome must be success, denied or failed", "outcome"));
    }
    let filter = AuditFilter {
        action: query.action,
        actor_key_id: query.actor_key_id,
        target_id: query.target_id,
        outcome: query.outcome,
        request_id: query.request_id,
        since: parse_time(query.since.as_deref(), "since")?,
        until: parse_time(query.until.as_deref(), "until")?,
    };
    let slice = state.store().list_audit(&filter, &page).await?;
    Ok(Json(crate::http::pagination::into_page(slice, |e| e.id.clone(), view)))
}
