//! `xeroctl exec …`: the tools online agents offer, invoking them, and following, listing and
//! cancelling invocations (`/v1/exec/*`, scope `execution`).

use std::io::Read as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use serde_json::Value;
use xerotier_proto::Page;
use xerotier_proto::invocation::{InvocationView, InvokeRequest};
use xerotier_proto::tools::{ToolDetail, ToolList};

use super::Ctx;
use super::follow::{self, FollowOptions};
use crate::cli::{ExecCommand, ExecListArgs, InvokeArgs};
use crate::client::{self, ApiError, Call};
use crate::exit;
use crate::output::{self, Column, col, wide};

const INVOCATIONS: &str = "/v1/exec/invocations";
/// `-o name` prints `invocation/inv_…`.
pub const KIND: &str = "invocation";
/// `-o name` prints `tool/<name>`.
const TOOL_KIND: &str = "tool";

pub async fn run(ctx: &Ctx, command: ExecCommand) -> anyhow::Result<()> {
    match command {
        ExecCommand::Tools => tools(ctx).await,
        ExecCommand::ToolShow { name } => tool_show(ctx, &name).await,
        ExecCommand::Invoke(args) => invoke(ctx, args).await,
        ExecCommand::Watch { id, wait_timeout } => watch(ctx, &id, wait_timeout.as_deref()).await,
        ExecCommand::Show { id } => show(ctx, &id).await,
        ExecCommand::List(args) => list(ctx, args).await,
        ExecCommand::Cancel { id } => cancel(ctx, &id).await,
    }
}

fn check_invocation_id(id: &str) -> anyhow::Result<()> {
    if !id.starts_with("inv_") {
        return Err(exit::usage(format!(
            "{id:?} is not an invocation id (inv_…); see `xeroctl exec list`"
        )));
    }
    Ok(())
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses `--args` text that came from `source` (`--args` itself, or `--args @file`).
pub fn parse_args_text(text: &str, source: &str) -> anyhow::Result<Value> {
    let value: Value = serde_json::from_str(text)
        .map_err(|err| exit::usage(format!("{source} is not valid JSON: {err}")))?;
    if !value.is_object() {
        return Err(exit::usage(format!(
            "{source} must be a JSON object of the tool's arguments, such as \
             '{{\"namespace\":\"default\"}}', not {}",
            json_kind(&value)
        )));
    }
    Ok(value)
}

/// `--args` as given: absent (`{}`), inline JSON, `@path` (a file) or `@-` (standard input).
/// Checked here so that a typo never reaches the router, nor a dry-run plan.
pub fn parse_args(arg: Option<&str>) -> anyhow::Result<Value> {
    let Some(arg) = arg else { return Ok(Value::Object(serde_json::Map::new())) };
    let Some(file) = arg.strip_prefix('@') else { return parse_args_text(arg, "--args") };
    let source = format!("--args @{file}");
    let text = match file {
        "" => {
            return Err(exit::usage(
                "--args @ needs a file name: --args @args.json (or @- for standard input)",
            ));
        }
        "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .with_context(|| format!("{source}: reading standard input"))?;
            text
        }
        path => std::fs::read_to_string(Path::new(path))
            .with_context(|| format!("{source}: cannot read the file"))?,
    };
    parse_args_text(&text, &source)
}

/// Turns the router's refusal of an invocation into what the operator can do about it.
pub fn explain_invoke_error(err: anyhow::Error, tool: &str, workspace: &str) -> anyhow::Error {
    let Some(api) = err.downcast_ref::<ApiError>() else { return err };
    let hint = match api.code.as_str() {
        "no_agent_available" => format!(
            "nothing was queued. Check the fleet with `xeroctl agents` (are the agents serving \
             workspace {workspace:?} online?) and `xeroctl exec tool-show {tool}` (which agents \
             offer it). If dispatch to them is paused, `xeroctl agents pauses <agt_…>` shows it \
             and `xeroctl agents resume-exec <agt_…>` lifts it. Then retry."
        ),
        "invalid_arguments" => format!(
            "the argument at {} does not fit the tool's schema; `xeroctl exec tool-show {tool}` \
             prints it.",
            api.param.as_deref().unwrap_or("args")
        ),
        "tool_not_found" => {
            "`xeroctl exec tools` lists the tools that online agents offer.".to_string()
        }
        "workspace_not_found" => {
            format!("`xeroctl exec tool-show {tool}` lists the workspaces it can run in.")
        }
        _ => return err,
    };
    exit::hinted(api, hint)
}

const TOOL_COLUMNS: [Column; 7] = [
    col("NAME"),
    col("RISK"),
    col("TIMEOUT"),
    col("WORKSPACES"),
    col("AGENTS"),
    col("DEFINITIONS"),
    wide("DESCRIPTION"),
];

async fn tools(ctx: &Ctx) -> anyhow::Result<()> {
    let Some(list) = ctx.client.send::<ToolList>(Call::get("/v1/exec/tools")).await? else {
        return Ok(());
    };
    ctx.out.list(
        &list,
        TOOL_KIND,
        &list.tools,
        &TOOL_COLUMNS,
        |t| t.name.clone(),
        |t| {
            vec![
                t.name.clone(),
                t.risk.clone(),
                humantime::format_duration(Duration::from_secs(t.timeout_seconds)).to_string(),
                t.workspaces.join(","),
                t.agents.to_string(),
                if t.conflict { "CONFLICT".into() } else { "-".into() },
                t.description.clone(),
            ]
        },
    )?;
    if !ctx.out.is_text() {
        return Ok(());
    }
    if list.tools.is_empty() {
        eprintln!("(no online agent offers a tool; check the fleet with `xeroctl agents`)");
    }
    if list.tools.iter().any(|t| t.conflict) {
        eprintln!(
            "CONFLICT: agents declare different definitions of a tool; `xeroctl exec tool-show NAME` lists each"
        );
    }
    Ok(())
}

async fn tool_show(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let path = format!("/v1/exec/tools/{}", client::path_segment(name));
    let tool = match ctx.client.send::<ToolDetail>(Call::get(path)).await {
        Ok(Some(tool)) => tool,
        Ok(None) => return Ok(()),
        Err(err) => {
            if let Some(api) = err.downcast_ref::<ApiError>()
                && matches!(api.code.as_str(), "tool_not_found" | "not_found")
            {
                return Err(exit::hinted(
                    api,
                    "`xeroctl exec tools` lists the tools that online agents offer.",
                ));
            }
            return Err(err);
        }
    };
    ctx.out.object(&tool, TOOL_KIND, &tool.name, || print_tool(ctx, &tool))
}

fn print_tool(ctx: &Ctx, tool: &ToolDetail) -> anyhow::Result<()> {
    output::fields(&[
        ("name", tool.name.clone()),
        ("description", tool.description.clone()),
        ("risk", tool.risk.clone()),
        (
            "timeout",
            humantime::format_duration(Duration::from_secs(tool.timeout_seconds)).to_string(),
        ),
    ]);
    println!("\nargs schema:\n{}", serde_json::to_string_pretty(&tool.args_schema)?);
    println!("\noffered by:");
    let rows = tool
        .offered_by
        .iter()
        .map(|o| vec![o.agent_id.clone(), o.agent_name.clone(), o.workspaces.join(",")])
        .collect();
    ctx.out.table(&[col("AGENT"), col("NAME"), col("WORKSPACES")], rows)?;
    if tool.variants.len() > 1 {
        println!(
            "\nCONFLICT: {} definitions of this tool; each agent is held to its own:",
            tool.variants.len()
        );
        for variant in &tool.variants {
            println!(
                "\ndefinition {} ({}): risk {}, timeout {}s\n{}",
                super::candidates::short(&variant.hash),
                variant.agents.join(", "),
                variant.risk,
                variant.timeout_seconds,
                serde_json::to_string_pretty(&variant.args_schema)?
            );
        }
    }
    Ok(())
}

pub fn parse_wait_timeout(text: Option<&str>) -> anyhow::Result<Option<Duration>> {
    let Some(text) = text else { return Ok(None) };
    let timeout = humantime::parse_duration(text.trim()).map_err(|_| {
        exit::usage(format!("--wait-timeout {text:?} is not a duration (examples: 30s, 10m, 1h)"))
    })?;
    if timeout.is_zero() {
        return Err(exit::usage("--wait-timeout must be longer than 0s"));
    }
    Ok(Some(timeout))
}

async fn invoke(ctx: &Ctx, args: InvokeArgs) -> anyhow::Result<()> {
    let tool_args = parse_args(args.args.as_deref())?;
    let timeout = parse_wait_timeout(args.wait_timeout.as_deref())?;
    let request = InvokeRequest {
        workspace: args.workspace.clone(),
        tool: args.tool.clone(),
        args: Some(tool_args),
    };
    let call = Call::post(INVOCATIONS, serde_json::to_value(&request)?);
    let view = match ctx.client.send::<InvocationView>(call).await {
        Ok(Some(view)) => view,
        Ok(None) => return Ok(()),
        Err(err) => return Err(explain_invoke_error(err, &args.tool, &args.workspace)),
    };
    if args.wait {
        return follow::follow(ctx, view, FollowOptions { stream: false, timeout }).await;
    }
    ctx.out.object(&view, KIND, &view.id, || {
        output::fields(&[("id", view.id.clone()), ("status", view.status.as_str().to_string())]);
        eprintln!("(follow it with `xeroctl exec watch {}`)", view.id);
        Ok(())
    })
}

async fn watch(ctx: &Ctx, id: &str, wait_timeout: Option<&str>) -> anyhow::Result<()> {
    check_invocation_id(id)?;
    let timeout = parse_wait_timeout(wait_timeout)?;
    let Some(view) =
        ctx.client.send::<InvocationView>(Call::get(format!("{INVOCATIONS}/{id}"))).await?
    else {
        return Ok(());
    };
    follow::follow(ctx, view, FollowOptions { stream: true, timeout }).await
}

async fn show(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    check_invocation_id(id)?;
    let Some(view) =
        ctx.client.send::<InvocationView>(Call::get(format!("{INVOCATIONS}/{id}"))).await?
    else {
        return Ok(());
    };
    ctx.out.object(&view, KIND, &view.id, || {
        print_invocation(&view);
        Ok(())
    })
}

fn print_invocation(view: &InvocationView) {
    output::fields(&[
        ("id", view.id.clone()),
        ("status", view.status.as_str().to_string()),
        ("tool", view.tool.clone()),
        ("workspace", view.workspace.clone()),
        ("args", view.args.to_string()),
        ("agent", output::or_dash(view.agent_id.as_deref())),
        ("created", view.created_at.clone()),
        ("created by", output::or_dash(view.created_by.as_deref())),
        ("dispatched", output::or_dash(view.dispatched_at.as_deref())),
        ("started", output::or_dash(view.started_at.as_deref())),
        ("finished", output::or_dash(view.finished_at.as_deref())),
        ("duration", follow::run_duration(view, wall_now())),
        ("exit code", view.exit_code.map_or_else(|| "-".into(), |c| c.to_string())),
        ("error", output::or_dash(view.error.as_deref())),
        (
            "credential generation",
            view.credential_generation.map_or_else(|| "-".into(), |g| g.to_string()),
        ),
        ("cancel requested", if view.cancel_requested { "yes" } else { "no" }.to_string()),
    ]);
    for (name, text, truncated) in [
        ("stdout", &view.stdout, view.stdout_truncated),
        ("stderr", &view.stderr, view.stderr_truncated),
    ] {
        if text.is_empty() {
            continue;
        }
        let note = if truncated { " (truncated)" } else { "" };
        println!("\n--- {name}{note} ---");
        print!("{text}");
        if !text.ends_with('\n') {
            println!();
        }
    }
}

const COLUMNS: [Column; 9] = [
    col("ID"),
    col("STATUS"),
    col("TOOL"),
    col("WORKSPACE"),
    col("AGENT"),
    col("CREATED"),
    col("DURATION"),
    wide("EXIT"),
    wide("CREATED_BY"),
];

async fn list(ctx: &Ctx, args: ExecListArgs) -> anyhow::Result<()> {
    if let Some(agent) = &args.agent
        && !agent.starts_with("agt_")
    {
        return Err(exit::usage(format!(
            "--agent {agent:?} is not an agent id (agt_…); see `xeroctl agents`"
        )));
    }
    let call = Call::get(INVOCATIONS)
        .query("limit", args.page.limit)
        .query("after", args.page.after)
        .query("status", args.status)
        .query("agent_id", args.agent)
        .query("workspace", args.workspace)
        .query("tool", args.tool);
    let Some(page) = ctx.client.send::<Page<InvocationView>>(call).await? else {
        return Ok(());
    };
    let now = wall_now();
    ctx.out.list(
        &page,
        KIND,
        &page.data,
        &COLUMNS,
        |i| i.id.clone(),
        |i| {
            vec![
                i.id.clone(),
                i.status.as_str().to_string(),
                i.tool.clone(),
                i.workspace.clone(),
                output::or_dash(i.agent_id.as_deref()),
                i.created_at.clone(),
                follow::run_duration(i, now),
                i.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
                output::or_dash(i.created_by.as_deref()),
            ]
        },
    )?;
    output::more_hint(page.next_after.as_deref());
    Ok(())
}

async fn cancel(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    check_invocation_id(id)?;
    ctx.confirm.confirm(
        &format!("cancel invocation {id}"),
        "If it runs, its agent kills the tool's process group; it cannot be resumed.",
    )?;
    let call = Call::post(format!("{INVOCATIONS}/{id}/cancel"), serde_json::json!({}));
    let view = match ctx.client.send::<InvocationView>(call).await {
        Ok(Some(view)) => view,
        Ok(None) => return Ok(()),
        Err(err) => {
            if let Some(api) = err.downcast_ref::<ApiError>()
                && api.code == "invocation_finished"
            {
                let hint = format!("`xeroctl exec show {id}` shows how it ended.");
                return Err(exit::hinted(api, hint));
            }
            return Err(err);
        }
    };
    if !ctx.out.is_text() {
        return ctx.out.object(&view, KIND, &view.id, || Ok(()));
    }
    if view.status.is_terminal() {
        println!("Cancelled invocation {} before it started; it will not run.", view.id);
    } else {
        println!(
            "Cancellation of invocation {} requested: agent {} kills the tool. \
             `xeroctl exec watch {}` shows when it has ended.",
            view.id,
            output::or_dash(view.agent_id.as_deref()),
            view.id
        );
    }
    Ok(())
}

/// Now, for showing how long a run took; the router decides every deadline.
#[expect(clippy::disallowed_methods, reason = "display only: a run's duration so far")]
fn wall_now() -> SystemTime {
    SystemTime::now()
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use serde_json::json;

    use super::*;

    #[test]
    fn args_default_to_an_empty_object() {
        assert_eq!(parse_args(None).unwrap(), json!({}));
    }

    #[test]
    fn inline_args_must_be_a_json_object() {
        assert_eq!(
            parse_args(Some(r#"{"namespace":"default","limit":5}"#)).unwrap(),
            json!({ "namespace": "default", "limit": 5 })
        );
        let err = format!("{:#}", parse_args(Some("{namespace: default}")).unwrap_err());
        assert!(err.starts_with("--args is not valid JSON: "), "{err}");
        let err = format!("{:#}", parse_args(Some(r#"["a"]"#)).unwrap_err());
        assert!(err.contains("must be a JSON object") && err.ends_with("not an array"), "{err}");
        let err = format!("{:#}", parse_args(Some("42")).unwrap_err());
        assert!(err.ends_with("not a number"), "{err}");
    }

    #[test]
    fn args_come_from_a_file_with_at() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(br#"{"selector": {"app": "web"}}"#).unwrap();
        let arg = format!("@{}", file.path().display());
        assert_eq!(parse_args(Some(&arg)).unwrap(), json!({ "selector": { "app": "web" } }));

        let mut bad = tempfile::NamedTempFile::new().unwrap();
        bad.write_all(b"null").unwrap();
        let arg = format!("@{}", bad.path().display());
        let err = format!("{:#}", parse_args(Some(&arg)).unwrap_err());
        assert!(err.starts_with(&format!("--args {arg} must be a JSON object")), "{err}");
    }

    #[test]
    fn a_missing_args_file_is_named() {
        let err = format!("{:#}", parse_args(Some("@/nonexistent/args.json")).unwrap_err());
        assert!(err.starts_with("--args @/nonexistent/args.json: cannot read the file"), "{err}");
        let err = format!("{:#}", parse_args(Some("@")).unwrap_err());
        assert!(err.contains("needs a file name"), "{err}");
    }

    #[test]
    fn wait_timeout_is_a_positive_duration() {
        assert_eq!(parse_wait_timeout(None).unwrap(), None);
        assert_eq!(parse_wait_timeout(Some("90s")).unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(parse_wait_timeout(Some("10m")).unwrap(), Some(Duration::from_secs(600)));
        assert!(parse_wait_timeout(Some("0s")).is_err());
        assert!(parse_wait_timeout(Some("soon")).is_err());
    }

    #[test]
    fn invocation_ids_are_checked_before_any_request() {
        assert!(check_invocation_id("inv_01").is_ok());
        let err = check_invocation_id("agt_01").unwrap_err().to_string();
        assert!(err.contains("xeroctl exec list"), "{err}");
    }

    fn api_error(status: u16, code: &str, param: Option<&str>) -> anyhow::Error {
        ApiError {
            status,
            code: code.into(),
            message: "refused".into(),
            param: param.map(str::to_string),
            request_id: "req_1".into(),
        }
        .into()
    }

    #[test]
    fn no_agent_available_points_at_the_fleet_and_the_pauses() {
        let err = explain_invoke_error(
            api_error(503, "no_agent_available", None),
            "kubectl-get",
            "kubernetes-prod",
        );
        let text = format!("{err:#}");
        assert!(
            text.starts_with("refused (no_agent_available, HTTP 503, request req_1)"),
            "{text}"
        );
        assert!(text.contains("nothing was queued"), "{text}");
        assert!(text.contains("`xeroctl agents`"), "{text}");
        assert!(text.contains("resume-exec"), "{text}");
    }

    #[test]
    fn invalid_arguments_names_the_argument() {
        let err = explain_invoke_error(
            api_error(400, "invalid_arguments", Some("args.namespace")),
            "kubectl-get",
            "kubernetes-prod",
        );
        let text = format!("{err:#}");
        assert!(text.contains("the argument at args.namespace"), "{text}");
        assert!(text.contains("xeroctl exec tool-show kubectl-get"), "{text}");
    }

    #[test]
    fn other_errors_pass_through_unchanged() {
        let err = explain_invoke_error(api_error(403, "scope_insufficient", None), "t", "w");
        assert_eq!(err.to_string(), "refused (scope_insufficient, HTTP 403, request req_1)");
        let err = explain_invoke_error(anyhow::anyhow!("cannot reach the router"), "t", "w");
        assert_eq!(err.to_string(), "cannot reach the router");
    }
}
