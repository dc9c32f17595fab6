//! `xeroctl agents candidates [agt_… --approve|--reject [--workspace W]]` and
//! `xeroctl agents withdraw-grant agt_… --workspace W`.

use serde_json::json;
use xerotier_proto::agents::{AgentWorkspaceView, CandidateList, DecisionView};

use super::Ctx;
use super::agents::check_agent_id;
use crate::client::Call;
use crate::exit;
use crate::output::{self, Column, col, wide};

/// `-o name` prints `candidate/agt_…/<workspace>`.
const KIND: &str = "candidate";

/// What an operator decides about an agent's candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    fn path(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }
}

pub async fn run(
    ctx: &Ctx,
    id: Option<String>,
    decision: Option<Decision>,
    workspace: Option<String>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    match (id, decision) {
        (None, _) => list(ctx).await,
        (Some(id), None) => Err(exit::usage(format!(
            "say what to decide about {id}: --approve or --reject (see `xeroctl agents candidates`)"
        ))),
        (Some(id), Some(decision)) => {
            check_agent_id(&id)?;
            if decision == Decision::Reject {
                let what = match &workspace {
                    Some(w) => format!("reject workspace {w:?} of agent {id}"),
                    None => format!("reject the candidates of agent {id}"),
                };
                ctx.confirm.confirm(
                    &what,
                    "Nothing is dispatched there until an operator approves it again.",
                )?;
            }
            let path = format!("/v1/management/agents/{id}/candidates/{}", decision.path());
            decide(ctx, path, workspace, reason).await
        }
    }
}

pub async fn withdraw(
    ctx: &Ctx,
    id: &str,
    workspace: &str,
    reason: Option<String>,
) -> anyhow::Result<()> {
    check_agent_id(id)?;
    ctx.confirm.confirm(
        &format!("withdraw the grant of workspace {workspace:?} from agent {id}"),
        "The agent gets no new work there until an operator grants it again.",
    )?;
    let path = format!("/v1/management/agents/{id}/grants/withdraw");
    decide(ctx, path, Some(workspace.to_string()), reason).await
}

const COLUMNS: [Column; 8] = [
    col("AGENT"),
    col("NAME"),
    col("APPROVAL"),
    col("WORKSPACE"),
    col("DEFINITIONS"),
    col("TOOLS"),
    col("SINCE"),
    wide("DEFINITIONS_SHA256"),
];

async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let call = Call::get("/v1/management/candidates");
    let Some(list) = ctx.client.send::<CandidateList>(call).await? else { return Ok(()) };
    let id = |c: &xerotier_proto::agents::CandidateView| format!("{}/{}", c.agent_id, c.workspace);
    ctx.out.list(&list, KIND, &list.candidates, &COLUMNS, id, |c| {
        let tools: Vec<String> = c
            .tools
            .as_array()
            .map(|tools| {
                tools.iter().filter_map(|t| t["name"].as_str().map(str::to_string)).collect()
            })
            .unwrap_or_default();
        vec![
            c.agent_id.clone(),
            c.agent_name.clone(),
            c.agent_approval.to_string(),
            c.workspace.clone(),
            short(&c.definitions_hash),
            tools.join(","),
            c.since.clone(),
            c.definitions_hash.clone(),
        ]
    })?;
    if !ctx.out.is_text() {
        return Ok(());
    }
    if list.candidates.is_empty() {
        eprintln!("No candidates: every declared workspace has been decided.");
    } else {
        eprintln!(
            "Inspect with `xeroctl -o json agents candidates`; decide with \
             `xeroctl agents candidates agt_… --approve|--reject [--workspace W]`."
        );
    }
    Ok(())
}

async fn decide(
    ctx: &Ctx,
    path: String,
    workspace: Option<String>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let call = Call::post(path, json!({ "workspace": workspace, "reason": reason }));
    let Some(decided) = ctx.client.send::<DecisionView>(call).await? else { return Ok(()) };
    ctx.out.object(&decided, super::agents::KIND, &decided.agent_id, || {
        if let Some(approval) = &decided.approval {
            println!("agent {}: {approval}", decided.agent_id);
        }
        workspace_table(ctx, &decided.workspaces)
    })
}

/// An agent's workspaces and what was decided about each.
pub fn workspace_table(ctx: &Ctx, workspaces: &[AgentWorkspaceView]) -> anyhow::Result<()> {
    let rows = workspaces
        .iter()
        .map(|w| {
            vec![
                w.workspace.clone(),
                w.state.to_string(),
                short(&w.definitions_hash),
                w.source.clone(),
                output::or_dash(w.decided_by.as_deref()),
                w.since.clone(),
            ]
        })
        .collect();
    let columns = [
        col("WORKSPACE"),
        col("STATE"),
        col("DEFINITIONS"),
        col("SOURCE"),
        col("DECIDED_BY"),
        col("SINCE"),
    ];
    ctx.out.table(&columns, rows)
}

/// The first 12 hex digits: enough to tell definitions apart at a glance (`-o json` has all).
pub fn short(hash: &str) -> String {
    hash.chars().take(12).collect()
}
