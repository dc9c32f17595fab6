use serde_json::json;
use xerotier_proto::Page;
use xerotier_proto::api_keys::{ApiKeyView, IssuedApiKey};

use super::{Ctx, parse_duration_secs};
use crate::cli::{KeySelector, KeysCommand, KeysListArgs};
use crate::client::Call;
use crate::exit;
use crate::output::{self, Column, col, wide};

pub(super) const BASE: &str = "/v1/management/api-keys";
/// `-o name` prints `apikey/key_…`.
pub(super) const KIND: &str = "apikey";

pub async fn run(
    ctx: &Ctx,
    command: Option<KeysCommand>,
    list_args: KeysListArgs,
) -> anyhow::Result<()> {
    match command.unwrap_or(KeysCommand::List(list_args)) {
        KeysCommand::List(args) => list(ctx, args).await,
        KeysCommand::Create { name, scopes, expires_in } => {
            create(ctx, name, scopes, expires_in).await
        }
        KeysCommand::Show(selector) => show(ctx, selector).await,
        KeysCommand::Revoke { key, reason, allow_lockout } => {
            revoke(ctx, key, reason, allow_lockout).await
        }
        KeysCommand::Rotate { key, grace, reason } => rotate(ctx, key, grace, reason).await,
        KeysCommand::EndGrace { key, when_quiet, follow, reason } => {
            super::end_grace::run(ctx, key, when_quiet, follow, reason).await
        }
    }
}

const COLUMNS: [Column; 10] = [
    col("ID"),
    col("NAME"),
    col("SCOPES"),
    col("STATUS"),
    col("CREATED"),
    col("EXPIRES"),
    col("LAST USED"),
    wide("CREATED BY"),
    wide("ROTATED"),
    wide("REVOKED"),
];

async fn list(ctx: &Ctx, args: KeysListArgs) -> anyhow::Result<()> {
    let call = Call::get(BASE)
        .query("limit", args.page.limit)
        .query("after", args.page.after)
        .query("include_revoked", args.include_revoked.then_some(true));
    let Some(page) = ctx.client.send::<Page<ApiKeyView>>(call).await? else { return Ok(()) };
    ctx.out.list(
        &page,
        KIND,
        &page.data,
        &COLUMNS,
        |k| k.id.clone(),
        |k| {
            vec![
                k.id.clone(),
                k.name.clone(),
                k.scopes.to_csv(),
                k.status.to_string(),
                k.created_at.clone(),
                output::or_dash(k.expires_at.as_deref()),
                output::or_dash(k.last_used_at.as_deref()),
                output::or_dash(k.created_by.as_deref()),
                output::or_dash(k.rotated_at.as_deref()),
                output::or_dash(k.revoked_at.as_deref()),
            ]
        },
    )?;
    output::more_hint(page.next_after.as_deref());
    Ok(())
}

async fn create(
    ctx: &Ctx,
    name: String,
    scopes: Vec<String>,
    expires_in: Option<String>,
) -> anyhow::Result<()> {
    ctx.out.refuse_name_for_secret("key's value")?;
    let scopes = xerotier_proto::Scopes::from_csv(&scopes.join(","))
        .map_err(|err| exit::usage(format!("--scope: {err}")))?;
    let expires_in_seconds =
        expires_in.map(|e| parse_duration_secs(&e, "--expires-in")).transpose()?;
    if expires_in_seconds == Some(0) {
        return Err(exit::usage("--expires-in must be longer than 0s"));
    }
    let body = json!({ "name": name, "scopes": scopes, "expires_in_seconds": expires_in_seconds });
    let Some(issued) = ctx.client.send::<IssuedApiKey>(Call::post(BASE, body)).await? else {
        return Ok(());
    };
    print_issued(ctx, &issued, "Created")
}

fn print_issued(ctx: &Ctx, issued: &IssuedApiKey, verb: &str) -> anyhow::Result<()> {
    eprintln!(
        "WARNING: this is the only time the key's value is shown. Store it now; it cannot be shown again."
    );
    let key = &issued.key;
    ctx.out.object(issued, KIND, &key.id, || {
        println!("{verb} API key {} ({})", key.name, key.id);
        let mut pairs = vec![
            ("scopes", key.scopes.to_csv()),
            ("expires", key.expires_at.clone().unwrap_or_else(|| "never".into())),
        ];
        if let Some(until) = &key.previous_value_valid_until {
            pairs.push(("previous value valid until", until.clone()));
        }
        output::fields(&pairs);
        println!("value: {}", issued.value);
        Ok(())
    })
}

/// The key to act on, by id or looked up by name (a read that runs even in dry-run mode, since
/// the plan depends on it): its id and how to name it to the operator.
pub(super) async fn resolve(ctx: &Ctx, selector: &KeySelector) -> anyhow::Result<(String, String)> {
    if let Some(id) = &selector.id {
        if !id.starts_with("key_") {
            return Err(exit::usage(format!(
                "{id:?} is not a key id (key_…); to select by name use --name {id}"
            )));
        }
        return Ok((id.clone(), id.clone()));
    }
    let Some(name) = &selector.name else { return Err(exit::usage("give a key id or --name")) };
    let page: Page<ApiKeyView> =
        ctx.client.fetch(Call::get(BASE).query("name", Some(name))).await?;
    match page.data.into_iter().next() {
        Some(key) => Ok((key.id.clone(), format!("{} ({})", key.name, key.id))),
        None => Err(exit::not_found(format!(
            "no active API key named {name:?} (see `xeroctl keys --include-revoked`)"
        ))),
    }
}

async fn show(ctx: &Ctx, selector: KeySelector) -> anyhow::Result<()> {
    let (id, _) = resolve(ctx, &selector).await?;
    let Some(key) = ctx.client.send::<ApiKeyView>(Call::get(format!("{BASE}/{id}"))).await? else {
        return Ok(());
    };
    ctx.out.object(&key, KIND, &key.id, || {
        output::fields(&[
            ("id", key.id.clone()),
            ("name", key.name.clone()),
            ("scopes", key.scopes.to_csv()),
            ("status", key.status.to_string()),
            ("created", key.created_at.clone()),
            ("created by", output::or_dash(key.created_by.as_deref())),
            ("expires", key.expires_at.clone().unwrap_or_else(|| "never".into())),
            ("last used", output::or_dash(key.last_used_at.as_deref())),
            ("rotated", output::or_dash(key.rotated_at.as_deref())),
            (
                "previous value valid until",
                output::or_dash(key.previous_value_valid_until.as_deref()),
            ),
            ("revoked", output::or_dash(key.revoked_at.as_deref())),
            ("revoked by", output::or_dash(key.revoked_by.as_deref())),
            ("revoke reason", output::or_dash(key.revoked_reason.as_deref())),
            ("grace uses", key.grace_uses.to_string()),
            ("grace last used", output::or_dash(key.grace_last_used_at.as_deref())),
            ("grace last used from", output::or_dash(key.grace_last_used_from.as_deref())),
            ("grace end", super::end_grace::scheduled(&key)),
        ]);
        Ok(())
    })
}

async fn revoke(
    ctx: &Ctx,
    selector: KeySelector,
    reason: Option<String>,
    allow_lockout: bool,
) -> anyhow::Result<()> {
    let (id, label) = resolve(ctx, &selector).await?;
    ctx.confirm.confirm(
        &format!("revoke API key {label}"),
        "Every request with it is refused from the moment it is revoked; this cannot be undone.",
    )?;
    let mut body = json!({ "reason": reason });
    if allow_lockout {
        body["allow_lockout"] = json!(true);
    }
    let call = Call::post(format!("{BASE}/{id}/revoke"), body);
    let Some(key) = ctx.client.send::<ApiKeyView>(call).await? else { return Ok(()) };
    ctx.out.object(&key, KIND, &key.id, || {
        println!(
            "Revoked API key {} ({}) at {}. Requests with it are refused from now on.",
            key.name,
            key.id,
            output::or_dash(key.revoked_at.as_deref())
        );
        Ok(())
    })
}

async fn rotate(
    ctx: &Ctx,
    selector: KeySelector,
    grace: Option<String>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    ctx.out.refuse_name_for_secret("key's new value")?;
    let grace_seconds = grace.map(|g| parse_duration_secs(&g, "--grace")).transpose()?;
    let (id, label) = resolve(ctx, &selector).await?;
    if grace_seconds == Some(0) {
        ctx.confirm.confirm(
            &format!("rotate API key {label} with no grace"),
            "Its current value stops working at once (--grace 0s): callers still using it are \
             refused.",
        )?;
    }
    let call = Call::post(
        format!("{BASE}/{id}/rotate"),
        json!({ "grace_seconds": grace_seconds, "reason": reason }),
    );
    let Some(issued) = ctx.client.send::<IssuedApiKey>(call).await? else { return Ok(()) };
    print_issued(ctx, &issued, "Rotated")
}
