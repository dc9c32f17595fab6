//! The runner's work: apply a [`LaunchSpec`] to this (single-threaded) process, then exec the
//! tool. Order matters: limits and the Landlock view are set while still privileged enough to
//! set them, the identity is dropped last and checked, and nothing the tool can do undoes any
//! of it (no new privileges; the uid change is permanent for a non-root target).

use std::io::Write;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;

use landlock::{
    ABI, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus,
};
use nix::sys::resource::{Resource, setrlimit};
use nix::unistd::{Gid, Uid, getgid, getuid, setgid, setgroups, setuid};
use rustix::io::IoSliceMut;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, recvmsg};

use crate::{
    CREDENTIAL_FD, Identity, LandlockMode, LandlockStatus, LaunchSpec, Limits, MAX_REQUEST_BYTES,
    ProbeReport, Request,
};

/// The newest Landlock rights this runner asks for; older kernels get what they know.
const LANDLOCK_ABI: ABI = ABI::V5;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("the launch spec is not valid: {0}")]
    Spec(String),
    #[error("setting {what}: {source}")]
    Limit { what: &'static str, source: nix::Error },
    #[error("the credential snapshot is missing (descriptor {CREDENTIAL_FD} is not open)")]
    NoCredential,
    #[error("Landlock: {0}")]
    Landlock(String),
    #[error("Landlock is required for this tool and the kernel does not enforce it")]
    LandlockRequired,
    #[error("switching to uid {uid} gid {gid}: {source}")]
    Identity { uid: u32, gid: u32, source: nix::Error },
    #[error("the identity switch did not hold (uid {uid}, gid {gid}, regained root: {regained})")]
    IdentityCheck { uid: u32, gid: u32, regained: bool },
    #[error("no new privileges: {0}")]
    NoNewPrivs(nix::Error),
    #[error("starting {path}: {source}")]
    Exec { path: String, source: std::io::Error },
}

/// Applies `spec` and execs the tool, with `env` as its whole environment (else the runner's
/// own); returns only on failure.
pub fn launch(
    spec: &LaunchSpec,
    env: Option<&[(String, String)]>,
    status: Option<&std::fs::File>,
) -> LaunchError {
    match prepare(spec, status.map(AsRawFd::as_raw_fd)) {
        Ok(_) => {}
        Err(err) => return err,
    }
    let mut command = std::process::Command::new(&spec.executable);
    if let Some(env) = env {
        command.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    }
    // Same pid, same process group: the XEM's kill of the group reaches the tool.
    let source = command.exec();
    LaunchError::Exec { path: spec.executable.display().to_string(), source }
}

/// `--serve`: waits on stdin, a unix socket from the XEM, for one [`Request`] and its
/// descriptors, puts them in place and runs the tool ([`launch`]). Returns the exit status
/// when the tool could not be started (127), or 0 when the XEM closed the socket without a
/// request (its pool of ready runners was dropped).
pub fn serve() -> u8 {
    let (request, fds) = match receive() {
        Ok(Some(received)) => received,
        Ok(None) => return 0,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "xerotier-tool-runner: {err}");
            return 127;
        }
    };
    let (mut status, _credential) = match place_descriptors(fds, request.spec.has_credential) {
        Ok(placed) => placed,
        Err((mut status, err)) => {
            report_failure(status.as_mut(), &err);
            return 127;
        }
    };
    // `_credential` (descriptor 3) stays open through the exec: it is the tool's.
    let err = launch(&request.spec, Some(&request.env), Some(&status));
    report_failure(Some(&mut status), &err);
    127
}

type Received = (Request, Vec<OwnedFd>);

fn receive() -> Result<Option<Received>, LaunchError> {
    let failed = |what: &str, e: std::io::Error| LaunchError::Spec(format!("{what}: {e}"));
    let mut buffer = vec![0u8; MAX_REQUEST_BYTES];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(6))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let message = recvmsg(
        std::io::stdin(),
        &mut [IoSliceMut::new(&mut buffer)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| failed("reading the request", e.into()))?;
    let fds: Vec<OwnedFd> = control
        .drain()
        .flat_map(|message| match message {
            RecvAncillaryMessage::ScmRights(fds) => fds.collect(),
            _ => Vec::new(),
        })
        .collect();
    if message.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    if message.flags.intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC) {
        return Err(LaunchError::Spec("the request was truncated".into()));
    }
    let request: Request = serde_json::from_slice(&buffer[..message.bytes])
        .map_err(|e| LaunchError::Spec(e.to_string()))?;
    let expected = if request.spec.has_credential { 6 } else { 5 };
    if fds.len() != expected {
        return Err(LaunchError::Spec(format!(
            "the request came with {} descriptors, not {expected}",
            fds.len()
        )));
    }
    Ok(Some((request, fds)))
}

/// Stdio onto 0, 1, 2, into the invocation's directory, the credential onto
/// [`CREDENTIAL_FD`]; the status pipe comes back first so any failure can be told.
fn place_descriptors(
    fds: Vec<OwnedFd>,
    has_credential: bool,
) -> Result<(std::fs::File, Option<OwnedFd>), (Option<std::fs::File>, LaunchError)> {
    let mut fds = fds.into_iter();
    let (Some(stdin), Some(stdout), Some(stderr), Some(status), Some(work_dir)) =
        (fds.next(), fds.next(), fds.next(), fds.next(), fds.next())
    else {
        return Err((None, LaunchError::Spec("descriptors missing".into())));
    };
    let status = std::fs::File::from(status);
    let placed = (|| {
        let io = |what: &'static str| {
            move |e: rustix::io::Errno| LaunchError::Spec(format!("{what}: {e}"))
        };
        rustix::stdio::dup2_stdin(&stdin).map_err(io("stdin"))?;
        rustix::stdio::dup2_stdout(&stdout).map_err(io("stdout"))?;
        rustix::stdio::dup2_stderr(&stderr).map_err(io("stderr"))?;
        drop((stdin, stdout, stderr));
        rustix::process::fchdir(&work_dir).map_err(io("entering the invocation's directory"))?;
        drop(work_dir);
        let credential = match fds.next() {
            Some(received) if has_credential => {
                // The lowest free descriptor: 0–2 are stdio and 3 was just freed.
                let moved = rustix::io::dup(&received).map_err(io("the credential"))?;
                if moved.as_raw_fd() != CREDENTIAL_FD {
                    return Err(LaunchError::Spec(format!(
                        "the credential landed on descriptor {}, not {CREDENTIAL_FD}",
                        moved.as_raw_fd()
                    )));
                }
                Some(moved)
            }
            _ => None,
        };
        Ok(credential)
    })();
    match placed {
        Ok(credential) => Ok((status, credential)),
        Err(err) => Err((Some(status), err)),
    }
}

/// Applies `spec` as [`launch`] would and reports what holds, without running anything (the
/// XEM probes once at start, so a host that cannot isolate tools says so before any work).
pub fn probe(spec: &LaunchSpec) -> Result<ProbeReport, LaunchError> {
    let landlock = prepare(spec, None)?;
    Ok(ProbeReport { uid: getuid().as_raw(), gid: getgid().as_raw(), landlock })
}

fn prepare(spec: &LaunchSpec, status: Option<RawFd>) -> Result<LandlockStatus, LaunchError> {
    if !spec.executable.is_absolute() {
        return Err(LaunchError::Spec("the executable must be an absolute path".into()));
    }
    close_stray_descriptors(spec.has_credential, status)?;
    set_limits(&spec.limits)?;
    let landlock = restrict_filesystem(spec)?;
    if let Some(identity) = spec.identity {
        become_tool_user(identity)?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(LaunchError::NoNewPrivs)?;
    Ok(landlock)
}

/// Only stdio and the credential snapshot reach the tool; `status` (the close-on-exec status
/// pipe, closed by the exec) stays open until then.
fn close_stray_descriptors(has_credential: bool, status: Option<RawFd>) -> Result<(), LaunchError> {
    let credential_open = std::path::Path::new(&format!("/proc/self/fd/{CREDENTIAL_FD}")).exists();
    if has_credential && !credential_open {
        return Err(LaunchError::NoCredential);
    }
    let listed: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| LaunchError::Spec(format!("listing /proc/self/fd: {e}")))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in listed {
        let keep = fd <= 2 || (fd == CREDENTIAL_FD && has_credential) || Some(fd) == status;
        if !keep {
            // The directory listing's own descriptor is already closed: EBADF is expected.
            let _ = nix::unistd::close(fd);
        }
    }
    Ok(())
}

fn set_limits(limits: &Limits) -> Result<(), LaunchError> {
    let all = [
        (Resource::RLIMIT_AS, "the memory limit", limits.memory_bytes),
        (Resource::RLIMIT_NPROC, "the process limit", limits.processes),
        (Resource::RLIMIT_NOFILE, "the open file limit", limits.open_files),
        (Resource::RLIMIT_FSIZE, "the file size limit", limits.file_size_bytes),
        (Resource::RLIMIT_CPU, "the CPU time limit", limits.cpu_seconds),
    ];
    for (resource, what, value) in all {
        setrlimit(resource, value, value).map_err(|source| LaunchError::Limit { what, source })?;
    }
    Ok(())
}

fn restrict_filesystem(spec: &LaunchSpec) -> Result<LandlockStatus, LaunchError> {
    if spec.landlock == LandlockMode::Off {
        return Ok(LandlockStatus::Off);
    }
    let landlock = |e: landlock::RulesetError| LaunchError::Landlock(e.to_string());
    let read = AccessFs::from_read(LANDLOCK_ABI);
    let device = AccessFs::from_file(LANDLOCK_ABI);
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(LANDLOCK_ABI))
        .map_err(landlock)?
        .create()
        .map_err(landlock)?;
    for path in &spec.read_paths {
        // A directory this host does not have (/lib32, say) needs no rule.
        if let Ok(fd) = PathFd::new(path) {
            ruleset = ruleset.add_rule(PathBeneath::new(fd, read)).map_err(landlock)?;
        }
    }
    for path in &spec.device_paths {
        if let Ok(fd) = PathFd::new(path) {
            ruleset = ruleset.add_rule(PathBeneath::new(fd, device)).map_err(landlock)?;
        }
    }
    // The working directory: the invocation's own, where the XEM started this runner.
    let own = PathFd::new(".").map_err(|e| LaunchError::Landlock(e.to_string()))?;
    ruleset = ruleset
        .add_rule(PathBeneath::new(own, AccessFs::from_all(LANDLOCK_ABI)))
        .map_err(landlock)?;
    let status = ruleset.restrict_self().map_err(landlock)?;
    let status = match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockStatus::Full,
        RulesetStatus::PartiallyEnforced => LandlockStatus::Partial,
        RulesetStatus::NotEnforced => LandlockStatus::Unavailable,
    };
    if spec.landlock == LandlockMode::Required && status == LandlockStatus::Unavailable {
        return Err(LaunchError::LandlockRequired);
    }
    Ok(status)
}

/// Drops every group, then the gid, then the uid; then proves root cannot be regained.
fn become_tool_user(identity: Identity) -> Result<(), LaunchError> {
    let Identity { uid, gid } = identity;
    let failed = |source| LaunchError::Identity { uid, gid, source };
    if getuid().is_root() {
        setgroups(&[Gid::from_raw(gid)]).map_err(failed)?;
    }
    setgid(Gid::from_raw(gid)).map_err(failed)?;
    setuid(Uid::from_raw(uid)).map_err(failed)?;
    let regained = uid != 0 && setuid(Uid::from_raw(0)).is_ok();
    let held = getuid().as_raw() == uid
        && nix::unistd::geteuid().as_raw() == uid
        && getgid().as_raw() == gid
        && nix::unistd::getegid().as_raw() == gid;
    if regained || !held {
        return Err(LaunchError::IdentityCheck { uid, gid, regained });
    }
    Ok(())
}

/// Tells the XEM why the tool was not started (or stderr, without a status pipe).
pub fn report_failure(status: Option<&mut std::fs::File>, error: &LaunchError) {
    let message = error.to_string();
    match status {
        Some(pipe) => {
            let _ = pipe.write_all(message.as_bytes());
        }
        None => {
            let _ = writeln!(std::io::stderr(), "xerotier-tool-runner: {message}");
        }
    }
}
