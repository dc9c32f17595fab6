//! Containment: `xeroctl agents pause-exec | resume-exec | pauses` stop and restart dispatch
//! to an agent, or to one workspace on it. The router audits both.

use anyhow::anyhow;
use xerotier_proto::pauses::{PauseExecRequest, PauseList, PauseView};

use super::agents::check_agent_id;
use crate::cli::OutputFormat;
use crate::client::{ApiError, Call, Client};
use crate::output;

const BASE: &str = "/v1/management/agents";

fn scope(workspace: Option<&str>) -> String {
    match workspace {
        Some(w) => format!("workspace {w:?} on agent"),
        None => "agent".to_string(),
    }
}

fn print_pauses(pauses: &[PauseView]) {
    let rows = pauses
        .iter()
        .map(|p| {
            vec![
                p.workspace.clone().unwrap_or_else(|| "(all workspaces)".into()),
                p.paused_at.clone(),
                output::or_dash(p.paused_by.as_deref()),
                output::or_dash(p.reason.as_deref()),
            ]
        })
        .collect();
    output::table(&["WORKSPACE", "PAUSED AT", "BY", "REASON"], rows);
}

pub async fn pause_exec(
    client: &Client,
    format: OutputFormat,
    id: &str,
    workspace: Option<String>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    check_agent_id(id)?;
    let body = PauseExecRequest { workspace, reason };
    let call = Call::post(format!("{BASE}/{id}/pause-exec"), serde_json::to_value(&body)?);
    let Some(pause) = client.send::<PauseView>(call).await? else { return Ok(()) };
    if format == OutputFormat::Json {
        return output::json(&pause);
    }
    let resume = match &pause.workspace {
        Some(w) => format!("xeroctl agents resume-exec {id} --workspace {w}"),
        None => format!("xeroctl agents resume-exec {id}"),
    };
    println!(
        "Paused dispatch to {} {id}. In-flight invocations finish; new ones wait in the queue \
         until `{resume}`.",
        scope(pause.workspace.as_deref())
    );
    print_pauses(std::slice::from_ref(&pause));
    Ok(())
}

pub async fn resume_exec(
    client: &Client,
    format: OutputFormat,
    id: &str,
    workspace: Option<String>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    check_agent_id(id)?;
    let body = PauseExecRequest { workspace: workspace.clone(), reason };
    let call = Call::post(format!("{BASE}/{id}/resume-exec"), serde_json::to_value(&body)?);
    let list = match client.send::<PauseList>(call).await {
        Ok(Some(list)) => list,
        Ok(None) => return Ok(()),
        Err(err) => {
            if err.downcast_ref::<ApiError>().is_some_and(|api| api.code == "not_paused") {
                // The usual slip: an agent-wide resume when only a workspace is paused, or
                // the other way round.
                return Err(anyhow!(
                    "{err}\nhint: `xeroctl agents pauses {id}` shows what is paused; a \
                     workspace's pause is lifted with --workspace, the agent-wide one without."
                ));
            }
            return Err(err);
        }
    };
    if format == OutputFormat::Json {
        return output::json(&list);
    }
    println!("Resumed dispatch to {} {id}.", scope(workspace.as_deref()));
    report_remaining(id, &list);
    Ok(())
}

fn report_remaining(id: &str, list: &PauseList) {
    if list.pauses.is_empty() {
        println!("Nothing is paused on agent {id}.");
    } else {
        println!("Still paused on agent {id}:");
        print_pauses(&list.pauses);
    }
}

pub async fn pauses(client: &Client, format: OutputFormat, id: &str) -> anyhow::Result<()> {
    check_agent_id(id)?;
    let Some(list) = client.send::<PauseList>(Call::get(format!("{BASE}/{id}/pauses"))).await?
    else {
        return Ok(());
    };
    if format == OutputFormat::Json {
        return output::json(&list);
    }
    if list.pauses.is_empty() {
        println!("Nothing is paused on agent {id}.");
    } else {
        print_pauses(&list.pauses);
    }
    Ok(())
}
