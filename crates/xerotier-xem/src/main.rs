use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use xerotier_core::{OsEntropy, SystemClock};
use xerotier_xem::agent::{self, Deps, Exit};
use xerotier_xem::config::{XemArgs, XemCommand, XemConfig};
use xerotier_xem::reload;

/// Exit status when the router revoked this agent (systemd should not restart it blindly).
const EXIT_REVOKED: u8 = 3;

fn main() -> ExitCode {
    let mut args = XemArgs::parse();
    let command = args.command.take();
    let config = match XemConfig::resolve(args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("xerotier-xem: invalid configuration: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(XemCommand::Reload { pid, timeout_seconds }) = command {
        return reload(&config, pid, timeout_seconds);
    }
    // `log_level` is a level name; a tracing filter (per-target levels, for a diagnosis or the
    // benchmark's invocation timeline) comes only from XEM_LOG_FILTER, and a bad one stops the
    // start like a bad level does.
    let filter = match std::env::var("XEM_LOG_FILTER") {
        Ok(directives) if !directives.trim().is_empty() => {
            match tracing_subscriber::EnvFilter::try_new(&directives) {
                Ok(filter) => filter,
                Err(err) => {
                    eprintln!("xerotier-xem: invalid configuration: XEM_LOG_FILTER: {err}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => tracing_subscriber::EnvFilter::new(config.log_level.filter().to_string()),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(runtime) => runtime,
            Err(err) => {
                eprintln!("xerotier-xem: {err}");
                return ExitCode::FAILURE;
            }
        };
    let (state_dir, curve_key_path) = (config.state_dir.clone(), config.curve_key_path.clone());
    // The one place the real clock and the OS's randomness are wired in.
    let deps = Deps { clock: Arc::new(SystemClock), entropy: Arc::new(OsEntropy) };
    match runtime.block_on(agent::run(config, deps)) {
        Ok(Exit::Stopped) => ExitCode::SUCCESS,
        Ok(Exit::Revoked(reason)) => {
            tracing::error!(%reason, "credentials revoked");
            if let Err(err) = xerotier_xem::identity::retire(&state_dir, &curve_key_path) {
                eprintln!("xerotier-xem: could not retire the revoked identity: {err:#}");
            }
            eprintln!(
                "xerotier-xem: this agent's credentials were revoked ({reason}). It must re-enroll: \
                 configure a new join_key and start it again (a fresh CURVE key is generated)."
            );
            ExitCode::from(EXIT_REVOKED)
        }
        Err(err) => {
            eprintln!("xerotier-xem: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `xerotier-xem reload`: 0 when every credential file was reloaded, 1 when any was refused,
/// 2 when the agent could not be asked or did not answer.
fn reload(config: &XemConfig, pid: Option<u32>, timeout_seconds: u64) -> ExitCode {
    let timeout = std::time::Duration::from_secs(timeout_seconds);
    // A small runtime of its own: the wait for the daemon's report is a tokio timeout.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("xerotier-xem: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(reload::request(&config.state_dir, pid, timeout)) {
        Ok(report) => {
            for line in reload::summary(&report) {
                println!("{line}");
            }
            if report.ok {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "xerotier-xem: credential reload FAILED for some files; fix them and reload again"
                );
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("xerotier-xem: {err:#}");
            ExitCode::from(2)
        }
    }
}
