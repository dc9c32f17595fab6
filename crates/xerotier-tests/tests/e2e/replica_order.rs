//! Several replicas, one order (PostgreSQL): events and audit records are ordered by the
//! database, not by the clock of the replica that wrote them. One replica's clock is 5 s
//! behind (the router's `test-faults` clock offset), so every id it makes sorts below what the
//! other replica made before it: a cursor compared by id would never deliver its events.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::fleet_harness::enroll;
use crate::harness::{Resp, Router, RouterOptions, backends, client_builder};

/// How far behind the lagging replica's clock is.
const LAG_MS: i64 = -5_000;
/// Each event must reach a live stream on the other replica within this (issue 12).
const FAN_OUT_BOUND: Duration = Duration::from_millis(100);
/// Events written (pauses and resumes, alternately), most of them through the lagging replica.
const WRITES: usize = 24;

/// A live events stream, read one event at a time.
struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

struct SseEvent {
    id: String,
    data: Value,
}

impl EventStream {
    async fn open(router: &Router, agent_id: &str, last_event_id: &str) -> EventStream {
        let client = client_builder(router.ca_file().as_deref()).build().expect("HTTP client");
        let response = client
            .request(
                Method::GET,
                format!("{}/v1/management/agents/{agent_id}/events", router.base_url()),
            )
            .bearer_auth(router.admin_key())
            .header("accept", "text/event-stream")
            .header("last-event-id", last_event_id)
            .send()
            .await
            .expect("opening the events stream");
        assert_eq!(response.status().as_u16(), 200, "events stream status");
        EventStream { response, buffer: Vec::new() }
    }

    /// The next event, or `None` when none came by `deadline`.
    async fn next_by(&mut self, deadline: tokio::time::Instant) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8(block).expect("SSE is UTF-8");
                let (mut id, mut data) = (None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim_start().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                // Keep-alive comments have neither.
                if let Some(id) = id {
                    let data = serde_json::from_str(&data).expect("SSE data is JSON");
                    return Some(SseEvent { id, data });
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await.ok()?;
            let chunk = chunk.expect("reading the events stream").expect("the stream ended");
            self.buffer.extend(chunk.iter().filter(|b| **b != b'\r'));
        }
    }
}

/// Every item of a listing, walked in pages of `limit` by their `next_after` cursors.
async fn walk(router: &Router, path: &str, limit: u32) -> Vec<Value> {
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{path}?limit={limit}");
        if let Some(after) = &after {
            url.push_str(&format!("&after={after}"));
        }
        let page = router.get_json(&url).await;
        items.extend(page["data"].as_array().expect("page data").iter().cloned());
        match page["next_after"].as_str() {
            Some(next) if page["has_more"] == json!(true) => after = Some(next.to_string()),
            _ => return items,
        }
    }
}

/// Pauses (`i` even) or resumes (`i` odd) the agent through `router`: one event and one audit
/// record, committed before the answer.
async fn write(router: &Router, agent_id: &str, i: usize) -> Resp {
    let verb = if i.is_multiple_of(2) { "pause-exec" } else { "resume-exec" };
    let resp = router
        .post_json(
            &format!("/v1/management/agents/{agent_id}/{verb}"),
            &json!({ "reason": format!("order {i}") }),
        )
        .await;
    resp.assert_status(200);
    resp
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// A replica whose clock is 5 s behind loses no event: what it writes reaches a live stream on
/// the other replica, opened with a cursor the other replica's clock made, in the order written
/// and within 100 ms each; the audit log and the events listing on either replica are complete
/// and in that order, page by page.
#[tokio::test]
async fn a_lagging_replica_loses_no_event_and_streams_fan_out_within_100ms() {
    for backend in backends().await.into_iter().filter(|b| !b.is_sqlite()) {
        let normal = Router::start(&backend).await;
        let lag = RouterOptions {
            env: vec![("XEROTIER_ROUTER_TEST_CLOCK_OFFSET_MS".to_string(), LAG_MS.to_string())],
            ..RouterOptions::default()
        };
        let lagging = normal.replica_with(lag).await;
        assert!(lagging.logs().contains("TEST FAULT: the router's clock is shifted"));
        let key = normal.mint_join_key("order-key").await;
        let (enrolled, _keys) = enroll(&normal, &key.token, "xem-order").await;
        enrolled.assert_status(200);
        let agent_id = enrolled.json()["agent_id"].as_str().expect("agent id").to_string();
        let events_path = format!("/v1/management/agents/{agent_id}/events");

        // The cursor: an event the normal replica wrote, with its own clock.
        let first = write(&normal, &agent_id, 0).await;
        let history = normal.collect_pages(&events_path).await;
        let cursor = history.last().expect("the first event");
        assert_eq!(cursor["request_id"], first.request_id().as_str(), "{cursor}");
        let cursor_id = cursor["id"].as_str().expect("event id").to_string();
        let mut stream = EventStream::open(&normal, &agent_id, &cursor_id).await;

        let mut written = vec![first.request_id()];
        let mut latencies = Vec::new();
        let mut round_trips = Vec::new();
        for i in 1..WRITES {
            // Three in four through the lagging replica; the rest through the normal one, so
            // the stream interleaves both clocks.
            let through = if i % 4 == 3 { &normal } else { &lagging };
            let sent = Instant::now();
            let resp = write(through, &agent_id, i).await;
            let committed = Instant::now();
            let event = stream
                .next_by(tokio::time::Instant::now() + Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("[{}] write {i}: no event within 10 s", backend.name));
            let delivered = Instant::now();
            assert_eq!(
                event.data["request_id"],
                resp.request_id().as_str(),
                "[{}] write {i}: the next event on the stream is the one just written",
                backend.name
            );
            if std::ptr::eq(through, &lagging) {
                assert!(
                    event.id < cursor_id,
                    "[{}] the lagging replica's id {} sorts below the cursor {cursor_id}: an id \
                     cursor would have lost it",
                    backend.name,
                    event.id
                );
            }
            written.push(resp.request_id());
            latencies.push(delivered.saturating_duration_since(committed));
            round_trips.push(delivered.duration_since(sent));
        }
        let mut sorted = latencies.clone();
        sorted.sort();
        eprintln!(
            "[{}] fan-out to the other replica's stream, answer -> delivered: p50 {:?}, max {:?} \
             (request sent -> delivered: max {:?})",
            backend.name,
            percentile(&sorted, 0.5),
            sorted.last().expect("latencies"),
            round_trips.iter().max().expect("round trips"),
        );
        for (i, latency) in latencies.iter().enumerate() {
            assert!(
                *latency <= FAN_OUT_BOUND,
                "[{}] write {}: delivered {latency:?} after it was committed (bound \
                 {FAN_OUT_BOUND:?}); all: {latencies:?}",
                backend.name,
                i + 1
            );
        }

        // The listing and the audit log agree with the stream on both replicas, page by page.
        for router in [&normal, &lagging] {
            let events: Vec<String> = walk(router, &events_path, 5)
                .await
                .iter()
                .map(|e| e["request_id"].as_str().unwrap_or_default().to_string())
                .filter(|id| written.contains(id))
                .collect();
            assert_eq!(events, written, "[{}] events listing in commit order", backend.name);
            let audit = walk(router, "/v1/management/audit", 3).await;
            let ids: HashSet<&str> = audit.iter().filter_map(|r| r["id"].as_str()).collect();
            assert_eq!(ids.len(), audit.len(), "[{}] each audit record once", backend.name);
            let mine: Vec<String> = audit
                .iter()
                .filter(|r| r["target_id"] == agent_id.as_str())
                .filter(|r| r["action"] == "agent.pause_exec" || r["action"] == "agent.resume_exec")
                .map(|r| r["request_id"].as_str().unwrap_or_default().to_string())
                .collect();
            assert_eq!(mine, written, "[{}] audit complete, in commit order", backend.name);
        }
    }
}
