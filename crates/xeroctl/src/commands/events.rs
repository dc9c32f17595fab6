//! An agent's event log: `xeroctl agents agt_… --events [--follow]`. Following survives a
//! broken stream or a router restart: it reconnects and resumes after the last event it
//! printed (`Last-Event-ID`), so no event is lost or printed twice.

use xerotier_proto::Page;
use xerotier_proto::events::AgentEventView;

use super::Ctx;
use crate::cli::OutputFormat;
use crate::client::Call;
use crate::output::{self, Column, col, wide};
use crate::sse::Resumable;

/// `-o name` prints `event/evt_…`.
const KIND: &str = "event";

const COLUMNS: [Column; 5] = [col("TIME"), col("TYPE"), col("REQUEST"), col("DETAILS"), wide("ID")];

fn cells(event: &AgentEventView) -> Vec<String> {
    vec![
        event.at.clone(),
        event.event_type.clone(),
        output::or_dash(event.request_id.as_deref()),
        event.details.as_ref().map_or_else(|| "-".into(), |d| d.to_string()),
        event.id.clone(),
    ]
}

pub async fn events(
    ctx: &Ctx,
    id: &str,
    follow: bool,
    limit: Option<u32>,
    after: Option<String>,
) -> anyhow::Result<()> {
    let path = format!("/v1/management/agents/{id}/events");
    if follow {
        return follow_events(ctx, &path, after).await;
    }
    let call = Call::get(path).query("limit", limit).query("after", after);
    let Some(page) = ctx.client.send::<Page<AgentEventView>>(call).await? else {
        return Ok(());
    };
    ctx.out.list(&page, KIND, &page.data, &COLUMNS, |e| e.id.clone(), cells)?;
    output::more_hint(page.next_after.as_deref());
    Ok(())
}

/// Prints each event as it comes, until interrupted; reconnects for as long as it takes.
async fn follow_events(ctx: &Ctx, path: &str, after: Option<String>) -> anyhow::Result<()> {
    if ctx.client.is_dry_run() {
        return ctx.client.print_plan(&Call::get(path));
    }
    let mut stream = Resumable::new(&ctx.client, path, after, None);
    stream.open().await?;
    loop {
        let event = stream.next().await?;
        if let Ok(view) = serde_json::from_str::<AgentEventView>(&event.data) {
            print_followed(ctx, &view)?;
        }
    }
}

/// One followed event: a line (text), a line of JSON, a YAML document, or `event/<id>`.
fn print_followed(ctx: &Ctx, event: &AgentEventView) -> anyhow::Result<()> {
    match ctx.out.format {
        OutputFormat::Json => println!("{}", serde_json::to_string(event)?),
        OutputFormat::Yaml => print!("---\n{}", serde_norway::to_string(event)?),
        OutputFormat::Name => println!("{KIND}/{}", event.id),
        OutputFormat::Table | OutputFormat::Wide | OutputFormat::Csv => {
            let cells = cells(event);
            let id = if ctx.out.format == OutputFormat::Wide { cells[4].as_str() } else { "" };
            println!("{}  {:<22} {:<34} {} {id}", cells[0], cells[1], cells[2], cells[3]);
        }
    }
    use std::io::Write as _;
    std::io::stdout().flush()?;
    Ok(())
}
