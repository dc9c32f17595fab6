use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use secrecy::ExposeSecret;
use tracing_subscriber::EnvFilter;
use xerotier_core::{OsEntropy, SharedEntropy};
use xerotier_router::config::{LogFormat, RouterArgs, RouterCommand, RouterConfig};
use xerotier_router::master_key::{EXIT_MASTER_KEY, MasterKeyFailure, is_master_key_failure};
use xerotier_seal::{MasterKey, Sealer};
use xerotier_store::{Store, redact_url};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "router failed");
            eprintln!("xerotier-router: {err:#}");
            if is_master_key_failure(&err) {
                ExitCode::from(EXIT_MASTER_KEY)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = RouterArgs::parse();
    match args.command.take() {
        Some(RouterCommand::Rewrap { old_master_key_file, new_master_key_file }) => {
            let url = xerotier_router::config::offline_store_url(&args)?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(rewrap(url, &old_master_key_file, &new_master_key_file))
        }
        Some(RouterCommand::NewMasterKey { path }) => {
            let key = MasterKey::create_file(&path, &OsEntropy).map_err(MasterKeyFailure::File)?;
            println!("master key {} written to {} (0600)", key.id(), path.display());
            Ok(())
        }
        None => serve(args),
    }
}

fn serve(args: RouterArgs) -> anyhow::Result<()> {
    let config = RouterConfig::resolve(args)?;
    let filter = EnvFilter::try_new(&config.log_level)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {:?}: {e}", config.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(xerotier_router::server::run(config))
}

/// `xerotier-router rewrap`: every sealed secret from the old master key to the new one, in
/// one transaction, with the store's SQLite lock held (no router may be running on it).
async fn rewrap(
    url: secrecy::SecretString,
    old: &std::path::Path,
    new: &std::path::Path,
) -> anyhow::Result<()> {
    let old = MasterKey::load(old).map_err(MasterKeyFailure::File).context("the old master key")?;
    let new = MasterKey::load(new).map_err(MasterKeyFailure::File).context("the new master key")?;
    let url = url.expose_secret();
    let _owner = xerotier_router::server::lock_sqlite_store(url)?;
    let store = Store::connect(url)
        .await
        .with_context(|| format!("opening the state store {}", redact_url(url)))?;
    let entropy: SharedEntropy = std::sync::Arc::new(OsEntropy);
    let (old, new) = (Sealer::new(old, entropy.clone()), Sealer::new(new, entropy));
    let result = xerotier_router::rewrap::rewrap(&store, &old, &new).await;
    store.close().await;
    let report = result?;
    for done in &report.columns {
        println!(
            "{}.{}: {} of {} values rewrapped",
            done.column.table, done.column.sealed, done.changed, done.rows
        );
    }
    if report.were_clear > 0 {
        println!(
            "{} of them were stored in clear by an older router, now sealed",
            report.were_clear
        );
    }
    println!("sealed under master key {} (was {})", new.kek_id(), old.kek_id());
    Ok(())
}
