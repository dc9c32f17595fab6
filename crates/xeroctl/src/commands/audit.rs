use xerotier_proto::Page;
use xerotier_proto::audit::AuditRecordView;

use super::Ctx;
use crate::cli::AuditArgs;
use crate::client::Call;
use crate::output::{self, Column, col, wide};
use crate::times::time_bound;

/// `-o name` prints `audit/aud_…`.
const KIND: &str = "audit";

const COLUMNS: [Column; 10] = [
    col("TIME"),
    col("ACTION"),
    col("OUTCOME"),
    col("ACTOR"),
    col("TARGET"),
    col("REASON"),
    col("REQUEST"),
    col("CORRELATION"),
    wide("ID"),
    wide("PEER"),
];

pub async fn run(ctx: &Ctx, args: AuditArgs) -> anyhow::Result<()> {
    let call = Call::get("/v1/management/audit")
        .query("limit", args.page.limit)
        .query("after", args.page.after)
        .query("action", args.action)
        .query("actor_key_id", args.actor)
        .query("target_id", args.target)
        .query("outcome", args.outcome)
        .query("request_id", args.request_id)
        .query("correlation_id", args.correlation_id)
        .query("since", time_bound(args.since.as_deref(), "--since")?)
        .query("until", time_bound(args.until.as_deref(), "--until")?);
    let Some(page) = ctx.client.send::<Page<AuditRecordView>>(call).await? else {
        return Ok(());
    };
    ctx.out.list(
        &page,
        KIND,
        &page.data,
        &COLUMNS,
        |r| r.id.clone(),
        |r| {
            let actor = match (&r.actor_name, &r.actor_key_id) {
                (Some(name), Some(id)) => format!("{name} ({id})"),
                _ => "router".to_string(),
            };
            let target = match (&r.target_name, &r.target_id) {
                (Some(name), Some(id)) => format!("{name} ({id})"),
                (None, Some(id)) => id.clone(),
                _ => "-".to_string(),
            };
            vec![
                r.at.clone(),
                r.action.clone(),
                r.outcome.clone(),
                actor,
                target,
                output::or_dash(r.reason.as_deref()),
                output::or_dash(r.request_id.as_deref()),
                output::or_dash(r.correlation_id.as_deref()),
                r.id.clone(),
                output::or_dash(r.client_addr.as_deref()),
            ]
        },
    )?;
    output::more_hint(page.next_after.as_deref());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_sent_in_the_strict_rfc3339_form_the_router_takes() {
        for (given, sent) in [
            ("2026-01-01T10:00:00Z", "2026-01-01T10:00:00.000Z"),
            ("2026-01-01T11:00:00+01:00", "2026-01-01T10:00:00.000Z"),
            ("2026-01-01T10:00:00.5z", "2026-01-01T10:00:00.500Z"),
        ] {
            let bound = time_bound(Some(given), "--since").unwrap().unwrap();
            assert_eq!(bound, sent);
            assert!(xerotier_core::parse_rfc3339(&bound).is_some(), "{bound}");
        }
        // A time without an offset is a guess at a zone: refused, never sent as UTC.
        assert!(time_bound(Some("2026-01-01 10:00:00"), "--since").is_err());
        assert!(time_bound(Some("2026-01-01T10:00:00"), "--since").is_err());
        assert!(time_bound(Some("yesterday"), "--since").is_err());
    }
}
