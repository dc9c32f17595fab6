//! How a tool runs on a XEM host, and the small program that makes it so.
//!
//! The XEM is multi-threaded and holds the agent's keys; it cannot safely change identity or
//! limits between `fork` and `exec`, and the workspace forbids the `unsafe` that would take.
//! So tools start through `xerotier-tool-runner` (this crate's binary, installed beside the
//! XEM). The XEM keeps a few runners ready (`--serve`), each waiting on a unix socket for one
//! [`Request`]: the [`LaunchSpec`] and the tool's environment, with the tool's stdio pipes, a
//! status pipe, the invocation's directory and the credential memfd passed as descriptors
//! (SCM_RIGHTS, in [`RequestFds`] order). The runner, single-threaded, puts stdio in place,
//! enters the directory, moves the credential to [`CREDENTIAL_FD`], and applies the spec in an
//! order the tool cannot undo ([`launch::serve`]): resource limits, the Landlock filesystem
//! view, the tool user's identity (supplementary groups, gid, uid; checked after), no new
//! privileges; then it execs the tool in place (same pid, same process group, which the XEM
//! made when it started the runner). A failure before the exec is written to the status pipe,
//! which closes on a successful exec, so the XEM tells "the sandbox could not be set up" from
//! "the tool failed" without guessing from exit codes. Starting the runner ahead of time keeps
//! its own exec off an invocation's path.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub mod launch;

/// The runner's file name; the XEM looks for it beside its own executable.
pub const RUNNER_BIN: &str = "xerotier-tool-runner";
/// Where the tool finds its credential snapshot (`/proc/self/fd/3`).
pub const CREDENTIAL_FD: i32 = 3;
/// The largest request a runner reads (the spec and the environment; arguments go on stdin).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// One tool run, as the XEM sends it to a ready runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub spec: LaunchSpec,
    /// The tool's whole environment (the runner's own is empty).
    pub env: Vec<(String, String)>,
}

/// The descriptors that travel with a [`Request`], in this order; the credential only when
/// the spec says it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFds {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
    Status = 3,
    WorkDir = 4,
    Credential = 5,
}

/// Everything the runner needs; not secret (it travels on the runner's command line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchSpec {
    /// Absolute path of the tool's executable.
    pub executable: PathBuf,
    /// Whom the tool runs as; `None` keeps the runner's own (a XEM not started as root, whose
    /// `tool_user` is its own user: development only, said loudly at start).
    pub identity: Option<Identity>,
    pub limits: Limits,
    pub landlock: LandlockMode,
    /// Readable and executable beneath (system directories, the tool's bundle). The working
    /// directory is always fully accessible; nothing else is.
    pub read_paths: Vec<PathBuf>,
    /// Single files the tool may read and write (`/dev/null` and the like).
    pub device_paths: Vec<PathBuf>,
    /// Whether descriptor [`CREDENTIAL_FD`] holds a credential snapshot.
    pub has_credential: bool,
}

impl LaunchSpec {
    /// `executable` run as `identity` with the default limits, Landlock where the kernel has
    /// it, the system directories readable and no credential: what a probe checks, and what
    /// a tool's spec starts from.
    pub fn with_defaults(executable: PathBuf, identity: Option<Identity>) -> Self {
        Self {
            executable,
            identity,
            limits: Limits::default(),
            landlock: LandlockMode::Auto,
            read_paths: SYSTEM_READ_PATHS.iter().map(PathBuf::from).collect(),
            device_paths: DEVICE_PATHS.iter().map(PathBuf::from).collect(),
            has_credential: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// Per-tool resource limits (`limits:` in `tool.yaml`), applied as rlimits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Address space (RLIMIT_AS), bytes.
    pub memory_bytes: u64,
    /// Processes of the tool user (RLIMIT_NPROC: counted per user, across invocations).
    pub processes: u64,
    /// Open descriptors per process (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Largest file the tool may write (RLIMIT_FSIZE), bytes.
    pub file_size_bytes: u64,
    /// CPU time per process (RLIMIT_CPU), seconds.
    pub cpu_seconds: u64,
}

impl Default for Limits {
    /// Generous for a CLI such as kubectl or aws, small enough that a runaway tool cannot take
    /// the host: 4 GiB of address space, 256 processes, 1024 descriptors, 1 GiB files, 10
    /// minutes of CPU.
    fn default() -> Self {
        Self {
            memory_bytes: 4 << 30,
            processes: 256,
            open_files: 1024,
            file_size_bytes: 1 << 30,
            cpu_seconds: 600,
        }
    }
}

/// Whether the tool's filesystem view is narrowed with Landlock (`sandbox.landlock` in
/// `tool.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandlockMode {
    /// Not applied (the tool needs paths it cannot name in advance).
    Off,
    /// Applied where the kernel offers it; a kernel without it is reported at start.
    #[default]
    Auto,
    /// The tool does not start unless the restriction is enforced.
    Required,
}

/// What a probe found: the runner applied a spec and stopped short of exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub uid: u32,
    pub gid: u32,
    pub landlock: LandlockStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandlockStatus {
    /// Every access right asked for is enforced.
    Full,
    /// The kernel's Landlock is older than the rights asked for; what it knows is enforced.
    Partial,
    /// The kernel offers no Landlock (or it is disabled): unix permissions only.
    Unavailable,
    /// Not asked for.
    Off,
}

impl LandlockStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Partial => "partial",
            Self::Unavailable => "unavailable",
            Self::Off => "off",
        }
    }
}

/// The directories every tool may read and execute from (those that exist on the host).
/// `/etc` is there for resolv.conf, CA bundles and passwd; the XEM's own files under it are
/// 0600 and owned by root, which the tool user is not.
pub const SYSTEM_READ_PATHS: [&str; 11] = [
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/proc",
    "/dev",
    "/run/systemd/resolve",
];

/// Device files a tool may also write (shell redirections to `/dev/null`).
pub const DEVICE_PATHS: [&str; 3] = ["/dev/null", "/dev/zero", "/dev/full"];
