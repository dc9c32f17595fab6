//! One tool run, isolated: a fresh directory owned by the tool user (made through the run
//! directory's handle), the credential snapshot in a sealed memfd (never on a disk), the tool
//! started by a ready `xerotier-tool-runner` (tool user, rlimits, Landlock, no new privileges),
//! which leads its own process group. Arguments go in on stdin from their own task, so the timeout and a
//! cancel hold from the moment of spawn; output is captured (bounded) and streamed; the whole
//! group is killed before its leader is reaped, so its id cannot have been reused.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use xerotier_core::SharedClock;
use xerotier_proto::invocation::{InvocationResult, InvocationStatus, MAX_OUTPUT_BYTES};
use xerotier_sandbox::Request;

use crate::catalog::{ToolBundle, WorkspaceDecl};
use crate::credentials::CredentialVersion;
use crate::sandbox::{InvocationDir, Sandbox};

const READ_CHUNK: usize = 8 * 1024;
/// What a tool sees as its credential file: its own descriptor of the sealed memfd.
const CREDENTIAL_PATH: &str = "/proc/self/fd/3";
/// Arguments up to this size are also in `$XEROTIER_ARGS`; larger ones only on stdin (an
/// environment copy of large arguments made exec fail with E2BIG).
const MAX_ARGS_IN_ENV: usize = 4 * 1024;
/// After the group is killed, how long output readers may take to drain: a process that left
/// the group (setsid) could hold the pipes open for good.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// A runner's failure message is one line; more is not read.
const MAX_STATUS_BYTES: u64 = 4 * 1024;

#[derive(Debug)]
pub struct ExecRequest {
    /// Checked against the id format before it got here.
    pub invocation_id: String,
    pub tool: ToolBundle,
    pub workspace: WorkspaceDecl,
    pub credential: Option<Arc<CredentialVersion>>,
    pub args_json: String,
    pub sandbox: Arc<Sandbox>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone)]
pub struct OutputChunk {
    pub invocation_id: String,
    pub stream: Stream,
    pub bytes: Vec<u8>,
}

/// What ended the wait for the tool.
enum Ending {
    Exited,
    TimedOut,
    Cancelled,
    WaitFailed(String),
}

struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

/// Reads a pipe to its end, keeping the first [`MAX_OUTPUT_BYTES`] and forwarding them as they
/// come; the rest is drained (so the tool never blocks on a full pipe) and marked truncated.
async fn capture(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    invocation_id: String,
    output: Option<mpsc::Sender<OutputChunk>>,
) -> Captured {
    let mut captured = Captured { bytes: Vec::new(), truncated: false };
    let mut buffer = vec![0u8; READ_CHUNK];
    loop {
        let read = match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => return captured,
            Ok(read) => read,
        };
        let room = MAX_OUTPUT_BYTES.saturating_sub(captured.bytes.len());
        let kept = read.min(room);
        if kept < read {
            captured.truncated = true;
        }
        if kept > 0 {
            captured.bytes.extend_from_slice(&buffer[..kept]);
            if let Some(output) = &output {
                let chunk = OutputChunk {
                    invocation_id: invocation_id.clone(),
                    stream,
                    bytes: buffer[..kept].to_vec(),
                };
                let _ = output.send(chunk).await;
            }
        }
    }
}

fn kill_group(pgid: Option<u32>) {
    if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
        // ESRCH (the group is already gone) is the normal case after a clean exit.
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// The snapshot as a sealed memfd: in memory only, unchangeable once sealed, gone when the
/// last descriptor closes (the tool's, at its end). Swap is the one way tmpfs pages reach a
/// disk: hosts that hold credentials run without swap or with encrypted swap.
fn credential_memfd(bytes: &[u8]) -> std::io::Result<OwnedFd> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd =
        memfd_create("xerotier-credential", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    let seals = SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SEAL;
    fcntl(&file, FcntlArg::F_ADD_SEALS(seals))?;
    Ok(file.into())
}

/// Waits, off the runtime, until the tool's process has exited, without reaping it: while it
/// is a zombie its pid (and so its process group id) cannot be reused. (A pidfd would spare
/// the thread, but registering one with tokio is an `unsafe` API, which this workspace
/// forbids.)
async fn exited_unreaped(pid: Option<u32>) -> Result<(), String> {
    let pid = pid.and_then(|p| i32::try_from(p).ok()).ok_or("the tool has no pid")?;
    let waited = tokio::task::spawn_blocking(move || {
        loop {
            match waitid(Id::Pid(Pid::from_raw(pid)), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Err(nix::Error::EINTR) => continue,
                Err(err) => return Err(err.to_string()),
                Ok(_) => return Ok(()),
            }
        }
    });
    waited.await.map_err(|e| e.to_string())?
}

/// Reads the runner's status pipe to its end: empty when the tool was started (the exec closed
/// the pipe), else why it was not.
async fn runner_status(pipe: OwnedFd) -> String {
    let Ok(receiver) = tokio::net::unix::pipe::Receiver::from_owned_fd(pipe) else {
        return String::new();
    };
    let mut message = Vec::new();
    let _ = receiver.take(MAX_STATUS_BYTES).read_to_end(&mut message).await;
    String::from_utf8_lossy(&message).into_owned()
}

/// A finished run and the directory it ran in, which is still there: the caller sends the
/// result first and removes the directory after ([`Executed::clean_up`]), so the removal is
/// not on the invocation's path. The tool's whole process group is gone by now.
#[derive(Debug)]
pub struct Executed {
    pub result: InvocationResult,
    pub dir: Option<InvocationDir>,
}

impl Executed {
    /// Removes the directory and hands back the result.
    pub fn clean_up(self) -> InvocationResult {
        if let Some(dir) = self.dir {
            dir.remove();
        }
        self.result
    }
}

/// Runs the invocation to its end and says how it ended, its directory already removed.
/// Never panics; every failure is a `failed` result with an `error`.
pub async fn execute(
    request: ExecRequest,
    output: Option<mpsc::Sender<OutputChunk>>,
    cancel: watch::Receiver<bool>,
    clock: SharedClock,
) -> InvocationResult {
    execute_leaving_dir(request, output, cancel, clock).await.clean_up()
}

/// [`execute`], leaving the directory for the caller to remove once the result is sent.
pub async fn execute_leaving_dir(
    request: ExecRequest,
    output: Option<mpsc::Sender<OutputChunk>>,
    mut cancel: watch::Receiver<bool>,
    clock: SharedClock,
) -> Executed {
    let started_at_ms = clock.now_millis();
    let generation = request.credential.as_ref().map_or(0, |c| c.generation);
    let mut result = InvocationResult {
        invocation_id: request.invocation_id.clone(),
        status: InvocationStatus::Failed,
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        error: None,
        started_at_ms,
        finished_at_ms: started_at_ms,
        credential_generation: generation,
    };
    let dir = match request.sandbox.invocation_dir(&request.invocation_id) {
        Ok(dir) => {
            if let Err(error) = run(&request, &dir, output, &mut cancel, &mut result).await {
                result.error = Some(error);
            }
            Some(dir)
        }
        Err(error) => {
            result.error = Some(error);
            None
        }
    };
    result.finished_at_ms = clock.now_millis();
    Executed { result, dir }
}

/// The tool's whole environment: nothing of the XEM's.
fn environment(
    request: &ExecRequest,
    dir: &InvocationDir,
    credential: bool,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_string(), "/usr/local/bin:/usr/bin:/bin".to_string()),
        ("HOME".to_string(), dir.path.display().to_string()),
        ("TMPDIR".to_string(), dir.tmp().display().to_string()),
        ("XEROTIER_INVOCATION_ID".to_string(), request.invocation_id.clone()),
        ("XEROTIER_WORKSPACE".to_string(), request.workspace.id.clone()),
        ("XEROTIER_TOOL".to_string(), request.tool.name.clone()),
    ];
    if request.args_json.len() <= MAX_ARGS_IN_ENV {
        env.push(("XEROTIER_ARGS".to_string(), request.args_json.clone()));
    }
    if credential {
        env.push(("XEROTIER_CREDENTIALS_FILE".to_string(), CREDENTIAL_PATH.to_string()));
        if request.workspace.kind == "kubernetes" {
            env.push(("KUBECONFIG".to_string(), CREDENTIAL_PATH.to_string()));
        }
    }
    env
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("creating a pipe: {e}"))
}

/// The tool's end of its pipes, then ours.
struct Pipes {
    stdin: (OwnedFd, OwnedFd),
    stdout: (OwnedFd, OwnedFd),
    stderr: (OwnedFd, OwnedFd),
    status: (OwnedFd, OwnedFd),
}

async fn run(
    request: &ExecRequest,
    dir: &InvocationDir,
    output: Option<mpsc::Sender<OutputChunk>>,
    cancel: &mut watch::Receiver<bool>,
    result: &mut InvocationResult,
) -> Result<(), String> {
    let credential = match &request.credential {
        Some(version) => Some(
            credential_memfd(&version.bytes)
                .map_err(|e| format!("holding the credential snapshot in memory: {e}"))?,
        ),
        None => None,
    };
    let tool = &request.tool;
    let spec = request.sandbox.spec(
        &tool.executable,
        tool.limits,
        tool.sandbox.landlock,
        &tool.sandbox.read_paths,
        credential.is_some(),
    );
    let launch = Request { spec, env: environment(request, dir, credential.is_some()) };
    let pipes = Pipes { stdin: pipe()?, stdout: pipe()?, stderr: pipe()?, status: pipe()? };
    let runner =
        request.sandbox.take_runner().map_err(|e| format!("starting the tool runner: {e}"))?;
    // In `RequestFds` order: the tool's ends of its pipes, the directory, the credential.
    let mut fds = vec![
        pipes.stdin.0.as_fd(),
        pipes.stdout.1.as_fd(),
        pipes.stderr.1.as_fd(),
        pipes.status.1.as_fd(),
        dir.handle(),
    ];
    if let Some(credential) = &credential {
        fds.push(credential.as_fd());
    }
    // On failure the runner is dropped, which kills it.
    runner.send(&launch, &fds)?;
    drop(fds);
    // The runner holds its own copies now: ours of the tool's ends (and the memfd) go, so the
    // pipes read EOF when the tool is done and the memfd dies with the tool.
    let Pipes { stdin, stdout, stderr, status } = pipes;
    drop((stdin.0, stdout.1, stderr.1, status.1, credential));
    let mut child = runner.child;
    let pid = child.id();
    let started = tokio::spawn(runner_status(status.0));
    let id = request.invocation_id.clone();
    let receiver = |fd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok();
    let stdout = receiver(stdout.0)
        .map(|p| tokio::spawn(capture(p, Stream::Stdout, id.clone(), output.clone())));
    let stderr = receiver(stderr.0).map(|p| tokio::spawn(capture(p, Stream::Stderr, id, output)));
    // Its own task: a tool that never reads its stdin must not hold up the timeout.
    let stdin = tokio::net::unix::pipe::Sender::from_owned_fd(stdin.1).ok().map(|mut pipe| {
        let args = request.args_json.clone();
        tokio::spawn(async move {
            // A tool that ignores its stdin closes it early; that is not an error.
            let _ = pipe.write_all(args.as_bytes()).await;
        })
    });
    let ending = tokio::select! {
        exited = exited_unreaped(pid) => match exited {
            Ok(()) => Ending::Exited,
            Err(err) => Ending::WaitFailed(err),
        },
        () = tokio::time::sleep(request.tool.timeout) => Ending::TimedOut,
        _ = cancel.wait_for(|cancelled| *cancelled) => Ending::Cancelled,
    };
    // The whole group goes, also children a tool left running in the background, while the
    // leader is still unreaped; only then is it reaped.
    kill_group(pid);
    if let Some(stdin) = stdin {
        stdin.abort();
    }
    let status = child.wait().await;
    for (task, text, truncated) in [
        (stdout, &mut result.stdout, &mut result.stdout_truncated),
        (stderr, &mut result.stderr, &mut result.stderr_truncated),
    ] {
        let Some(task) = task else { continue };
        let abort = task.abort_handle();
        match tokio::time::timeout(OUTPUT_DRAIN, task).await {
            Ok(Ok(captured)) => {
                *text = String::from_utf8_lossy(&captured.bytes).into_owned();
                *truncated = captured.truncated;
            }
            Ok(Err(_)) => {}
            Err(_) => {
                abort.abort();
                *truncated = true;
            }
        }
    }
    let not_started = started.await.unwrap_or_default();
    if !not_started.is_empty() {
        return Err(format!("the tool was not started: {not_started}"));
    }
    match ending {
        Ending::Exited => {
            let status = status.map_err(|e| format!("waiting for the tool: {e}"))?;
            match status.code() {
                Some(0) => {
                    result.status = InvocationStatus::Succeeded;
                    result.exit_code = Some(0);
                }
                Some(code) => result.exit_code = Some(code),
                None => {
                    let signal =
                        std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0);
                    return Err(format!("killed by signal {signal}"));
                }
            }
        }
        Ending::TimedOut => {
            result.status = InvocationStatus::TimedOut;
            return Err(format!(
                "timed out after {}s; process group killed",
                request.tool.timeout.as_secs()
            ));
        }
        Ending::Cancelled => {
            result.status = InvocationStatus::Cancelled;
            return Err("cancelled; process group killed".into());
        }
        Ending::WaitFailed(err) => return Err(format!("waiting for the tool: {err}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use xerotier_core::SystemClock;
    use xerotier_sandbox::{LandlockMode, Limits, RUNNER_BIN};
    use zeroize::Zeroizing;

    use super::*;
    use crate::catalog::SandboxSettings;

    const ID: &str = "inv_0123456789abcdefghjkmnpqrs";
    const OTHER_ID: &str = "inv_zzzzzzzzzzzzzzzzzzzzzzzzzz";

    /// The runner, as `cargo build --workspace --bins` left it beside this test binary's
    /// profile directory (`target/<profile>/deps/xerotier_xem-…` → `target/<profile>/`).
    fn runner() -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let path = exe.parent().unwrap().parent().unwrap().join(RUNNER_BIN);
        assert!(path.is_file(), "{} is missing: cargo build --workspace --bins", path.display());
        path
    }

    /// These tests drop to `nobody`, as the XEM does in production: they need root.
    fn tool_user() -> &'static str {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the executor tests run tools as `nobody` and need root (as CI has)"
        );
        "nobody"
    }

    struct Fixture {
        dir: tempfile::TempDir,
        sandbox: Arc<Sandbox>,
        clock: SharedClock,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            // The tool user must reach its tools and its own directory by path.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
            let sandbox =
                Sandbox::prepare(tool_user(), Some(&runner()), &dir.path().join("run"), 1).unwrap();
            Self { dir, sandbox: Arc::new(sandbox), clock: Arc::new(SystemClock) }
        }

        fn tool(&self, name: &str, timeout: Duration, script: &str) -> ToolBundle {
            // Its own bundle directory: the tool may read all of it.
            let bundle = self.dir.path().join("tools").join(name);
            std::fs::create_dir_all(&bundle).unwrap();
            std::fs::set_permissions(
                self.dir.path().join("tools"),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
            std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o755)).unwrap();
            let path = bundle.join("run.sh");
            std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            ToolBundle {
                name: name.into(),
                description: String::new(),
                risk: "read".into(),
                timeout,
                executable: path,
                args_schema: serde_json::json!({"type": "object"}),
                limits: Limits::default(),
                sandbox: SandboxSettings::default(),
            }
        }

        fn request(&self, tool: ToolBundle, kind: &str, credential: Option<&str>) -> ExecRequest {
            ExecRequest {
                invocation_id: ID.into(),
                tool,
                workspace: WorkspaceDecl {
                    id: "prod".into(),
                    kind: kind.into(),
                    credentials_ref: "prod.yaml".into(),
                },
                credential: credential.map(|c| {
                    Arc::new(CredentialVersion {
                        bytes: Zeroizing::new(c.as_bytes().to_vec()),
                        sha256: String::new(),
                        generation: 3,
                        mtime_ms: 0,
                        expires_at_ms: None,
                    })
                }),
                args_json: r#"{"n":1}"#.into(),
                sandbox: self.sandbox.clone(),
            }
        }

        async fn run(&self, request: ExecRequest) -> InvocationResult {
            let (_cancel, cancel_rx) = watch::channel(false);
            execute(request, None, cancel_rx, self.clock.clone()).await
        }

        fn own_dir(&self) -> PathBuf {
            self.dir.path().join("run").join(ID)
        }
    }

    fn assert_succeeded(result: &InvocationResult) {
        assert_eq!(
            (result.status, result.exit_code),
            (InvocationStatus::Succeeded, Some(0)),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn the_tool_runs_unprivileged_with_its_args_and_an_in_memory_credential() {
        let fx = Fixture::new();
        let tool = fx.tool(
            "show",
            Duration::from_secs(10),
            "read -r stdin_args\necho \"stdin=$stdin_args env=$XEROTIER_ARGS\"\n\
             echo \"kubeconfig=$KUBECONFIG file=$XEROTIER_CREDENTIALS_FILE\"\n\
             echo \"uid=$(id -u) home=$HOME tmp=$TMPDIR pwd=$(pwd)\"\n\
             stat -L -f -c 'fs=%T' \"$KUBECONFIG\"\n\
             readlink \"$KUBECONFIG\"\n\
             echo x > \"$TMPDIR/scratch\" && echo tmp-writable\n\
             echo x >> \"$KUBECONFIG\" 2>/dev/null || echo sealed\n\
             cat \"$KUBECONFIG\"\necho err >&2",
        );
        let result = fx.run(fx.request(tool, "kubernetes", Some("secret-bytes\n"))).await;
        assert_succeeded(&result);
        let out = &result.stdout;
        assert!(out.contains(r#"stdin={"n":1} env={"n":1}"#), "{out}");
        assert!(out.contains("kubeconfig=/proc/self/fd/3 file=/proc/self/fd/3"), "{out}");
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
        let dir = fx.own_dir();
        assert!(
            out.contains(&format!("uid={nobody} home={0} tmp={0}/tmp pwd={0}", dir.display())),
            "{out}"
        );
        assert!(out.contains("fs=tmpfs\n/memfd:xerotier-credential"), "not on a disk: {out}");
        assert!(out.contains("tmp-writable\nsealed\nsecret-bytes\n"), "{out}");
        assert_eq!(result.stderr, "err\n");
        assert_eq!(result.credential_generation, 3);
        assert!(!dir.exists(), "the directory is removed");
    }

    #[tokio::test]
    async fn other_workspace_kinds_get_no_kubeconfig_and_a_failing_tool_fails() {
        let fx = Fixture::new();
        let tool =
            fx.tool("fail", Duration::from_secs(10), "echo \"k=${KUBECONFIG:-none}\"\nexit 7");
        let result = fx.run(fx.request(tool, "aws", Some("x"))).await;
        assert_eq!((result.status, result.exit_code), (InvocationStatus::Failed, Some(7)));
        assert_eq!(result.stdout, "k=none\n");
    }

    #[tokio::test]
    async fn the_tool_cannot_reach_the_hosts_secrets_or_another_invocations_directory() {
        let fx = Fixture::new();
        // Root-only files, as the XEM's keys and credential files are.
        let secret = fx.dir.path().join("agent-curve-key.hex");
        std::fs::write(&secret, "private").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        // Another invocation's directory, owned by the same tool user.
        let other = fx.sandbox.invocation_dir(OTHER_ID).unwrap();
        let planted = other.path.join("output.txt");
        std::fs::write(&planted, "theirs").unwrap();
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        nix::unistd::chown(&planted, Some(nobody.uid), Some(nobody.gid)).unwrap();
        let script = format!(
            "for f in {secret} {planted} /etc/shadow; do cat \"$f\" >/dev/null 2>&1 && echo \"READ $f\"; done\n\
             ls {run} >/dev/null 2>&1 && echo 'LISTED run dir'\n\
             ls /tmp >/dev/null 2>&1 && echo 'LISTED /tmp'\n\
             echo x > /tmp/xerotier-escape-$$ 2>/dev/null && echo 'WROTE /tmp'\n\
             echo x > {other}/planted 2>/dev/null && echo 'WROTE other'\n\
             echo done",
            secret = secret.display(),
            planted = planted.display(),
            run = fx.dir.path().join("run").display(),
            other = other.path.display(),
        );
        let tool = fx.tool("snoop", Duration::from_secs(10), &script);
        let result = fx.run(fx.request(tool, "aws", None)).await;
        assert_succeeded(&result);
        assert_eq!(result.stdout, "done\n", "every attempt must fail: {result:?}");
        assert!(!other.path.join("planted").exists());
        other.remove();
    }

    #[tokio::test]
    async fn resource_limits_from_tool_yaml_are_enforced() {
        let fx = Fixture::new();
        let mut tool = fx.tool(
            "limited",
            Duration::from_secs(10),
            "grep -E '^Max (cpu time|file size|processes|open files|address space)' /proc/self/limits \
               | tr -s ' ' | cut -d' ' -f1-5\n\
             head -c 2097152 /dev/zero > big 2>/dev/null; echo \"size=$(stat -c %s big)\"",
        );
        tool.limits = Limits {
            memory_bytes: 512 << 20,
            processes: 64,
            open_files: 32,
            file_size_bytes: 1 << 20,
            cpu_seconds: 7,
        };
        let result = fx.run(fx.request(tool, "aws", None)).await;
        let expected = "Max cpu time 7 7\nMax file size 1048576 1048576\n\
                        Max processes 64 64 processes\nMax open files 32 32\n\
                        Max address space 536870912 536870912\nsize=1048576\n";
        assert_eq!(result.stdout, expected, "{result:?}");
    }

    #[tokio::test]
    async fn hostile_ids_and_reused_directories_are_refused_before_anything_runs() {
        let fx = Fixture::new();
        let marker = fx.dir.path().join("tools/ran");
        let script = format!("touch {}", marker.display());
        for hostile in ["/tmp/xerotier-hostile", "../escape", "inv_../../x", "inv_é", ""] {
            let mut request =
                fx.request(fx.tool("t", Duration::from_secs(5), &script), "aws", None);
            request.invocation_id = hostile.into();
            let result = fx.run(request).await;
            assert_eq!(result.status, InvocationStatus::Failed);
            assert_eq!(result.error.as_deref(), Some("malformed invocation id"), "{hostile}");
        }
        assert!(!Path::new("/tmp/xerotier-hostile").exists());
        // An entry that already exists under the id (a symlink planted there) is not reused.
        std::os::unix::fs::symlink("/etc", fx.own_dir()).unwrap();
        let result =
            fx.run(fx.request(fx.tool("t", Duration::from_secs(5), &script), "aws", None)).await;
        assert!(result.error.as_deref().unwrap().contains("already exists"), "{result:?}");
        assert!(!marker.exists(), "nothing ran");
        assert!(fx.own_dir().is_symlink(), "the planted entry is not followed nor removed");
    }

    #[tokio::test]
    async fn a_tool_that_cannot_be_started_says_so() {
        let fx = Fixture::new();
        let mut tool = fx.tool("private", Duration::from_secs(5), "echo ran");
        // Executable by root only: the tool user cannot start it.
        std::fs::set_permissions(&tool.executable, std::fs::Permissions::from_mode(0o700)).unwrap();
        let result = fx.run(fx.request(tool.clone(), "aws", None)).await;
        assert_eq!(result.status, InvocationStatus::Failed);
        let error = result.error.unwrap();
        assert!(error.starts_with("the tool was not started: starting"), "{error}");
        assert!(error.contains("Permission denied"), "{error}");
        tool.executable = fx.dir.path().join("does-not-exist");
        let result = fx.run(fx.request(tool, "aws", None)).await;
        assert!(result.error.as_deref().unwrap().contains("does-not-exist"), "{result:?}");
    }

    #[tokio::test]
    async fn landlock_off_lets_the_tool_see_what_unix_permissions_allow() {
        let fx = Fixture::new();
        let script = "ls /tmp >/dev/null 2>&1 && echo listed";
        let mut tool = fx.tool("open", Duration::from_secs(5), script);
        tool.sandbox.landlock = LandlockMode::Off;
        let result = fx.run(fx.request(tool.clone(), "aws", None)).await;
        assert_eq!(result.stdout, "listed\n", "{result:?}");
        tool.sandbox.landlock = LandlockMode::Required;
        let result = fx.run(fx.request(tool, "aws", None)).await;
        assert_eq!(result.stdout, "", "{result:?}");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_tool_and_its_background_children() {
        let fx = Fixture::new();
        let script = "sleep 300 &\necho $! > child.pid\ncat child.pid\necho started\nsleep 300";
        let tool = fx.tool("hang", Duration::from_secs(1), script);
        let result = fx.run(fx.request(tool, "aws", None)).await;
        assert_eq!(result.status, InvocationStatus::TimedOut, "{result:?}");
        assert!(result.error.as_deref().unwrap().contains("timed out after 1s"));
        let (pid, started) = result.stdout.split_once('\n').unwrap();
        assert_eq!(started, "started\n");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.split_whitespace().nth(2).map(str::to_string));
            if state.is_none() || state.as_deref() == Some("Z") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "grandchild {pid} survived: {state:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A tool that never reads stdin, given more arguments than a pipe holds: the timeout and
    /// a cancel still hold (the write has its own task), and no copy goes in the environment.
    #[tokio::test]
    async fn a_tool_ignoring_large_arguments_times_out_on_time_and_dies_at_once_on_cancel() {
        let fx = Fixture::new();
        let big = format!(r#"{{"pad":"{}"}}"#, "a".repeat(60 * 1024));
        let script = "echo \"env=${XEROTIER_ARGS:-none}\"\nsleep 300";
        let tool = fx.tool("deaf", Duration::from_secs(1), script);
        let mut request = fx.request(tool.clone(), "aws", None);
        request.args_json = big.clone();
        let began = tokio::time::Instant::now();
        let result = fx.run(request).await;
        assert_eq!(result.status, InvocationStatus::TimedOut, "{result:?}");
        assert_eq!(result.stdout, "env=none\n");
        assert!(began.elapsed() < Duration::from_secs(4), "took {:?}", began.elapsed());

        let mut tool = tool;
        tool.timeout = Duration::from_secs(300);
        let mut request = fx.request(tool, "aws", None);
        request.args_json = big;
        let (cancel, cancel_rx) = watch::channel(false);
        let (output_tx, mut output_rx) = mpsc::channel(8);
        let run = tokio::spawn(execute(request, Some(output_tx), cancel_rx, fx.clock.clone()));
        let first = output_rx.recv().await.unwrap();
        assert_eq!(first.bytes, b"env=none\n");
        let cancelled_at = tokio::time::Instant::now();
        cancel.send(true).unwrap();
        let result = run.await.unwrap();
        assert_eq!(result.status, InvocationStatus::Cancelled);
        assert!(cancelled_at.elapsed() < Duration::from_secs(2), "{:?}", cancelled_at.elapsed());
    }

    #[tokio::test]
    async fn cancel_kills_a_running_tool() {
        let fx = Fixture::new();
        let tool = fx.tool("slow", Duration::from_secs(300), "echo waiting\nsleep 300");
        let (cancel, cancel_rx) = watch::channel(false);
        let (output_tx, mut output_rx) = mpsc::channel(8);
        let clock = fx.clock.clone();
        let run =
            tokio::spawn(execute(fx.request(tool, "aws", None), Some(output_tx), cancel_rx, clock));
        let first = output_rx.recv().await.unwrap();
        assert_eq!(
            (first.stream, first.bytes.as_slice()),
            (Stream::Stdout, b"waiting\n".as_slice())
        );
        cancel.send(true).unwrap();
        let result = run.await.unwrap();
        assert_eq!(result.status, InvocationStatus::Cancelled);
    }

    #[tokio::test]
    async fn output_beyond_the_bound_is_truncated_and_marked() {
        let fx = Fixture::new();
        let tool =
            fx.tool("loud", Duration::from_secs(30), "head -c 200000 /dev/zero | tr '\\0' a");
        let result = fx.run(fx.request(tool, "aws", None)).await;
        assert_eq!(result.status, InvocationStatus::Succeeded);
        assert_eq!(result.stdout.len(), MAX_OUTPUT_BYTES);
        assert!(result.stdout_truncated && !result.stderr_truncated);
    }
}
