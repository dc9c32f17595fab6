//! What each layer of tool isolation costs: the same executable run ROUNDS times per layer,
//! the layers interleaved round by round (so a noisy neighbour hits them alike), from a plain
//! spawn up to the XEM's whole executor path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use xerotier_core::{SharedClock, SystemClock};
use xerotier_proto::invocation::InvocationStatus;
use xerotier_sandbox::{LandlockMode, LaunchSpec, Limits, RUNNER_BIN};
use xerotier_xem::catalog::{SandboxSettings, ToolBundle, WorkspaceDecl};
use xerotier_xem::credentials::CredentialVersion;
use xerotier_xem::executor::{ExecRequest, execute_leaving_dir};
use xerotier_xem::sandbox::Sandbox;

/// The first four start the runner per tool (what the ready pool avoids); the last is the path
/// the XEM takes.
const LAYERS: [&str; 5] = [
    "direct: plain spawn of the tool",
    "runner started per tool, nothing applied",
    "runner started per tool, as the tool user",
    "runner started per tool, tool user + Landlock",
    "XEM executor: ready runner, own directory, memfd, tool user, Landlock, limits (to the result)",
];

/// Spawns `program` with `args`, writes `{}` to its stdin, waits; fails unless it exits 0.
async fn spawn_and_wait(program: &Path, args: &[String], cwd: &Path) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .current_dir(cwd)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"{}").await;
    }
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        bail!(
            "{} failed: {} {}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn spec(sandbox: &Sandbox, executable: &Path, identity: bool, landlock: LandlockMode) -> String {
    let mut spec: LaunchSpec = sandbox.spec(executable, Limits::default(), landlock, &[], false);
    if !identity {
        spec.identity = None;
    }
    serde_json::to_string(&spec).unwrap_or_default()
}

pub async fn layers(tool_user: String, executable: PathBuf, rounds: usize) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let runner = exe.parent().context("bench directory")?.join(RUNNER_BIN);
    let work = tempfile::tempdir()?;
    std::fs::set_permissions(work.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
    let sandbox =
        Arc::new(Sandbox::prepare(&tool_user, Some(&runner), &work.path().join("run"), 2)?);
    let cwd = work.path().join("cwd");
    std::fs::create_dir(&cwd)?;
    std::fs::set_permissions(&cwd, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    let clock: SharedClock = Arc::new(SystemClock);
    let tool = ToolBundle {
        name: "noop".into(),
        description: String::new(),
        risk: "read".into(),
        timeout: Duration::from_secs(30),
        executable: executable.clone(),
        args_schema: json!({"type": "object"}),
        limits: Limits::default(),
        sandbox: SandboxSettings::default(),
    };
    let credential = Arc::new(CredentialVersion {
        bytes: zeroize::Zeroizing::new(b"apiVersion: v1\n".to_vec()),
        sha256: String::new(),
        generation: 1,
        mtime_ms: 0,
        expires_at_ms: None,
    });
    let specs = [
        spec(&sandbox, &executable, false, LandlockMode::Off),
        spec(&sandbox, &executable, true, LandlockMode::Off),
        spec(&sandbox, &executable, true, LandlockMode::Auto),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); LAYERS.len()];
    for round in 0..rounds {
        let begin = Instant::now();
        spawn_and_wait(&executable, &[], &cwd).await?;
        samples[0].push(begin.elapsed());
        for (layer, spec) in specs.iter().enumerate() {
            let begin = Instant::now();
            spawn_and_wait(&runner, std::slice::from_ref(spec), &cwd).await?;
            samples[layer + 1].push(begin.elapsed());
        }
        let request = ExecRequest {
            invocation_id: format!("inv_{round:026}"),
            tool: tool.clone(),
            workspace: WorkspaceDecl {
                id: "bench".into(),
                kind: "kubernetes".into(),
                credentials_ref: "bench.yaml".into(),
            },
            credential: Some(credential.clone()),
            args_json: "{}".into(),
            sandbox: sandbox.clone(),
        };
        let (_cancel, cancel_rx) = watch::channel(false);
        let begin = Instant::now();
        // As the XEM does: the result first, the directory removed after it is sent.
        let executed = execute_leaving_dir(request, None, cancel_rx, clock.clone()).await;
        samples[4].push(begin.elapsed());
        let result = executed.clean_up();
        sandbox.refill_runners();
        if result.status != InvocationStatus::Succeeded {
            bail!("the executor's run failed: {result:?}");
        }
    }
    let p50 = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1000.0
    };
    let p99 = |v: &Vec<Duration>| v[(v.len() * 99 / 100).min(v.len() - 1)].as_secs_f64() * 1000.0;
    let mut out = Vec::new();
    for (name, mut v) in LAYERS.iter().zip(samples) {
        let median = p50(&mut v);
        out.push(json!({ "layer": name, "p50_ms": median, "p99_ms": p99(&v) }));
    }
    println!(
        "{}",
        json!({
            "label": "isolation-layers",
            "rounds": rounds,
            "tool_user": tool_user,
            "landlock": sandbox.landlock.as_str(),
            "layers": out,
        })
    );
    Ok(())
}
