//! Router configuration: flags, then `XEROTIER_ROUTER_*` environment, then the YAML file given
//! with `--config`, then defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(name = "xerotier-router", version, about = "The Xerotier control plane")]
pub struct RouterArgs {
    /// YAML file with any of the settings below (flags and environment win over it).
    #[arg(long, env = "XEROTIER_ROUTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080]; port 0 picks a free port.
    #[arg(long, env = "XEROTIER_ROUTER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the SQLite store, keys and bootstrap.key [default: /var/lib/xerotier/router].
    #[arg(long, env = "XEROTIER_ROUTER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// `postgres://…` to share state between replicas [default: SQLite in the state dir].
    #[arg(long, env = "XEROTIER_ROUTER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Log output format [default: text].
    #[arg(long, env = "XEROTIER_ROUTER_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `xerotier_router=debug` [default: info].
    #[arg(long, env = "XEROTIER_ROUTER_LOG_LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    state_dir: Option<PathBuf>,
    database_url: Option<String>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub database_url: Option<String>,
    pub log_format: LogFormat,
    pub log_level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: serde_norway::Error },
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/xerotier/router";

impl RouterConfig {
    pub fn resolve(args: RouterArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let default_listen = SocketAddr::from(([127, 0, 0, 1], 8080));
        Ok(Self {
            listen: args.listen.or(file.listen).unwrap_or(default_listen),
            state_dir: args
                .state_dir
                .or(file.state_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            database_url: args.database_url.or(file.database_url),
            log_format: args.log_format.or(file.log_format).unwrap_or(LogFormat::Text),
            log_level: args.log_level.or(file.log_level).unwrap_or_else(|| "info".to_string()),
        })
    }

    /// The store URL: the given one, or the SQLite file in the state dir.
    pub fn store_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!("sqlite://{}?mode=rwc", self.state_dir.join("router.db").display())
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_norway::from_str(&text)
        .map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RouterArgs {
        let mut argv = vec!["xerotier-router"];
        argv.extend_from_slice(extra);
        RouterArgs::try_parse_from(argv).unwrap()
    }

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("router.yaml");
        std::fs::write(&file, "listen: 127.0.0.1:9000\nstate_dir: /srv/router\nlog_format: json\n")
            .unwrap();
        let config = RouterConfig::resolve(args(&[
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:7000",
        ]))
        .unwrap();
        assert_eq!(config.listen.port(), 7000);
        assert_eq!(config.state_dir, PathBuf::from("/srv/router"));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.log_level, "info");
        assert!(config.store_url().starts_with("sqlite:///srv/router/router.db"));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("router.yaml");
        std::fs::write(&file, "listne: 127.0.0.1:9000\n").unwrap();
        let err = RouterConfig::resolve(args(&["--config", file.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("unknown field `listne`"), "{err}");
    }

    #[test]
    fn defaults_apply_without_flags_or_file() {
        let config = RouterConfig::resolve(args(&[])).unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    }
}
