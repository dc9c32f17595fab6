//! `GET /v1/management/webhooks`, `GET /v1/management/webhooks/deliveries` and
//! `POST /v1/management/webhooks/deliveries/{id}/retry`.

use axum::Json;
use axum::extract::{Path, State};
use xerotier_core::format_rfc3339;
use xerotier_proto::ErrorEnvelope;
use xerotier_proto::Page;
use xerotier_proto::status::WebhookDeliveryStatus;
use xerotier_proto::webhooks::{
    RetryDeliveryRequest, RetryDeliveryResponse, WebhookDeliveryQuery, WebhookDeliveryView,
    WebhookList, WebhookView,
};
use xerotier_store::{DeliveryFilter, WebhookDelivery};

use super::WebhookService;
use super::settings::redact_url;
use crate::audit::AuditContext;
use crate::error::ApiError;
use crate::http::extract::{JsonBody, QueryParams};
use crate::http::pagination::{into_page, page_request};

/// List the webhooks of the router's config file (never their secrets).
#[utoipa::path(
    get,
    path = "/v1/management/webhooks",
    tag = "webhooks",
    responses(
        (status = 200, description = "The configured webhooks, URLs with user info and query redacted", body = WebhookList),
    ),
    security(("api_key" = []))
)]
pub async fn list_webhooks(State(webhooks): State<WebhookService>) -> Json<WebhookList> {
    Json(WebhookList {
        data: webhooks
            .webhooks()
            .iter()
            .map(|w| WebhookView {
                name: w.name.clone(),
                url: redact_url(&w.url),
                events: w.events.names(),
            })
            .collect(),
    })
}

/// List webhook deliveries, oldest first, with filters.
#[utoipa::path(
    get,
    path = "/v1/management/webhooks/deliveries",
    tag = "webhooks",
    params(WebhookDeliveryQuery),
    responses(
        (status = 200, description = "One page of deliveries", body = Page<WebhookDeliveryView>),
        (status = 400, description = "Bad filter", body = xerotier_proto::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn list_deliveries(
    State(webhooks): State<WebhookService>,
    QueryParams(query): QueryParams<WebhookDeliveryQuery>,
) -> Result<Json<Page<WebhookDeliveryView>>, ApiError> {
    let page = page_request(query.limit, query.after.clone(), "del_")?;
    if let Some(status) = &query.status
        && WebhookDeliveryStatus::parse(status).is_none()
    {
        return Err(ApiError::invalid("status must be pending, delivered or failed", "status"));
    }
    if query.webhook.as_deref().is_some_and(|n| !super::settings::valid_name(n)) {
        return Err(ApiError::invalid(
            "webhook must be 1-64 characters of a-z, 0-9 and -",
            "webhook",
        ));
    }
    let filter = DeliveryFilter { webhook: query.webhook, status: query.status };
    let slice = webhooks.list_deliveries(&filter, &page).await?;
    Ok(Json(into_page(slice, |d| d.id.clone(), view)))
}

/// Put a delivered or failed delivery back to pending, attempted at once with a fresh attempt
/// count (audited `webhook_delivery.retry`, with the reason). The receiver gets the same
/// `X-Xerotier-Delivery` id again.
#[utoipa::path(
    post,
    path = "/v1/management/webhooks/deliveries/{id}/retry",
    tag = "webhooks",
    params(("id" = String, Path, description = "Delivery id, `del_…`")),
    request_body(content = Option<RetryDeliveryRequest>, description = "Optional: `reason`, `dry_run`"),
    responses(
        (status = 200, description = "Pending again (or, with `dry_run`, the delivery as it is: nothing changed)", body = RetryDeliveryResponse),
        (status = 400, description = "The id is not a delivery id, `del_` and 26 characters (`invalid_request`, `param` `id`); nothing was looked up", body = ErrorEnvelope),
        (status = 404, description = "No such delivery", body = ErrorEnvelope),
        (status = 409, description = "The delivery is still pending: its attempts go on (`delivery_pending`); or its webhook is no longer configured (`webhook_not_configured`)", body = ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
pub async fn retry_delivery(
    State(webhooks): State<WebhookService>,
    context: AuditContext,
    Path(id): Path<String>,
    body: Option<JsonBody<RetryDeliveryRequest>>,
) -> Result<Json<RetryDeliveryResponse>, ApiError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    let delivery =
        webhooks.retry_delivery(&context, &id, request.reason.as_deref(), request.dry_run).await?;
    Ok(Json(RetryDeliveryResponse { delivery: view(delivery), dry_run: request.dry_run }))
}

fn view(d: WebhookDelivery) -> WebhookDeliveryView {
    WebhookDeliveryView {
        status: WebhookDeliveryStatus::parse(&d.status).unwrap_or(WebhookDeliveryStatus::Pending),
        created_at: format_rfc3339(d.created_at),
        next_attempt_at: format_rfc3339(d.next_attempt_at),
        delivered_at: d.delivered_at.map(format_rfc3339),
        id: d.id,
        webhook: d.webhook,
        event_id: d.event_id,
        event_type: d.event_type,
        attempts: d.attempts,
        last_status_code: d.last_status_code,
        last_error: d.last_error,
    }
}
