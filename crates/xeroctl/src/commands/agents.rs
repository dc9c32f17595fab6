use xerotier_proto::Page;
use xerotier_proto::agents::AgentView;
use xerotier_proto::status::OperationKind;

use super::Ctx;
use crate::cli::{AgentsArgs, AgentsCommand};
use crate::client::Call;
use crate::exit;
use crate::output::{self, Column, col, wide};

const BASE: &str = "/v1/management/agents";
/// `-o name` prints `agent/agt_…`.
pub const KIND: &str = "agent";

pub async fn run(ctx: &Ctx, args: AgentsArgs) -> anyhow::Result<()> {
    match args.command {
        Some(AgentsCommand::JoinKeys(join)) => super::join_keys::run(ctx, join).await,
        Some(AgentsCommand::RevokeCredentials {
            id,
            reason,
            enrolled_via,
            minted_by,
            region,
            operation,
        }) => match id {
            Some(id) => revoke(ctx, &id, reason).await,
            None => {
                let selector = serde_json::json!({
                    "enrolled_via": enrolled_via, "minted_by": minted_by, "region": region,
                });
                let kind = OperationKind::RevokeAgents;
                super::operations::start(ctx, kind, selector, reason, &operation).await
            }
        },
        Some(AgentsCommand::CurveRotate {
            id,
            reason,
            wait,
            all,
            region,
            role,
            agents,
            operation,
        }) => match id {
            Some(id) => {
                let reason = reason.unwrap_or_else(|| "scheduled".to_string());
                super::rotation::curve_rotate(ctx, &id, &reason, wait).await
            }
            None => {
                let selector = serde_json::json!({
                    "all": all.then_some(true), "region": region, "role": role, "agents": agents,
                });
                let kind = OperationKind::CurveRotate;
                super::operations::start(ctx, kind, selector, reason, &operation).await
            }
        },
        Some(AgentsCommand::PauseExec { id, workspace, reason }) => {
            super::pauses::pause_exec(ctx, &id, workspace, reason).await
        }
        Some(AgentsCommand::ResumeExec { id, workspace, reason }) => {
            super::pauses::resume_exec(ctx, &id, workspace, reason).await
        }
        Some(AgentsCommand::Pauses { id }) => super::pauses::pauses(ctx, &id).await,
        Some(AgentsCommand::Candidates { id, approve, reject, workspace, reason }) => {
            let decision = match (approve, reject) {
                (true, _) => Some(super::candidates::Decision::Approve),
                (_, true) => Some(super::candidates::Decision::Reject),
                _ => None,
            };
            super::candidates::run(ctx, id, decision, workspace, reason).await
        }
        Some(AgentsCommand::WithdrawGrant { id, workspace, reason }) => {
            super::candidates::withdraw(ctx, &id, &workspace, reason).await
        }
        None => match args.id {
            Some(id) if args.release_quarantine => release_quarantine(ctx, &id, args.reason).await,
            Some(id) if args.events => {
                check_agent_id(&id)?;
                let (limit, after) = (args.page.limit, args.page.after);
                super::events::events(ctx, &id, args.follow, limit, after).await
            }
            Some(id) => show(ctx, &id).await,
            None => list(ctx, args.include_revoked, args.page).await,
        },
    }
}

const COLUMNS: [Column; 12] = [
    col("ID"),
    col("NAME"),
    col("STATUS"),
    col("ROLE"),
    col("REGION"),
    col("LAST_HEARTBEAT"),
    wide("REPLICA"),
    wide("APPROVAL"),
    wide("ENROLLED"),
    wide("JOIN_KEY"),
    wide("CURVE_KEY"),
    wide("TOOLS/WORKSPACES"),
];

async fn list(ctx: &Ctx, include_revoked: bool, page: crate::cli::PageArgs) -> anyhow::Result<()> {
    let call = Call::get(BASE)
        .query("limit", page.limit)
        .query("after", page.after)
        .query("include_revoked", include_revoked.then_some(true));
    let Some(page) = ctx.client.send::<Page<AgentView>>(call).await? else { return Ok(()) };
    ctx.out.list(
        &page,
        KIND,
        &page.data,
        &COLUMNS,
        |a| a.id.clone(),
        |a| {
            vec![
                a.id.clone(),
                a.name.clone(),
                a.status.to_string(),
                a.role.clone(),
                output::or_dash(a.region.as_deref()),
                output::or_dash(a.last_heartbeat_at.as_deref()),
                output::or_dash(a.replica_id.as_deref()),
                a.approval.to_string(),
                a.enrolled_at.clone(),
                a.join_key_id.clone(),
                a.curve_key_fingerprint.clone(),
                format!("{}/{}", a.tool_count, a.workspace_count),
            ]
        },
    )?;
    output::more_hint(page.next_after.as_deref());
    Ok(())
}

pub(crate) fn check_agent_id(id: &str) -> anyhow::Result<()> {
    if !id.starts_with("agt_") {
        return Err(exit::usage(format!(
            "{id:?} is not an agent id (agt_…); see `xeroctl agents`"
        )));
    }
    Ok(())
}

async fn show(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    check_agent_id(id)?;
    let Some(agent) = ctx.client.send::<AgentView>(Call::get(format!("{BASE}/{id}"))).await? else {
        return Ok(());
    };
    ctx.out.object(&agent, KIND, &agent.id, || print_agent(ctx, &agent))
}

fn print_agent(ctx: &Ctx, agent: &AgentView) -> anyhow::Result<()> {
    output::fields(&[
        ("id", agent.id.clone()),
        ("name", agent.name.clone()),
        ("status", agent.status.to_string()),
        ("role", agent.role.clone()),
        ("region", output::or_dash(agent.region.as_deref())),
        ("enrolled", agent.enrolled_at.clone()),
        ("join key", agent.join_key_id.clone()),
        ("last heartbeat", output::or_dash(agent.last_heartbeat_at.as_deref())),
        ("lease interval", format!("{} ms", agent.lease_renewal_interval_ms)),
        ("replica", output::or_dash(agent.replica_id.as_deref())),
        ("curve key fingerprint", agent.curve_key_fingerprint.clone()),
        ("curve public key", agent.curve_public_key.clone()),
        (
            "curve key age",
            agent.curve_key_age_seconds.map_or_else(
                || "-".to_string(),
                |age| {
                    format!(
                        "{} (since {})",
                        super::credentials::human(i64::try_from(age).unwrap_or(i64::MAX)),
                        agent.curve_key_since.as_deref().unwrap_or("-")
                    )
                },
            ),
        ),
        ("last curve rotation", output::or_dash(agent.curve_key_rotated_at.as_deref())),
        (
            "signing key fingerprint",
            output::or_dash(
                Some(&agent.signing_key_fingerprint).filter(|f| !f.is_empty()).map(String::as_str),
            ),
        ),
        ("last signing key rotation", output::or_dash(agent.signing_key_rotated_at.as_deref())),
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
    let workspaces = agent.workspaces.as_deref().unwrap_or_default();
    if !workspaces.is_empty() {
        println!();
        super::candidates::workspace_table(ctx, workspaces)?;
    }
    Ok(())
}

async fn revoke(ctx: &Ctx, id: &str, reason: Option<String>) -> anyhow::Result<()> {
    check_agent_id(id)?;
    ctx.confirm.confirm(
        &format!("revoke the credentials of agent {id}"),
        "Its mesh session is cut at once and its keys are never accepted again: it must \
         re-enroll with a new join key. This cannot be undone.",
    )?;
    let Some(agent) = act(ctx, id, "revoke-credentials", reason).await? else { return Ok(()) };
    println!(
        "Revoked the credentials of agent {} ({}). Its mesh session is cut; it must re-enroll with a new join key.",
        agent.name, agent.id
    );
    Ok(())
}

async fn release_quarantine(ctx: &Ctx, id: &str, reason: Option<String>) -> anyhow::Result<()> {
    let Some(agent) = act(ctx, id, "release-quarantine", reason).await? else { return Ok(()) };
    println!(
        "Released agent {} ({}) from quarantine: it is dispatched to again.",
        agent.name, agent.id
    );
    Ok(())
}

/// `POST /v1/management/agents/{id}/{action}` with a reason; the agent as it is now, unless
/// the answer was already printed (`-o json|yaml|name`, `--dry-run`).
async fn act(
    ctx: &Ctx,
    id: &str,
    action: &str,
    reason: Option<String>,
) -> anyhow::Result<Option<AgentView>> {
    check_agent_id(id)?;
    let call = Call::post(format!("{BASE}/{id}/{action}"), serde_json::json!({ "reason": reason }));
    let Some(agent) = ctx.client.send::<AgentView>(call).await? else { return Ok(None) };
    if !ctx.out.is_text() {
        ctx.out.object(&agent, KIND, &agent.id, || Ok(()))?;
        return Ok(None);
    }
    Ok(Some(agent))
}
