//! Containment: `xeroctl agents pause-exec | resume-exec | pauses` stop and restart dispatch
//! to an agent, or to one workspace on it. The router audits both.

use xerotier_proto::pauses::{PauseExecRequest, PauseList, PauseView};

use super::Ctx;
use super::agents::check_agent_id;
use crate::client::{ApiError, Call};
use crate::exit;
use crate::output::{self, Column, col};

const BASE: &str = "/v1/management/agents";
/// `-o name` prints `pause/agt_…` (agent-wide) or `pause/agt_…/<workspace>`.
const KIND: &str = "pause";

const COLUMNS: [Column; 4] = [col("WORKSPACE"), col("PAUSED AT"), col("BY"), col("REASON")];

fn scope(workspace: Option<&str>) -> String {
    match workspace {
        Some(w) => format!("workspace {w:?} on agent"),
        None => "agent".to_string(),
    }
}

fn pause_name(pause: &PauseView) -> String {
    match &pause.workspace {
        Some(w) => format!("{}/{w}", pause.agent_id),
        None => pause.agent_id.clone(),
    }
}

fn print_pauses(
    ctx: &Ctx,
    whole: &impl serde::Serialize,
    pauses: &[PauseView],
) -> anyhow::Result<()> {
    ctx.out.list(whole, KIND, pauses, &COLUMNS, pause_name, |p| {
        vec![
            p.workspace.clone().unwrap_or_else(|| "(all workspaces)".into()),
            p.paused_at.clone(),
            output::or_dash(p.paused_by.as_deref()),
            output::or_dash(p.reason.as_deref()),
        ]
    })
}

pub async fn pause_exec(
    ctx: &Ctx,
    id: &str,
    workspace: Option<String>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    check_agent_id(id)?;
    let body = PauseExecRequest { workspace, reason };
    let call = Call::post(format!("{BASE}/{id}/pause-exec"), serde_json::to_value(&body)?);
    let Some(pause) = ctx.client.send::<PauseView>(call).await? else { return Ok(()) };
    ctx.out.object(&pause, KIND, &pause_name(&pause), || {
        let resume = match &pause.workspace {
            Some(w) => format!("xeroctl agents resume-exec {id} --workspace {w}"),
            None => format!("xeroctl agents resume-exec {id}"),
        };
        println!(
            "Paused dispatch to {} {id}. In-flight invocations finish; new ones wait in the \
             queue until `{resume}`.",
            scope(pause.workspace.as_deref())
        );
        print_pauses(ctx, &pause, std::slice::from_ref(&pause))
    })
}

pub async fn resume_exec(
    ctx: &Ctx,
    id: &str,
    workspace: Option<String>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    check_agent_id(id)?;
    let body = PauseExecRequest { workspace: workspace.clone(), reason };
    let call = Call::post(format!("{BASE}/{id}/resume-exec"), serde_json::to_value(&body)?);
    let list = match ctx.client.send::<PauseList>(call).await {
        Ok(Some(list)) => list,
        Ok(None) => return Ok(()),
        Err(err) => {
            if let Some(api) = err.downcast_ref::<ApiError>()
                && api.code == "not_paused"
            {
                // The usual slip: an agent-wide resume when only a workspace is paused, or
                // the other way round.
                return Err(exit::hinted(
                    api,
                    format!(
                        "`xeroctl agents pauses {id}` shows what is paused; a workspace's pause \
                         is lifted with --workspace, the agent-wide one without."
                    ),
                ));
            }
            return Err(err);
        }
    };
    if !ctx.out.is_text() {
        return print_pauses(ctx, &list, &list.pauses);
    }
    println!("Resumed dispatch to {} {id}.", scope(workspace.as_deref()));
    report_remaining(ctx, id, &list)
}

fn report_remaining(ctx: &Ctx, id: &str, list: &PauseList) -> anyhow::Result<()> {
    if list.pauses.is_empty() {
        println!("Nothing is paused on agent {id}.");
        return Ok(());
    }
    println!("Still paused on agent {id}:");
    print_pauses(ctx, list, &list.pauses)
}

pub async fn pauses(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    check_agent_id(id)?;
    let call = Call::get(format!("{BASE}/{id}/pauses"));
    let Some(list) = ctx.client.send::<PauseList>(call).await? else { return Ok(()) };
    if ctx.out.is_text() && list.pauses.is_empty() {
        println!("Nothing is paused on agent {id}.");
        return Ok(());
    }
    print_pauses(ctx, &list, &list.pauses)
}
