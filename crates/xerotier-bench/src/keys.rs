//! API key benchmarks: creation over HTTP, and the store alone as its floor.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use xerotier_core::{Clock, IdGenerator, IdKind, OsEntropy, SystemClock};
use xerotier_store::{AuditEntry, NewApiKey, Store};

use crate::Report;

pub async fn http_create(
    base_url: String,
    api_key: String,
    seconds: u64,
    concurrency: usize,
) -> anyhow::Result<Report> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers = (0..concurrency).map(|w| {
        let (client, base_url, api_key, counter) = (client.clone(), base_url.clone(), api_key.clone(), counter.clone());
        async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let response = client
                    .post(format!("{base_url}/v1/management/api-keys"))
                    .bearer_auth(&api_key)
                    .json(&serde_json::json!({"name": format!("bench-{w}-{n}"), "scopes": ["execution"]}))
                    .send()
                    .await?;
                if response.status() != 201 {
                    bail!("create answered {}", response.status());
                }
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }
    });
    let latencies = futures::future::try_join_all(workers).await?;
    Ok(Report::new("http_key_create", started.elapsed(), latencies, concurrency))
}

/// Key row + audit row in one transaction, straight into the store.
pub async fn store_create(
    database_url: String,
    seconds: u64,
    concurrency: usize,
) -> anyhow::Result<Report> {
    let store = Store::connect(&database_url).await.context("connecting")?;
    let ids = IdGenerator::new(Arc::new(SystemClock), Arc::new(OsEntropy));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let (store, ids) = (store.clone(), ids.clone());
        async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let now = SystemClock.now_millis();
                let id = ids.next(IdKind::ApiKey);
                let key = NewApiKey {
                    id: id.clone(),
                    name: id.clone(),
                    scopes: "execution".into(),
                    verifier: "00".repeat(32),
                    created_at: now,
                    created_by: None,
                    expires_at: None,
                };
                let audit = AuditEntry {
                    id: ids.next(IdKind::Audit),
                    at: now,
                    actor_key_id: None,
                    actor_name: None,
                    action: "api_key.create".into(),
                    target_type: Some("api_key".into()),
                    target_id: Some(id),
                    target_name: None,
                    reason: None,
                    request_id: None,
                    correlation_id: None,
                    outcome: "success".into(),
                    client_addr: None,
                    details: None,
                };
                let t = Instant::now();
                store.create_api_key(&key, &audit).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }
    });
    let latencies = futures::future::try_join_all(workers).await?;
    Ok(Report::new("store_key_create", started.elapsed(), latencies, concurrency))
}
