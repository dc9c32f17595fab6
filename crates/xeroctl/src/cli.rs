use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

#[derive(Debug, Parser)]
#[command(
    name = "xeroctl",
    version,
    about = "Operate the Xerotier credential plane: API keys, audit, agents",
    propagate_version = true,
    after_help = "Exit codes: see `xeroctl --help` or README.md (\"Exit codes\").",
    after_long_help = crate::exit::TABLE
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Router URL [default: the context's, else https://127.0.0.1:8080].
    #[arg(long, env = "XEROCTL_BASE_URL", global = true)]
    pub base_url: Option<String>,
    /// API key (`xero_…`) [default: the context's].
    #[arg(long, env = "XEROCTL_API_KEY", global = true, hide_env_values = true)]
    pub api_key: Option<String>,
    /// PEM CA certificate to trust (only it) for the router's HTTPS, e.g. the router's
    /// <state-dir>/tls/ca.pem [default: the context's, else the system's CAs].
    #[arg(long, env = "XEROCTL_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Use this context from the config file instead of the current one.
    #[arg(long, env = "XEROCTL_CONTEXT", global = true)]
    pub context: Option<String>,
    /// Output format: table (plain columns when not on a terminal), wide (more columns),
    /// json, yaml, name (`kind/id` per line), or csv (listings: RFC 4180, every column,
    /// a header row).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub output: OutputFormat,
    /// Tables without their header line.
    #[arg(long, global = true)]
    pub no_headers: bool,
    /// Print the request that would be sent, and send nothing (never asks for confirmation).
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Answer yes to confirmation questions: irreversible and fleet-wide commands ask on a
    /// terminal and refuse without one (exit code 7) unless this is given.
    #[arg(short = 'y', long = "yes", visible_alias = "force", global = true)]
    pub yes: bool,
    /// Config file [default: $XDG_CONFIG_HOME/xeroctl/config.toml or ~/.config/xeroctl/config.toml].
    #[arg(long, env = "XEROCTL_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Wide,
    Json,
    Yaml,
    Name,
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// API keys for /v1/exec/* and /v1/management/* (lists them when no subcommand is given).
    Keys(KeysArgs),
    /// The fleet: list agents, show one (`xeroctl agents agt_…`), join keys, containment.
    Agents(AgentsArgs),
    /// Tool execution: tools, invoke (with --wait), watch, show, list, cancel.
    Exec {
        #[command(subcommand)]
        command: ExecCommand,
    },
    /// Read the audit log.
    Audit(AuditArgs),
    /// Credential posture: every API key, CURVE key, workspace credential and unconsumed join
    /// key against the rotation policy, worst first. `--check` exits 9 when anything is
    /// overdue or expired (for cron and CI).
    Credentials(CredentialsArgs),
    /// Fleet-wide operations (fleet CURVE rotation, blast-radius revocations): list them, show
    /// one (`xeroctl operations op_…`), --follow, --cancel or --resume it.
    Operations(OperationsArgs),
    /// The router itself: its replicas.
    Router {
        #[command(subcommand)]
        command: RouterCommand,
    },
    /// Outbound webhooks for security events (lists them when no subcommand is given), and
    /// their deliveries.
    Webhooks(WebhooksArgs),
    /// Manage contexts (router URL + API key) in the config file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Debug, Args)]
pub struct CredentialsArgs {
    /// Only this kind: api_key, curve_key, workspace_credential, join_key, router_key.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only this state: ok, due_soon, overdue, expired.
    #[arg(long)]
    pub state: Option<String>,
    /// Only this agent's credentials (`agt_…`).
    #[arg(long)]
    pub agent: Option<String>,
    /// Only this region.
    #[arg(long)]
    pub region: Option<String>,
    /// Preview another compliance profile (pci-dss-4, hipaa, fedramp-moderate, fedramp-high,
    /// cis-cloud), with the deployment's overrides; changes nothing.
    #[arg(long)]
    pub profile: Option<String>,
    /// Exit 9 when anything listed is overdue or expired (0 otherwise; due_soon only prints a
    /// note on stderr).
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct WebhooksArgs {
    #[command(subcommand)]
    pub command: Option<WebhooksCommand>,
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Deliveries of security events to webhooks, oldest first: status (pending, delivered,
    /// failed), attempts, the receiver's last answer. `--retry del_…` puts a delivered or
    /// failed delivery back to pending, attempted at once (audited, with `--reason`).
    Deliveries(WebhookDeliveriesArgs),
}

#[derive(Debug, Args)]
pub struct WebhookDeliveriesArgs {
    #[command(flatten)]
    pub page: PageArgs,
    /// Only this webhook's deliveries (its name in the router's config).
    #[arg(long)]
    pub webhook: Option<String>,
    /// pending, delivered or failed.
    #[arg(long)]
    pub status: Option<String>,
    /// Retry this delivery (`del_…`, from the listing): a delivered or failed one goes back to
    /// pending with a fresh attempt count and is attempted at once; prints it after. With
    /// --dry-run: the delivery that would be retried, nothing changed. A pending one is
    /// refused (exit 3): its attempts go on.
    #[arg(long, value_name = "ID", conflicts_with_all = ["webhook", "status", "limit", "after"])]
    pub retry: Option<String>,
    /// With --retry: why, recorded in the audit log.
    #[arg(long, requires = "retry")]
    pub reason: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RouterCommand {
    /// The router replicas sharing this router's store: addresses, status (live, expired,
    /// stopped), and the agent sessions each holds.
    Replicas,
    /// The router's own keys (mesh, join signing, TLS CA): kind, key id, fingerprint, state,
    /// age, rotation phase, clients moved / total.
    Keys,
    /// The router's TLS CAs that clients should trust now (PEM): its CA, and during a TLS CA
    /// rotation the new one too. Fetched over the connection the current CA file already
    /// secures; `--write FILE` replaces FILE (e.g. the one `--ca-file` names) atomically.
    CaBundle(CaBundleArgs),
    /// Rotate one of the router's own keys in phases: init → update_clients → update_servers →
    /// standby (complete), or rollback before standby. `--phase P` takes one step; `--auto`
    /// walks every remaining step, waiting for clients to move, and resumes where the router
    /// is (rerun it after a crash or a timeout). Asks before init, complete and rollback.
    RotateKeys(RotateKeysArgs),
}

#[derive(Debug, Args)]
pub struct CaBundleArgs {
    /// Write the bundle to this file (0644, atomically) instead of printing it.
    #[arg(long)]
    pub write: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("step").required(true).args(["phase", "auto"])))]
pub struct RotateKeysArgs {
    /// mesh, join-signing or tls.
    #[arg(long)]
    pub kind: String,
    /// The phase to enter: init, update_clients, update_servers, standby (or complete),
    /// rollback.
    #[arg(long)]
    pub phase: Option<String>,
    /// Walk the remaining phases in order, waiting until every client moved before the
    /// servers switch and before the old key is dropped.
    #[arg(long)]
    pub auto: bool,
    /// Move on although not every client has moved (API `force`; stragglers must re-enroll
    /// or fetch the keys over HTTPS). `--force` alone is `--yes`.
    #[arg(long)]
    pub ignore_stragglers: bool,
    /// Why, for the audit log.
    #[arg(long)]
    pub reason: Option<String>,
    /// With --auto: how long to wait for clients in all (e.g. 10m, 1h); past it xeroctl exits
    /// 8 and the rotation stays where it is (rerun to continue).
    #[arg(long, default_value = "10m")]
    pub timeout: String,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: Option<KeysCommand>,
    #[command(flatten)]
    pub list: KeysListArgs,
}

#[derive(Debug, Args, Default)]
pub struct KeysListArgs {
    /// Also show revoked keys.
    #[arg(long)]
    pub include_revoked: bool,
    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Args, Default, Clone)]
pub struct PageArgs {
    /// At most this many items (1-500).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Start after this id (the previous page's last id).
    #[arg(long)]
    pub after: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List keys.
    List(KeysListArgs),
    /// Create a key; its value is printed once.
    Create {
        /// Unique name among active keys, e.g. fleet-ops-2026q2.
        #[arg(long)]
        name: String,
        /// execution and/or management; repeat or comma-separate.
        #[arg(long = "scope", required = true, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Lifetime, e.g. 90d, 12h [default: no expiry].
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// Show one key.
    Show(KeySelector),
    /// Revoke a key at once: no request with it succeeds after this returns (asks first).
    Revoke {
        #[command(flatten)]
        key: KeySelector,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        /// Revoke even the key this command uses, or the last active management key (the
        /// router refuses both otherwise: they would lock you out).
        #[arg(long)]
        allow_lockout: bool,
    },
    /// Issue a new value; the old one keeps working for the grace window.
    Rotate {
        #[command(flatten)]
        key: KeySelector,
        /// How long the old value keeps working, e.g. 24h, 30m, 0s [default: 24h].
        #[arg(long)]
        grace: Option<String>,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// End a rotated key's grace window: its previous value stops working now, on every
    /// replica (asks first), or with --when-quiet once it has been unused that long. See who
    /// still uses the old value first: `xeroctl keys show` (grace uses, last use, address).
    /// With --dry-run the router says what would happen and changes nothing.
    EndGrace {
        #[command(flatten)]
        key: KeySelector,
        /// End it once the previous value has been unused this long: a number and s, m, h or
        /// d, e.g. 10m (at most 30d).
        #[arg(long, value_name = "DURATION")]
        when_quiet: Option<String>,
        /// Keep showing the state until the grace window has ended.
        #[arg(long)]
        follow: bool,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct KeySelector {
    /// Key id (key_…).
    pub id: Option<String>,
    /// Name of an active key.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentsArgs {
    #[command(subcommand)]
    pub command: Option<AgentsCommand>,
    /// Show this agent (agt_…) instead of listing.
    pub id: Option<String>,
    /// With an agent id: show its events (rotation requested/acknowledged/promoted, …).
    #[arg(long, requires = "id")]
    pub events: bool,
    /// With --events: keep following new events as they happen.
    #[arg(long, requires = "events")]
    pub follow: bool,
    /// With an agent id: lift its quarantine (a suspected clone), once the second session is
    /// stopped.
    #[arg(long, requires = "id", conflicts_with = "events")]
    pub release_quarantine: bool,
    /// With --release-quarantine: why, for the audit log.
    #[arg(long, requires = "release_quarantine")]
    pub reason: Option<String>,
    /// Also list revoked agents.
    #[arg(long)]
    pub include_revoked: bool,
    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Join keys: list active ones, --create, --include-terminal, or `ID --revoke [--force]`.
    JoinKeys(JoinKeysArgs),
    /// Rotate the agent's CURVE key pair (on demand): prints the request and where to watch it.
    /// With --all, --region, --role or --agents: a fleet rotation in waves, run by the router
    /// as an operation (`xeroctl operations`), shown as a plan first (asks; --yes does not).
    #[command(group(clap::ArgGroup::new("fleet").args(["id", "all", "region", "role", "agents"]).required(true).multiple(false)))]
    CurveRotate {
        /// Agent id (agt_…).
        id: Option<String>,
        /// Why, for the audit log [default for one agent: scheduled; required for a fleet].
        #[arg(long)]
        reason: Option<String>,
        /// One agent: follow the events stream until the rotation is promoted or failed; exit
        /// non-zero on failure.
        #[arg(long, requires = "id")]
        wait: bool,
        /// Every live agent.
        #[arg(long)]
        all: bool,
        /// Every live agent of this region.
        #[arg(long)]
        region: Option<String>,
        /// Every live agent of this role (inference or execution).
        #[arg(long)]
        role: Option<String>,
        /// These agents, comma-separated ids (agt_…).
        #[arg(long, value_delimiter = ',')]
        agents: Option<Vec<String>>,
        #[command(flatten)]
        operation: OperationFlags,
    },
    /// Revoke an agent's keys at once: its live session is cut; it must re-enroll (asks
    /// first). With --enrolled-via, --minted-by or --region: every live agent so selected, as
    /// an operation run by the router (`xeroctl operations`).
    #[command(group(clap::ArgGroup::new("blast").args(["id", "enrolled_via", "minted_by", "region"]).required(true).multiple(false)))]
    RevokeCredentials {
        /// Agent id (agt_…).
        id: Option<String>,
        /// Why, for the audit log (required with a selector).
        #[arg(long)]
        reason: Option<String>,
        /// Every live agent enrolled with this join key (jk_…).
        #[arg(long)]
        enrolled_via: Option<String>,
        /// Every live agent enrolled with any join key minted by this API key (key_…).
        #[arg(long)]
        minted_by: Option<String>,
        /// Every live agent of this region.
        #[arg(long)]
        region: Option<String>,
        #[command(flatten)]
        operation: OperationFlags,
    },
    /// Stop dispatching new invocations to the agent (or one workspace on it); work in flight
    /// finishes, queued work waits.
    PauseExec {
        /// Agent id (agt_…).
        id: String,
        /// Only this workspace [default: all of the agent's].
        #[arg(long)]
        workspace: Option<String>,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume dispatch to the agent (or one workspace on it); queued work runs.
    ResumeExec {
        /// Agent id (agt_…).
        id: String,
        /// The workspace paused with --workspace [default: the agent-wide pause].
        #[arg(long)]
        workspace: Option<String>,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// The pauses in force on an agent.
    Pauses {
        /// Agent id (agt_…).
        id: String,
    },
    /// Workspaces agents declared beyond their grant (or with changed tool definitions) and
    /// agents waiting for approval; with an agent id, --approve or --reject them.
    #[command(group(clap::ArgGroup::new("decision").args(["approve", "reject"]).multiple(false)))]
    Candidates {
        /// Agent id (agt_…) to decide about.
        id: Option<String>,
        /// Grant the agent's candidate workspaces (or --workspace), for the tool definitions
        /// listed; approves an agent waiting for approval.
        #[arg(long, requires = "id")]
        approve: bool,
        /// Refuse them (without --workspace, a waiting agent as a whole; asks first).
        #[arg(long, requires = "id")]
        reject: bool,
        /// Only this workspace.
        #[arg(long, requires = "id")]
        workspace: Option<String>,
        /// Why, for the audit log.
        #[arg(long, requires = "id")]
        reason: Option<String>,
    },
    /// Take a granted workspace back from an agent: no new work there (asks first).
    WithdrawGrant {
        /// Agent id (agt_…).
        id: String,
        /// The workspace to withdraw.
        #[arg(long)]
        workspace: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExecCommand {
    /// Tools offered by online agents.
    Tools,
    /// One tool: its argument schema and the agents that offer it.
    ToolShow { name: String },
    /// Invoke a tool. With --wait, follow it and exit like it: 0 succeeded, 1 failed,
    /// 124 timed out, 130 cancelled (8: --wait-timeout passed, it keeps running).
    Invoke(InvokeArgs),
    /// Stream an invocation's output until it ends (exit status as with invoke --wait).
    Watch {
        /// Invocation id (inv_…).
        id: String,
        /// Stop following after this long, e.g. 10m [default: until it ends].
        #[arg(long)]
        wait_timeout: Option<String>,
    },
    /// Show one invocation.
    Show {
        /// Invocation id (inv_…).
        id: String,
    },
    /// List invocations, oldest first.
    List(ExecListArgs),
    /// Cancel an invocation (its agent kills the tool's process group; asks first).
    Cancel {
        /// Invocation id (inv_…).
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// Workspace to run in, e.g. kubernetes-prod.
    #[arg(long)]
    pub workspace: String,
    /// Tool name.
    #[arg(long)]
    pub tool: String,
    /// Arguments: a JSON object, or @file.json (@- for standard input) [default: {}].
    #[arg(long)]
    pub args: Option<String>,
    /// Follow it until it ends; print its output; exit like it.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: stop waiting after this long, e.g. 10m.
    #[arg(long)]
    pub wait_timeout: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExecListArgs {
    /// queued, running, succeeded, failed, cancelled or timed_out.
    #[arg(long)]
    pub status: Option<String>,
    /// Only invocations dispatched to this agent (agt_…).
    #[arg(long)]
    pub agent: Option<String>,
    #[arg(long)]
    pub workspace: Option<String>,
    #[arg(long)]
    pub tool: Option<String>,
    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("action").args(["create", "revoke", "include_terminal"]).multiple(false)))]
pub struct JoinKeysArgs {
    /// A join key id (jk_…): show it, or revoke it with --revoke.
    pub id: Option<String>,
    /// Mint a join key (prints the token once).
    #[arg(long)]
    pub create: bool,
    /// Revoke the unconsumed join key ID (asks first; --force does not).
    #[arg(long)]
    pub revoke: bool,
    /// List used, expired and revoked keys too.
    #[arg(long)]
    pub include_terminal: bool,
    /// With --create: a name for the key (e.g. the host or batch it is for).
    #[arg(long)]
    pub name: Option<String>,
    /// With --create: the region agents enrolling with it belong to.
    #[arg(long)]
    pub region: Option<String>,
    /// With --create: the mesh address agents connect to, tcp://host:port.
    #[arg(long)]
    pub router_addr: Option<String>,
    /// With --create: lifetime in seconds; cap it as low as operations allow.
    #[arg(long)]
    pub ttl_seconds: Option<u64>,
    /// With --create: inference or execution [default: the router's].
    #[arg(long, value_parser = ["inference", "execution"])]
    pub agent_role: Option<String>,
    /// With --create: the workspaces an agent enrolled with it serves at once, comma-separated
    /// (whatever else it declares waits for approval) [default: none].
    #[arg(long, value_delimiter = ',')]
    pub workspaces: Option<Vec<String>>,
    /// With --create: the whole agent waits for approval (`xeroctl agents candidates`) before
    /// it gets any work or rotation.
    #[arg(long)]
    pub require_approval: bool,
    /// With --revoke: why, for the audit log.
    #[arg(long)]
    pub reason: Option<String>,
    /// With --revoke: every unconsumed, unexpired join key (narrowed by --name-prefix and
    /// --region), as an operation run by the router (`xeroctl operations`).
    #[arg(long, requires = "revoke")]
    pub all_unconsumed: bool,
    /// With --all-unconsumed: only keys whose name starts with this.
    #[arg(long, requires = "all_unconsumed")]
    pub name_prefix: Option<String>,
    #[command(flatten)]
    pub operation: OperationFlags,
    #[command(flatten)]
    pub page: PageArgs,
}

/// How a fleet-wide operation runs and is followed.
#[derive(Debug, Args, Default, Clone)]
pub struct OperationFlags {
    /// Targets per wave (1-500) [default: 10].
    #[arg(long)]
    pub wave_size: Option<u32>,
    /// Failures tolerated before the operation halts after its wave (0-10000) [default: 0].
    #[arg(long)]
    pub max_failures: Option<u32>,
    /// Create the operation and return at once (follow it with `xeroctl operations op_… --follow`).
    #[arg(long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("op_action").args(["follow", "cancel", "resume"]).multiple(false)))]
pub struct OperationsArgs {
    /// An operation id (op_…): show it with every target's result.
    pub id: Option<String>,
    /// Follow it until it ends (exit status: 0 completed, 10 halted, cancelled or failed).
    #[arg(long, requires = "id")]
    pub follow: bool,
    /// Cancel it: no target is started after this; rotations in flight end by themselves.
    #[arg(long, requires = "id")]
    pub cancel: bool,
    /// Resume a halted operation with its remaining targets (failed ones stay failed unless
    /// --retry-failed), and follow it.
    #[arg(long, requires = "id")]
    pub resume: bool,
    /// With --resume: try the failed targets again too.
    #[arg(long, requires = "resume")]
    pub retry_failed: bool,
    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub page: PageArgs,
    /// e.g. api_key.create, api_key.revoke
    #[arg(long)]
    pub action: Option<String>,
    /// Actor key id.
    #[arg(long)]
    pub actor: Option<String>,
    /// Target id.
    #[arg(long)]
    pub target: Option<String>,
    /// success, denied or failed.
    #[arg(long)]
    pub outcome: Option<String>,
    /// The router's request id (`req_…`, the X-Request-ID it answered with).
    #[arg(long)]
    pub request_id: Option<String>,
    /// The X-Request-ID a client sent (its own label, kept as the correlation id).
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// RFC 3339 time with an offset (2026-11-25T10:00:00+01:00, …Z), or a duration back from
    /// now such as 1h.
    #[arg(long)]
    pub since: Option<String>,
    /// RFC 3339 time with an offset, or a duration back from now such as 10m.
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Add or replace a context from the global --base-url, --ca-file and --api-key (the key
    /// is stored in the config file, mode 0600), or --api-key-file (read at every call).
    Add {
        name: String,
        /// A file holding the API key, e.g. the router's bootstrap.key.
        #[arg(long)]
        api_key_file: Option<PathBuf>,
        /// Fetch the router's CA certificate, show its fingerprint to confirm (or check it
        /// against --ca-fingerprint), save it next to the config file and trust only it.
        #[arg(long)]
        fetch_ca: bool,
        /// With --fetch-ca: the fingerprint the CA must have, sha256:<hex> (of the router's
        /// `<state-dir>/tls/ca.pem`); required without a terminal.
        #[arg(long, requires = "fetch_ca")]
        ca_fingerprint: Option<String>,
    },
    /// Make a context the current one.
    Use { name: String },
    /// List contexts.
    List,
    /// Remove a context (asks first: a stored API key goes with it).
    Remove { name: String },
}
