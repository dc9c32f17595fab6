//! The per-layer breakdown of an invocation's round trip: the router and the XEM mark each step
//! of an invocation (debug events under the target `xerotier_timeline`, enabled with
//! `--log-level warn,xerotier_timeline=debug`), the client marks its own, and each layer is the
//! time between two marks of one invocation. All three processes run on one host, so their
//! wall clocks are one clock.

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Microseconds since the epoch.
pub type Micros = i64;

/// Now, on the clock the daemons' log timestamps use.
pub fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The client's marks of one invocation.
pub const CLIENT_SENT: &str = "client.sent";
pub const CLIENT_CREATED: &str = "client.created";
pub const CLIENT_OBSERVED: &str = "client.observed";

/// The marks on an invocation's critical path, in order, each with the name of the layer that
/// ends at it (from the mark before it). A mark that most invocations lack (one a change
/// removed, such as the dispatch pass's when the creation claims) is left out, and its layer
/// folds into the next, so the layers always add up to the round trip.
const PATH: [(&str, &str); 14] = [
    (CLIENT_SENT, ""),
    ("create.begin", "HTTP request in (client → create handler)"),
    ("create.chosen", "create: checks, agent chosen"),
    ("create.committed", "create: durable commit (invocation, claim, audit)"),
    ("dispatch.chosen", "dispatch: wake-up + queue read"),
    ("dispatch.claimed", "dispatch: claim commit"),
    ("dispatch.sent", "Invoke handed to the mesh"),
    ("xem.invoke.received", "mesh hop router → XEM (Invoke)"),
    ("xem.started.sent", "XEM: accept → slot, snapshot, Started sent"),
    ("xem.finished.sent", "XEM: tool run (dir, credential file, spawn, wait, cleanup)"),
    ("finished.received", "mesh hop XEM → router (Finished), incl. wait behind the start"),
    ("finished.committed", "finish commit"),
    ("stream.end", "output stream: woken, takes the committed record"),
    (CLIENT_OBSERVED, "client observes the end"),
];

/// Layers beside the critical path: (name, from mark, to mark).
const BESIDE: [(&str, &str, &str); 3] = [
    ("beside: mesh hop XEM → router (Started)", "xem.started.sent", "started.received"),
    ("beside: start commit", "started.received", "started.committed"),
    ("beside: HTTP answer to the client", "create.committed", CLIENT_CREATED),
];

/// Every mark of every invocation: invocation id → mark → time.
#[derive(Debug, Default)]
pub struct Marks(HashMap<String, HashMap<String, Micros>>);

impl Marks {
    pub fn mark(&mut self, invocation_id: &str, step: &str, at: Micros) {
        self.0.entry(invocation_id.to_string()).or_default().entry(step.to_string()).or_insert(at);
    }

    /// Adds the marks of a daemon's log (text format): lines like
    /// `2026-12-01T20:25:22.123456Z DEBUG xerotier_timeline: create.begin invocation_id=inv_…`.
    /// The first mark of a step counts (a re-sent result marks again).
    pub fn read_log(&mut self, path: &Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path)?;
        for line in text.lines() {
            let Some((head, rest)) = line.split_once(" xerotier_timeline: ") else { continue };
            let Some(at) = head.split_whitespace().next().and_then(parse_micros) else { continue };
            let mut words = rest.split_whitespace();
            let Some(step) = words.next() else { continue };
            let Some(id) = words.find_map(|w| w.strip_prefix("invocation_id=")) else { continue };
            self.mark(id, step, at);
        }
        Ok(())
    }

    /// p50 and p99 of each layer over `ids`, and how many invocations had both its marks:
    /// the critical path's layers first (`"beside": false`), then those beside it.
    pub fn layers(&self, ids: &[String]) -> Value {
        let present = |mark: &str| {
            let n = ids.iter().filter(|id| self.0.get(*id).is_some_and(|m| m.contains_key(mark)));
            n.count() * 2 > ids.len()
        };
        let path: Vec<(&str, &str)> = PATH.into_iter().filter(|(mark, _)| present(mark)).collect();
        let mut out = Vec::new();
        for pair in path.windows(2) {
            let ((from, _), (to, name)) = (pair[0], pair[1]);
            out.extend(self.layer(ids, name, from, to, false));
        }
        for (name, from, to) in BESIDE {
            out.extend(self.layer(ids, name, from, to, true));
        }
        Value::Array(out)
    }

    fn layer(
        &self,
        ids: &[String],
        name: &str,
        from: &str,
        to: &str,
        beside: bool,
    ) -> Option<Value> {
        let mut spans: Vec<Micros> = ids
            .iter()
            .filter_map(|id| {
                let marks = self.0.get(id)?;
                Some(marks.get(to)? - marks.get(from)?)
            })
            .collect();
        if spans.is_empty() {
            return None;
        }
        spans.sort_unstable();
        let p50 = spans[spans.len() / 2];
        let p99 = spans[(spans.len() * 99 / 100).min(spans.len() - 1)];
        Some(json!({
            "layer": name, "from": from, "to": to, "beside": beside,
            "p50_us": p50, "p99_us": p99, "n": spans.len(),
        }))
    }
}

/// `2026-12-01T20:25:22.123456Z` → microseconds since the epoch.
fn parse_micros(text: &str) -> Option<Micros> {
    let millis = xerotier_core::parse_rfc3339(text)?;
    // parse_rfc3339 keeps milliseconds; the log has microseconds after them.
    let fraction = text.split_once('.').map_or("", |(_, f)| f.trim_end_matches('Z'));
    let micros: i64 = fraction.get(3..6).and_then(|d| d.parse().ok()).unwrap_or(0);
    Some(millis * 1000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_give_marks_to_the_microsecond() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("router.log");
        std::fs::write(
            &log,
            "2026-12-01T20:25:22.123456Z DEBUG xerotier_timeline: create.begin invocation_id=inv_a\n\
             2026-12-01T20:25:22.124000Z  INFO xerotier_router::exec: invocation queued invocation_id=inv_a\n\
             2026-12-01T20:25:22.125457Z DEBUG xerotier_timeline: create.committed invocation_id=inv_a\n",
        )
        .unwrap();
        let mut marks = Marks::default();
        marks.read_log(&log).unwrap();
        let layers = marks.layers(&["inv_a".to_string()]);
        assert_eq!(layers[0]["from"], "create.begin", "marks nobody made are left out");
        assert_eq!(layers[0]["to"], "create.committed");
        assert_eq!(layers[0]["p50_us"], 2001);
    }
}
