//! Where and as whom tools run: the tool user resolved once at start, the runner found and
//! probed, and the run directory whose per-invocation children are made through its open
//! handle (never by joining a received string onto a path).

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fstat, mkdirat};
use nix::unistd::{Gid, Uid, User, fchown, fchownat};
use parking_lot::Mutex;
use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
    sendmsg, socketpair,
};
use xerotier_sandbox::{
    Identity, LandlockMode, LandlockStatus, LaunchSpec, Limits, ProbeReport, RUNNER_BIN, Request,
};

/// The invocation id format, checked before the id names anything on disk.
pub fn is_invocation_id(id: &str) -> bool {
    xerotier_proto::formats::is_id("inv_", id)
}

/// How this host runs tools; built once at start.
#[derive(Debug)]
pub struct Sandbox {
    pub runner: PathBuf,
    pool: RunnerPool,
    /// `None` only for a XEM not started as root whose tool_user is its own user.
    pub identity: Option<Identity>,
    pub tool_user: String,
    pub landlock: LandlockStatus,
    run_dir: RunDir,
}

impl Sandbox {
    /// Resolves the tool user, finds the runner, prepares the run directory and proves, by a
    /// probe, that the runner can take the tool user's identity here.
    /// `ready` runners are kept started (`--serve`), so a tool's start costs one exec, not two.
    /// Needs a tokio runtime (the runners are its child processes).
    pub fn prepare(
        tool_user: &str,
        runner: Option<&Path>,
        run_dir: &Path,
        ready: usize,
    ) -> anyhow::Result<Self> {
        let identity = resolve_identity(tool_user)?;
        let runner = match runner {
            Some(path) => path.to_path_buf(),
            None => beside_this_executable()?,
        };
        if !runner.is_file() {
            bail!(
                "the tool runner {} does not exist (install {RUNNER_BIN} beside xerotier-xem, or set tool_runner)",
                runner.display()
            );
        }
        let run_dir = RunDir::prepare(run_dir, identity.is_some())?;
        let report = probe(&runner, identity, &run_dir.path)?;
        if let Some(identity) = identity
            && (report.uid, report.gid) != (identity.uid, identity.gid)
        {
            bail!(
                "the tool runner's probe ran as uid {} gid {}, not as tool_user {tool_user} ({} / {})",
                report.uid,
                report.gid,
                identity.uid,
                identity.gid
            );
        }
        let pool =
            RunnerPool { runner: runner.clone(), ready: Mutex::new(VecDeque::new()), size: ready };
        pool.refill();
        Ok(Self {
            runner,
            pool,
            identity,
            tool_user: tool_user.to_string(),
            landlock: report.landlock,
            run_dir,
        })
    }

    /// A fresh directory for one invocation, owned by the tool user, with a private `tmp`.
    /// `id` must already have passed [`is_invocation_id`]; an existing entry of that name is
    /// refused, never reused.
    pub fn invocation_dir(&self, id: &str) -> Result<InvocationDir, String> {
        self.run_dir.child(id, self.identity)
    }

    /// A started runner waiting for its request (a new one when none is ready).
    pub fn take_runner(&self) -> std::io::Result<ReadyRunner> {
        self.pool.take()
    }

    /// Starts runners until the pool is full again; after an invocation, off its path.
    pub fn refill_runners(&self) {
        self.pool.refill();
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir.path
    }

    /// The spec for one run of `executable` with these limits and Landlock mode.
    pub fn spec(
        &self,
        executable: &Path,
        limits: Limits,
        landlock: LandlockMode,
        extra_read_paths: &[PathBuf],
        has_credential: bool,
    ) -> LaunchSpec {
        let mut spec = LaunchSpec::with_defaults(executable.to_path_buf(), self.identity);
        // The tool's own bundle: its executable and whatever it ships beside it.
        spec.read_paths.extend(executable.parent().map(Path::to_path_buf));
        spec.read_paths.extend(extra_read_paths.iter().cloned());
        LaunchSpec { limits, landlock, has_credential, ..spec }
    }
}

fn resolve_identity(tool_user: &str) -> anyhow::Result<Option<Identity>> {
    let user = User::from_name(tool_user)
        .with_context(|| format!("looking up tool_user {tool_user:?}"))?
        .with_context(|| {
            format!(
                "tool_user {tool_user:?} does not exist: create it (useradd --system --no-create-home \
                 --shell /usr/sbin/nologin {tool_user}) or set tool_user to an existing unprivileged user"
            )
        })?;
    if nix::unistd::geteuid().is_root() {
        if user.uid.is_root() || user.gid.as_raw() == 0 {
            bail!("tool_user {tool_user:?} is root (uid or gid 0): tools must run unprivileged");
        }
        return Ok(Some(Identity { uid: user.uid.as_raw(), gid: user.gid.as_raw() }));
    }
    let me = nix::unistd::getuid();
    if user.uid == me {
        tracing::warn!(
            tool_user,
            "the XEM is not running as root and tool_user is its own user: tools run with the \
             XEM's own rights and can read its keys (development only)"
        );
        return Ok(None);
    }
    bail!(
        "tool_user {tool_user:?} needs the XEM to start as root (it drops to tool_user for every \
         tool); it runs as uid {me}. Start it as root, or set tool_user to its own user for \
         development"
    )
}

fn beside_this_executable() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the XEM's own executable")?;
    let dir = exe.parent().context("the XEM's executable has no directory")?;
    Ok(dir.join(RUNNER_BIN))
}

/// Runs the runner once with the default spec and reads what it could apply.
fn probe(runner: &Path, identity: Option<Identity>, run_dir: &Path) -> anyhow::Result<ProbeReport> {
    let spec = LaunchSpec::with_defaults(runner.to_path_buf(), identity);
    let output = std::process::Command::new(runner)
        .arg("--probe")
        .arg(serde_json::to_string(&spec)?)
        .current_dir(run_dir)
        .env_clear()
        .output()
        .with_context(|| format!("starting the tool runner {}", runner.display()))?;
    if !output.status.success() {
        bail!(
            "the tool runner cannot isolate tools on this host: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    serde_json::from_slice(&output.stdout).context("reading the tool runner's probe report")
}

/// The parent of per-invocation directories: owned by the XEM, mode 0711 (the tool user may
/// pass through to its own directory, never list the others), emptied at start.
#[derive(Debug)]
struct RunDir {
    path: PathBuf,
    handle: OwnedFd,
}

impl RunDir {
    fn prepare(path: &Path, tools_switch_user: bool) -> anyhow::Result<Self> {
        if path.exists() {
            // A crash may have left invocation directories behind.
            std::fs::remove_dir_all(path)
                .with_context(|| format!("clearing {}", path.display()))?;
        }
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
        if tools_switch_user {
            check_traversable(path)?;
        }
        let handle = nix::fcntl::open(
            path,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { path: path.to_path_buf(), handle })
    }

    fn child(&self, id: &str, identity: Option<Identity>) -> Result<InvocationDir, String> {
        if !is_invocation_id(id) {
            return Err("malformed invocation id".into());
        }
        let name = OsStr::new(id);
        mkdirat(self.handle.as_fd(), name, Mode::S_IRWXU).map_err(|e| match e {
            nix::Error::EEXIST => "the invocation's directory already exists".to_string(),
            other => format!("creating the invocation's directory: {other}"),
        })?;
        let dir = openat(
            self.handle.as_fd(),
            name,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .map_err(|e| format!("opening the invocation's directory: {e}"))?;
        let stat =
            fstat(dir.as_fd()).map_err(|e| format!("checking the invocation's directory: {e}"))?;
        if stat.st_uid != nix::unistd::geteuid().as_raw() || stat.st_nlink != 2 {
            return Err("the invocation's directory is not the fresh one just made".into());
        }
        mkdirat(dir.as_fd(), "tmp", Mode::S_IRWXU).map_err(|e| format!("creating tmp: {e}"))?;
        if let Some(Identity { uid, gid }) = identity {
            let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
            fchownat(dir.as_fd(), "tmp", uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| format!("giving tmp to the tool user: {e}"))?;
            fchown(dir.as_fd(), uid, gid)
                .map_err(|e| format!("giving the directory to the tool user: {e}"))?;
        }
        Ok(InvocationDir { path: self.path.join(id), handle: dir })
    }
}

/// Whether the tool user may search (directories) or execute (files) `path`, by its mode bits
/// alone (as the kernel decides for a user without capabilities).
fn tool_user_may_execute(meta: &std::fs::Metadata, identity: Identity) -> bool {
    let mode = meta.mode();
    if meta.uid() == identity.uid {
        mode & 0o100 != 0
    } else if meta.gid() == identity.gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

impl Sandbox {
    /// Refuses, at start, a tool the tool user could not start: its executable or a directory
    /// above it is closed to that user (a tools_dir under /root, say).
    pub fn check_reachable(&self, tool: &str, executable: &Path) -> anyhow::Result<()> {
        let Some(identity) = self.identity else { return Ok(()) };
        for path in executable.ancestors() {
            let meta =
                std::fs::metadata(path).with_context(|| format!("checking {}", path.display()))?;
            if !tool_user_may_execute(&meta, identity) {
                bail!(
                    "tool {tool}: tool_user {} cannot reach {} ({} is mode {:o}, owner {}:{}); \
                     put tools_dir where that user may read and execute",
                    self.tool_user,
                    executable.display(),
                    path.display(),
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid()
                );
            }
        }
        Ok(())
    }
}

/// Every ancestor of the run directory must let others pass (o+x), or the tool user could not
/// reach its own directory by path ($HOME, $TMPDIR).
fn check_traversable(path: &Path) -> anyhow::Result<()> {
    let canonical = path.canonicalize().with_context(|| format!("resolving {}", path.display()))?;
    for ancestor in canonical.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor)
            .with_context(|| format!("checking {}", ancestor.display()))?;
        if meta.mode() & 0o001 == 0 {
            bail!(
                "run_dir {}: its parent {} is not traversable by other users (mode {:o}), so \
                 the tool user could not reach its working directory; use a run_dir under \
                 /run (the default) or give {} o+x",
                path.display(),
                ancestor.display(),
                meta.mode() & 0o7777,
                ancestor.display()
            );
        }
    }
    Ok(())
}

/// One invocation's directory; removed (with whatever the tool left) by [`Self::remove`].
#[derive(Debug)]
pub struct InvocationDir {
    pub path: PathBuf,
    handle: OwnedFd,
}

impl InvocationDir {
    /// The open directory, which the runner enters (never by path).
    pub fn handle(&self) -> BorrowedFd<'_> {
        self.handle.as_fd()
    }

    pub fn tmp(&self) -> PathBuf {
        self.path.join("tmp")
    }

    /// Removes the directory tree. `remove_dir_all` does not follow symlinks the tool may have
    /// planted (it works through directory handles), and the run directory above is the XEM's.
    pub fn remove(self) {
        if let Err(err) = std::fs::remove_dir_all(&self.path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(dir = %self.path.display(), error = %err, "could not remove an invocation directory");
        }
    }
}

/// Runners started ahead of time (`xerotier-tool-runner --serve`), each its own process group
/// leader, each waiting on a socket for one request. Dropped (with the XEM), they are killed.
#[derive(Debug)]
struct RunnerPool {
    runner: PathBuf,
    /// Oldest first: the one taken has had the longest to reach its `recvmsg` (a runner
    /// started a moment ago may still be loading, which would put its start back on the path).
    ready: Mutex<VecDeque<ReadyRunner>>,
    size: usize,
}

impl RunnerPool {
    fn start(&self) -> std::io::Result<ReadyRunner> {
        let (ours, theirs) =
            socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?;
        let child = tokio::process::Command::new(&self.runner)
            .arg("--serve")
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        Ok(ReadyRunner { child, socket: ours })
    }

    fn take(&self) -> std::io::Result<ReadyRunner> {
        loop {
            let next = self.ready.lock().pop_front();
            match next {
                Some(mut ready) => {
                    // One that died while waiting (killed by hand, say) is passed over.
                    if matches!(ready.child.try_wait(), Ok(None)) {
                        return Ok(ready);
                    }
                }
                None => return self.start(),
            }
        }
    }

    fn refill(&self) {
        while self.ready.lock().len() < self.size {
            match self.start() {
                Ok(ready) => self.ready.lock().push_back(ready),
                Err(err) => {
                    tracing::warn!(error = %err, "could not start a tool runner ahead of time");
                    return;
                }
            }
        }
    }
}

/// A started runner: its process (the tool's, once it execs) and the socket it waits on.
#[derive(Debug)]
pub struct ReadyRunner {
    pub child: tokio::process::Child,
    socket: OwnedFd,
}

impl ReadyRunner {
    /// Hands the runner its one request with its descriptors, in `RequestFds` order.
    pub fn send(&self, request: &Request, fds: &[BorrowedFd<'_>]) -> Result<(), String> {
        let bytes = serde_json::to_vec(request).map_err(|e| format!("writing the request: {e}"))?;
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(6))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err("too many descriptors for the runner".into());
        }
        sendmsg(&self.socket, &[IoSlice::new(&bytes)], &mut control, SendFlags::NOSIGNAL)
            .map_err(|e| format!("handing the tool to its runner: {e}"))?;
        Ok(())
    }
}
