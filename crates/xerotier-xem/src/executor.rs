//! One tool run: a private directory with the credential snapshot, the tool in its own process
//! group, its output captured (bounded) and streamed, its whole group killed on timeout or
//! cancel.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use xerotier_core::SharedClock;
use xerotier_credentials::write_secret_file;
use xerotier_proto::invocation::{InvocationResult, InvocationStatus, MAX_OUTPUT_BYTES};

use crate::catalog::{ToolBundle, WorkspaceDecl};
use crate::credentials::CredentialVersion;

/// Where the credential snapshot goes inside the invocation's directory.
const CREDENTIAL_FILE: &str = "credentials";
const READ_CHUNK: usize = 8 * 1024;

#[derive(Debug)]
pub struct ExecRequest {
    pub invocation_id: String,
    pub tool: ToolBundle,
    pub workspace: WorkspaceDecl,
    pub credential: Option<Arc<CredentialVersion>>,
    pub args_json: String,
    /// The parent of per-invocation directories.
    pub run_dir: PathBuf,
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
    Exited(std::process::ExitStatus),
    TimedOut,
    Cancelled,
    WaitFailed(std::io::Error),
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

fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Runs the invocation to its end and says how it ended. Never panics; every failure is a
/// `failed` result with an `error`.
pub async fn execute(
    request: ExecRequest,
    output: Option<mpsc::Sender<OutputChunk>>,
    mut cancel: watch::Receiver<bool>,
    clock: SharedClock,
) -> InvocationResult {
    let started_at_ms = clock.now_millis();
    let generation = request.credential.as_ref().map_or(0, |c| c.generation);
    let dir = request.run_dir.join(&request.invocation_id);
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
    match run(&request, &dir, output, &mut cancel, &mut result).await {
        Ok(()) => {}
        Err(error) => result.error = Some(error),
    }
    if let Err(err) = std::fs::remove_dir_all(&dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::error!(dir = %dir.display(), error = %err, "could not remove an invocation directory (it may hold a credential copy)");
    }
    result.finished_at_ms = clock.now_millis();
    result
}

async fn run(
    request: &ExecRequest,
    dir: &Path,
    output: Option<mpsc::Sender<OutputChunk>>,
    cancel: &mut watch::Receiver<bool>,
    result: &mut InvocationResult,
) -> Result<(), String> {
    private_dir(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut command = tokio::process::Command::new(&request.tool.executable);
    command
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", dir)
        .env("XEROTIER_INVOCATION_ID", &request.invocation_id)
        .env("XEROTIER_WORKSPACE", &request.workspace.id)
        .env("XEROTIER_TOOL", &request.tool.name)
        .env("XEROTIER_ARGS", &request.args_json)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(credential) = &request.credential {
        let file = dir.join(CREDENTIAL_FILE);
        write_secret_file(&file, &credential.bytes)
            .map_err(|e| format!("writing the credential snapshot: {e}"))?;
        command.env("XEROTIER_CREDENTIALS_FILE", &file);
        if request.workspace.kind == "kubernetes" {
            command.env("KUBECONFIG", &file);
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting {}: {e}", request.tool.executable.display()))?;
    let pgid = child.id();
    let id = request.invocation_id.clone();
    let stdout = child
        .stdout
        .take()
        .map(|p| tokio::spawn(capture(p, Stream::Stdout, id.clone(), output.clone())));
    let stderr = child.stderr.take().map(|p| tokio::spawn(capture(p, Stream::Stderr, id, output)));
    if let Some(mut stdin) = child.stdin.take() {
        // A tool that ignores its stdin closes it early; that is not an error.
        let _ = stdin.write_all(request.args_json.as_bytes()).await;
    }
    let ending = tokio::select! {
        status = child.wait() => match status {
            Ok(status) => Ending::Exited(status),
            Err(err) => Ending::WaitFailed(err),
        },
        () = tokio::time::sleep(request.tool.timeout) => Ending::TimedOut,
        _ = cancel.wait_for(|cancelled| *cancelled) => Ending::Cancelled,
    };
    // The whole group goes, also children a tool left running in the background: they would
    // otherwise hold the output pipes open and outlive the invocation.
    kill_group(pgid);
    if !matches!(ending, Ending::Exited(_)) {
        let _ = child.wait().await;
    }
    for (task, text, truncated) in [
        (stdout, &mut result.stdout, &mut result.stdout_truncated),
        (stderr, &mut result.stderr, &mut result.stderr_truncated),
    ] {
        if let Some(Ok(captured)) = match task {
            Some(task) => Some(task.await),
            None => None,
        } {
            *text = String::from_utf8_lossy(&captured.bytes).into_owned();
            *truncated = captured.truncated;
        }
    }
    match ending {
        Ending::Exited(status) => match status.code() {
            Some(0) => {
                result.status = InvocationStatus::Succeeded;
                result.exit_code = Some(0);
            }
            Some(code) => result.exit_code = Some(code),
            None => {
                let signal = std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0);
                return Err(format!("killed by signal {signal}"));
            }
        },
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
    use std::time::Duration;

    use xerotier_core::SystemClock;
    use zeroize::Zeroizing;

    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
        clock: SharedClock,
    }

    impl Fixture {
        fn new() -> Self {
            Self { dir: tempfile::tempdir().unwrap(), clock: Arc::new(SystemClock) }
        }

        fn tool(&self, name: &str, timeout: Duration, script: &str) -> ToolBundle {
            let path = self.dir.path().join(format!("{name}.sh"));
            std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            ToolBundle {
                name: name.into(),
                description: String::new(),
                risk: "read".into(),
                timeout,
                executable: path,
                args_schema: serde_json::json!({"type": "object"}),
            }
        }

        fn request(&self, tool: ToolBundle, kind: &str, credential: Option<&str>) -> ExecRequest {
            ExecRequest {
                invocation_id: "inv_test".into(),
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
                    })
                }),
                args_json: r#"{"n":1}"#.into(),
                run_dir: self.dir.path().join("run"),
            }
        }

        async fn run(&self, request: ExecRequest) -> InvocationResult {
            let (_cancel, cancel_rx) = watch::channel(false);
            execute(request, None, cancel_rx, self.clock.clone()).await
        }
    }

    #[tokio::test]
    async fn the_tool_sees_its_args_and_a_private_credential_file_that_is_gone_afterwards() {
        let fx = Fixture::new();
        let tool = fx.tool(
            "show",
            Duration::from_secs(10),
            "read -r stdin_args\necho \"stdin=$stdin_args env=$XEROTIER_ARGS\"\n\
             echo \"kubeconfig=$KUBECONFIG file=$XEROTIER_CREDENTIALS_FILE\"\n\
             stat -c '%a' \"$XEROTIER_CREDENTIALS_FILE\"\ncat \"$KUBECONFIG\"\necho err >&2",
        );
        let result = fx.run(fx.request(tool, "kubernetes", Some("secret-bytes\n"))).await;
        assert_eq!(
            (result.status, result.exit_code),
            (InvocationStatus::Succeeded, Some(0)),
            "{result:?}"
        );
        assert!(result.stdout.contains(r#"stdin={"n":1} env={"n":1}"#), "{}", result.stdout);
        let file = fx.dir.path().join("run/inv_test/credentials");
        assert!(result.stdout.contains(&format!("kubeconfig={0} file={0}", file.display())));
        assert!(
            result.stdout.contains("\n600\nsecret-bytes\n"),
            "0600, exact bytes: {}",
            result.stdout
        );
        assert_eq!(result.stderr, "err\n");
        assert_eq!(result.credential_generation, 3);
        assert!(!fx.dir.path().join("run/inv_test").exists(), "the directory is removed");
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
    async fn a_timeout_kills_the_tool_and_its_background_children() {
        let fx = Fixture::new();
        let pid_file = fx.dir.path().join("child.pid");
        let script =
            format!("sleep 300 &\necho $! > {}\necho started\nsleep 300", pid_file.display());
        let tool = fx.tool("hang", Duration::from_secs(1), &script);
        let result = fx.run(fx.request(tool, "aws", None)).await;
        assert_eq!(result.status, InvocationStatus::TimedOut, "{result:?}");
        assert!(result.error.as_deref().unwrap().contains("timed out after 1s"));
        assert_eq!(result.stdout, "started\n");
        let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
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

    #[tokio::test]
    async fn a_missing_executable_fails_with_an_error() {
        let fx = Fixture::new();
        let mut tool = fx.tool("gone", Duration::from_secs(5), "true");
        tool.executable = fx.dir.path().join("does-not-exist");
        let result = fx.run(fx.request(tool, "aws", None)).await;
        assert_eq!(result.status, InvocationStatus::Failed);
        assert!(result.error.as_deref().unwrap().contains("does-not-exist"), "{result:?}");
    }
}
