//! Following an invocation to its end (`exec invoke --wait`, `exec watch`): the router's
//! stream of its output (`GET /v1/exec/invocations/{id}/output`, server-sent events, resumed
//! after a break with `Last-Event-ID`, so no output is lost or printed twice), the progress
//! display, the summary and the exit status.

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};
use xerotier_proto::invocation::OutputStreamName;
use xerotier_proto::invocation::{InvocationStatus, InvocationView, MAX_OUTPUT_BYTES, OutputChunk};

use super::Ctx;
use crate::client::Call;
use crate::exit::{self, CliError};
use crate::sse::Resumable;

/// A router restart or a brief network cut should not end a long wait; past this window of
/// failed reconnections in a row the operator is better served by an error.
const RETRY_WINDOW: Duration = Duration::from_secs(30);
/// How often the elapsed time on the progress line moves.
const PROGRESS_TICK: Duration = Duration::from_secs(1);

/// The status `xeroctl` ends with once it stopped following an invocation in `status`.
pub fn exit_code(status: InvocationStatus) -> u8 {
    match status {
        InvocationStatus::Succeeded => exit::SUCCESS,
        InvocationStatus::Failed => exit::FAILURE,
        InvocationStatus::TimedOut => exit::TOOL_TIMED_OUT,
        InvocationStatus::Cancelled => exit::CANCELLED,
        InvocationStatus::Queued | InvocationStatus::Running => exit::STILL_RUNNING,
    }
}

/// `850ms`, `12.3s`, `2m05s`, `1h02m03s`: short enough for a table column, precise where it
/// matters.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1_000 {
        return format!("{millis}ms");
    }
    if millis < 60_000 {
        let tenths = millis / 100;
        return format!("{}.{}s", tenths / 10, tenths % 10);
    }
    let secs = duration.as_secs();
    let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
    if hours > 0 {
        format!("{hours}h{minutes:02}m{seconds:02}s")
    } else {
        format!("{minutes}m{seconds:02}s")
    }
}

/// The time from `start` to `end`, both RFC 3339; `None` if either is not a time or `end` is
/// earlier.
pub fn between(start: &str, end: &str) -> Option<Duration> {
    let start = humantime::parse_rfc3339_weak(start.trim()).ok()?;
    let end = humantime::parse_rfc3339_weak(end.trim()).ok()?;
    end.duration_since(start).ok()
}

/// How long the tool ran; for one still running, how long so far (by this machine's clock,
/// marked with `…`); `-` when it never started.
pub fn run_duration(view: &InvocationView, now: SystemTime) -> String {
    let Some(started) = view.started_at.as_deref() else { return "-".into() };
    match view.finished_at.as_deref() {
        Some(finished) => between(started, finished).map_or_else(|| "-".into(), format_duration),
        None if !view.status.is_terminal() => humantime::parse_rfc3339_weak(started)
            .ok()
            .and_then(|at| now.duration_since(at).ok())
            .map_or_else(|| "-".into(), |d| format!("{}…", format_duration(d))),
        None => "-".into(),
    }
}

/// The line printed on stderr when an invocation ended (or when xeroctl stopped following it).
pub fn summary_line(view: &InvocationView) -> String {
    let exit = view.exit_code.map_or_else(|| "-".to_string(), |c| c.to_string());
    let duration = match (view.started_at.as_deref(), view.finished_at.as_deref()) {
        (Some(start), Some(end)) => between(start, end).map_or_else(|| "-".into(), format_duration),
        _ => "-".into(),
    };
    let agent = view.agent_id.as_deref().unwrap_or("-");
    let mut line = format!(
        "{}: {} (exit code {exit}) in {duration} on agent {agent}",
        view.id,
        view.status.as_str()
    );
    if let Some(error) = &view.error {
        line.push_str(": ");
        line.push_str(error);
    }
    line
}

/// Status and elapsed time on stderr: a spinner on a terminal, else a plain line per change.
#[derive(Debug)]
enum Progress {
    Spinner(ProgressBar),
    Plain { last: Option<String> },
}

impl Progress {
    fn new() -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::Plain { last: None };
        }
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(100));
        Self::Spinner(bar)
    }

    fn state(view: &InvocationView) -> String {
        let mut state = format!("{} {}", view.id, view.status.as_str());
        if let Some(agent) = &view.agent_id {
            state.push_str(" on agent ");
            state.push_str(agent);
        }
        if view.cancel_requested && !view.status.is_terminal() {
            state.push_str(" (cancel requested)");
        }
        state
    }

    fn update(&mut self, view: &InvocationView, elapsed: Duration) {
        let state = Self::state(view);
        match self {
            Self::Spinner(bar) => {
                let elapsed = humantime::format_duration(Duration::from_secs(elapsed.as_secs()));
                bar.set_message(format!("{state}  {elapsed}"));
            }
            Self::Plain { last } => {
                if last.as_deref() != Some(state.as_str()) {
                    eprintln!("{state}");
                    *last = Some(state);
                }
            }
        }
    }

    /// Runs `print` with the spinner out of the way, so output lines are not garbled.
    fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        match self {
            Self::Spinner(bar) => bar.suspend(print),
            Self::Plain { .. } => print(),
        }
    }

    fn finish(&self) {
        if let Self::Spinner(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Writes a piece of output to xeroctl's stdout or stderr, like the tool wrote it.
fn write_chunk(chunk: &OutputChunk) -> anyhow::Result<()> {
    match chunk.stream {
        OutputStreamName::Stdout => write_output(&chunk.text, ""),
        OutputStreamName::Stderr => write_output("", &chunk.text),
    }
}

fn write_output(stdout: &str, stderr: &str) -> anyhow::Result<()> {
    if !stdout.is_empty() {
        let mut out = std::io::stdout().lock();
        out.write_all(stdout.as_bytes())?;
        out.flush()?;
    }
    if !stderr.is_empty() {
        let mut err = std::io::stderr().lock();
        err.write_all(stderr.as_bytes())?;
        err.flush()?;
    }
    Ok(())
}

/// How to follow.
#[derive(Debug, Clone, Copy)]
pub struct FollowOptions {
    /// Print output as it arrives (`watch`) rather than all of it at the end (`--wait`).
    pub stream: bool,
    /// Stop waiting after this long.
    pub timeout: Option<Duration>,
}

/// How following ended.
#[derive(Debug)]
enum Ending {
    Finished,
    TimedOut(Duration),
    Interrupted,
}

/// What one event of the output stream means for the follower.
fn apply(
    event: &eventsource_stream::Event,
    state: &mut InvocationView,
    print_live: bool,
    progress: &Progress,
) -> anyhow::Result<bool> {
    match event.event.as_str() {
        "status" | "end" => {
            *state = serde_json::from_str(&event.data).map_err(|err| {
                anyhow::anyhow!("unexpected {} event from the router: {err}", event.event)
            })?;
            Ok(event.event == "end")
        }
        "output" if print_live => {
            let chunk: OutputChunk = serde_json::from_str(&event.data)
                .map_err(|err| anyhow::anyhow!("unexpected output event from the router: {err}"))?;
            progress.suspend(|| write_chunk(&chunk))?;
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// Follows the invocation `view` until it ends, printing as `options` and the output format
/// say, then returns an error carrying its exit status unless it succeeded.
pub async fn follow(ctx: &Ctx, view: InvocationView, options: FollowOptions) -> anyhow::Result<()> {
    let began = tokio::time::Instant::now();
    let deadline = options.timeout.map(|t| began + t);
    let path = format!("/v1/exec/invocations/{}/output", view.id);
    let print_live = options.stream && ctx.out.is_text();
    let mut state = view;
    let mut progress = Progress::new();
    let mut stream = Resumable::new(&ctx.client, path, None, Some(RETRY_WINDOW));
    let mut tick = tokio::time::interval(PROGRESS_TICK);
    // One listener for the whole follow: once it exists, SIGINT no longer kills the process.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // Without a signal handler (it failed to install) the default SIGINT behaviour stays.
    let mut listening = true;
    let until_deadline = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);

    let ending = loop {
        tokio::select! {
            event = stream.next() => {
                let ended = match event {
                    Ok(event) => apply(&event, &mut state, print_live, &progress),
                    Err(err) => Err(err.context(format!(
                        "lost track of invocation {id} (it may still be running; \
                         `xeroctl exec watch {id}` picks it up again)",
                        id = state.id
                    ))),
                };
                match ended {
                    Ok(true) => break Ending::Finished,
                    Ok(false) => progress.update(&state, began.elapsed()),
                    Err(err) => {
                        progress.finish();
                        return Err(err);
                    }
                }
            }
            _ = tick.tick() => progress.update(&state, began.elapsed()),
            () = &mut until_deadline => break Ending::TimedOut(options.timeout.unwrap_or_default()),
            signal = &mut interrupted, if listening => match signal {
                Ok(()) => break Ending::Interrupted,
                Err(_) => listening = false,
            },
        }
    };
    progress.finish();

    match ending {
        Ending::Finished => report_finished(ctx, state, options.stream).await,
        Ending::TimedOut(after) => {
            if ctx.out.is_data() {
                ctx.out.data(&state)?;
            }
            eprintln!(
                "stopped waiting after {}: invocation {id} is still {status} and keeps running. \
                 Follow it with `xeroctl exec watch {id}`, or stop it with `xeroctl exec cancel {id}`.",
                humantime::format_duration(after),
                id = state.id,
                status = state.status.as_str(),
            );
            Err(CliError::Exit(exit::STILL_RUNNING).into())
        }
        Ending::Interrupted => {
            eprintln!(
                "interrupted: stopped following invocation {id} ({status}); it keeps running. \
                 Stop it with `xeroctl exec cancel {id}`.",
                id = state.id,
                status = state.status.as_str(),
            );
            Err(CliError::Exit(exit::CANCELLED).into())
        }
    }
}

/// Prints how it ended: with `--wait` (or as data) the whole invocation, read once now; when
/// its output was streamed, only what is left to say.
async fn report_finished(ctx: &Ctx, ended: InvocationView, streamed: bool) -> anyhow::Result<()> {
    let printed_live = streamed && ctx.out.is_text();
    let view = if printed_live {
        ended
    } else {
        let path = format!("/v1/exec/invocations/{}", ended.id);
        ctx.client.fetch::<InvocationView>(Call::get(path)).await?
    };
    ctx.out.object(&view, super::exec::KIND, &view.id, || {
        if !printed_live {
            write_output(&view.stdout, &view.stderr)?;
        }
        for (stream, truncated) in
            [("stdout", view.stdout_truncated), ("stderr", view.stderr_truncated)]
        {
            if truncated {
                eprintln!(
                    "({stream} truncated: the router keeps the first {} KiB of each stream)",
                    MAX_OUTPUT_BYTES / 1024
                );
            }
        }
        eprintln!("{}", summary_line(&view));
        Ok(())
    })?;
    match exit_code(view.status) {
        exit::SUCCESS => Ok(()),
        code => Err(CliError::Exit(code).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: InvocationStatus, stdout: &str, stderr: &str) -> InvocationView {
        InvocationView {
            id: "inv_1".into(),
            status,
            tool: "kubectl-get".into(),
            workspace: "kubernetes-prod".into(),
            args: serde_json::json!({}),
            agent_id: Some("agt_1".into()),
            created_at: "2026-11-28T20:00:00.000Z".into(),
            created_by: Some("key_1".into()),
            dispatched_at: Some("2026-11-28T20:00:00.100Z".into()),
            started_at: Some("2026-11-28T20:00:00.250Z".into()),
            finished_at: status.is_terminal().then(|| "2026-11-28T20:00:01.480Z".into()),
            exit_code: status.is_terminal().then_some(0),
            stdout: stdout.into(),
            stderr: stderr.into(),
            stdout_truncated: false,
            stderr_truncated: false,
            error: None,
            credential_generation: Some(1),
            cancel_requested: false,
        }
    }

    #[test]
    fn exit_codes_follow_the_shell_conventions() {
        assert_eq!(exit_code(InvocationStatus::Succeeded), 0);
        assert_eq!(exit_code(InvocationStatus::Failed), 1);
        assert_eq!(exit_code(InvocationStatus::TimedOut), 124);
        assert_eq!(exit_code(InvocationStatus::Cancelled), 130);
        assert_eq!(exit_code(InvocationStatus::Queued), 8);
        assert_eq!(exit_code(InvocationStatus::Running), 8);
    }

    #[test]
    fn durations_are_short_and_readable() {
        assert_eq!(format_duration(Duration::from_millis(0)), "0ms");
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_millis(1_000)), "1.0s");
        assert_eq!(format_duration(Duration::from_millis(12_345)), "12.3s");
        assert_eq!(format_duration(Duration::from_millis(59_999)), "59.9s");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m00s");
        assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(format_duration(Duration::from_secs(3_723)), "1h02m03s");
    }

    #[test]
    fn run_duration_covers_finished_running_and_never_started() {
        let now = humantime::parse_rfc3339("2026-11-28T20:00:10.250Z").unwrap();
        assert_eq!(run_duration(&view(InvocationStatus::Succeeded, "", ""), now), "1.2s");
        assert_eq!(run_duration(&view(InvocationStatus::Running, "", ""), now), "10.0s…");
        let mut queued = view(InvocationStatus::Cancelled, "", "");
        queued.started_at = None;
        assert_eq!(run_duration(&queued, now), "-");
        assert_eq!(between("2026-11-28T20:00:01Z", "2026-11-28T20:00:00Z"), None);
        assert_eq!(between("not a time", "2026-11-28T20:00:00Z"), None);
    }

    #[test]
    fn summary_names_status_exit_code_duration_and_agent() {
        let done = view(InvocationStatus::Succeeded, "", "");
        assert_eq!(summary_line(&done), "inv_1: succeeded (exit code 0) in 1.2s on agent agt_1");
        let mut failed = view(InvocationStatus::Failed, "", "");
        failed.exit_code = None;
        failed.error = Some("tool not installed".into());
        assert_eq!(
            summary_line(&failed),
            "inv_1: failed (exit code -) in 1.2s on agent agt_1: tool not installed"
        );
    }
}
