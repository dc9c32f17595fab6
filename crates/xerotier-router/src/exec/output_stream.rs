//! Following one invocation's output as it is written (`GET /v1/exec/invocations/{id}/output`):
//! where it stands, each new piece of output once, and its end. Resumable from any
//! [`OutputCursor`], so a reader that lost its connection misses nothing and sees nothing twice.
//!
//! Output is what this replica's agents streamed (held in memory while the invocation runs),
//! then what the store recorded when it ended. Offsets count bytes of the text as the API shows
//! it, so the live text and the recorded one line up.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use xerotier_proto::invocation::{InvocationStatus, OutputChunk, OutputCursor, OutputStreamName};
use xerotier_store::InvocationRecord;

use super::service::{ExecService, Invocation, Viewer};
use crate::service_error::ServiceError;

/// How often a reader looks at the store when nothing here told it of a change (the invocation
/// runs on an agent of another replica, or ends there).
const STORE_POLL: Duration = Duration::from_secs(1);

/// What a reader of an invocation's output is told, in order.
#[derive(Debug, Clone)]
pub enum OutputEvent {
    /// Where the invocation stands: first, then at each change of status. Its output fields are
    /// empty (the output comes in `Output` events).
    Status(Invocation, OutputCursor),
    /// New output; the cursor is where the reader stands after it.
    Output(OutputChunk, OutputCursor),
    /// It ended; all its output was sent before this, and nothing follows.
    End(Invocation, OutputCursor),
}

/// The part of `current` after byte `shown` that can be sent now, and where the reader stands
/// after it; `None` when there is nothing new.
///
/// The reader never moves back (text that is shorter than what was read, as on another
/// replica while the invocation runs, sends nothing), and never stops inside a character.
/// Until the invocation ends, trailing U+FFFD characters are held back: they may be the
/// rendering of a multi-byte character whose other bytes have not arrived yet.
pub fn delta(current: &str, shown: usize, finished: bool) -> Option<(&str, usize)> {
    let mut start = shown;
    while start < current.len() && !current.is_char_boundary(start) {
        start += 1;
    }
    let tail = current.get(start..)?;
    let tail = if finished { tail } else { tail.trim_end_matches('\u{FFFD}') };
    (!tail.is_empty()).then(|| (tail, start + tail.len()))
}

/// The record without its output, for `Status` and `End`.
fn without_output(record: &InvocationRecord) -> Invocation {
    let record =
        InvocationRecord { stdout: String::new(), stderr: String::new(), ..record.clone() };
    Invocation { record, live: None }
}

/// How far along an invocation is: a record never replaces one further along.
fn progress(status: &str) -> u8 {
    match InvocationStatus::parse(status) {
        Some(InvocationStatus::Queued) => 0,
        Some(InvocationStatus::Running) => 1,
        _ => 2,
    }
}

/// What woke a waiting reader.
enum Woken {
    Output,
    /// Read the store again.
    Reread,
    /// A committed record (of any invocation) from this replica.
    Record(Result<Arc<InvocationRecord>, RecvError>),
    Closed,
}

/// One reader's position and what it still has to be told.
#[derive(Debug)]
struct Reader {
    exec: ExecService,
    /// Starts and ends committed through this replica, subscribed to before the first read of
    /// the record so that none is missed.
    records: broadcast::Receiver<Arc<InvocationRecord>>,
    record: InvocationRecord,
    cursor: OutputCursor,
    status: Option<String>,
    pending: VecDeque<OutputEvent>,
    ended: bool,
}

impl Reader {
    fn status(&self) -> InvocationStatus {
        InvocationStatus::parse(&self.record.status).unwrap_or(InvocationStatus::Failed)
    }

    /// The text of both streams as it can be read now: recorded once ended, live while it runs
    /// here, nothing otherwise.
    fn texts(&self) -> Option<(String, String)> {
        let status = self.status();
        if status.is_terminal() {
            return Some((self.record.stdout.clone(), self.record.stderr.clone()));
        }
        if status != InvocationStatus::Running {
            return None;
        }
        let live = self.exec.live_output(&self.record.id)?;
        Some((
            String::from_utf8_lossy(&live.stdout).into_owned(),
            String::from_utf8_lossy(&live.stderr).into_owned(),
        ))
    }

    /// Queues what changed since the last look.
    fn observe(&mut self) {
        if self.status.as_deref() != Some(self.record.status.as_str()) {
            self.status = Some(self.record.status.clone());
            self.pending.push_back(OutputEvent::Status(without_output(&self.record), self.cursor));
        }
        let finished = self.status().is_terminal();
        if let Some((stdout, stderr)) = self.texts() {
            for (stream, text) in
                [(OutputStreamName::Stdout, stdout), (OutputStreamName::Stderr, stderr)]
            {
                let shown = match stream {
                    OutputStreamName::Stdout => &mut self.cursor.stdout,
                    OutputStreamName::Stderr => &mut self.cursor.stderr,
                };
                if let Some((piece, next)) = delta(&text, *shown, finished) {
                    *shown = next;
                    let chunk = OutputChunk { stream, text: piece.to_string() };
                    self.pending.push_back(OutputEvent::Output(chunk, self.cursor));
                }
            }
        }
        if finished {
            super::timeline!(self.record.id, "stream.end");
            self.pending.push_back(OutputEvent::End(without_output(&self.record), self.cursor));
            self.ended = true;
        }
    }

    /// Waits for a change; `None` when the router stops. Takes a start or end committed here
    /// as it comes; reads the store again for other changes (or when it fell too far behind to
    /// have seen every committed record), and at least every [`STORE_POLL`].
    async fn wait(&mut self) -> Option<()> {
        let signals = self.exec.signals();
        let output = signals.output.notified();
        let state = signals.state.notified();
        let poll = tokio::time::sleep(STORE_POLL);
        tokio::pin!(output, state, poll);
        output.as_mut().enable();
        state.as_mut().enable();
        self.observe();
        if !self.pending.is_empty() {
            return Some(());
        }
        let reread = loop {
            let woken = tokio::select! {
                () = &mut output => Woken::Output,
                () = &mut state => Woken::Reread,
                () = &mut poll => Woken::Reread,
                () = signals.closed.cancelled() => Woken::Closed,
                received = self.records.recv() => Woken::Record(received),
            };
            match woken {
                Woken::Output => break false,
                Woken::Reread | Woken::Record(Err(RecvError::Lagged(_))) => break true,
                Woken::Closed | Woken::Record(Err(RecvError::Closed)) => return None,
                Woken::Record(Ok(record)) => {
                    // Another invocation's, or one this reader is already past: nothing new.
                    if record.id == self.record.id
                        && progress(&record.status) > progress(&self.record.status)
                    {
                        self.record = InvocationRecord::clone(&record);
                        break false;
                    }
                }
            }
        };
        if reread {
            match self.exec.record(&self.record.id).await {
                Ok(record) => self.record = record,
                Err(err) => {
                    tracing::warn!(invocation_id = %self.record.id, error = %err, "output stream read failed; retrying")
                }
            }
        }
        Some(())
    }
}

impl ExecService {
    /// The invocation's output from `from` on, as it is written, until it ends (or the router
    /// stops). Refused when there is no such invocation.
    /// Another key's invocation is not found for a `viewer` without the `management` scope.
    pub async fn follow_output(
        &self,
        viewer: &Viewer,
        id: &str,
        from: OutputCursor,
    ) -> Result<impl Stream<Item = OutputEvent> + use<>, ServiceError> {
        let records = self.signals().records.subscribe();
        let record = self.record(id).await?;
        if !viewer.sees(&record) {
            return Err(ServiceError::NotFound(format!("invocation {id}")));
        }
        let reader = Reader {
            exec: self.clone(),
            records,
            record,
            cursor: from,
            status: None,
            pending: VecDeque::new(),
            ended: false,
        };
        Ok(futures::stream::unfold(reader, |mut reader| async move {
            loop {
                if let Some(event) = reader.pending.pop_front() {
                    return Some((event, reader));
                }
                if reader.ended {
                    return None;
                }
                reader.wait().await?;
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_never_replaces_one_further_along() {
        assert!(progress("running") > progress("queued"));
        assert!(progress("succeeded") > progress("running"));
        assert_eq!(progress("cancelled"), progress("failed"), "every end is final");
    }

    #[test]
    fn delta_sends_only_what_is_new() {
        assert_eq!(delta("", 0, false), None);
        assert_eq!(delta("abc", 0, false), Some(("abc", 3)));
        assert_eq!(delta("abcdef", 3, false), Some(("def", 6)));
        assert_eq!(delta("abcdef", 6, false), None);
    }

    #[test]
    fn delta_never_moves_back() {
        // Running on another replica: no live text here, and the reader keeps its place.
        assert_eq!(delta("", 6, false), None);
        assert_eq!(delta("ab", 6, true), None);
    }

    #[test]
    fn delta_never_splits_a_character() {
        let text = "héllo";
        // Byte 2 is inside `é`: the reader moves on to the next boundary.
        assert_eq!(delta(text, 2, false), Some(("llo", text.len())));
    }

    #[test]
    fn delta_holds_back_a_possibly_split_character_until_the_end() {
        assert_eq!(delta("ok \u{FFFD}", 0, false), Some(("ok ", 3)));
        assert_eq!(delta("ok \u{FFFD}", 3, false), None);
        // The next look has the real character where the replacement was.
        assert_eq!(delta("ok é", 3, false), Some(("é", 5)));
        // At the end, whatever is there is sent.
        assert_eq!(delta("ok \u{FFFD}", 3, true), Some(("\u{FFFD}", 6)));
    }
}
