//! XEM configuration: flags, then `XEM_*` environment, then the flat YAML file
//! (`/etc/xerotier/xem.yaml`), then defaults. Every path is configurable so several XEMs can run
//! side by side.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::{Parser, Subcommand};
use secrecy::SecretString;
use tracing::level_filters::LevelFilter;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/xerotier/xem.yaml";

#[derive(Debug, Parser, Default)]
#[command(name = "xerotier-xem", version, about = "The Xerotier execution agent")]
pub struct XemArgs {
    /// Without a command, run the agent.
    #[command(subcommand)]
    pub command: Option<XemCommand>,
    /// Flat YAML config file [default: /etc/xerotier/xem.yaml when it exists].
    #[arg(long, env = "XEM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Router HTTP URL, for enrollment (e.g. http://router:8080).
    #[arg(long, env = "XEM_ROUTER_URL")]
    pub router_url: Option<String>,
    /// Single-use join key (needed only until this host is enrolled). Prefer --join-key-file:
    /// a value on the command line is visible to every user of the host.
    #[arg(long, env = "XEM_JOIN_KEY", hide_env_values = true)]
    pub join_key: Option<String>,
    /// File holding the join key (mode 0600); read only while the host is not enrolled.
    #[arg(long, env = "XEM_JOIN_KEY_FILE")]
    pub join_key_file: Option<PathBuf>,
    /// Name to register under [default: the host name].
    #[arg(long, env = "XEM_REGISTRATION_NAME")]
    pub registration_name: Option<String>,
    #[arg(long, env = "XEM_TOOLS_DIR")]
    pub tools_dir: Option<PathBuf>,
    #[arg(long, env = "XEM_CREDENTIALS_DIR")]
    pub credentials_dir: Option<PathBuf>,
    /// error, warn (or warning), info, debug or trace [default: info].
    #[arg(long, env = "XEM_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Reload a credential file as soon as a new version is renamed into place in
    /// credentials_dir (true/false) [default: false].
    #[arg(long, env = "XEM_CREDENTIALS_WATCH")]
    pub credentials_watch: Option<bool>,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9464) [default: off].
    #[arg(long, env = "XEM_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    #[arg(long, env = "XEM_LEASE_RENEWAL_INTERVAL_MS")]
    pub lease_renewal_interval_ms: Option<u64>,
    #[arg(long, env = "XEM_SHUTDOWN_GRACE_SECONDS")]
    pub shutdown_grace_seconds: Option<u64>,
    #[arg(long, env = "XEM_MAX_CONCURRENT_EXECUTIONS")]
    pub max_concurrent_executions: Option<u64>,
    #[arg(long, env = "XEM_SIGNING_KEY_PATH")]
    pub signing_key_path: Option<PathBuf>,
    #[arg(long, env = "XEM_CURVE_KEY_PATH")]
    pub curve_key_path: Option<PathBuf>,
    #[arg(long, env = "XEM_QUEUE_DB_PATH")]
    pub queue_db_path: Option<PathBuf>,
    #[arg(long, env = "XEM_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The unprivileged user tools run as [default: xerotier-tool].
    #[arg(long, env = "XEM_TOOL_USER")]
    pub tool_user: Option<String>,
    /// The tool runner [default: xerotier-tool-runner beside this executable].
    #[arg(long, env = "XEM_TOOL_RUNNER")]
    pub tool_runner: Option<PathBuf>,
    /// Parent of per-invocation directories, emptied at start [default: /run/xerotier-xem].
    #[arg(long, env = "XEM_RUN_DIR")]
    pub run_dir: Option<PathBuf>,
    /// Largest serialised arguments accepted, in bytes [default: 65536].
    #[arg(long, env = "XEM_MAX_ARGUMENT_BYTES")]
    pub max_argument_bytes: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum XemCommand {
    /// Reload the running agent's workspace credentials (SIGHUP) and wait for the outcome:
    /// exits 1 if any file was refused (its last good version stays in use). This is the
    /// systemd unit's ExecReload, so `systemctl reload xerotier-xem` reports a failed reload.
    Reload {
        /// The agent's pid [default: the pid file in state_dir].
        #[arg(long)]
        pid: Option<u32>,
        /// How long to wait for the agent's report.
        #[arg(long, default_value_t = 30)]
        timeout_seconds: u64,
    },
}

#[derive(Debug, Clone)]
pub struct XemConfig {
    pub router_url: Option<String>,
    /// Single-use enrollment secret: held as a secret, never logged or shown by `Debug`.
    pub join_key: Option<SecretString>,
    /// Where to read the join key from instead (only when enrollment is needed).
    pub join_key_file: Option<PathBuf>,
    pub registration_name: Option<String>,
    pub tools_dir: PathBuf,
    pub credentials_dir: PathBuf,
    pub log_level: LogLevel,
    /// Reload a credential file renamed into place in credentials_dir (inotify).
    pub credentials_watch: bool,
    /// Where `/metrics` is served; `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    pub lease_renewal_interval_ms: u64,
    pub shutdown_grace_seconds: u64,
    pub max_concurrent_executions: u64,
    pub signing_key_path: PathBuf,
    pub curve_key_path: PathBuf,
    pub queue_db_path: PathBuf,
    pub state_dir: PathBuf,
    pub tool_user: String,
    pub tool_runner: Option<PathBuf>,
    pub run_dir: PathBuf,
    pub max_argument_bytes: u64,
}

/// Arguments beyond this, serialised, are refused unless `max_argument_bytes` says otherwise
/// (the router's default limit is the same).
pub const DEFAULT_MAX_ARGUMENT_BYTES: u64 = xerotier_proto::invocation::MAX_ARGUMENT_BYTES as u64;
/// The ceiling for `max_argument_bytes`: a pipe write this size is still quick.
const MAX_ARGUMENT_BYTES_CEILING: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Value { key: &'static str, message: String },
}

/// The log levels the XEM takes: a level name, never a tracing filter directive (a word that
/// is not a level, e.g. `warning` read as a directive, would have silenced every log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const ACCEPTED: &str = "error, warn (or warning), info, debug, trace";

    pub fn filter(self) -> LevelFilter {
        match self {
            Self::Error => LevelFilter::ERROR,
            Self::Warn => LevelFilter::WARN,
            Self::Info => LevelFilter::INFO,
            Self::Debug => LevelFilter::DEBUG,
            Self::Trace => LevelFilter::TRACE,
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(Self::Error),
            "warn" | "warning" => Ok(Self::Warn),
            "info" => Ok(Self::Info),
            "debug" => Ok(Self::Debug),
            "trace" => Ok(Self::Trace),
            _ => Err(format!("unknown log level {text:?}; accepted: {}", Self::ACCEPTED)),
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        })
    }
}

const KNOWN_KEYS: [&str; 20] = [
    "router_url",
    "join_key",
    "join_key_file",
    "registration_name",
    "tools_dir",
    "credentials_dir",
    "log_level",
    "credentials_watch",
    "metrics_listen",
    "lease_renewal_interval_ms",
    "shutdown_grace_seconds",
    "max_concurrent_executions",
    "signing_key_path",
    "curve_key_path",
    "queue_db_path",
    "state_dir",
    "tool_user",
    "tool_runner",
    "run_dir",
    "max_argument_bytes",
];

/// The flat file: every value a scalar, every key known.
fn read_flat_yaml(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let file_error = |message: String| ConfigError::File { path: path.to_path_buf(), message };
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let value: serde_norway::Value =
        serde_norway::from_str(&text).map_err(|e| file_error(e.to_string()))?;
    let serde_norway::Value::Mapping(map) = value else {
        return Err(file_error("expected a mapping of keys to values".into()));
    };
    let mut out = BTreeMap::new();
    for (key, value) in map {
        let serde_norway::Value::String(key) = key else {
            return Err(file_error("keys must be strings".into()));
        };
        if !KNOWN_KEYS.contains(&key.as_str()) {
            return Err(file_error(format!(
                "unknown key {key:?} (known: {})",
                KNOWN_KEYS.join(", ")
            )));
        }
        let text = match value {
            serde_norway::Value::String(s) => s,
            serde_norway::Value::Number(n) => n.to_string(),
            serde_norway::Value::Bool(b) => b.to_string(),
            serde_norway::Value::Null => continue,
            _ => {
                return Err(file_error(format!(
                    "key {key:?} has a nested value; the XEM config takes flat scalar keys only"
                )));
            }
        };
        out.insert(key, text);
    }
    Ok(out)
}

fn number(file: &BTreeMap<String, String>, key: &'static str) -> Result<Option<u64>, ConfigError> {
    file.get(key)
        .map(|v| {
            v.parse::<u64>().map_err(|_| ConfigError::Value {
                key,
                message: format!("expected a whole number, got {v:?}"),
            })
        })
        .transpose()
}

fn boolean(
    file: &BTreeMap<String, String>,
    key: &'static str,
) -> Result<Option<bool>, ConfigError> {
    file.get(key)
        .map(|v| match v.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(ConfigError::Value {
                key,
                message: format!("expected true or false, got {v:?}"),
            }),
        })
        .transpose()
}

fn log_level(text: Option<String>) -> Result<LogLevel, ConfigError> {
    match text {
        Some(text) => {
            text.parse().map_err(|message| ConfigError::Value { key: "log_level", message })
        }
        None => Ok(LogLevel::Info),
    }
}

/// `host:port`; an empty value, like no value, serves no metrics.
fn listen_address(text: Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else { return Ok(None) };
    text.trim().parse().map(Some).map_err(|_| ConfigError::Value {
        key: "metrics_listen",
        message: format!("expected an address and port like 127.0.0.1:9464, got {text:?}"),
    })
}

impl XemConfig {
    pub fn resolve(args: XemArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_flat_yaml(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                read_flat_yaml(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => BTreeMap::new(),
        };
        let text = |key: &str| file.get(key).cloned();
        let path = |key: &str| file.get(key).map(PathBuf::from);
        let state_dir = args
            .state_dir
            .or(path("state_dir"))
            .unwrap_or_else(|| "/var/lib/xerotier/state".into());
        let config = Self {
            router_url: args.router_url.or(text("router_url")),
            join_key: args
                .join_key
                .or(text("join_key"))
                .filter(|k| !k.trim().is_empty())
                .map(SecretString::from),
            join_key_file: args.join_key_file.or(path("join_key_file")),
            registration_name: args.registration_name.or(text("registration_name")),
            tools_dir: args
                .tools_dir
                .or(path("tools_dir"))
                .unwrap_or_else(|| "/etc/xerotier/tools".into()),
            credentials_dir: args
                .credentials_dir
                .or(path("credentials_dir"))
                .unwrap_or_else(|| "/var/lib/xerotier/credentials".into()),
            log_level: log_level(args.log_level.or(text("log_level")))?,
            credentials_watch: args
                .credentials_watch
                .or(boolean(&file, "credentials_watch")?)
                .unwrap_or(false),
            metrics_listen: listen_address(args.metrics_listen.or(text("metrics_listen")))?,
            lease_renewal_interval_ms: args
                .lease_renewal_interval_ms
                .or(number(&file, "lease_renewal_interval_ms")?)
                .unwrap_or(10_000),
            shutdown_grace_seconds: args
                .shutdown_grace_seconds
                .or(number(&file, "shutdown_grace_seconds")?)
                .unwrap_or(30),
            max_concurrent_executions: args
                .max_concurrent_executions
                .or(number(&file, "max_concurrent_executions")?)
                .unwrap_or(20),
            signing_key_path: args
                .signing_key_path
                .or(path("signing_key_path"))
                .unwrap_or_else(|| "/var/lib/xerotier/agent-signing-key.hex".into()),
            curve_key_path: args
                .curve_key_path
                .or(path("curve_key_path"))
                .unwrap_or_else(|| "/var/lib/xerotier/agent-curve-key.hex".into()),
            queue_db_path: args
                .queue_db_path
                .or(path("queue_db_path"))
                .unwrap_or_else(|| state_dir.join("queue.db")),
            state_dir,
            tool_user: args
                .tool_user
                .or(text("tool_user"))
                .unwrap_or_else(|| "xerotier-tool".into()),
            tool_runner: args.tool_runner.or(path("tool_runner")),
            run_dir: args.run_dir.or(path("run_dir")).unwrap_or_else(|| "/run/xerotier-xem".into()),
            max_argument_bytes: args
                .max_argument_bytes
                .or(number(&file, "max_argument_bytes")?)
                .unwrap_or(DEFAULT_MAX_ARGUMENT_BYTES),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(100..=600_000).contains(&self.lease_renewal_interval_ms) {
            return Err(ConfigError::Value {
                key: "lease_renewal_interval_ms",
                message: "must be 100..=600000".into(),
            });
        }
        if self.max_concurrent_executions == 0 {
            return Err(ConfigError::Value {
                key: "max_concurrent_executions",
                message: "must be at least 1".into(),
            });
        }
        if let Some(url) = &self.router_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Value {
                key: "router_url",
                message: format!("must be an http(s) URL, got {url:?}"),
            });
        }
        if !(1024..=MAX_ARGUMENT_BYTES_CEILING).contains(&self.max_argument_bytes) {
            return Err(ConfigError::Value {
                key: "max_argument_bytes",
                message: format!("must be 1024..={MAX_ARGUMENT_BYTES_CEILING}"),
            });
        }
        if self.tool_user.is_empty() {
            return Err(ConfigError::Value {
                key: "tool_user",
                message: "must name an unprivileged user".into(),
            });
        }
        if !self.run_dir.is_absolute() {
            return Err(ConfigError::Value {
                key: "run_dir",
                message: "must be an absolute path".into(),
            });
        }
        if self.join_key.is_some() && self.join_key_file.is_some() {
            return Err(ConfigError::Value {
                key: "join_key_file",
                message: "give join_key or join_key_file, not both".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xem.yaml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let (_dir, path) = write(
            "router_url: http://router:8080\nlease_renewal_interval_ms: 2000\nstate_dir: /srv/xem\n",
        );
        let args = XemArgs {
            config: Some(path),
            lease_renewal_interval_ms: Some(500),
            ..Default::default()
        };
        let config = XemConfig::resolve(args).unwrap();
        assert_eq!(config.router_url.as_deref(), Some("http://router:8080"));
        assert_eq!(config.lease_renewal_interval_ms, 500);
        assert_eq!(config.queue_db_path, PathBuf::from("/srv/xem/queue.db"));
        assert_eq!(config.shutdown_grace_seconds, 30);
        assert_eq!(config.max_concurrent_executions, 20);
    }

    #[test]
    fn nested_values_and_unknown_keys_are_refused() {
        let (_dir, path) = write("router_url:\n  host: router\n");
        let err =
            XemConfig::resolve(XemArgs { config: Some(path), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("flat scalar keys only"), "{err}");
        let (_dir, path) = write("routr_url: http://x\n");
        let err =
            XemConfig::resolve(XemArgs { config: Some(path), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("unknown key \"routr_url\""), "{err}");
    }

    #[test]
    fn bad_numbers_are_refused() {
        let (_dir, path) = write("lease_renewal_interval_ms: soon\n");
        let err =
            XemConfig::resolve(XemArgs { config: Some(path), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("lease_renewal_interval_ms"), "{err}");
    }

    fn resolve_text(text: &str) -> Result<XemConfig, ConfigError> {
        let (_dir, path) = write(text);
        XemConfig::resolve(XemArgs { config: Some(path), ..Default::default() })
    }

    #[test]
    fn log_levels_are_level_names_or_refused() {
        for (text, level) in [
            ("warning", LogLevel::Warn),
            ("WARN", LogLevel::Warn),
            ("Error", LogLevel::Error),
            ("info", LogLevel::Info),
            ("debug", LogLevel::Debug),
            ("TRACE", LogLevel::Trace),
        ] {
            assert_eq!(resolve_text(&format!("log_level: {text}\n")).unwrap().log_level, level);
        }
        assert_eq!(resolve_text("").unwrap().log_level, LogLevel::Info);
        // `notice` (syslog) and a tracing directive were both read as a target name before,
        // which silenced every log line.
        for bogus in ["notice", "bogus", "xerotier_xem=debug", "off", "\"\""] {
            let err = resolve_text(&format!("log_level: {bogus}\n")).unwrap_err().to_string();
            assert!(
                err.contains("log_level") && err.contains(LogLevel::ACCEPTED),
                "{bogus}: {err}"
            );
        }
        let args = XemArgs { log_level: Some("verbose".into()), ..Default::default() };
        assert!(XemConfig::resolve(args).unwrap_err().to_string().contains("\"verbose\""));
    }

    #[test]
    fn the_watch_and_metrics_are_off_unless_configured() {
        let config = resolve_text("").unwrap();
        assert!(!config.credentials_watch && config.metrics_listen.is_none());
        let config =
            resolve_text("credentials_watch: true\nmetrics_listen: 127.0.0.1:9464\n").unwrap();
        assert!(config.credentials_watch);
        assert_eq!(config.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        let err = resolve_text("credentials_watch: yes please\n").unwrap_err().to_string();
        assert!(err.contains("credentials_watch") && err.contains("true or false"), "{err}");
        let err = resolve_text("metrics_listen: localhost\n").unwrap_err().to_string();
        assert!(err.contains("metrics_listen") && err.contains("127.0.0.1:9464"), "{err}");
        assert!(resolve_text("metrics_listen: ''\n").unwrap().metrics_listen.is_none());
    }
}
