//! `xeroctl webhooks` (the configured webhooks, never their secrets) and `xeroctl webhooks
//! deliveries` (each security event's delivery to each webhook; `--retry` puts a settled one
//! back to pending).

use serde_json::json;
use xerotier_proto::Page;
use xerotier_proto::webhooks::{RetryDeliveryResponse, WebhookDeliveryView, WebhookList};

use super::Ctx;
use crate::cli::{WebhookDeliveriesArgs, WebhooksArgs, WebhooksCommand};
use crate::client::{Call, path_segment};
use crate::exit;
use crate::output::{self, Column, col, wide};

const DELIVERIES: &str = "/v1/management/webhooks/deliveries";
const DELIVERY_KIND: &str = "delivery";

const WEBHOOK_COLUMNS: [Column; 3] = [col("NAME"), col("EVENTS"), col("URL")];

const DELIVERY_COLUMNS: [Column; 10] = [
    col("ID"),
    col("WEBHOOK"),
    col("EVENT"),
    col("STATUS"),
    col("ATTEMPTS"),
    col("LAST_CODE"),
    col("NEXT_ATTEMPT"),
    wide("EVENT_ID"),
    wide("DELIVERED"),
    wide("LAST_ERROR"),
];

pub async fn run(ctx: &Ctx, args: WebhooksArgs) -> anyhow::Result<()> {
    match args.command {
        None => list(ctx).await,
        Some(WebhooksCommand::Deliveries(args)) => deliveries(ctx, args).await,
    }
}

async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let Some(list) = ctx.client.send::<WebhookList>(Call::get("/v1/management/webhooks")).await?
    else {
        return Ok(());
    };
    ctx.out.list(
        &list,
        "webhook",
        &list.data,
        &WEBHOOK_COLUMNS,
        |w| w.name.clone(),
        |w| vec![w.name.clone(), w.events.join(","), w.url.clone()],
    )
}

async fn deliveries(ctx: &Ctx, args: WebhookDeliveriesArgs) -> anyhow::Result<()> {
    if let Some(id) = args.retry {
        return retry(ctx, &id, args.reason).await;
    }
    let call = Call::get(DELIVERIES)
        .query("limit", args.page.limit)
        .query("after", args.page.after)
        .query("webhook", args.webhook)
        .query("status", args.status);
    let Some(page) = ctx.client.send::<Page<WebhookDeliveryView>>(call).await? else {
        return Ok(());
    };
    ctx.out.list(
        &page,
        DELIVERY_KIND,
        &page.data,
        &DELIVERY_COLUMNS,
        |d| d.id.clone(),
        |d| {
            vec![
                d.id.clone(),
                d.webhook.clone(),
                d.event_type.clone(),
                d.status.to_string(),
                d.attempts.to_string(),
                d.last_status_code.map_or_else(|| "-".to_string(), |c| c.to_string()),
                d.next_attempt_at.clone(),
                d.event_id.clone(),
                output::or_dash(d.delivered_at.as_deref()),
                output::or_dash(d.last_error.as_deref()),
            ]
        },
    )?;
    output::more_hint(page.next_after.as_deref());
    Ok(())
}

/// `--retry ID`: the router checks the id, refuses a pending or unknown delivery, and answers
/// the delivery after the change. A dry run is asked of the router too (it changes and audits
/// nothing there), so it shows the delivery that would be retried and refuses as the retry
/// would be refused.
async fn retry(ctx: &Ctx, id: &str, reason: Option<String>) -> anyhow::Result<()> {
    // The prefix is checked here so the id can never be a `..` step in the URL; the rest of
    // its format is the router's to judge (400 `invalid_request`).
    if !id.starts_with("del_") {
        return Err(exit::usage(format!(
            "{id:?} is not a delivery id (del_…); see `xeroctl webhooks deliveries`"
        )));
    }
    let dry_run = ctx.client.is_dry_run();
    let body = json!({ "reason": reason, "dry_run": dry_run });
    let call = Call::post(format!("{DELIVERIES}/{}/retry", path_segment(id)), body);
    let answer: RetryDeliveryResponse = ctx.client.fetch(call).await?;
    let d = &answer.delivery;
    ctx.out.object(d, DELIVERY_KIND, &d.id, || {
        if answer.dry_run {
            println!(
                "# dry run: nothing changed\nwould retry delivery {} ({} to webhook {}, {} after \
                 {} attempts):",
                d.id, d.event_type, d.webhook, d.status, d.attempts
            );
        } else {
            println!(
                "Delivery {} of {} to webhook {} is pending again; the router attempts it now.",
                d.id, d.event_type, d.webhook
            );
        }
        output::fields(&[
            ("id", d.id.clone()),
            ("webhook", d.webhook.clone()),
            ("event", d.event_type.clone()),
            ("event_id", d.event_id.clone()),
            ("status", d.status.to_string()),
            ("attempts", d.attempts.to_string()),
            ("last_code", d.last_status_code.map_or_else(|| "-".to_string(), |c| c.to_string())),
            ("last_error", output::or_dash(d.last_error.as_deref())),
            ("next_attempt", d.next_attempt_at.clone()),
            ("delivered", output::or_dash(d.delivered_at.as_deref())),
        ]);
        Ok(())
    })
}
