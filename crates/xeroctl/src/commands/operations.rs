//! Fleet-wide operations: `xeroctl agents curve-rotate --all|--region|--role|--agents`,
//! `xeroctl agents join-keys --revoke --all-unconsumed`, `xeroctl agents revoke-credentials
//! --enrolled-via|--minted-by|--region` start one; `xeroctl operations [op_… --follow|--cancel|
//! --resume]` list, follow and steer them. The router runs them: this command only shows the
//! plan, asks, creates, and follows (Ctrl-C or --detach leave it running).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde_json::{Value, json};
use xerotier_proto::Page;
use xerotier_proto::operations::{OperationPlanView, OperationTargetView, OperationView};
use xerotier_proto::status::{OperationKind, OperationStatus, TargetStatus};

use super::Ctx;
use crate::cli::{OperationFlags, OperationsArgs};
use crate::client::Call;
use crate::exit::{self, CliError};
use crate::output::{self, Column, col, wide};

const BASE: &str = "/v1/management/operations";
/// `-o name` prints `operation/op_…`.
const KIND: &str = "operation";
/// How often a followed operation is read.
const POLL: Duration = Duration::from_millis(300);
/// How long a followed operation's router may be unreachable (restarting, fenced) before the
/// command gives up following (the operation goes on regardless).
const UNAVAILABLE_WINDOW: Duration = Duration::from_secs(30);

pub async fn run(ctx: &Ctx, args: OperationsArgs) -> anyhow::Result<()> {
    let Some(id) = args.id else { return list(ctx, args.page).await };
    if !id.starts_with("op_") {
        return Err(exit::usage(format!(
            "{id:?} is not an operation id (op_…); see `xeroctl operations`"
        )));
    }
    if args.cancel {
        let Some(op) = ctx
            .client
            .send::<OperationView>(Call::post(format!("{BASE}/{id}/cancel"), json!({})))
            .await?
        else {
            return Ok(());
        };
        eprintln!(
            "Cancelled {id}: no target is started from now on; rotations in flight end by themselves."
        );
        return show_view(ctx, &op);
    }
    if args.resume {
        let body = json!({ "retry_failed": args.retry_failed });
        let Some(_) = ctx
            .client
            .send::<OperationView>(Call::post(format!("{BASE}/{id}/resume"), body))
            .await?
        else {
            return Ok(());
        };
        if !args.retry_failed {
            eprintln!(
                "Resumed {id}: the remaining targets run; targets that failed stay failed (add --retry-failed to try them again)."
            );
        } else {
            eprintln!("Resumed {id}: the remaining and the failed targets run.");
        }
        return follow(ctx, &id).await;
    }
    if args.follow {
        return follow(ctx, &id).await;
    }
    let op: OperationView = ctx.client.fetch(Call::get(format!("{BASE}/{id}"))).await?;
    show_view(ctx, &op)
}

/// Shows the plan, asks, creates the operation and follows it (unless `--detach`). With
/// `--dry-run` only the plan is printed: the router computes it and writes nothing.
pub async fn start(
    ctx: &Ctx,
    kind: OperationKind,
    mut selector: Value,
    reason: Option<String>,
    flags: &OperationFlags,
) -> anyhow::Result<()> {
    let Some(reason) = reason.filter(|r| !r.trim().is_empty()) else {
        return Err(exit::usage(
            "a fleet-wide operation needs --reason \"…\" (it is recorded with every change)",
        ));
    };
    if let Some(fields) = selector.as_object_mut() {
        fields.retain(|_, v| !v.is_null());
    }
    let mut body = json!({
        "kind": kind, "selector": selector, "reason": reason,
        "wave_size": flags.wave_size, "max_failures": flags.max_failures, "dry_run": true,
    });
    let plan: OperationPlanView = ctx.client.fetch(Call::post(BASE, body.clone())).await?;
    if ctx.client.is_dry_run() {
        return ctx.out.object(&plan, KIND, "plan", || print_plan(ctx, &plan, true));
    }
    if ctx.out.is_text() {
        print_plan(ctx, &plan, false)?;
    }
    let what = match kind {
        OperationKind::CurveRotate => "rotate the CURVE keys of",
        OperationKind::RevokeJoinKeys => "revoke",
        OperationKind::RevokeAgents => "revoke the credentials of",
    };
    let noun = if kind == OperationKind::RevokeJoinKeys { "join keys" } else { "agents" };
    ctx.confirm.confirm(
        &format!("{what} these {} {noun}", plan.target_count),
        &format!(
            "The router runs this in {} wave(s) and keeps going if this command stops.{}",
            plan.wave_count,
            if kind == OperationKind::CurveRotate { "" } else { " Revocations cannot be undone." }
        ),
    )?;
    body["dry_run"] = json!(false);
    let op: OperationView = ctx.client.fetch(Call::post(BASE, body)).await?;
    eprintln!("Created {} ({} targets, {} waves).", op.id, op.target_count, op.wave_count);
    if flags.detach {
        ctx.out.object(&op, KIND, &op.id, || {
            println!("{}", op.id);
            Ok(())
        })?;
        eprintln!("It runs on the router; follow it with: xeroctl operations {} --follow", op.id);
        return Ok(());
    }
    follow(ctx, &op.id).await
}

/// Reads the operation until it ends, showing progress; then the final table. Ctrl-C leaves it
/// running.
async fn follow(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let live = std::io::stderr().is_terminal();
    let mut seen: HashMap<String, TargetStatus> = HashMap::new();
    let mut last_line = String::new();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut unavailable_since: Option<std::time::Instant> = None;
    loop {
        let op: OperationView = match ctx.client.fetch(Call::get(format!("{BASE}/{id}"))).await {
            Ok(op) => {
                unavailable_since = None;
                op
            }
            // The operation runs on the router whatever happens here: a router restarting or
            // a replica briefly fenced (5xx, unreachable) is waited out for a while.
            Err(err) if exit::code(&err) == exit::UNAVAILABLE => {
                #[expect(clippy::disallowed_methods, reason = "a wait's deadline decides nothing")]
                let now = std::time::Instant::now();
                let since = *unavailable_since.get_or_insert(now);
                if now.duration_since(since) > UNAVAILABLE_WINDOW {
                    return Err(err);
                }
                tokio::time::sleep(POLL).await;
                continue;
            }
            Err(err) => return Err(err),
        };
        let line = progress_line(&op);
        if live {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else {
            for target in op.targets.iter().flatten() {
                if seen.get(&target.target_id) != Some(&target.status) {
                    if target.status != TargetStatus::Pending {
                        eprintln!(
                            "{}  wave {}  {}{}",
                            target.target_id,
                            target.wave,
                            target.status,
                            target.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                        );
                    }
                    seen.insert(target.target_id.clone(), target.status);
                }
            }
            if line != last_line {
                eprintln!("{line}");
            }
        }
        last_line = line;
        if op.status != OperationStatus::Running {
            if live {
                eprintln!();
            }
            return finished(ctx, &op);
        }
        tokio::select! {
            _ = &mut interrupted => {
                if live {
                    eprintln!();
                }
                eprintln!("Stopped following; the operation goes on. Follow it again with: xeroctl operations {id} --follow");
                return Err(CliError::Exit(exit::CANCELLED).into());
            }
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

fn progress_line(op: &OperationView) -> String {
    let done = op.succeeded + op.failed + op.skipped + op.cancelled;
    format!(
        "{} · wave {}/{} · {}/{} done · {} failed · {} skipped · {}",
        op.id,
        op.current_wave,
        op.wave_count,
        done,
        op.target_count,
        op.failed,
        op.skipped,
        op.status
    )
}

/// The final table, and the exit status the operation's end makes.
fn finished(ctx: &Ctx, op: &OperationView) -> anyhow::Result<()> {
    show_view(ctx, op)?;
    match op.status {
        OperationStatus::Completed => Ok(()),
        OperationStatus::Halted => {
            eprintln!(
                "error: {} halted: more than {} target(s) failed. Resume it with `xeroctl operations {} --resume` (failed targets stay failed; add --retry-failed to try them again) or cancel it with --cancel.",
                op.id, op.max_failures, op.id
            );
            Err(CliError::Exit(exit::OPERATION_INCOMPLETE).into())
        }
        _ => {
            eprintln!("error: {} ended {}.", op.id, op.status);
            Err(CliError::Exit(exit::OPERATION_INCOMPLETE).into())
        }
    }
}

const TARGET_COLUMNS: [Column; 6] =
    [col("TARGET"), col("NAME"), col("WAVE"), col("RESULT"), col("REASON"), wide("ROTATION")];

fn target_rows(targets: &[OperationTargetView]) -> Vec<Vec<String>> {
    targets
        .iter()
        .map(|t| {
            vec![
                t.target_id.clone(),
                output::or_dash(t.target_name.as_deref()),
                t.wave.to_string(),
                t.status.to_string(),
                output::or_dash(t.reason.as_deref()),
                output::or_dash(t.rotation_request_id.as_deref()),
            ]
        })
        .collect()
}

fn print_plan(ctx: &Ctx, plan: &OperationPlanView, dry_run: bool) -> anyhow::Result<()> {
    if dry_run {
        println!("# dry run: nothing was created or changed");
    }
    output::fields(&[
        ("kind", plan.kind.to_string()),
        ("selector", serde_json::to_string(&plan.selector)?),
        ("reason", plan.reason.clone()),
        ("targets", plan.target_count.to_string()),
        ("waves", format!("{} (wave size {})", plan.wave_count, plan.wave_size)),
        ("max failures", plan.max_failures.to_string()),
    ]);
    println!();
    ctx.out.table(&TARGET_COLUMNS, target_rows(&plan.targets))
}

fn show_view(ctx: &Ctx, op: &OperationView) -> anyhow::Result<()> {
    ctx.out.object(op, KIND, &op.id, || {
        output::fields(&[
            ("id", op.id.clone()),
            ("kind", op.kind.to_string()),
            ("status", op.status.to_string()),
            ("selector", serde_json::to_string(&op.selector)?),
            ("reason", op.reason.clone()),
            ("requested by", output::or_dash(op.requested_by.as_deref())),
            ("wave", format!("{}/{} (wave size {})", op.current_wave, op.wave_count, op.wave_size)),
            (
                "targets",
                format!(
                    "{} · {} succeeded · {} failed · {} skipped · {} cancelled · {} remaining",
                    op.target_count,
                    op.succeeded,
                    op.failed,
                    op.skipped,
                    op.cancelled,
                    op.remaining
                ),
            ),
            ("max failures", op.max_failures.to_string()),
            ("created", op.created_at.clone()),
            ("finished", output::or_dash(op.finished_at.as_deref())),
        ]);
        if let Some(targets) = &op.targets {
            println!();
            ctx.out.table(&TARGET_COLUMNS, target_rows(targets))?;
        }
        Ok(())
    })
}

const COLUMNS: [Column; 9] = [
    col("ID"),
    col("KIND"),
    col("STATUS"),
    col("TARGETS"),
    col("SUCCEEDED"),
    col("FAILED"),
    col("SKIPPED"),
    col("CREATED"),
    wide("REASON"),
];

async fn list(ctx: &Ctx, page: crate::cli::PageArgs) -> anyhow::Result<()> {
    let call = Call::get(BASE).query("limit", page.limit).query("after", page.after);
    let page: Page<OperationView> = match ctx.client.send(call).await? {
        Some(page) => page,
        None => return Ok(()),
    };
    ctx.out.list(
        &page,
        KIND,
        &page.data,
        &COLUMNS,
        |o| o.id.clone(),
        |o| {
            vec![
                o.id.clone(),
                o.kind.to_string(),
                o.status.to_string(),
                o.target_count.to_string(),
                o.succeeded.to_string(),
                o.failed.to_string(),
                o.skipped.to_string(),
                o.created_at.clone(),
                o.reason.clone(),
            ]
        },
    )?;
    output::more_hint(page.next_after.as_deref());
    Ok(())
}
