//! `xeroctl`: the operator CLI.

mod cli;
mod client;
mod commands;
mod confirm;
mod exit;
mod fetch_ca;
mod output;
mod settings;
mod sse;
mod times;
mod tls;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::client::Client;
use crate::commands::Ctx;
use crate::confirm::Confirmation;
use crate::output::Printer;

fn main() -> ExitCode {
    // Usage errors end here with clap's status 2 (exit::USAGE).
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        Err(err) => {
            if !exit::is_reported(&err) {
                eprintln!("error: {err:#}");
            }
            ExitCode::from(exit::code(&err))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli { global, command } = cli;
    let out = Printer::new(global.output, global.no_headers);
    let confirm = Confirmation { assume_yes: global.yes, dry_run: global.dry_run };
    match command {
        Command::Completion { shell } => {
            commands::completion::run(shell);
            Ok(())
        }
        Command::Config { command } => commands::config::run(&global, out, confirm, command),
        Command::Keys(args) => with_ctx(&global, out, confirm, |ctx| async move {
            commands::keys::run(&ctx, args.command, args.list).await
        }),
        Command::Agents(args) => {
            with_ctx(
                &global,
                out,
                confirm,
                |ctx| async move { commands::agents::run(&ctx, args).await },
            )
        }
        Command::Exec { command } => with_ctx(&global, out, confirm, |ctx| async move {
            commands::exec::run(&ctx, command).await
        }),
        Command::Router { command } => with_ctx(&global, out, confirm, |ctx| async move {
            commands::router::run(&ctx, command).await
        }),
        Command::Credentials(args) => with_ctx(&global, out, confirm, |ctx| async move {
            commands::credentials::run(&ctx, args).await
        }),
        Command::Webhooks(args) => with_ctx(&global, out, confirm, |ctx| async move {
            commands::webhooks::run(&ctx, args).await
        }),
        Command::Operations(args) => with_ctx(&global, out, confirm, |ctx| async move {
            commands::operations::run(&ctx, args).await
        }),
        Command::Audit(args) => {
            with_ctx(
                &global,
                out,
                confirm,
                |ctx| async move { commands::audit::run(&ctx, args).await },
            )
        }
    }
}

fn with_ctx<F, Fut>(
    global: &cli::GlobalArgs,
    out: Printer,
    confirm: Confirmation,
    body: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let target = settings::resolve(global)?;
    let client = Client::new(target, global.dry_run, out)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(body(Ctx { client, out, confirm }))
}
