//! `xeroctl router keys` and `xeroctl router rotate-keys`: the router's own keys and their
//! phased rotation. `--auto` is a client-side walk over the phases that reads where the router
//! is before every step, so a rerun (after a crash, a timeout, Ctrl-C) continues from there.

use std::time::Duration;

use serde_json::json;
use xerotier_proto::router_keys::{RouterKeyKindView, RouterKeyRotationView, RouterKeysView};

use super::{Ctx, parse_duration_secs};
use crate::cli::RotateKeysArgs;
use crate::client::Call;
use crate::exit::{self, CliError};
use crate::output::{Column, col, wide};

const LIST: &str = "/v1/management/router/keys";
/// `-o name` prints `router-key/<kid>`.
const KIND: &str = "router-key";
const POLL: Duration = Duration::from_millis(500);

const COLUMNS: [Column; 9] = [
    col("KIND"),
    col("KID"),
    col("STATE"),
    col("PHASE"),
    col("AGE"),
    col("MOVED"),
    wide("FINGERPRINT"),
    wide("CREATED"),
    wide("ROTATION"),
];

/// One table row: a key, or a kind with none (TLS).
struct Row<'a> {
    kind: &'a RouterKeyKindView,
    key: Option<&'a xerotier_proto::router_keys::RouterKeyView>,
}

fn moved(kind: &RouterKeyKindView) -> String {
    match (&kind.progress, kind.phase.as_str()) {
        (_, "standby") | (None, _) => "-".into(),
        (Some(p), _) => {
            format!("{}/{}{}", p.moved, p.total, if p.ready { "" } else { " (waiting)" })
        }
    }
}

/// The CA certificates clients should trust for `tls` as the router lists it: the current CA,
/// and the new one while clients are being moved (update_clients, update_servers).
fn trust_bundle(tls: &RouterKeyKindView) -> Vec<&str> {
    let pem = |state: &'static str| -> Vec<&str> {
        tls.keys
            .iter()
            .filter(|k| k.state == state)
            .filter_map(|k| k.certificate.as_deref())
            .collect()
    };
    match tls.phase.as_str() {
        // The new CA issues: it goes first, as in the router's own ca.pem.
        "update_servers" => [pem("next"), pem("current")].concat(),
        "update_clients" => [pem("current"), pem("next")].concat(),
        _ => pem("current"),
    }
}

pub async fn ca_bundle(ctx: &Ctx, args: crate::cli::CaBundleArgs) -> anyhow::Result<()> {
    let view: RouterKeysView = ctx.client.fetch(Call::get(LIST)).await?;
    let tls = view.kinds.iter().find(|k| k.kind == "tls");
    let bundle: String = tls.map(trust_bundle).unwrap_or_default().concat();
    if bundle.is_empty() {
        let why = tls
            .and_then(|k| k.unavailable.clone())
            .unwrap_or_else(|| "the router lists no TLS CA of its own".to_string());
        return Err(exit::not_found(format!("no CA bundle to give: {why}")));
    }
    let Some(path) = args.write else {
        print!("{bundle}");
        return Ok(());
    };
    let count = bundle.matches("-----BEGIN CERTIFICATE-----").count();
    if ctx.client.is_dry_run() {
        eprintln!("would write {count} CA certificate(s) to {} (dry run)", path.display());
        return Ok(());
    }
    xerotier_credentials::write_file_atomically(&path, bundle.as_bytes(), 0o644)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    eprintln!("wrote {count} CA certificate(s) to {}", path.display());
    Ok(())
}

pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let view: RouterKeysView = ctx.client.fetch(Call::get(LIST)).await?;
    let rows: Vec<Row<'_>> = view
        .kinds
        .iter()
        .flat_map(|kind| {
            let keys: Vec<Row<'_>> =
                kind.keys.iter().map(|key| Row { kind, key: Some(key) }).collect();
            if keys.is_empty() { vec![Row { kind, key: None }] } else { keys }
        })
        .collect();
    ctx.out.list(
        &view,
        KIND,
        &rows,
        &COLUMNS,
        |r| r.key.map_or_else(|| r.kind.kind.clone(), |k| k.kid.clone()),
        |r| match r.key {
            Some(k) => vec![
                r.kind.kind.clone(),
                k.kid.clone(),
                k.state.clone(),
                r.kind.phase.clone(),
                super::router::age(u64::try_from(k.age_seconds).unwrap_or(0) * 1000),
                moved(r.kind),
                k.fingerprint.clone(),
                k.created_at.clone(),
                r.kind.rotation_id.clone().unwrap_or_else(|| "-".into()),
            ],
            None => vec![
                r.kind.kind.clone(),
                "-".into(),
                r.kind.unavailable.as_deref().map_or("-", |_| "unavailable").to_string(),
                r.kind.phase.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ],
        },
    )
}

/// `join-signing` → `join_signing`; the router refuses anything else it does not know.
fn kind_path(kind: &str) -> anyhow::Result<&'static str> {
    match kind {
        "mesh" => Ok("mesh"),
        "join-signing" | "join_signing" => Ok("join_signing"),
        "tls" => Ok("tls"),
        other => Err(exit::usage(format!("--kind {other:?}: expected mesh, join-signing or tls"))),
    }
}

fn phase_name(phase: &str) -> anyhow::Result<&'static str> {
    match phase {
        "init" => Ok("init"),
        "update_clients" | "update-clients" => Ok("update_clients"),
        "update_servers" | "update-servers" => Ok("update_servers"),
        "standby" | "complete" => Ok("standby"),
        "rollback" => Ok("rollback"),
        other => Err(exit::usage(format!(
            "--phase {other:?}: expected init, update_clients, update_servers, standby (complete) \
             or rollback"
        ))),
    }
}

async fn kind_status(ctx: &Ctx, kind: &str) -> anyhow::Result<RouterKeyKindView> {
    let view: RouterKeysView = ctx.client.fetch(Call::get(LIST)).await?;
    view.kinds
        .into_iter()
        .find(|k| k.kind == kind)
        .ok_or_else(|| CliError::NotFound(format!("the router reports no {kind} key")).into())
}

fn body(phase: &str, args: &RotateKeysArgs, dry_run: bool) -> serde_json::Value {
    json!({
        "phase": phase, "force": args.ignore_stragglers, "dry_run": dry_run,
        "reason": args.reason,
    })
}

async fn post(
    ctx: &Ctx,
    kind: &str,
    phase: &str,
    args: &RotateKeysArgs,
    dry_run: bool,
) -> anyhow::Result<RouterKeyRotationView> {
    let path = format!("{LIST}/{kind}/rotation");
    ctx.client.fetch(Call::post(path, body(phase, args, dry_run))).await
}

fn confirm_step(ctx: &Ctx, kind: &str, phase: &str) -> anyhow::Result<()> {
    let (action, consequence) = match phase {
        "init" => (
            format!("start a rotation of the router's {kind} key"),
            "A new key is generated and stored; nothing uses it until update_clients.".to_string(),
        ),
        "standby" => (
            format!("complete the rotation of the router's {kind} key"),
            "The new key becomes current and the old one is dropped (join signing: once its \
             join keys expired). This cannot be undone."
                .to_string(),
        ),
        "rollback" => (
            format!("roll back the rotation of the router's {kind} key"),
            "The old key stays current and the new one is withdrawn.".to_string(),
        ),
        _ => return Ok(()),
    };
    ctx.confirm.confirm(&action, &consequence)
}

fn print_step(step: &RouterKeyRotationView) {
    let verb = if step.applied { "" } else { "would move " };
    eprintln!("{}: {verb}{} -> {}", step.status.kind, step.from, step.to);
    for effect in &step.effects {
        eprintln!("  {effect}");
    }
}

pub async fn rotate(ctx: &Ctx, args: RotateKeysArgs) -> anyhow::Result<()> {
    let kind = kind_path(&args.kind)?;
    if args.auto {
        return auto(ctx, kind, &args).await;
    }
    let phase = phase_name(args.phase.as_deref().unwrap_or_default())?;
    let dry_run = ctx.client.is_dry_run();
    if !dry_run {
        confirm_step(ctx, kind, phase)?;
    }
    let step = post(ctx, kind, phase, &args, dry_run).await?;
    if ctx.out.is_text() {
        print_step(&step);
    }
    let id = step.status.rotation_id.clone().unwrap_or_else(|| kind.to_string());
    ctx.out.object(&step, KIND, &id, || {
        println!("{} {}", step.status.kind, step.status.phase);
        Ok(())
    })
}

/// The step after `phase` on the way to completion (`None`: nothing left).
fn next_phase(phase: &str, started: bool) -> Option<&'static str> {
    match phase {
        "standby" if !started => Some("init"),
        "init" => Some("update_clients"),
        "update_clients" => Some("update_servers"),
        "update_servers" => Some("standby"),
        _ => None,
    }
}

async fn auto(ctx: &Ctx, kind: &str, args: &RotateKeysArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(parse_duration_secs(&args.timeout, "--timeout")?);
    #[expect(clippy::disallowed_methods, reason = "a CLI wait deadline decides nothing stored")]
    let deadline = std::time::Instant::now() + timeout;
    let status = kind_status(ctx, kind).await?;
    let started = status.phase != "standby";
    if ctx.client.is_dry_run() {
        let Some(phase) = next_phase(&status.phase, started) else { return Ok(()) };
        let step = post(ctx, kind, phase, args, true).await?;
        if ctx.out.is_text() {
            print_step(&step);
            let mut rest = Vec::new();
            let mut at = phase;
            while let Some(next) = next_phase(at, true) {
                rest.push(next);
                at = next;
            }
            eprintln!("then: {}", if rest.is_empty() { "-".into() } else { rest.join(" -> ") });
        }
        return ctx.out.object(&step, KIND, kind, || Ok(()));
    }
    ctx.confirm.confirm(
        &format!(
            "{} the rotation of the router's {kind} key through every phase",
            if started { "continue" } else { "run" }
        ),
        &format!(
            "It is in phase {}. The old key is dropped at the end (join signing: once its join \
             keys expired); this cannot be undone.",
            status.phase
        ),
    )?;
    let mut phase = status.phase;
    let mut last = None;
    while let Some(next) = next_phase(&phase, started || last.is_some()) {
        if matches!(next, "update_servers" | "standby") && !args.ignore_stragglers {
            wait_ready(ctx, kind, &phase, deadline).await?;
        }
        let step = post(ctx, kind, next, args, false).await?;
        if ctx.out.is_text() {
            print_step(&step);
        }
        phase = step.status.phase.clone();
        last = Some(step);
    }
    let Some(step) = last else {
        eprintln!("{kind}: nothing to do");
        return Ok(());
    };
    let id = step.status.rotation_id.clone().unwrap_or_else(|| kind.to_string());
    ctx.out.object(&step, KIND, &id, || {
        println!("{} {} ({})", step.status.kind, step.status.phase, id);
        Ok(())
    })
}

/// Waits until the kind's clients have all moved in `phase`, with a progress line on stderr.
async fn wait_ready(
    ctx: &Ctx,
    kind: &str,
    phase: &str,
    deadline: std::time::Instant,
) -> anyhow::Result<()> {
    loop {
        let status = kind_status(ctx, kind).await?;
        if status.phase != phase {
            return Err(anyhow::anyhow!(
                "the {kind} key moved to phase {} meanwhile (another operator?); rerun to \
                 continue from there",
                status.phase
            ));
        }
        let progress =
            status.progress.unwrap_or(xerotier_proto::router_keys::RouterKeyProgressView {
                moved: 0,
                total: 0,
                ready: true,
            });
        if progress.ready {
            return Ok(());
        }
        eprintln!("{kind}: {phase}: clients moved {}/{}", progress.moved, progress.total);
        #[expect(clippy::disallowed_methods, reason = "a CLI wait deadline decides nothing stored")]
        let now = std::time::Instant::now();
        if now >= deadline {
            eprintln!(
                "timed out waiting for clients: the rotation stays in phase {phase}; rerun \
                 `xeroctl router rotate-keys --kind {kind} --auto` to continue, or add \
                 --ignore-stragglers"
            );
            return Err(CliError::Exit(exit::STILL_RUNNING).into());
        }
        tokio::time::sleep(POLL).await;
    }
}
