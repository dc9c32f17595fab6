//! `xeroctl`: the operator CLI.

mod cli;
mod client;
mod commands;
mod output;
mod settings;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::client::Client;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => match err.downcast_ref::<commands::Exit>() {
            // The outcome was already reported; only the status is left to give.
            Some(commands::Exit(code)) => ExitCode::from(*code),
            None => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli { global, command } = cli;
    match command {
        Command::Completion { shell } => {
            commands::completion::run(shell);
            Ok(())
        }
        Command::Config { command } => commands::config::run(&global, command),
        Command::Keys(args) => with_client(&global, |client| async move {
            commands::keys::run(&client, global.output, args.command, args.list).await
        }),
        Command::Agents(args) => with_client(&global, |client| async move {
            commands::agents::run(&client, global.output, args).await
        }),
        Command::Exec { command } => with_client(&global, |client| async move {
            commands::exec::run(&client, global.output, command).await
        }),
        Command::Audit(args) => with_client(&global, |client| async move {
            commands::audit::run(&client, global.output, args).await
        }),
    }
}

fn with_client<F, Fut>(global: &cli::GlobalArgs, body: F) -> anyhow::Result<()>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let target = settings::resolve(global)?;
    let client = Client::new(target, global.dry_run, global.output)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(body(client))
}
