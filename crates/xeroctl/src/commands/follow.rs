//! Following an invocation to its end (`exec invoke --wait`, `exec watch`): polling, the
//! progress display, printing output as it grows, the summary and the exit status.

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};
use xerotier_proto::invocation::{InvocationStatus, InvocationView, MAX_OUTPUT_BYTES};

use super::Exit;
use crate::cli::OutputFormat;
use crate::client::{ApiError, Call, Client};
use crate::output;

/// The router has no push channel for invocations; a quarter second keeps output feeling live
/// without loading the router.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// A router restart or a brief network cut should not end a long wait; past this window of
/// failed polls in a row the operator is better served by an error.
const RETRY_WINDOW: Duration = Duration::from_secs(30);

/// The tool failed (or xeroctl hit an error: scripts cannot tell those apart by status alone).
pub const EXIT_FAILED: u8 = 1;
/// Stopped waiting (`--wait-timeout`) while the invocation still runs.
pub const EXIT_STILL_RUNNING: u8 = 2;
/// The agent killed the tool at its timeout, like coreutils `timeout`.
pub const EXIT_TIMED_OUT: u8 = 124;
/// Cancelled, like a shell's status for a command ended by SIGINT.
pub const EXIT_CANCELLED: u8 = 130;

/// The status `xeroctl` ends with once it stopped following an invocation in `status`.
pub fn exit_code(status: InvocationStatus) -> u8 {
    match status {
        InvocationStatus::Succeeded => 0,
        InvocationStatus::Failed => EXIT_FAILED,
        InvocationStatus::TimedOut => EXIT_TIMED_OUT,
        InvocationStatus::Cancelled => EXIT_CANCELLED,
        InvocationStatus::Queued | InvocationStatus::Running => EXIT_STILL_RUNNING,
    }
}

/// The part of `current` (one output stream as the router holds it now) not yet printed, and
/// how much of it is printed after this part.
///
/// `shown` is a byte count, moved up to a character boundary so a slice never splits a
/// character. Until the stream is final, trailing U+FFFD characters are held back: they may be
/// the router's rendering of a multi-byte character whose remaining bytes have not arrived
/// yet, and the next poll may show the real character in their place.
pub fn delta(current: &str, shown: usize, finished: bool) -> (&str, usize) {
    let mut start = shown.min(current.len());
    while !current.is_char_boundary(start) {
        start += 1;
    }
    let tail = &current[start..];
    let tail = if finished { tail } else { tail.trim_end_matches('\u{FFFD}') };
    (tail, start + tail.len())
}

/// How much of each stream has been printed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutputCursor {
    pub stdout: usize,
    pub stderr: usize,
}

impl OutputCursor {
    /// The new stdout and stderr in `view`; moves the cursor past them.
    pub fn advance<'a>(&mut self, view: &'a InvocationView) -> (&'a str, &'a str) {
        let finished = view.status.is_terminal();
        let (out, stdout) = delta(&view.stdout, self.stdout, finished);
        let (err, stderr) = delta(&view.stderr, self.stderr, finished);
        *self = Self { stdout, stderr };
        (out, err)
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

/// A poll that failed this way may succeed on retry: the router is restarting, overloaded or
/// unreachable. A 4xx answer will not change by asking again.
fn is_transient(err: &anyhow::Error) -> bool {
    err.downcast_ref::<ApiError>().is_none_or(|api| api.status >= 500)
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

    fn update(&mut self, view: &InvocationView, elapsed: Duration, note: Option<&str>) {
        let mut state = Self::state(view);
        if let Some(note) = note {
            state.push_str(" - ");
            state.push_str(note);
        }
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

/// Follows the invocation `view` until it ends, printing as `options` and `format` say, then
/// returns an [`Exit`] error carrying its status unless it succeeded.
pub async fn follow(
    client: &Client,
    format: OutputFormat,
    mut view: InvocationView,
    options: FollowOptions,
) -> anyhow::Result<()> {
    let began = tokio::time::Instant::now();
    let deadline = options.timeout.map(|t| tokio::time::Instant::now() + t);
    let path = format!("/v1/exec/invocations/{}", view.id);
    let stream = options.stream && format == OutputFormat::Table;
    let mut cursor = OutputCursor::default();
    let mut progress = Progress::new();
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut note: Option<String> = None;
    // One listener for the whole follow: once it exists, SIGINT no longer kills the process,
    // so a fresh one per poll could miss a Ctrl-C that lands between two polls.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // Without a signal handler (it failed to install) the default SIGINT behaviour stays.
    let mut listening = true;

    let ending = loop {
        progress.update(&view, began.elapsed(), note.as_deref());
        if stream {
            let (out, err) = cursor.advance(&view);
            progress.suspend(|| write_output(out, err))?;
        }
        if view.status.is_terminal() {
            break Ending::Finished;
        }
        let poll = async {
            tokio::time::sleep(POLL_INTERVAL).await;
            client.fetch::<InvocationView>(Call::get(path.as_str())).await
        };
        let until_deadline = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            polled = poll => match polled {
                Ok(next) => {
                    view = next;
                    failing_since = None;
                    note = None;
                }
                Err(err) if is_transient(&err) => {
                    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() > RETRY_WINDOW {
                        progress.finish();
                        return Err(err.context(format!(
                            "lost track of invocation {id} (it may still be running; \
                             `xeroctl exec watch {id}` picks it up again)",
                            id = view.id
                        )));
                    }
                    note = Some(format!("retrying: {err:#}"));
                }
                Err(err) => {
                    progress.finish();
                    return Err(err);
                }
            },
            () = until_deadline => break Ending::TimedOut(options.timeout.unwrap_or_default()),
            signal = &mut interrupted, if listening => match signal {
                Ok(()) => break Ending::Interrupted,
                Err(_) => listening = false,
            },
        }
    };
    progress.finish();

    match ending {
        Ending::Finished => report_finished(format, &view, &mut cursor, options.stream),
        Ending::TimedOut(after) => {
            if format == OutputFormat::Json {
                output::json(&view)?;
            }
            eprintln!(
                "stopped waiting after {}: invocation {id} is still {status} and keeps running. \
                 Follow it with `xeroctl exec watch {id}`, or stop it with `xeroctl exec cancel {id}`.",
                humantime::format_duration(after),
                id = view.id,
                status = view.status.as_str(),
            );
            Err(Exit(EXIT_STILL_RUNNING).into())
        }
        Ending::Interrupted => {
            eprintln!(
                "interrupted: stopped following invocation {id} ({status}); it keeps running. \
                 Stop it with `xeroctl exec cancel {id}`.",
                id = view.id,
                status = view.status.as_str(),
            );
            Err(Exit(EXIT_CANCELLED).into())
        }
    }
}

fn report_finished(
    format: OutputFormat,
    view: &InvocationView,
    cursor: &mut OutputCursor,
    streamed: bool,
) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        output::json(view)?;
    } else {
        // With streaming most of it is out already; this prints the rest (and anything held
        // back as a possibly split character). With --wait it is everything.
        if !streamed {
            *cursor = OutputCursor::default();
        }
        let (out, err) = cursor.advance(view);
        write_output(out, err)?;
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
        eprintln!("{}", summary_line(view));
    }
    match exit_code(view.status) {
        0 => Ok(()),
        code => Err(Exit(code).into()),
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
        assert_eq!(exit_code(InvocationStatus::Queued), 2);
        assert_eq!(exit_code(InvocationStatus::Running), 2);
    }

    #[test]
    fn delta_prints_only_what_is_new() {
        assert_eq!(delta("", 0, false), ("", 0));
        assert_eq!(delta("abc", 0, false), ("abc", 3));
        assert_eq!(delta("abcdef", 3, false), ("def", 6));
        assert_eq!(delta("abcdef", 6, false), ("", 6));
        // A stream never shrinks, but if it did, nothing is printed twice.
        assert_eq!(delta("ab", 6, false), ("", 2));
    }

    #[test]
    fn delta_never_splits_a_character() {
        let text = "héllo";
        // Byte 2 is inside `é`; the cursor moves to the next boundary instead of panicking.
        assert_eq!(delta(text, 2, false), ("llo", text.len()));
    }

    #[test]
    fn delta_holds_back_a_possibly_split_character_until_the_end() {
        assert_eq!(delta("ok \u{FFFD}", 0, false), ("ok ", 3));
        // The next poll has the real character where the replacement was.
        assert_eq!(delta("ok é", 3, false), ("é", 5));
        // At the end, whatever is there is printed.
        assert_eq!(delta("ok \u{FFFD}", 3, true), ("\u{FFFD}", 6));
    }

    #[test]
    fn cursor_walks_both_streams_independently() {
        let mut cursor = OutputCursor::default();
        let first = view(InvocationStatus::Running, "line 1\n", "");
        assert_eq!(cursor.advance(&first), ("line 1\n", ""));
        let second = view(InvocationStatus::Running, "line 1\nline 2\n", "warn\n");
        assert_eq!(cursor.advance(&second), ("line 2\n", "warn\n"));
        assert_eq!(cursor.advance(&second), ("", ""));
        let done = view(InvocationStatus::Succeeded, "line 1\nline 2\n", "warn\n");
        assert_eq!(cursor.advance(&done), ("", ""));
        assert_eq!(cursor, OutputCursor { stdout: 14, stderr: 5 });
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

    #[test]
    fn only_server_side_and_transport_errors_are_retried() {
        let api = |status| ApiError {
            status,
            code: "x".into(),
            message: "m".into(),
            param: None,
            request_id: "-".into(),
        };
        assert!(is_transient(&anyhow::anyhow!("cannot reach the router")));
        assert!(is_transient(&anyhow::Error::from(api(503))));
        assert!(!is_transient(&anyhow::Error::from(api(404))));
        assert!(!is_transient(&anyhow::Error::from(api(401))));
    }
}
