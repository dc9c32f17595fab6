//! The runner's work: apply a [`LaunchSpec`] to this (single-threaded) process, then exec the
//! tool. Order matters: limits and the Landlock view are set while still privileged enough to
//! set them, the identity is dropped last and checked, and nothing the tool can do undoes any
//! of it (no new privileges; the uid change is permanent for a non-root target).

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use landlock::{
    ABI, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus,
};
use nix::sys::resource::{Resource, setrlimit};
use nix::unistd::{Gid, Uid, getgid, getuid, setgid, setgroups, setuid};

use crate::{
    CREDENTIAL_FD, Identity, LandlockMode, LandlockStatus, LaunchSpec, Limits, ProbeReport,
    STATUS_FD,
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

/// Applies `spec` and execs the tool; returns only on failure.
pub fn launch(spec: &LaunchSpec, status: Option<&std::fs::File>) -> LaunchError {
    match prepare(spec, status.map(AsRawFd::as_raw_fd)) {
        Ok(_) => {}
        Err(err) => return err,
    }
    // Same pid, same process group: the XEM's kill of the group reaches the tool.
    let source = std::process::Command::new(&spec.executable).exec();
    LaunchError::Exec { path: spec.executable.display().to_string(), source }
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

/// Only stdio and the credential snapshot reach the tool; `status` (the reopened, close-on-exec
/// status pipe) stays open until the exec.
fn close_stray_descriptors(has_credential: bool, status: Option<RawFd>) -> Result<(), LaunchError> {
    let credential_open = Path::new(&format!("/proc/self/fd/{CREDENTIAL_FD}")).exists();
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

/// The status pipe, reopened through /proc (the workspace forbids the `unsafe` that would own
/// the inherited number). The reopened descriptor is close-on-exec, so a successful exec
/// closes it and the XEM reads EOF with no message; the inherited number is closed by
/// [`close_stray_descriptors`], so the tool can never write a fake failure. `None` when the
/// runner was started without one (by hand).
pub fn open_status_pipe() -> Option<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{STATUS_FD}"))
        .ok()
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
