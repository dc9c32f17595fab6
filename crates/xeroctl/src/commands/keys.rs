use anyhow::bail;
use serde_json::json;
use xerotier_proto::Page;
use xerotier_proto::api_keys::{ApiKeyView, IssuedApiKey};

use super::parse_duration_secs;
use crate::cli::{KeySelector, KeysCommand, KeysListArgs, OutputFormat};
use crate::client::{Call, Client};
use crate::output;

const BASE: &str = "/v1/management/api-keys";

pub async fn run(
    client: &Client,
    format: OutputFormat,
    command: Option<KeysCommand>,
    list_args: KeysListArgs,
) -> anyhow::Result<()> {
    match command.unwrap_or(KeysCommand::List(list_args)) {
        KeysCommand::List(args) => list(client, format, args).await,
        KeysCommand::Create { name, scopes, expires_in } => {
            create(client, format, name, scopes, expires_in).await
        }
        KeysCommand::Show(selector) => show(client, format, selector).await,
        KeysCommand::Revoke { key, reason, allow_lockout } => {
            revoke(client, format, key, reason, allow_lockout).await
        }
        KeysCommand::Rotate { key, grace, reason } => {
            rotate(client, format, key, grace, reason).await
        }
    }
}

async fn list(client: &Client, format: OutputFormat, args: KeysListArgs) -> anyhow::Result<()> {
    let call = Call::get(BASE)
        .query("limit", args.page.limit)
        .query("after", args.page.after)
        .query("include_revoked", args.include_revoked.then_some(true));
    let Some(page) = client.send::<Page<ApiKeyView>>(call).await? else { return Ok(()) };
    if format == OutputFormat::Json {
        return output::json(&page);
    }
    let rows = page
        .data
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.name.clone(),
                k.scopes.to_csv(),
                k.status.to_string(),
                k.created_at.clone(),
                output::or_dash(k.expires_at.as_deref()),
                output::or_dash(k.last_used_at.as_deref()),
            ]
        })
        .collect();
    output::table(&["ID", "NAME", "SCOPES", "STATUS", "CREATED", "EXPIRES", "LAST USED"], rows);
    output::more_hint(page.next_after.as_deref());
    Ok(())
}

async fn create(
    client: &Client,
    format: OutputFormat,
    name: String,
    scopes: Vec<String>,
    expires_in: Option<String>,
) -> anyhow::Result<()> {
    let scopes = xerotier_proto::Scopes::from_csv(&scopes.join(","))?;
    let expires_in_seconds =
        expires_in.map(|e| parse_duration_secs(&e, "--expires-in")).transpose()?;
    if expires_in_seconds == Some(0) {
        bail!("--expires-in must be longer than 0s");
    }
    let body = json!({ "name": name, "scopes": scopes, "expires_in_seconds": expires_in_seconds });
    let Some(issued) = client.send::<IssuedApiKey>(Call::post(BASE, body)).await? else {
        return Ok(());
    };
    print_issued(format, &issued, "Created")
}

fn print_issued(format: OutputFormat, issued: &IssuedApiKey, verb: &str) -> anyhow::Result<()> {
    eprintln!(
        "WARNING: this is the only time the key's value is shown. Store it now; it cannot be shown again."
    );
    if format == OutputFormat::Json {
        return output::json(issued);
    }
    let key = &issued.key;
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
}

/// The id to act on: given directly, or looked up by name (a read that runs even in dry-run
/// mode, since the plan depends on it).
async fn resolve_id(client: &Client, selector: &KeySelector) -> anyhow::Result<String> {
    if let Some(id) = &selector.id {
        if !id.starts_with("key_") {
            bail!("{id:?} is not a key id (key_…); to select by name use --name {id}");
        }
        return Ok(id.clone());
    }
    let Some(name) = &selector.name else { bail!("give a key id or --name") };
    let page: Page<ApiKeyView> = client.fetch(Call::get(BASE).query("name", Some(name))).await?;
    match page.data.into_iter().next() {
        Some(key) => Ok(key.id),
        None => bail!("no active API key named {name:?} (see `xeroctl keys --include-revoked`)"),
    }
}

async fn show(client: &Client, format: OutputFormat, selector: KeySelector) -> anyhow::Result<()> {
    let id = resolve_id(client, &selector).await?;
    let Some(key) = client.send::<ApiKeyView>(Call::get(format!("{BASE}/{id}"))).await? else {
        return Ok(());
    };
    if format == OutputFormat::Json {
        return output::json(&key);
    }
    output::fields(&[
        ("id", key.id),
        ("name", key.name),
        ("scopes", key.scopes.to_csv()),
        ("status", key.status.to_string()),
        ("created", key.created_at),
        ("created by", output::or_dash(key.created_by.as_deref())),
        ("expires", key.expires_at.unwrap_or_else(|| "never".into())),
        ("last used", output::or_dash(key.last_used_at.as_deref())),
        ("rotated", output::or_dash(key.rotated_at.as_deref())),
        ("previous value valid until", output::or_dash(key.previous_value_valid_until.as_deref())),
        ("revoked", output::or_dash(key.revoked_at.as_deref())),
        ("revoked by", output::or_dash(key.revoked_by.as_deref())),
        ("revoke reason", output::or_dash(key.revoked_reason.as_deref())),
    ]);
    Ok(())
}

async fn revoke(
    client: &Client,
    format: OutputFormat,
    selector: KeySelector,
    reason: Option<String>,
    allow_lockout: bool,
) -> anyhow::Result<()> {
    let id = resolve_id(client, &selector).await?;
    let mut body = json!({ "reason": reason });
    if allow_lockout {
        body["allow_lockout"] = json!(true);
    }
    let call = Call::post(format!("{BASE}/{id}/revoke"), body);
    let Some(key) = client.send::<ApiKeyView>(call).await? else { return Ok(()) };
    if format == OutputFormat::Json {
        return output::json(&key);
    }
    println!(
        "Revoked API key {} ({}) at {}. Requests with it are refused from now on.",
        key.name,
        key.id,
        output::or_dash(key.revoked_at.as_deref())
    );
    Ok(())
}

async fn rotate(
    client: &Client,
    format: OutputFormat,
    selector: KeySelector,
    grace: Option<String>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let grace_seconds = grace.map(|g| parse_duration_secs(&g, "--grace")).transpose()?;
    let id = resolve_id(client, &selector).await?;
    let call = Call::post(
        format!("{BASE}/{id}/rotate"),
        json!({ "grace_seconds": grace_seconds, "reason": reason }),
    );
    let Some(issued) = client.send::<IssuedApiKey>(call).await? else { return Ok(()) };
    print_issued(format, &issued, "Rotated")
}
