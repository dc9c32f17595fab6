use serde_json::json;
use xerotier_proto::Page;
use xerotier_proto::audit::AuditRecordView;
use xerotier_proto::join_keys::{IssuedJoinKey, JoinKeyView};
use xerotier_proto::status::JoinKeyState;

use super::Ctx;
use crate::cli::JoinKeysArgs;
use crate::client::Call;
use crate::exit;
use crate::output::{self, Column, col, wide};

const BASE: &str = "/v1/management/join-keys";
/// `-o name` prints `joinkey/jk_…`.
const KIND: &str = "joinkey";
/// Refused attempts shown with a join key (the oldest first; the rest via `xeroctl audit`).
const ATTEMPTS_SHOWN: u32 = 100;

pub async fn run(ctx: &Ctx, args: JoinKeysArgs) -> anyhow::Result<()> {
    let create_options = [
        ("--name", args.name.is_some()),
        ("--region", args.region.is_some() && !args.all_unconsumed),
        ("--router-addr", args.router_addr.is_some()),
        ("--ttl-seconds", args.ttl_seconds.is_some()),
        ("--agent-role", args.agent_role.is_some()),
        ("--workspaces", args.workspaces.is_some()),
        ("--require-approval", args.require_approval),
    ];
    if !args.create
        && let Some((flag, _)) = create_options.iter().find(|(_, given)| *given)
    {
        return Err(exit::usage(format!("{flag} only goes with --create")));
    }
    if !args.revoke && args.reason.is_some() {
        return Err(exit::usage("--reason only goes with --revoke"));
    }
    if args.create {
        if let Some(id) = &args.id {
            return Err(exit::usage(format!("--create makes a new key; drop the id {id:?}")));
        }
        return create(ctx, args).await;
    }
    if args.revoke && args.all_unconsumed {
        if let Some(id) = &args.id {
            return Err(exit::usage(format!(
                "--all-unconsumed selects the keys itself; drop the id {id:?}"
            )));
        }
        let selector = json!({
            "all_unconsumed": true, "name_prefix": args.name_prefix, "region": args.region,
        });
        let kind = xerotier_proto::status::OperationKind::RevokeJoinKeys;
        return super::operations::start(ctx, kind, selector, args.reason, &args.operation).await;
    }
    if args.revoke {
        let Some(id) = args.id.clone() else {
            return Err(exit::usage(
                "--revoke needs the join key id: xeroctl agents join-keys jk_… --revoke --force",
            ));
        };
        return revoke(ctx, &id, args.reason).await;
    }
    match args.id {
        Some(id) => show(ctx, &id).await,
        None => list(ctx, args.include_terminal, args.page).await,
    }
}

fn check_id(id: &str) -> anyhow::Result<()> {
    if !id.starts_with("jk_") {
        return Err(exit::usage(format!(
            "{id:?} is not a join key id (jk_…); see `xeroctl agents join-keys`"
        )));
    }
    Ok(())
}

async fn create(ctx: &Ctx, args: JoinKeysArgs) -> anyhow::Result<()> {
    let Some(name) = args.name else { return Err(exit::usage("--create needs --name")) };
    ctx.out.refuse_name_for_secret("join token")?;
    let body = json!({
        "name": name,
        "region": args.region,
        "router_addr": args.router_addr,
        "ttl_seconds": args.ttl_seconds,
        "agent_role": args.agent_role,
        "workspaces": args.workspaces,
        "require_approval": args.require_approval,
    });
    let Some(issued) = ctx.client.send::<IssuedJoinKey>(Call::post(BASE, body)).await? else {
        return Ok(());
    };
    eprintln!(
        "WARNING: the token is shown only now. Hand it to one XEM host; it works once, until it expires."
    );
    let key = &issued.join_key;
    ctx.out.object(&issued, KIND, &key.id, || {
        output::fields(&[
            ("join_key_id", key.id.clone()),
            ("name", key.name.clone()),
            ("region", output::or_dash(key.region.as_deref())),
            ("role", key.role.clone()),
            ("router_addr", key.router_addr.clone()),
            ("workspaces", grant(key.workspaces.as_deref())),
            ("require_approval", key.require_approval.to_string()),
            ("expires_at", key.expires_at.clone()),
            ("token", issued.token.clone()),
        ]);
        Ok(())
    })
}

const COLUMNS: [Column; 11] = [
    col("ID"),
    col("NAME"),
    col("STATE"),
    col("ROLE"),
    col("REGION"),
    col("EXPIRES"),
    col("ENDED"),
    col("BY"),
    wide("CREATED"),
    wide("WORKSPACES"),
    wide("APPROVAL"),
];

async fn list(ctx: &Ctx, include_terminal: bool, page: crate::cli::PageArgs) -> anyhow::Result<()> {
    let call = Call::get(BASE)
        .query("limit", page.limit)
        .query("after", page.after)
        .query("include_terminal", include_terminal.then_some(true));
    let Some(page) = ctx.client.send::<Page<JoinKeyView>>(call).await? else { return Ok(()) };
    ctx.out.list(
        &page,
        KIND,
        &page.data,
        &COLUMNS,
        |k| k.id.clone(),
        |k| {
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
                k.created_at.clone(),
                grant(k.workspaces.as_deref()),
                if k.require_approval { "required".into() } else { "-".into() },
            ]
        },
    )?;
    output::more_hint(page.next_after.as_deref());
    Ok(())
}

async fn show(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    check_id(id)?;
    let Some(key) = ctx.client.send::<JoinKeyView>(Call::get(format!("{BASE}/{id}"))).await? else {
        return Ok(());
    };
    // The refused enrollment attempts that named this key (forged, expired, replayed after
    // use or revocation, …), newest last.
    let attempts = ctx
        .client
        .send::<Page<AuditRecordView>>(
            Call::get("/v1/management/audit")
                .query("target_id", Some(id))
                .query("action", Some("agent.enroll"))
                .query("outcome", Some("denied"))
                .query("limit", Some(ATTEMPTS_SHOWN)),
        )
        .await?
        .unwrap_or_else(|| Page { data: Vec::new(), has_more: false, next_after: None });
    let mut value = serde_json::to_value(&key)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("refused_attempts".into(), serde_json::to_value(&attempts.data)?);
        object.insert("more_refused_attempts".into(), attempts.has_more.into());
    }
    ctx.out.object(&value, KIND, &key.id, || print_key(ctx, &key, &attempts))
}

fn print_key(ctx: &Ctx, key: &JoinKeyView, attempts: &Page<AuditRecordView>) -> anyhow::Result<()> {
    output::fields(&[
        ("id", key.id.clone()),
        ("name", key.name.clone()),
        ("state", key.state.to_string()),
        ("role", key.role.clone()),
        ("region", output::or_dash(key.region.as_deref())),
        ("router_addr", key.router_addr.clone()),
        ("workspaces", grant(key.workspaces.as_deref())),
        ("require approval", key.require_approval.to_string()),
        ("created", key.created_at.clone()),
        ("created by", output::or_dash(key.created_by.as_deref())),
        ("expires", key.expires_at.clone()),
        ("used", output::or_dash(key.used_at.as_deref())),
        ("used by agent", output::or_dash(key.used_by_agent.as_deref())),
        ("revoked", output::or_dash(key.revoked_at.as_deref())),
        ("revoked by", output::or_dash(key.revoked_by.as_deref())),
        ("revoke reason", output::or_dash(key.revoked_reason.as_deref())),
        ("refused attempts", attempts.data.len().to_string()),
    ]);
    if attempts.data.is_empty() {
        return Ok(());
    }
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
    ctx.out.table(&[col("TIME"), col("REASON"), col("PEER"), col("REQUEST")], rows)?;
    if attempts.has_more {
        println!(
            "(more: xeroctl audit --target {} --action agent.enroll --outcome denied)",
            key.id
        );
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

async fn revoke(ctx: &Ctx, id: &str, reason: Option<String>) -> anyhow::Result<()> {
    check_id(id)?;
    ctx.confirm.confirm(
        &format!("revoke join key {id}"),
        "No agent can enroll with it afterwards; this cannot be undone.",
    )?;
    let call = Call::post(format!("{BASE}/{id}/revoke"), json!({ "reason": reason }));
    let Some(key) = ctx.client.send::<JoinKeyView>(call).await? else { return Ok(()) };
    ctx.out.object(&key, KIND, &key.id, || {
        println!("Revoked join key {} ({}); it can no longer enroll an agent.", key.id, key.name);
        Ok(())
    })
}
