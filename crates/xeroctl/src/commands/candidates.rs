//! `xeroctl agents candidates [agt_… --approve|--reject [--workspace W]]` and
//! `xeroctl agents withdraw-grant agt_… --workspace W`.

use serde_json::json;
use xerotier_proto::agents::{AgentWorkspaceView, CandidateList, DecisionView};

use super::agents::check_agent_id;
use crate::cli::OutputFormat;
use crate::client::{Call, Client};
use crate::output;

pub async fn run(
    client: &Client,
    format: OutputFormat,
    id: Option<String>,
    decision: Option<&str>,
    workspace: Option<String>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    match (id, decision) {
        (None, _) => list(client, format).await,
        (Some(id), None) => {
            anyhow::bail!(
                "say what to decide about {id}: --approve or --reject (see `xeroctl agents candidates`)"
            )
        }
        (Some(id), Some(decision)) => {
            check_agent_id(&id)?;
            let path = format!("/v1/management/agents/{id}/candidates/{decision}");
            decide(client, format, path, workspace, reason).await
        }
    }
}

pub async fn withdraw(
    client: &Client,
    format: OutputFormat,
    id: &str,
    workspace: &str,
    reason: Option<String>,
) -> anyhow::Result<()> {
    check_agent_id(id)?;
    let path = format!("/v1/management/agents/{id}/grants/withdraw");
    decide(client, format, path, Some(workspace.to_string()), reason).await
}

async fn list(client: &Client, format: OutputFormat) -> anyhow::Result<()> {
    let call = Call::get("/v1/management/candidates");
    let Some(list) = client.send::<CandidateList>(call).await? else { return Ok(()) };
    if format == OutputFormat::Json {
        return output::json(&list);
    }
    let rows = list
        .candidates
        .iter()
        .map(|c| {
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
            ]
        })
        .collect();
    output::table(
        &["AGENT", "NAME", "APPROVAL", "WORKSPACE", "DEFINITIONS", "TOOLS", "SINCE"],
        rows,
    );
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
    client: &Client,
    format: OutputFormat,
    path: String,
    workspace: Option<String>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let call = Call::post(path, json!({ "workspace": workspace, "reason": reason }));
    let Some(decided) = client.send::<DecisionView>(call).await? else { return Ok(()) };
    if format == OutputFormat::Json {
        return output::json(&decided);
    }
    if let Some(approval) = decided.approval {
        println!("agent {}: {approval}", decided.agent_id);
    }
    workspace_table(&decided.workspaces);
    Ok(())
}

/// An agent's workspaces and what was decided about each.
pub fn workspace_table(workspaces: &[AgentWorkspaceView]) {
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
    output::table(&["WORKSPACE", "STATE", "DEFINITIONS", "SOURCE", "DECIDED_BY", "SINCE"], rows);
}

/// The first 12 hex digits: enough to tell definitions apart at a glance (`-o json` has all).
pub fn short(hash: &str) -> String {
    hash.chars().take(12).collect()
}
