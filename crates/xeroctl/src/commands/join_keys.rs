use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;
use serde_json::json;
use xerotier_proto::Page;
use xerotier_proto::audit::AuditRecordView;
use xerotier_proto::join_keys::{IssuedJoinKey, JoinKeyView};
use xerotier_proto::status::JoinKeyState;

use crate::cli::{JoinKeysArgs, OutputFormat};
use crate::client::{Call, Client};
use crate::output;

const BASE: &str = "/v1/management/join-keys";
/// Refused attempts shown with a join key (the oldest first; the rest via `xeroctl audit`).
const ATTEMPTS_SHOWN: u32 = 100;

pub async fn run(client: &Client, format: OutputFormat, args: JoinKeysArgs) -> anyhow::Result<()> {
    let create_options = [
        ("--name", args.name.is_some()),
        ("--region", args.region.is_some()),
        ("--router-addr", args.router_addr.is_some()),
        ("--ttl-seconds", args.ttl_seconds.is_some()),
        ("--agent-role", args.agent_role.is_some()),
        ("--workspaces", args.workspaces.is_some()),
        ("--require-approval", args.require_approval),
    ];
    if !args.create
        && let Some((flag, _)) = create_options.iter().find(|(_, given)| *given)
    {
        bail!("{flag} only goes with --create");
    }
    if !args.revoke && (args.force || args.reason.is_some()) {
        bail!("--force and --reason only go with --revoke");
    }
    if args.create {
        if let Some(id) = &args.id {
            bail!("--create makes a new key; drop the id {id:?}");
        }
        return create(client, format, args).await;
    }
    if args.revoke {
        let Some(id) = args.id.clone() else {
            bail!("--revoke needs the join key id: xeroctl agents join-keys jk_… --revoke --force")
        };
        return revoke(client, format, &id, args.force, args.reason).await;
    }
    match args.id {
        Some(id) => show(client, format, &id).await,
        None => list(client, format, args.include_terminal, args.page).await,
    }
}

fn check_id(id: &str) -> anyhow::Result<()> {
    if !id.starts_with("jk_") {
        bail!("{id:?} is not a join key id (jk_…); see `xeroctl agents join-keys`");
    }
    Ok(())
}

async fn create(client: &Client, format: OutputFormat, args: JoinKeysArgs) -> anyhow::Result<()> {
    let Some(name) = args.name else { bail!("--create needs --name") };
    let body = json!({
        "name": name,
        "region": args.region,
        "router_addr": args.router_addr,
        "ttl_seconds": args.ttl_seconds,
        "agent_role": args.agent_role,
        "workspaces": args.workspaces,
        "require_approval": args.require_approval,
    });
    let Some(issued) = client.send::<IssuedJoinKey>(Call::post(BASE, body)).await? else {
        return Ok(());
    };
    eprintln!(
        "WARNING: the token is shown only now. Hand it to one XEM host; it works once, until it expires."
    );
    if format == OutputFormat::Json {
        return output::json(&issued);
    }
    let key = issued.join_key;
    output::fields(&[
        ("join_key_id", key.id),
        ("name", key.name),
        ("region", output::or_dash(key.region.as_deref())),
        ("role", key.role),
        ("router_addr", key.router_addr),
        ("workspaces", grant(key.workspaces.as_deref())),
        ("require_approval", key.require_approval.to_string()),
        ("expires_at", key.expires_at),
        ("token", issued.token),
    ]);
    Ok(())
}

async fn list(
    client: &Client,
    format: OutputFormat,
    include_terminal: bool,
    page: crate::cli::PageArgs,
) -> anyhow::Result<()> {
    let call = Call::get(BASE)
        .query("limit", page.limit)
        .query("after", page.after)
        .query("include_terminal", include_terminal.then_some(true));
    let Some(page) = client.send::<Page<JoinKeyView>>(call).await? else { return Ok(()) };
    if format == OutputFormat::Json {
        return output::json(&page);
    }
    let rows = page.data.iter().map(|k| {
        let (when, by) = match k.state {
            JoinKeyState::Used => (k.used_at.clone(), k.used_by_agent.clone()),
            JoinKeyState::Revoked => (k.revoked_at.clone(), k.revoked_by.clone()),
            JoinKeyState::Expired => (Some(k.expires_at.clone()), None),
            JoinKeyState::Active => (None, None),
        };
        vec![
            k.id.clone(),
            k.name.clone(),
            k.state.to_string(),
            k.role.clone(),
            output::or_dash(k.region.as_deref()),
            k.expires_at.clone(),
            output::or_dash(when.as_deref()),
            output::or_dash(by.as_deref()),
        ]
    });
    output::table(
        &["ID", "NAME", "STATE", "ROLE", "REGION", "EXPIRES", "ENDED", "BY"],
        rows.collect(),
    );
    output::more_hint(page.next_after.as_deref());
    Ok(())
}

async fn show(client: &Client, format: OutputFormat, id: &str) -> anyhow::Result<()> {
    check_id(id)?;
    let Some(key) = client.send::<JoinKeyView>(Call::get(format!("{BASE}/{id}"))).await? else {
        return Ok(());
    };
    // The refused enrollment attempts that named this key (forged, expired, replayed after
    // use or revocation, …), newest last.
    let attempts = client
        .send::<Page<AuditRecordView>>(
            Call::get("/v1/management/audit")
                .query("target_id", Some(id))
                .query("action", Some("agent.enroll"))
                .query("outcome", Some("denied"))
                .query("limit", Some(ATTEMPTS_SHOWN)),
        )
        .await?
        .unwrap_or_else(|| Page { data: Vec::new(), has_more: false, next_after: None });
    if format == OutputFormat::Json {
        let mut value = serde_json::to_value(&key)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("refused_attempts".into(), serde_json::to_value(&attempts.data)?);
            object.insert("more_refused_attempts".into(), attempts.has_more.into());
        }
        return output::json(&value);
    }
    output::fields(&[
        ("id", key.id),
        ("name", key.name),
        ("state", key.state.to_string()),
        ("role", key.role),
        ("region", output::or_dash(key.region.as_deref())),
        ("router_addr", key.router_addr),
        ("workspaces", grant(key.workspaces.as_deref())),
        ("require approval", key.require_approval.to_string()),
        ("created", key.created_at),
        ("created by", output::or_dash(key.created_by.as_deref())),
        ("expires", key.expires_at),
        ("used", output::or_dash(key.used_at.as_deref())),
        ("used by agent", output::or_dash(key.used_by_agent.as_deref())),
        ("revoked", output::or_dash(key.revoked_at.as_deref())),
        ("revoked by", output::or_dash(key.revoked_by.as_deref())),
        ("revoke reason", output::or_dash(key.revoked_reason.as_deref())),
        ("refused attempts", attempts.data.len().to_string()),
    ]);
    if !attempts.data.is_empty() {
        let rows = attempts
            .data
            .iter()
            .map(|r| {
                vec![
                    r.at.clone(),
                    output::or_dash(r.reason.as_deref()),
                    output::or_dash(r.client_addr.as_deref()),
                    output::or_dash(r.request_id.as_deref()),
                ]
            })
            .collect();
        println!();
        output::table(&["TIME", "REASON", "PEER", "REQUEST"], rows);
        if attempts.has_more {
            println!("(more: xeroctl audit --target {id} --action agent.enroll --outcome denied)");
        }
    }
    Ok(())
}

/// A join key's grant as one cell: the workspaces, or `none` (it grants nothing by itself).
fn grant(workspaces: Option<&[String]>) -> String {
    match workspaces {
        Some(w) if !w.is_empty() => w.join(","),
        _ => "none".into(),
    }
}

/// Asks on the terminal; without one (scripts, CI) it refuses unless --force was given.
fn confirmed(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to revoke without confirmation: no terminal to ask on; pass --force");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

async fn revoke(
    client: &Client,
    format: OutputFormat,
    id: &str,
    force: bool,
    reason: Option<String>,
) -> anyhow::Result<()> {
    check_id(id)?;
    if !force && !client.is_dry_run() && !confirmed(&format!("Revoke join key {id}?"))? {
        bail!("not revoked");
    }
    let call = Call::post(format!("{BASE}/{id}/revoke"), json!({ "reason": reason }));
    let Some(key) = client.send::<JoinKeyView>(call).await? else { return Ok(()) };
    if format == OutputFormat::Json {
        return output::json(&key);
    }
    println!("Revoked join key {} ({}); it can no longer enroll an agent.", key.id, key.name);
    Ok(())
}
