//! Several replicas on one PostgreSQL: how long a revoke made through one replica takes to
//! return, and to be refused on every other.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::StatusCode;

use crate::Report;

const TOOLS: &str = "/v1/exec/tools";

/// What one replica's prober saw while a revoke was under way.
struct Probe {
    /// Call → the first refusal received (`None`: never refused within the probe's bound).
    first_refusal: Option<Duration>,
    /// Requests sent after the revoke returned that were accepted (must be none).
    accepted_after_return: usize,
}

async fn status(client: &reqwest::Client, base_url: &str, key: &str) -> anyhow::Result<StatusCode> {
    Ok(client.get(format!("{base_url}{TOOLS}")).bearer_auth(key).send().await?.status())
}

/// Uses `key` on `base_url` every `interval` from `call` on, until the first refusal (or 5 s);
/// `returned` is read once the revoke returns, to judge the requests sent after it.
async fn probe(
    client: reqwest::Client,
    base_url: String,
    key: String,
    call: Instant,
    interval: Duration,
    returned: tokio::sync::watch::Receiver<Option<Instant>>,
) -> anyhow::Result<Probe> {
    let mut samples: Vec<(Instant, StatusCode)> = Vec::new();
    let mut first_refusal = None;
    let bound = call + Duration::from_secs(5);
    while Instant::now() < bound {
        let sent = Instant::now();
        let got = status(&client, &base_url, &key).await?;
        samples.push((sent, got));
        if got == StatusCode::UNAUTHORIZED {
            first_refusal = Some(call.elapsed());
            break;
        }
        tokio::time::sleep(interval).await;
    }
    let returned = *returned.borrow();
    let accepted_after_return = match returned {
        Some(at) => samples.iter().filter(|(sent, s)| *sent > at && s.is_success()).count(),
        None => 0,
    };
    Ok(Probe { first_refusal, accepted_after_return })
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// `rounds` times: a key created on the first replica is used (twice, so it is cached) on each
/// other one, then revoked through the first while the others are probed with it every
/// `probe_interval`; once the revoke returns, every other replica must refuse it.
pub async fn revoke_latency(
    urls: Vec<String>,
    api_key: String,
    rounds: usize,
    probe_interval: Duration,
) -> anyhow::Result<Report> {
    let Some((a, others)) = urls.split_first() else { bail!("no replica given") };
    if others.is_empty() {
        bail!("a revoke across replicas needs at least two");
    }
    let client = reqwest::Client::new();
    let run = std::process::id();
    let mut revokes = Vec::with_capacity(rounds);
    let mut refused: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); others.len()];
    let mut everywhere = Vec::with_capacity(rounds);
    let (mut accepted_after, mut not_refused_after, mut never_refused) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    for round in 0..rounds {
        let created = client
            .post(format!("{a}/v1/management/api-keys"))
            .bearer_auth(&api_key)
            .json(&serde_json::json!({ "name": format!("revoke-{run}-{round}"), "scopes": ["execution"] }))
            .send()
            .await?;
        if created.status() != StatusCode::CREATED {
            bail!("create answered {}", created.status());
        }
        let body: serde_json::Value = created.json().await?;
        let id = body["key"]["id"].as_str().context("created key id")?.to_string();
        let value = body["value"].as_str().context("created key value")?.to_string();
        for base in others {
            for _ in 0..2 {
                let got = status(&client, base, &value).await?;
                if got != StatusCode::OK {
                    bail!("round {round}: fresh key answered {got} on {base}");
                }
            }
        }
        let (returned_tx, returned_rx) = tokio::sync::watch::channel(None);
        let call = Instant::now();
        let probes: Vec<_> = others
            .iter()
            .map(|base| {
                tokio::spawn(probe(
                    client.clone(),
                    base.clone(),
                    value.clone(),
                    call,
                    probe_interval,
                    returned_rx.clone(),
                ))
            })
            .collect();
        let revoked = client
            .post(format!("{a}/v1/management/api-keys/{id}/revoke"))
            .bearer_auth(&api_key)
            .json(&serde_json::json!({}))
            .send()
            .await?;
        let returned = Instant::now();
        let _ = returned_tx.send(Some(returned));
        if revoked.status() != StatusCode::OK {
            bail!("revoke answered {}", revoked.status());
        }
        revokes.push(returned.duration_since(call));
        // The very next request on every other replica must be refused.
        for base in others {
            if status(&client, base, &value).await? != StatusCode::UNAUTHORIZED {
                not_refused_after += 1;
                eprintln!("round {round}: {base} did not refuse a key revoked on {a}");
            }
        }
        let mut slowest = Duration::ZERO;
        for (i, handle) in probes.into_iter().enumerate() {
            let seen = handle.await??;
            accepted_after += seen.accepted_after_return as u64;
            match seen.first_refusal {
                Some(at) => {
                    refused[i].push(at);
                    slowest = slowest.max(at);
                }
                None => never_refused += 1,
            }
        }
        everywhere.push(slowest);
    }
    let elapsed = started.elapsed();
    let mut per_replica = Vec::new();
    for (base, mut times) in others.iter().zip(refused) {
        times.sort();
        per_replica.push(serde_json::json!({
            "replica": base,
            "first_refusal_p50_ms": percentile_ms(&times, 0.50),
            "first_refusal_p99_ms": percentile_ms(&times, 0.99),
            "first_refusal_max_ms": percentile_ms(&times, 1.0),
        }));
    }
    everywhere.sort();
    let mut sorted_revokes = revokes.clone();
    sorted_revokes.sort();
    Ok(Report::new("revoke_across_replicas", elapsed, vec![revokes], 1)
        .with_extra("rounds", rounds as u64)
        .with_extra("replicas", urls.len() as u64)
        .with_extra("accepted_after_return", accepted_after)
        .with_extra("not_refused_after_return", not_refused_after)
        .with_extra("never_refused", never_refused)
        .with_json("revoke_max_ms", percentile_ms(&sorted_revokes, 1.0).into())
        .with_json("refused_everywhere_p50_ms", percentile_ms(&everywhere, 0.50).into())
        .with_json("refused_everywhere_p99_ms", percentile_ms(&everywhere, 0.99).into())
        .with_json("refused_everywhere_max_ms", percentile_ms(&everywhere, 1.0).into())
        .with_json("per_replica", per_replica.into()))
}
