//! `GET /v1/management/audit`.

use axum::Json;
use axum::extract::State;
use xerotier_core::{format_rfc3339, parse_rfc3339};
use xerotier_proto::audit::{AuditQuery, AuditRecordView};
use xerotier_proto::{Page, formats};
use xerotier_store::{AuditEntry, AuditFilter, Outcome};

use super::AuditLog;
use crate::error::ApiError;
use crate::http::extract::QueryParams;
use crate::http::pagination::{into_page, page_request};
use crate::service_error::ServiceError;

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
        correlation_id: entry.correlation_id,
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

/// Each filter has the format of what it is compared with (see the document).
fn check_filters(query: &AuditQuery) -> Result<(), ServiceError> {
    let checked =
        |value: &Option<String>, param: &str, ok: fn(&str) -> bool, what: &str| match value
            .as_deref()
        {
            Some(text) if !ok(text) => {
                Err(ServiceError::invalid(format!("{param} must be {what}, got {text:?}"), param))
            }
            _ => Ok(()),
        };
    checked(&query.action, "action", formats::is_audit_action, "an action such as api_key.create")?;
    checked(
        &query.actor_key_id,
        "actor_key_id",
        |t| formats::is_id("key_", t) || formats::is_id("jk_", t),
        "an API key id key_… (or a join key id jk_…)",
    )?;
    checked(&query.target_id, "target_id", formats::is_name, "an id")?;
    checked(&query.request_id, "request_id", |t| formats::is_id("req_", t), "a request id req_…")?;
    checked(
        &query.correlation_id,
        "correlation_id",
        formats::is_name,
        "1-128 characters of [A-Za-z0-9._-]",
    )
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
    ),
    security(("api_key" = []))
)]
pub async fn list_audit(
    State(audit): State<AuditLog>,
    QueryParams(query): QueryParams<AuditQuery>,
) -> Result<Json<Page<AuditRecordView>>, ApiError> {
    let page = page_request(query.limit, query.after.clone(), "aud_")?;
    if let Some(outcome) = &query.outcome
        && ![Outcome::Success, Outcome::Denied, Outcome::Failed]
            .iter()
            .any(|known| known.as_str() == outcome)
    {
        return Err(ApiError::invalid("outcome must be success, denied or failed", "outcome"));
    }
    check_filters(&query)?;
    let filter = AuditFilter {
        action: query.action,
        actor_key_id: query.actor_key_id,
        target_id: query.target_id,
        outcome: query.outcome,
        request_id: query.request_id,
        correlation_id: query.correlation_id,
        since: parse_time(query.since.as_deref(), "since")?,
        until: parse_time(query.until.as_deref(), "until")?,
    };
    let slice = audit.list(&filter, &page).await?;
    Ok(Json(into_page(slice, |e| e.id.clone(), view)))
}
