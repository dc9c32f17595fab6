//! Event fan-out across replicas: an event committed through one replica, delivered on a live
//! events stream (SSE) held on another. The writes are pauses and resumes of one agent (each
//! commits one event before it answers); the stream on the other replica is woken by the
//! commit's PostgreSQL notification.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::Report;
use crate::fleet::mint_and_enroll;

/// A live events stream, one event at a time.
struct Events {
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
}

impl Events {
    async fn open(
        http: &reqwest::Client,
        base_url: &str,
        api_key: &str,
        agent_id: &str,
        after: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut request = http
            .get(format!("{base_url}/v1/management/agents/{agent_id}/events"))
            .bearer_auth(api_key)
            .header("Accept", "text/event-stream");
        if let Some(after) = after {
            request = request.header("Last-Event-ID", after);
        }
        let response = request.send().await?.error_for_status()?;
        let body = response.bytes_stream().map(|chunk| chunk.map(|b| b.to_vec())).boxed();
        Ok(Self { body, buffer: String::new() })
    }

    /// The next event's data.
    async fn next(&mut self) -> anyhow::Result<Value> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                    return Ok(serde_json::from_str(data)?);
                }
                continue;
            }
            let Some(chunk) = self.body.next().await else { bail!("the events stream ended") };
            self.buffer.push_str(&String::from_utf8_lossy(&chunk?).replace('\r', ""));
        }
    }
}

/// ROUNDS events written through `write_url`, each awaited on a stream held on `read_url`.
/// Latency: the write's answer (its event committed) → the event on the other replica's
/// stream; `request_*` fields: the write's request sent → the same delivery.
pub async fn fan_out(
    write_url: String,
    read_url: String,
    api_key: String,
    rounds: usize,
) -> anyhow::Result<Report> {
    let http = reqwest::Client::new();
    let (enrolled, _signing) =
        mint_and_enroll(&http, &write_url, &api_key, "bench-fanout", None).await?;
    let agent_id = enrolled.answer.agent_id;
    let listed: Value = http
        .get(format!("{read_url}/v1/management/agents/{agent_id}/events?limit=500"))
        .bearer_auth(&api_key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let last = listed["data"].as_array().and_then(|d| d.last()).and_then(|e| e["id"].as_str());
    let mut stream = Events::open(&http, &read_url, &api_key, &agent_id, last).await?;
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(rounds);
    let mut from_request = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let verb = if round.is_multiple_of(2) { "pause-exec" } else { "resume-exec" };
        let sent = Instant::now();
        let answer = http
            .post(format!("{write_url}/v1/management/agents/{agent_id}/{verb}"))
            .bearer_auth(&api_key)
            .json(&json!({ "reason": "fan-out bench" }))
            .send()
            .await?
            .error_for_status()?;
        let answered = Instant::now();
        let request_id = answer
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .context("X-Request-ID")?
            .to_string();
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .with_context(|| format!("round {round}: no event within 10 s"))??;
        let delivered = Instant::now();
        if event["request_id"] != request_id.as_str() {
            bail!("round {round}: the stream delivered {event} instead of {request_id}'s event");
        }
        latencies.push(delivered.saturating_duration_since(answered));
        from_request.push(delivered.duration_since(sent));
    }
    from_request.sort();
    let at = |p: f64| {
        let index = ((from_request.len() as f64 * p).ceil() as usize).saturating_sub(1);
        from_request.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Report::new("event_fan_out", started.elapsed(), vec![latencies], 1)
        .with_json("request_p50_ms", json!(at(0.50)))
        .with_json("request_p99_ms", json!(at(0.99))))
}
