use std::time::{Duration, SystemTime};

use xerotier_proto::Page;
use xerotier_proto::audit::AuditRecordView;

use super::parse_duration_secs;
use crate::cli::{AuditArgs, OutputFormat};
use crate::client::{Call, Client};
use crate::output;

/// An RFC 3339 time (also without its `Z`, or with a space for the `T`) is sent in the strict
/// form the router takes; a duration such as `1h` means that long ago.
#[expect(
    clippy::disallowed_methods,
    reason = "turns the operator's `--since 1h` into a timestamp; the router decides"
)]
fn time_bound(text: Option<String>, flag: &str) -> anyhow::Result<Option<String>> {
    let Some(text) = text else { return Ok(None) };
    if let Ok(at) = humantime::parse_rfc3339_weak(&text) {
        return Ok(Some(humantime::format_rfc3339_nanos(at).to_string()));
    }
    let ago = parse_duration_secs(&text, flag)?;
    let at = SystemTime::now() - Duration::from_secs(ago);
    Ok(Some(humantime::format_rfc3339_millis(at).to_string()))
}

pub async fn run(client: &Client, format: OutputFormat, args: AuditArgs) -> anyhow::Result<()> {
    let call = Call::get("/v1/management/audit")
        .query("limit", args.page.limit)
        .query("after", args.page.after)
        .query("action", args.action)
        .query("actor_key_id", args.actor)
        .query("target_id", args.target)
        .query("outcome", args.outcome)
        .query("request_id", args.request_id)
        .query("correlation_id", args.correlation_id)
        .query("since", time_bound(args.since, "--since")?)
        .query("until", time_bound(args.until, "--until")?);
    let Some(page) = client.send::<Page<AuditRecordView>>(call).await? else { return Ok(()) };
    if format == OutputFormat::Json {
        return output::json(&page);
    }
    let rows = page
        .data
        .iter()
        .map(|r| {
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
            ]
        })
        .collect();
    output::table(
        &["TIME", "ACTION", "OUTCOME", "ACTOR", "TARGET", "REASON", "REQUEST", "CORRELATION"],
        rows,
    );
    output::more_hint(page.next_after.as_deref());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_sent_in_the_strict_rfc3339_form_the_router_takes() {
        for (given, sent) in [
            ("2026-01-01 10:00:00", "2026-01-01T10:00:00.000000000Z"),
            ("2026-01-01T10:00:00", "2026-01-01T10:00:00.000000000Z"),
            ("2026-01-01T10:00:00.5Z", "2026-01-01T10:00:00.500000000Z"),
        ] {
            let bound = time_bound(Some(given.into()), "--since").unwrap().unwrap();
            assert_eq!(bound, sent);
            assert!(humantime::parse_rfc3339(&bound).is_ok(), "{bound}");
        }
        assert!(time_bound(Some("yesterday".into()), "--since").is_err());
    }
}
