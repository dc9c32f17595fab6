use xerotier_proto::Page;
use xerotier_proto::agents::AgentView;

use crate::cli::{AgentsArgs, AgentsCommand, OutputFormat};
use crate::client::{Call, Client};
use crate::output;

const BASE: &str = "/v1/management/agents";

pub async fn run(client: &Client, format: OutputFormat, args: AgentsArgs) -> anyhow::Result<()> {
    match args.command {
        Some(AgentsCommand::JoinKeys(join)) => super::join_keys::run(client, format, join).await,
        Some(AgentsCommand::RevokeCredentials { id, reason }) => {
            revoke(client, format, &id, reason).await
        }
        Some(AgentsCommand::CurveRotate { id, reason, wait }) => {
            super::rotation::curve_rotate(client, format, &id, &reason, wait).await
        }
        Some(AgentsCommand::PauseExec { id, workspace, reason }) => {
            super::pauses::pause_exec(client, format, &id, workspace, reason).await
        }
        Some(AgentsCommand::ResumeExec { id, workspace, reason }) => {
            super::pauses::resume_exec(client, format, &id, workspace, reason).await
        }
        Some(AgentsCommand::Pauses { id }) => super::pauses::pauses(client, format, &id).await,
        Some(AgentsCommand::Candidates { id, approve, reject, workspace, reason }) => {
            let decision = match (approve, reject) {
                (true, _) => Some("approve"),
                (_, true) => Some("reject"),
                _ => None,
            };
            super::candidates::run(client, format, id, decision, workspace, reason).await
        }
        Some(AgentsCommand::WithdrawGrant { id, workspace, reason }) => {
            super::candidates::withdraw(client, format, &id, &workspace, reason).await
        }
        None => match args.id {
            Some(id) if args.release_quarantine => {
                release_quarantine(client, format, &id, args.reason).await
            }
            Some(id) if args.events => {
                check_agent_id(&id)?;
                let (limit, after) = (args.page.limit, args.page.after);
                super::rotation::events(client, format, &id, args.follow, limit, after).await
            }
            Some(id) => show(client, format, &id).await,
            None => list(client, format, args.include_revoked, args.page).await,
        },
    }
}

async fn list(
    client: &Client,
    format: OutputFormat,
    include_revoked: bool,
    page: crate::cli::PageArgs,
) -> anyhow::Result<()> {
    let call = Call::get(BASE)
        .query("limit", page.limit)
        .query("after", page.after)
        .query("include_revoked", include_revoked.then_some(true));
    let Some(page) = client.send::<Page<AgentView>>(call).await? else { return Ok(()) };
    if format == OutputFormat::Json {
        return output::json(&page);
    }
    let rows = page
        .data
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                a.name.clone(),
                a.status.to_string(),
                a.role.clone(),
                output::or_dash(a.region.as_deref()),
                output::or_dash(a.last_heartbeat_at.as_deref()),
            ]
        })
        .collect();
    output::table(&["ID", "NAME", "STATUS", "ROLE", "REGION", "LAST_HEARTBEAT"], rows);
    output::more_hint(page.next_after.as_deref());
    Ok(())
}

pub(crate) fn check_agent_id(id: &str) -> anyhow::Result<()> {
    if !id.starts_with("agt_") {
        anyhow::bail!("{id:?} is not an agent id (agt_…); see `xeroctl agents`");
    }
    Ok(())
}

async fn show(client: &Client, format: OutputFormat, id: &str) -> anyhow::Result<()> {
    check_agent_id(id)?;
    let Some(agent) = client.send::<AgentView>(Call::get(format!("{BASE}/{id}"))).await? else {
        return Ok(());
    };
    if format == OutputFormat::Json {
        return output::json(&agent);
    }
    output::fields(&[
        ("id", agent.id),
        ("name", agent.name),
        ("status", agent.status.to_string()),
        ("role", agent.role),
        ("region", output::or_dash(agent.region.as_deref())),
        ("enrolled", agent.enrolled_at),
        ("join key", agent.join_key_id),
        ("last heartbeat", output::or_dash(agent.last_heartbeat_at.as_deref())),
        ("lease interval", format!("{} ms", agent.lease_renewal_interval_ms)),
        ("curve key fingerprint", agent.curve_key_fingerprint),
        ("curve public key", agent.curve_public_key),
        (
            "manifest",
            format!(
                "version {}, {} tools, {} workspaces, sha256 {}",
                agent.manifest_version,
                agent.tool_count,
                agent.workspace_count,
                agent.manifest_hash
            ),
        ),
        ("approval", agent.approval.to_string()),
        ("revoked", output::or_dash(agent.revoked_at.as_deref())),
        ("revoked by", output::or_dash(agent.revoked_by.as_deref())),
        ("revoke reason", output::or_dash(agent.revoked_reason.as_deref())),
    ]);
    let workspaces = agent.workspaces.unwrap_or_default();
    if !workspaces.is_empty() {
        println!();
        super::candidates::workspace_table(&workspaces);
    }
    Ok(())
}

async fn revoke(
    client: &Client,
    format: OutputFormat,
    id: &str,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let Some(agent) = act(client, format, id, "revoke-credentials", reason).await? else {
        return Ok(());
    };
    println!(
        "Revoked the credentials of agent {} ({}). Its mesh session is cut; it must re-enroll with a new join key.",
        agent.name, agent.id
    );
    Ok(())
}

async fn release_quarantine(
    client: &Client,
    format: OutputFormat,
    id: &str,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let Some(agent) = act(client, format, id, "release-quarantine", reason).await? else {
        return Ok(());
    };
    println!(
        "Released agent {} ({}) from quarantine: it is dispatched to again.",
        agent.name, agent.id
    );
    Ok(())
}

/// `POST /v1/management/agents/{id}/{action}` with a reason; the agent as it is now, unless
/// the answer was already printed (`-o json`, `--dry-run`).
async fn act(
    client: &Client,
    format: OutputFormat,
    id: &str,
    action: &str,
    reason: Option<String>,
) -> anyhow::Result<Option<AgentView>> {
    check_agent_id(id)?;
    let call = Call::post(format!("{BASE}/{id}/{action}"), serde_json::json!({ "reason": reason }));
    let Some(agent) = client.send::<AgentView>(call).await? else { return Ok(None) };
    if format == OutputFormat::Json {
        output::json(&agent)?;
        return Ok(None);
    }
    Ok(Some(agent))
}
