//! `xeroctl credentials`: the credential posture report (`GET /v1/management/credentials`),
//! worst first; `--check` turns it into an exit status for cron and CI.

use xerotier_proto::posture::{PostureReport, PostureRow};

use super::Ctx;
use crate::cli::CredentialsArgs;
use crate::client::Call;
use crate::exit::{self, CliError};
use crate::output::{Column, col, or_dash, wide};

/// `-o name` prints `<kind>/<id>`.
const COLUMNS: [Column; 14] = [
    col("KIND"),
    col("ID"),
    col("NAME"),
    col("STATE"),
    col("AGE"),
    col("MAX AGE"),
    col("DUE"),
    col("RULE"),
    wide("OWNER"),
    wide("REGION"),
    wide("LAST ROTATED"),
    wide("LAST USED"),
    wide("EXPIRES"),
    wide("BASIS"),
];

/// Seconds as the largest whole unit (`183d`, `5h`, `42s`), for people.
pub(crate) fn human(seconds: i64) -> String {
    match seconds {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn cells(row: &PostureRow) -> Vec<String> {
    vec![
        row.kind.clone(),
        row.id.clone(),
        row.name.clone(),
        row.state.clone(),
        human(row.age_seconds),
        row.max_age_seconds.map_or_else(|| "-".into(), human),
        or_dash(row.due_at.as_deref()),
        row.rule.clone(),
        or_dash(row.owner.as_deref()),
        or_dash(row.region.as_deref()),
        or_dash(row.last_rotated_at.as_deref()),
        or_dash(row.last_used_at.as_deref()),
        or_dash(row.expires_at.as_deref()),
        row.basis.clone(),
    ]
}

pub async fn run(ctx: &Ctx, args: CredentialsArgs) -> anyhow::Result<()> {
    if let Some(agent) = &args.agent {
        super::agents::check_agent_id(agent)?;
    }
    let call = Call::get("/v1/management/credentials")
        .query("kind", args.kind)
        .query("state", args.state)
        .query("agent_id", args.agent)
        .query("region", args.region)
        .query("profile", args.profile);
    let Some(report) = ctx.client.send::<PostureReport>(call).await? else { return Ok(()) };
    let rows = &report.credentials;
    let name = |r: &PostureRow| format!("{}/{}", r.kind, r.id);
    match ctx.out.format {
        crate::cli::OutputFormat::Name => {
            let names: Vec<String> = rows.iter().map(name).collect();
            ctx.out.names_plain(names.iter().map(String::as_str))?;
        }
        _ => ctx.out.list(&report, "credential", rows, &COLUMNS, |r| r.id.clone(), cells)?,
    }
    if !args.check {
        return Ok(());
    }
    let count = |state: &str| rows.iter().filter(|r| r.state == state).count();
    let (failing, due_soon) = (count("overdue") + count("expired"), count("due_soon"));
    if due_soon > 0 {
        eprintln!("note: {due_soon} credential(s) due soon; rotate them before their due date");
    }
    if failing > 0 {
        eprintln!(
            "check failed: {} overdue, {} expired; rotate them (xeroctl keys rotate, xeroctl \
             agents curve-rotate, the workspace credential file) or revoke them",
            count("overdue"),
            count("expired")
        );
        return Err(CliError::Exit(exit::POSTURE_FAILING).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_their_largest_unit() {
        assert_eq!(human(15_552_000), "180d");
        assert_eq!(human(7_200), "2h");
        assert_eq!(human(59), "59s");
    }

    #[test]
    fn csv_fields_are_quoted_as_rfc_4180_says() {
        use crate::output::csv_field;
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
