//! `xeroctl webhooks` (the configured webhooks, never their secrets) and `xeroctl webhooks
//! deliveries` (each security event's delivery to each webhook).

use xerotier_proto::Page;
use xerotier_proto::webhooks::{WebhookDeliveryView, WebhookList};

use super::Ctx;
use crate::cli::{WebhookDeliveriesArgs, WebhooksArgs, WebhooksCommand};
use crate::client::Call;
use crate::output::{self, Column, col, wide};

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
    let call = Call::get("/v1/management/webhooks/deliveries")
        .query("limit", args.page.limit)
        .query("after", args.page.after)
        .query("webhook", args.webhook)
        .query("status", args.status);
    let Some(page) = ctx.client.send::<Page<WebhookDeliveryView>>(call).await? else {
        return Ok(());
    };
    ctx.out.list(
        &page,
        "delivery",
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
