//! Router configuration: flags, then `XEROTIER_ROUTER_*` environment, then the YAML file given
//! with `--config`, then defaults.

use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde::Deserialize;

use xerotier_posture::{CredentialKind, Overrides, PolicyConfig, Profile, parse_duration};
use xerotier_tls::CertSource;

use crate::fleet::FleetSettings;
use crate::request_limits::RequestLimits;
use crate::webhooks::settings::{DeliveryEntry, WebhookConfigError, WebhookEntry, WebhookSettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A database URL as given: it may carry a password, so its `Debug` is the redacted URL.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", xerotier_store::redact_url(&self.0))
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_string()))
    }
}

impl DatabaseUrl {
    fn into_secret(self) -> SecretString {
        SecretString::from(self.0)
    }
}

/// What to do instead of serving.
#[derive(Debug, clap::Subcommand)]
pub enum RouterCommand {
    /// Re-encrypt every sealed secret in the store under a new master key, offline (every
    /// router on the store stopped), in one transaction; refuses, changing nothing, unless the
    /// old key opens every value.
    Rewrap {
        /// The master key the store's secrets are sealed under now.
        #[arg(long)]
        old_master_key_file: PathBuf,
        /// The master key to seal them under (`xerotier-router new-master-key PATH` makes one).
        #[arg(long)]
        new_master_key_file: PathBuf,
    },
    /// Write a new random master key to PATH (0600; never over an existing file).
    NewMasterKey {
        /// Where to write it.
        path: PathBuf,
    },
}

#[derive(Debug, Parser)]
#[command(name = "xerotier-router", version, about = "The Xerotier control plane")]
pub struct RouterArgs {
    #[command(subcommand)]
    pub command: Option<RouterCommand>,
    /// YAML file with any of the settings below (flags and environment win over it).
    #[arg(long, env = "XEROTIER_ROUTER_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// File holding the master key the router's secrets are sealed under in the store: 64 hex
    /// characters (32 random bytes), mode 0600, owned by the router's user [default: the
    /// systemd credential `xerotier-master-key`, `$CREDENTIALS_DIRECTORY/xerotier-master-key`].
    #[arg(long, env = "XEROTIER_ROUTER_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080]; port 0 picks a free port.
    #[arg(long, env = "XEROTIER_ROUTER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the SQLite store, keys and bootstrap.key [default: /var/lib/xerotier/router].
    #[arg(long, env = "XEROTIER_ROUTER_STATE_DIR", global = true)]
    pub state_dir: Option<PathBuf>,
    /// `postgres://…` to share state between replicas [default: SQLite in the state dir].
    #[arg(long, env = "XEROTIER_ROUTER_DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<DatabaseUrl>,
    /// Log output format [default: text].
    #[arg(long, env = "XEROTIER_ROUTER_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `xerotier_router=debug` [default: info].
    #[arg(long, env = "XEROTIER_ROUTER_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// CURVE mesh endpoint [default: tcp://127.0.0.1:5555]; port 0 picks a free port.
    #[arg(long, env = "XEROTIER_ROUTER_MESH_BIND")]
    pub mesh_bind: Option<String>,
    /// Mesh address written into join keys when none is given [default: the bound endpoint].
    #[arg(long, env = "XEROTIER_ROUTER_MESH_PUBLIC_ADDR")]
    pub mesh_public_addr: Option<String>,
    /// Longest join key lifetime the router issues, in seconds [default: 86400].
    #[arg(long, env = "XEROTIER_ROUTER_JOIN_KEY_MAX_TTL_SECONDS")]
    pub join_key_max_ttl_seconds: Option<u64>,
    /// Join key lifetime when none is asked for, in seconds [default: 600].
    #[arg(long, env = "XEROTIER_ROUTER_JOIN_KEY_DEFAULT_TTL_SECONDS")]
    pub join_key_default_ttl_seconds: Option<u64>,
    /// Role of agents whose join key names none: inference or execution [default: execution].
    #[arg(long, env = "XEROTIER_ROUTER_DEFAULT_AGENT_ROLE")]
    pub default_agent_role: Option<String>,
    /// How long a CURVE rotation waits for the agent's signed acknowledgement [default: 30].
    #[arg(long, env = "XEROTIER_ROUTER_CURVE_ROTATION_ACK_TIMEOUT_SECONDS")]
    pub curve_rotation_ack_timeout_seconds: Option<u64>,
    /// How long the mesh key a completed rotation replaced stays accepted by the signed key
    /// fetch of agents that missed the rotation (`s`, `m`, `h`, `d`) [default: 7d].
    #[arg(long, env = "XEROTIER_ROUTER_MESH_KEY_OVERLAP")]
    pub mesh_key_overlap: Option<String>,
    /// Each agent's control frames per second on the mesh; past it they are dropped [default: 200].
    #[arg(long, env = "XEROTIER_ROUTER_MESH_AGENT_FRAMES_PER_SECOND")]
    pub mesh_agent_frames_per_second: Option<u32>,
    /// Each agent's control frames at once (burst) [default: 400].
    #[arg(long, env = "XEROTIER_ROUTER_MESH_AGENT_FRAME_BURST")]
    pub mesh_agent_frame_burst: Option<u32>,
    /// How long an agent that floods the mesh is silenced, in seconds [default: 30].
    #[arg(long, env = "XEROTIER_ROUTER_MESH_FLOOD_COOLDOWN_SECONDS")]
    pub mesh_flood_cooldown_seconds: Option<u64>,
    /// PEM certificate chain to serve, server certificate first (with --tls-key); re-read on
    /// SIGHUP [default: a server certificate from the router's own CA in <state-dir>/tls/].
    #[arg(long, env = "XEROTIER_ROUTER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (not readable by every user).
    #[arg(long, env = "XEROTIER_ROUTER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// More names (DNS names or IP addresses, comma-separated or repeated) for the generated
    /// server certificate; localhost, 127.0.0.1 and the listen address are always in it.
    #[arg(long = "tls-san", env = "XEROTIER_ROUTER_TLS_SAN", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// Serve plain HTTP instead of HTTPS; refused unless --listen is a loopback address (API
    /// keys and join keys would cross the network in clear text).
    #[arg(long, env = "XEROTIER_ROUTER_INSECURE_HTTP")]
    pub insecure_http: bool,
    /// Failed authentications one source address may make per minute, sustained; past it
    /// (and the burst) its requests are refused with 429 until it may try again [default: 60].
    #[arg(long, env = "XEROTIER_ROUTER_AUTH_FAILURES_PER_MINUTE")]
    pub auth_failures_per_minute: Option<u32>,
    /// Failed authentications one source address may make at once [default: 50].
    #[arg(long, env = "XEROTIER_ROUTER_AUTH_FAILURE_BURST")]
    pub auth_failure_burst: Option<u32>,
    /// Live event streams (SSE) one API key may hold open at once [default: 8].
    #[arg(long, env = "XEROTIER_ROUTER_MAX_EVENT_STREAMS_PER_KEY")]
    pub max_event_streams_per_key: Option<u32>,
    /// The URL clients reach this replica's API at, as shown in the replica registry
    /// (`xeroctl router replicas`) [default: https://<bound listen address>].
    #[arg(long, env = "XEROTIER_ROUTER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How long this replica's lease on a shared PostgreSQL lasts, in milliseconds: cut off (or
    /// stalled) longer than this, it fences itself; a revoke waits at most about this long for
    /// a replica that stopped answering [default: 6000; 1000-60000].
    #[arg(long, env = "XEROTIER_ROUTER_REPLICA_LEASE_MS")]
    pub replica_lease_ms: Option<u64>,
    /// Compliance profile the credential posture is judged by (pci-dss-4, hipaa,
    /// fedramp-moderate, fedramp-high, cis-cloud); wins over `credential_policy.profile`
    /// [default: none, SPEC 3.6's table].
    #[arg(long, env = "XEROTIER_ROUTER_CREDENTIAL_PROFILE")]
    pub credential_profile: Option<String>,
}

/// `credential_policy:` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialPolicyFile {
    profile: Option<String>,
    max_age: Option<MaxAgeFile>,
    due_soon: Option<String>,
    join_key_max_unconsumed: Option<String>,
    cryptoperiod_ref: Option<String>,
    /// How often the posture monitor runs (e.g. `60s`).
    monitor_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaxAgeFile {
    api_key: Option<String>,
    curve_key: Option<String>,
    workspace_credential: Option<String>,
    router_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    state_dir: Option<PathBuf>,
    database_url: Option<DatabaseUrl>,
    master_key_file: Option<PathBuf>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    mesh_bind: Option<String>,
    mesh_public_addr: Option<String>,
    join_key_max_ttl_seconds: Option<u64>,
    join_key_default_ttl_seconds: Option<u64>,
    default_agent_role: Option<String>,
    curve_rotation_ack_timeout_seconds: Option<u64>,
    mesh_key_overlap: Option<String>,
    mesh_agent_frames_per_second: Option<u32>,
    mesh_agent_frame_burst: Option<u32>,
    mesh_flood_cooldown_seconds: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_san: Option<Vec<String>>,
    insecure_http: Option<bool>,
    auth_failures_per_minute: Option<u32>,
    auth_failure_burst: Option<u32>,
    max_event_streams_per_key: Option<u32>,
    public_url: Option<String>,
    replica_lease_ms: Option<u64>,
    credential_policy: Option<CredentialPolicyFile>,
    /// Outbound webhooks for security events (config file only: a secret file per webhook).
    #[serde(default)]
    webhooks: Vec<WebhookEntry>,
    #[serde(default)]
    webhook_delivery: DeliveryEntry,
}

/// How the API is served.
#[derive(Debug, Clone)]
pub enum HttpMode {
    Tls(CertSource),
    /// `--insecure-http`, loopback only.
    Insecure,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Where the master key is, if it was given or systemd passed the credential; the router
    /// refuses to start without one.
    pub master_key: Option<MasterKeySource>,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    /// May carry a password: held as a secret, shown only through `redact_url`.
    pub database_url: Option<SecretString>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub fleet: FleetSettings,
    pub http: HttpMode,
    pub limits: RequestLimits,
    /// Where clients reach this replica, for the registry; `None`: the bound address.
    pub public_url: Option<String>,
    /// Outbound webhooks, checked and with their secrets read.
    pub webhooks: WebhookSettings,
    /// The `--config` file, which SIGHUP re-reads the webhooks from ([`webhooks_from_file`]).
    pub config_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: serde_norway::Error },
    #[error("invalid setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
    #[error("invalid webhooks setting: {0}")]
    Webhooks(#[from] WebhookConfigError),
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/xerotier/router";

impl RouterConfig {
    pub fn resolve(args: RouterArgs) -> Result<Self, ConfigError> {
        let config_file = args.config.clone();
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let default_listen = SocketAddr::from(([127, 0, 0, 1], 8080));
        let defaults = FleetSettings::default();
        let fleet = FleetSettings {
            mesh_bind: args.mesh_bind.or(file.mesh_bind).unwrap_or(defaults.mesh_bind),
            mesh_public_addr: args.mesh_public_addr.or(file.mesh_public_addr),
            join_key_max_ttl_seconds: args
                .join_key_max_ttl_seconds
                .or(file.join_key_max_ttl_seconds)
                .unwrap_or(defaults.join_key_max_ttl_seconds),
            join_key_default_ttl_seconds: args
                .join_key_default_ttl_seconds
                .or(file.join_key_default_ttl_seconds)
                .unwrap_or(defaults.join_key_default_ttl_seconds),
            default_agent_role: args
                .default_agent_role
                .or(file.default_agent_role)
                .unwrap_or(defaults.default_agent_role),
            curve_rotation_ack_timeout_ms: args
                .curve_rotation_ack_timeout_seconds
                .or(file.curve_rotation_ack_timeout_seconds)
                .map(|s| s.saturating_mul(1000))
                .unwrap_or(defaults.curve_rotation_ack_timeout_ms),
            mesh_agent_frames_per_second: args
                .mesh_agent_frames_per_second
                .or(file.mesh_agent_frames_per_second)
                .unwrap_or(defaults.mesh_agent_frames_per_second),
            mesh_agent_frame_burst: args
                .mesh_agent_frame_burst
                .or(file.mesh_agent_frame_burst)
                .unwrap_or(defaults.mesh_agent_frame_burst),
            mesh_flood_cooldown_ms: args
                .mesh_flood_cooldown_seconds
                .or(file.mesh_flood_cooldown_seconds)
                .map(|s| s.saturating_mul(1000))
                .unwrap_or(defaults.mesh_flood_cooldown_ms),
            replica_lease_ms: args
                .replica_lease_ms
                .or(file.replica_lease_ms)
                .unwrap_or(defaults.replica_lease_ms),
            ..defaults
        };
        let (credential_policy, posture_interval_ms) =
            credential_policy(args.credential_profile, file.credential_policy.unwrap_or_default())?;
        let mesh_key_overlap_ms = match args.mesh_key_overlap.or(file.mesh_key_overlap) {
            Some(text) => mesh_key_overlap(&text)?,
            None => fleet.mesh_key_overlap_ms,
        };
        let fleet =
            FleetSettings { credential_policy, posture_interval_ms, mesh_key_overlap_ms, ..fleet };
        validate_fleet(&fleet)?;
        let listen = args.listen.or(file.listen).unwrap_or(default_listen);
        let state_dir =
            args.state_dir.or(file.state_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let http = http_mode(
            TlsChoice {
                cert: args.tls_cert.or(file.tls_cert),
                key: args.tls_key.or(file.tls_key),
                sans: if args.tls_san.is_empty() {
                    file.tls_san.unwrap_or_default()
                } else {
                    args.tls_san
                },
                insecure: args.insecure_http || file.insecure_http.unwrap_or(false),
            },
            listen,
            &state_dir,
        )?;
        let default_limits = RequestLimits::default();
        let limits = RequestLimits {
            auth_failures_per_minute: args
                .auth_failures_per_minute
                .or(file.auth_failures_per_minute)
                .unwrap_or(default_limits.auth_failures_per_minute),
            auth_failure_burst: args
                .auth_failure_burst
                .or(file.auth_failure_burst)
                .unwrap_or(default_limits.auth_failure_burst),
            event_streams_per_key: args
                .max_event_streams_per_key
                .or(file.max_event_streams_per_key)
                .unwrap_or(default_limits.event_streams_per_key),
        };
        validate_limits(&limits)?;
        let webhooks = crate::webhooks::settings::load(&file.webhooks, &file.webhook_delivery)?;
        let public_url = args.public_url.or(file.public_url);
        if let Some(url) = &public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError::Invalid {
                name: "public_url",
                message: format!("{url:?} is not an http:// or https:// URL"),
            });
        }
        Ok(Self {
            master_key: master_key_source(
                args.master_key_file.or(file.master_key_file),
                std::env::var_os("CREDENTIALS_DIRECTORY"),
            ),
            webhooks,
            config_file,
            public_url,
            listen,
            state_dir,
            http,
            database_url: args.database_url.or(file.database_url).map(DatabaseUrl::into_secret),
            log_format: args.log_format.or(file.log_format).unwrap_or(LogFormat::Text),
            log_level: args.log_level.or(file.log_level).unwrap_or_else(|| "info".to_string()),
            fleet,
            limits,
        })
    }

    /// The store URL: the given one, or the SQLite file in the state dir.
    pub fn store_url(&self) -> SecretString {
        self.database_url.clone().unwrap_or_else(|| sqlite_url(&self.state_dir))
    }
}

/// The name of the systemd credential holding the master key (`LoadCredential=`).
pub const MASTER_KEY_CREDENTIAL: &str = "xerotier-master-key";

/// Where the master key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// `--master-key-file` / `master_key_file:`: 0600, owned by the router's user.
    File(PathBuf),
    /// systemd's credential (`LoadCredential=xerotier-master-key:…`), in
    /// `$CREDENTIALS_DIRECTORY`.
    SystemdCredential(PathBuf),
}

/// The given master key file, else systemd's credential when the service has one.
fn master_key_source(
    given: Option<PathBuf>,
    credentials_dir: Option<std::ffi::OsString>,
) -> Option<MasterKeySource> {
    if let Some(path) = given {
        return Some(MasterKeySource::File(path));
    }
    let path = PathBuf::from(credentials_dir?).join(MASTER_KEY_CREDENTIAL);
    path.exists().then_some(MasterKeySource::SystemdCredential(path))
}

/// What the offline commands (`rewrap`) need: the store URL, from the flags and the config
/// file, without the serving settings (TLS, webhooks) they do not use.
pub fn offline_store_url(args: &RouterArgs) -> Result<SecretString, ConfigError> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    let state_dir = args
        .state_dir
        .clone()
        .or(file.state_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    Ok(args
        .database_url
        .clone()
        .or(file.database_url)
        .map_or_else(|| sqlite_url(&state_dir), DatabaseUrl::into_secret))
}

fn sqlite_url(state_dir: &Path) -> SecretString {
    SecretString::from(format!("sqlite://{}?mode=rwc", state_dir.join("router.db").display()))
}

/// `mesh_key_overlap`: a duration from an hour to a year (an agent away longer re-enrolls).
fn mesh_key_overlap(text: &str) -> Result<i64, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { name: "mesh_key_overlap", message };
    let ms = xerotier_posture::parse_duration(text).map_err(|e| invalid(e.to_string()))?;
    if !(3_600_000..=365 * 86_400_000).contains(&ms) {
        return Err(invalid(format!("must be between 1h and 365d, got {text}")));
    }
    Ok(ms)
}

fn validate_fleet(fleet: &FleetSettings) -> Result<(), ConfigError> {
    let invalid = |name, message: String| Err(ConfigError::Invalid { name, message });
    if !xerotier_proto::join_keys::AGENT_ROLES.contains(&fleet.default_agent_role.as_str()) {
        return invalid(
            "default_agent_role",
            format!("must be inference or execution, got {:?}", fleet.default_agent_role),
        );
    }
    if fleet.curve_rotation_ack_timeout_ms == 0 {
        return invalid("curve_rotation_ack_timeout_seconds", "must be positive".into());
    }
    if !(1_000..=60_000).contains(&fleet.replica_lease_ms) {
        return invalid(
            "replica_lease_ms",
            format!("must be between 1000 and 60000, got {}", fleet.replica_lease_ms),
        );
    }
    if fleet.mesh_agent_frames_per_second == 0 {
        return invalid("mesh_agent_frames_per_second", "must be positive".into());
    }
    if fleet.mesh_agent_frame_burst == 0 {
        return invalid("mesh_agent_frame_burst", "must be positive".into());
    }
    if fleet.join_key_max_ttl_seconds == 0 {
        return invalid("join_key_max_ttl_seconds", "must be positive".into());
    }
    if fleet.join_key_default_ttl_seconds == 0
        || fleet.join_key_default_ttl_seconds > fleet.join_key_max_ttl_seconds
    {
        return invalid(
            "join_key_default_ttl_seconds",
            format!(
                "must be between 1 and join_key_max_ttl_seconds ({})",
                fleet.join_key_max_ttl_seconds
            ),
        );
    }
    if !fleet.mesh_bind.starts_with("tcp://") {
        return invalid(
            "mesh_bind",
            format!("must look like tcp://host:port, got {:?}", fleet.mesh_bind),
        );
    }
    if let Some(addr) = &fleet.mesh_public_addr
        && crate::validate::mesh_addr(addr, "mesh_public_addr").is_err()
    {
        return invalid(
            "mesh_public_addr",
            format!("must look like tcp://host:port, got {addr:?}"),
        );
    }
    Ok(())
}

/// The credential policy (`credential_policy:` and `--credential-profile`), every value
/// checked: a bad one stops the router at start, naming the setting.
fn credential_policy(
    flag_profile: Option<String>,
    file: CredentialPolicyFile,
) -> Result<(PolicyConfig, u64), ConfigError> {
    let invalid = |name, err: xerotier_posture::PolicyError| ConfigError::Invalid {
        name,
        message: err.to_string(),
    };
    let duration = |name, value: Option<String>| {
        value.map(|v| parse_duration(&v).map_err(|e| invalid(name, e))).transpose()
    };
    let profile = flag_profile
        .or(file.profile)
        .map(|p| p.parse::<Profile>().map_err(|e| invalid("credential_policy.profile", e)))
        .transpose()?;
    let mut overrides = Overrides::default();
    let max_age = file.max_age.unwrap_or_default();
    for (kind, name, value) in [
        (CredentialKind::ApiKey, "credential_policy.max_age.api_key", max_age.api_key),
        (CredentialKind::CurveKey, "credential_policy.max_age.curve_key", max_age.curve_key),
        (
            CredentialKind::WorkspaceCredential,
            "credential_policy.max_age.workspace_credential",
            max_age.workspace_credential,
        ),
        (CredentialKind::RouterKey, "credential_policy.max_age.router_key", max_age.router_key),
    ] {
        if let Some(ms) = duration(name, value)? {
            overrides.max_age.insert(kind, ms);
        }
    }
    overrides.join_key_max_unconsumed =
        duration("credential_policy.join_key_max_unconsumed", file.join_key_max_unconsumed)?;
    let due_soon_ms = duration("credential_policy.due_soon", file.due_soon)?
        .unwrap_or(xerotier_posture::DEFAULT_DUE_SOON_MS);
    let interval =
        duration("credential_policy.monitor_interval", file.monitor_interval)?.unwrap_or(60_000);
    let cryptoperiod_ref = file.cryptoperiod_ref.map(|r| r.trim().to_string());
    if let Some(reference) = &cryptoperiod_ref
        && (reference.is_empty()
            || reference.len() > 200
            || reference.chars().any(char::is_control))
    {
        return Err(ConfigError::Invalid {
            name: "credential_policy.cryptoperiod_ref",
            message: "must be 1-200 printable characters".into(),
        });
    }
    let config = PolicyConfig { profile, overrides, due_soon_ms, cryptoperiod_ref };
    Ok((config, u64::try_from(interval).unwrap_or(60_000)))
}

/// The TLS settings as given, before they are checked.
struct TlsChoice {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    sans: Vec<String>,
    insecure: bool,
}

fn http_mode(
    choice: TlsChoice,
    listen: SocketAddr,
    state_dir: &Path,
) -> Result<HttpMode, ConfigError> {
    let invalid = |name, message: String| Err(ConfigError::Invalid { name, message });
    if choice.insecure {
        if choice.cert.is_some() || choice.key.is_some() {
            return invalid("insecure_http", "cannot be combined with tls_cert/tls_key".into());
        }
        if !listen.ip().is_loopback() {
            return invalid(
                "insecure_http",
                format!(
                    "plain HTTP is refused on {listen}, which is not a loopback address: API \
                     keys and join keys would cross the network in clear text; drop \
                     --insecure-http to serve HTTPS"
                ),
            );
        }
        return Ok(HttpMode::Insecure);
    }
    match (choice.cert, choice.key) {
        (Some(cert), Some(key)) => Ok(HttpMode::Tls(CertSource::Operator { cert, key })),
        (None, None) => {
            let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
            if !listen.ip().is_unspecified() {
                sans.push(listen.ip().to_string());
            }
            for name in choice.sans {
                let name = name.trim().to_string();
                if !is_tls_name(&name) {
                    return invalid(
                        "tls_san",
                        format!("{name:?} is neither a DNS name nor an IP address"),
                    );
                }
                sans.push(name);
            }
            let mut seen = std::collections::HashSet::new();
            sans.retain(|name| seen.insert(name.to_ascii_lowercase()));
            Ok(HttpMode::Tls(CertSource::Generated { dir: state_dir.join("tls"), sans }))
        }
        _ => invalid("tls_cert", "tls_cert and tls_key go together: give both or neither".into()),
    }
}

/// A DNS name (letters, digits, hyphens, dots; at most 253 characters) or an IP address.
fn is_tls_name(name: &str) -> bool {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn validate_limits(limits: &RequestLimits) -> Result<(), ConfigError> {
    let positive = |name, value: u32| match value {
        0 => Err(ConfigError::Invalid { name, message: "must be positive".into() }),
        _ => Ok(()),
    };
    positive("auth_failures_per_minute", limits.auth_failures_per_minute)?;
    positive("auth_failure_burst", limits.auth_failure_burst)?;
    positive("max_event_streams_per_key", limits.event_streams_per_key)
}

/// The `webhooks:` and `webhook_delivery:` sections of the config file at `path`, checked as
/// at start (secret files read), for a reload. The whole file must parse: a file broken
/// anywhere is refused, so a half-written edit never replaces the webhooks in force.
pub fn webhooks_from_file(path: &Path) -> Result<WebhookSettings, ConfigError> {
    let file = read_file(path)?;
    Ok(crate::webhooks::settings::load(&file.webhooks, &file.webhook_delivery)?)
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
    fn the_master_key_is_the_flag_then_the_file_then_the_systemd_credential() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("router.yaml");
        std::fs::write(&file, "master_key_file: /etc/xerotier/master.key\n").unwrap();
        let config = RouterConfig::resolve(args(&["--config", file.to_str().unwrap()])).unwrap();
        let from_file = MasterKeySource::File("/etc/xerotier/master.key".into());
        assert_eq!(config.master_key, Some(from_file));
        let flag = ["--config", file.to_str().unwrap(), "--master-key-file", "/k"];
        let config = RouterConfig::resolve(args(&flag)).unwrap();
        assert_eq!(config.master_key, Some(MasterKeySource::File("/k".into())));

        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        assert_eq!(master_key_source(None, Some(creds.clone().into_os_string())), None);
        std::fs::write(creds.join(MASTER_KEY_CREDENTIAL), "x").unwrap();
        assert_eq!(
            master_key_source(None, Some(creds.clone().into_os_string())),
            Some(MasterKeySource::SystemdCredential(creds.join(MASTER_KEY_CREDENTIAL)))
        );
        assert_eq!(
            master_key_source(Some("/k".into()), Some(creds.into_os_string())),
            Some(MasterKeySource::File("/k".into()))
        );
        assert_eq!(master_key_source(None, None), None);
    }

    #[test]
    fn a_database_url_password_never_reaches_debug() {
        let url = "postgres://xero:hunter2@db:5432/x?sslpassword=hunter3";
        let parsed = args(&["--database-url", url]);
        let shown = format!("{parsed:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("hunter3"), "{shown}");
        assert!(shown.contains("postgres://xero:***@db:5432/x"), "{shown}");
        let config = RouterConfig::resolve(parsed).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("hunter3"), "{shown}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("router.yaml");
        std::fs::write(&file, format!("database_url: {url}\n")).unwrap();
        let offline = offline_store_url(&args(&["--config", file.to_str().unwrap()])).unwrap();
        assert_eq!(secrecy::ExposeSecret::expose_secret(&offline), url);
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
        assert!(
            secrecy::ExposeSecret::expose_secret(&config.store_url())
                .starts_with("sqlite:///srv/router/router.db")
        );
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("router.yaml");
        std::fs::write(&file, "listne: 127.0.0.1:9000\n").unwrap();
        let err = RouterConfig::resolve(args(&["--config", file.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("unknown field `listne`"), "{err}");
    }

    fn with_file(yaml: &str, extra: &[&str]) -> Result<RouterConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("router.yaml");
        std::fs::write(&file, yaml).unwrap();
        let mut argv = vec!["--config", file.to_str().unwrap()];
        argv.extend_from_slice(extra);
        RouterConfig::resolve(args(&argv))
    }

    #[test]
    fn the_credential_policy_section_is_read_and_the_flag_wins() {
        let yaml = "credential_policy:\n  profile: fedramp-high\n  max_age: { api_key: 90d, curve_key: 180d, workspace_credential: 90d, router_key: 30d }\n  due_soon: 7d\n  join_key_max_unconsumed: 24h\n  cryptoperiod_ref: \"SEC-POL-7 §3\"\n  monitor_interval: 5s\n";
        let config = with_file(yaml, &[]).unwrap();
        let policy = &config.fleet.credential_policy;
        assert_eq!(policy.profile, Some(Profile::FedrampHigh));
        assert_eq!(policy.overrides.max_age.get(&CredentialKind::ApiKey), Some(&(90 * 86_400_000)));
        assert_eq!(
            policy.overrides.max_age.get(&CredentialKind::RouterKey),
            Some(&(30 * 86_400_000))
        );
        assert_eq!(policy.overrides.join_key_max_unconsumed, Some(24 * 3_600_000));
        assert_eq!(policy.due_soon_ms, 7 * 86_400_000);
        assert_eq!(policy.cryptoperiod_ref.as_deref(), Some("SEC-POL-7 §3"));
        assert_eq!(config.fleet.posture_interval_ms, 5_000);
        let flagged = with_file(yaml, &["--credential-profile", "hipaa"]).unwrap();
        assert_eq!(flagged.fleet.credential_policy.profile, Some(Profile::Hipaa));
        let none = RouterConfig::resolve(args(&[])).unwrap();
        assert_eq!(none.fleet.credential_policy, PolicyConfig::default());
        assert_eq!(none.fleet.posture_interval_ms, 60_000);
    }

    #[test]
    fn bad_credential_policy_values_stop_the_router_naming_the_setting() {
        for (yaml, names) in [
            ("credential_policy:\n  profile: pci\n", "credential_policy.profile"),
            (
                "credential_policy:\n  max_age: { api_key: 90 }\n",
                "credential_policy.max_age.api_key",
            ),
            ("credential_policy:\n  max_age: { join_key: 1d }\n", "unknown field `join_key`"),
            ("credential_policy:\n  due_soon: 2w\n", "credential_policy.due_soon"),
            ("credential_policy:\n  join_key_max_unconsumed: -1h\n", "join_key_max_unconsumed"),
            ("credential_policy:\n  monitor_interval: 0s\n", "monitor_interval"),
            ("credential_policy:\n  cryptoperiod_ref: \"\"\n", "cryptoperiod_ref"),
            ("credential_policy:\n  profil: hipaa\n", "unknown field `profil`"),
        ] {
            let err = with_file(yaml, &[]).unwrap_err().to_string();
            assert!(err.contains(names), "{yaml}: {err}");
        }
        let err = RouterConfig::resolve(args(&["--credential-profile", "sox"])).unwrap_err();
        assert!(err.to_string().contains("unknown compliance profile \"sox\""), "{err}");
    }

    #[test]
    fn the_mesh_key_overlap_defaults_to_seven_days_and_out_of_range_values_are_refused() {
        let none = RouterConfig::resolve(args(&[])).unwrap();
        assert_eq!(none.fleet.mesh_key_overlap_ms, 7 * 86_400_000);
        let file = with_file("mesh_key_overlap: 30d\n", &[]).unwrap();
        assert_eq!(file.fleet.mesh_key_overlap_ms, 30 * 86_400_000);
        let flag = with_file("mesh_key_overlap: 30d\n", &["--mesh-key-overlap", "36h"]).unwrap();
        assert_eq!(flag.fleet.mesh_key_overlap_ms, 36 * 3_600_000, "the flag wins");
        for bad in ["0s", "59m", "366d", "7", "7days"] {
            let err = RouterConfig::resolve(args(&["--mesh-key-overlap", bad])).unwrap_err();
            assert!(err.to_string().contains("mesh_key_overlap"), "{bad}: {err}");
        }
        let negative = with_file("mesh_key_overlap: -1d\n", &[]).unwrap_err();
        assert!(negative.to_string().contains("mesh_key_overlap"), "{negative}");
    }

    #[test]
    fn unknown_default_role_is_refused() {
        let err = RouterConfig::resolve(args(&["--default-agent-role", "admin"])).unwrap_err();
        assert!(err.to_string().contains("default_agent_role"), "{err}");
    }

    #[test]
    fn plain_http_is_refused_off_loopback_and_tls_is_the_default() {
        let err = RouterConfig::resolve(args(&["--insecure-http", "--listen", "0.0.0.0:8080"]))
            .unwrap_err();
        assert!(err.to_string().contains("not a loopback address"), "{err}");
        let err = RouterConfig::resolve(args(&["--insecure-http", "--listen", "10.1.2.3:8080"]))
            .unwrap_err();
        assert!(err.to_string().contains("not a loopback address"), "{err}");
        let ok = RouterConfig::resolve(args(&["--insecure-http", "--listen", "[::1]:8080"]));
        assert!(matches!(ok.unwrap().http, HttpMode::Insecure));
        let config = RouterConfig::resolve(args(&[
            "--listen",
            "10.1.2.3:8443",
            "--tls-san",
            "router.example,Router.example",
            "--tls-san",
            "192.0.2.7",
        ]))
        .unwrap();
        let HttpMode::Tls(CertSource::Generated { sans, dir }) = config.http else {
            panic!("expected the generated CA")
        };
        assert_eq!(sans, ["localhost", "127.0.0.1", "10.1.2.3", "router.example", "192.0.2.7"]);
        assert_eq!(dir, PathBuf::from(DEFAULT_STATE_DIR).join("tls"));
    }

    #[test]
    fn tls_settings_that_cannot_work_are_refused() {
        for bad in [
            &["--tls-cert", "/etc/tls.crt"][..],
            &["--tls-key", "/etc/tls.key"],
            &["--insecure-http", "--tls-cert", "/a", "--tls-key", "/b"],
            &["--tls-san", "bad name"],
            &["--tls-san=-x.example"],
            &["--tls-san", "a/b"],
        ] {
            assert!(RouterConfig::resolve(args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_apply_without_flags_or_file() {
        let config = RouterConfig::resolve(args(&[])).unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(config.limits, RequestLimits::default());
    }

    #[test]
    fn request_limits_come_from_flags_and_file_and_must_be_positive() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("router.yaml");
        std::fs::write(&file, "auth_failure_burst: 5\nmax_event_streams_per_key: 2\n").unwrap();
        let config = RouterConfig::resolve(args(&[
            "--config",
            file.to_str().unwrap(),
            "--auth-failures-per-minute",
            "6",
            "--max-event-streams-per-key",
            "3",
        ]))
        .unwrap();
        let expected = RequestLimits {
            auth_failures_per_minute: 6,
            auth_failure_burst: 5,
            event_streams_per_key: 3,
        };
        assert_eq!(config.limits, expected);
        for flag in
            ["--auth-failures-per-minute", "--auth-failure-burst", "--max-event-streams-per-key"]
        {
            let err = RouterConfig::resolve(args(&[flag, "0"])).unwrap_err();
            assert!(err.to_string().contains("must be positive"), "{flag}: {err}");
        }
    }
}
