//! The XEM's Prometheus metrics, served at `GET /metrics` on `metrics_listen` (off by
//! default). The rest of the agent reports through [`XemMetrics`]; the values are read from it
//! only when a scrape encodes them.
//!
//! Labels are bounded and say nothing secret: invocation and rotation outcomes, reload
//! triggers and results, and the `credentials_ref` file names from the agent's own config —
//! never a credential's content or hash.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use xerotier_core::SharedClock;
use xerotier_proto::invocation::InvocationStatus;
use xerotier_proto::workspace_credentials::ReloadReport;

/// How an invocation ended on this agent, or that it was refused.
const INVOCATION_OUTCOMES: [&str; 5] = ["succeeded", "failed", "timed_out", "cancelled", "refused"];
const RELOAD_TRIGGERS: [&str; 3] = ["startup", "sighup", "watch"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    trigger: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    credentials_ref: String,
}

/// A step of a CURVE rotation, as this agent saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationOutcome {
    /// A pending key was stored and its signed acknowledgement sent.
    Acknowledged,
    /// The router promoted the key; the agent switched to it.
    Promoted,
    /// The router failed the rotation; the agent kept its key.
    Failed,
}

impl RotationOutcome {
    const ALL: [Self; 3] = [Self::Acknowledged, Self::Promoted, Self::Failed];

    fn as_str(self) -> &'static str {
        match self {
            Self::Acknowledged => "acknowledged",
            Self::Promoted => "promoted",
            Self::Failed => "failed",
        }
    }
}

/// The agent's metrics, behind one `Arc` (cloned into every part that reports).
#[derive(Debug, Clone)]
pub struct XemMetrics(Arc<Families>);

#[derive(Debug)]
struct Families {
    registry: Registry,
    invocations: Family<OutcomeLabels, Counter>,
    running: Gauge,
    reloads: Family<ReloadLabels, Counter>,
    credential_generation: Family<CredentialLabels, Gauge>,
    credential_age: Family<CredentialLabels, Gauge>,
    /// The mtime (Unix ms) of each file's version in use: its age is computed at each scrape.
    credential_mtimes: Mutex<BTreeMap<String, i64>>,
    session_connected: Gauge,
    rotations: Family<OutcomeLabels, Counter>,
    clock: SharedClock,
}

impl XemMetrics {
    pub fn new(clock: SharedClock) -> Self {
        let mut registry = Registry::with_prefix("xerotier_xem");
        let invocations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "invocations",
            "Invocations ended on this agent, by outcome (refused: not accepted)",
            invocations.clone(),
        );
        let running = Gauge::default();
        registry.register(
            "invocations_running",
            "Invocations accepted and not yet ended (including those waiting for a slot)",
            running.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "credential_reloads",
            "Workspace credential reloads, by trigger (startup, sighup, watch) and result \
             (ok, failed: some file refused)",
            reloads.clone(),
        );
        let credential_generation = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "credential_generation",
            "Generation of each credential file's version in use (0: none was ever read)",
            credential_generation.clone(),
        );
        let credential_age = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "credential_age_seconds",
            "Age of each credential file's version in use, from its modification time",
            credential_age.clone(),
        );
        let session_connected = Gauge::default();
        registry.register(
            "session_connected",
            "1 while the CURVE session with the router is established, else 0",
            session_connected.clone(),
        );
        let rotations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "curve_rotations",
            "CURVE key rotation steps, by outcome (acknowledged, promoted, failed)",
            rotations.clone(),
        );
        // Every bounded series from the start, so a rate over it is defined before the first
        // event.
        for outcome in INVOCATION_OUTCOMES {
            drop(invocations.get_or_create(&OutcomeLabels { outcome }));
        }
        for trigger in RELOAD_TRIGGERS {
            for result in ["ok", "failed"] {
                drop(reloads.get_or_create(&ReloadLabels { trigger: trigger.to_string(), result }));
            }
        }
        for outcome in RotationOutcome::ALL {
            drop(rotations.get_or_create(&OutcomeLabels { outcome: outcome.as_str() }));
        }
        Self(Arc::new(Families {
            registry,
            invocations,
            running,
            reloads,
            credential_generation,
            credential_age,
            credential_mtimes: Mutex::new(BTreeMap::new()),
            session_connected,
            rotations,
            clock,
        }))
    }

    /// An invocation's result, as the agent sends it to the router.
    pub fn invocation_finished(&self, status: &InvocationStatus) {
        let outcome = match status {
            InvocationStatus::Succeeded => "succeeded",
            InvocationStatus::TimedOut => "timed_out",
            InvocationStatus::Cancelled => "cancelled",
            // Not an end state; counted as a failure rather than lost.
            InvocationStatus::Failed | InvocationStatus::Queued | InvocationStatus::Running => {
                "failed"
            }
        };
        self.0.invocations.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// An invocation the agent would not accept (unknown tool or workspace, shutting down).
    pub fn invocation_refused(&self) {
        self.0.invocations.get_or_create(&OutcomeLabels { outcome: "refused" }).inc();
    }

    pub fn set_running(&self, running: usize) {
        self.0.running.set(i64::try_from(running).unwrap_or(i64::MAX));
    }

    /// A reload's outcome, and each file's version in use after it.
    pub fn reload(&self, report: &ReloadReport) {
        let result = if report.ok { "ok" } else { "failed" };
        let labels = ReloadLabels { trigger: report.trigger.clone(), result };
        self.0.reloads.get_or_create(&labels).inc();
        let mut mtimes = self.0.credential_mtimes.lock();
        for file in &report.files {
            let labels = CredentialLabels { credentials_ref: file.credentials_ref.clone() };
            let generation = i64::try_from(file.generation).unwrap_or(i64::MAX);
            self.0.credential_generation.get_or_create(&labels).set(generation);
            match file.mtime_ms {
                Some(mtime_ms) => {
                    mtimes.insert(file.credentials_ref.clone(), mtime_ms);
                }
                None => {
                    mtimes.remove(&file.credentials_ref);
                    self.0.credential_age.remove(&labels);
                }
            }
        }
    }

    pub fn session_connected(&self, connected: bool) {
        self.0.session_connected.set(i64::from(connected));
    }

    pub fn rotation(&self, outcome: RotationOutcome) {
        self.0.rotations.get_or_create(&OutcomeLabels { outcome: outcome.as_str() }).inc();
    }

    /// The OpenMetrics text, with every credential's age as of now.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let now = self.0.clock.now_millis();
        for (credentials_ref, mtime_ms) in self.0.credential_mtimes.lock().iter() {
            let labels = CredentialLabels { credentials_ref: credentials_ref.clone() };
            self.0.credential_age.get_or_create(&labels).set((now - mtime_ms).max(0) / 1000);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.0.registry)?;
        Ok(out)
    }
}

async fn serve_metrics(State(metrics): State<XemMetrics>) -> Response {
    match metrics.encode() {
        Ok(text) => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed\n").into_response(),
    }
}

/// Binds `metrics_listen` (at start, so a taken port stops the agent with a clear error).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `GET /metrics` (and nothing else) on `listener` until `shutdown`.
pub fn spawn_server(
    listener: TcpListener,
    metrics: XemMetrics,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let app = axum::Router::new().route("/metrics", get(serve_metrics)).with_state(metrics);
    tokio::spawn(async move {
        let served =
            axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(err) = served {
            tracing::error!(error = %err, "the metrics server stopped");
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use xerotier_core::ManualClock;
    use xerotier_proto::workspace_credentials::CredentialFileReport;

    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn metrics() -> (XemMetrics, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(NOW));
        (XemMetrics::new(clock.clone()), clock)
    }

    /// The value of one series in `text` (`name{labels}` exactly as encoded).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
    }

    fn report(trigger: &str, ok: bool, generation: u64, mtime_ms: Option<i64>) -> ReloadReport {
        ReloadReport {
            trigger: trigger.into(),
            ok,
            files: vec![CredentialFileReport {
                credentials_ref: "prod.yaml".into(),
                ok,
                sha256: Some("ab".repeat(32)),
                generation,
                mtime_ms,
                error: (!ok).then(|| "refused".into()),
                expires_at_ms: None,
            }],
        }
    }

    #[test]
    fn each_report_moves_its_series() {
        let (metrics, clock) = metrics();
        let text = metrics.encode().unwrap();
        assert_eq!(value(&text, "xerotier_xem_invocations_total{outcome=\"refused\"}"), Some(0.0));
        assert_eq!(value(&text, "xerotier_xem_session_connected"), Some(0.0));

        metrics.invocation_finished(&InvocationStatus::Succeeded);
        metrics.invocation_finished(&InvocationStatus::Succeeded);
        metrics.invocation_finished(&InvocationStatus::TimedOut);
        metrics.invocation_refused();
        metrics.set_running(3);
        metrics.session_connected(true);
        metrics.rotation(RotationOutcome::Promoted);
        metrics.reload(&report("startup", true, 1, Some(NOW - 90_000)));
        metrics.reload(&report("watch", false, 1, Some(NOW - 90_000)));
        clock.advance_secs(10);

        let text = metrics.encode().unwrap();
        for (series, expected) in [
            ("xerotier_xem_invocations_total{outcome=\"succeeded\"}", 2.0),
            ("xerotier_xem_invocations_total{outcome=\"timed_out\"}", 1.0),
            ("xerotier_xem_invocations_total{outcome=\"refused\"}", 1.0),
            ("xerotier_xem_invocations_total{outcome=\"cancelled\"}", 0.0),
            ("xerotier_xem_invocations_running", 3.0),
            ("xerotier_xem_session_connected", 1.0),
            ("xerotier_xem_curve_rotations_total{outcome=\"promoted\"}", 1.0),
            ("xerotier_xem_credential_reloads_total{trigger=\"startup\",result=\"ok\"}", 1.0),
            ("xerotier_xem_credential_reloads_total{trigger=\"watch\",result=\"failed\"}", 1.0),
            ("xerotier_xem_credential_reloads_total{trigger=\"sighup\",result=\"ok\"}", 0.0),
            ("xerotier_xem_credential_generation{credentials_ref=\"prod.yaml\"}", 1.0),
            // 90 s old at the reload, 10 s later at the scrape: the age follows the clock.
            ("xerotier_xem_credential_age_seconds{credentials_ref=\"prod.yaml\"}", 100.0),
        ] {
            assert_eq!(value(&text, series), Some(expected), "{series}:\n{text}");
        }
        assert!(!text.contains(&"ab".repeat(32)), "no hash in the metrics");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_file_never_read_has_generation_zero_and_no_age() {
        let (metrics, _clock) = metrics();
        metrics.reload(&report("startup", true, 1, Some(NOW)));
        metrics.reload(&report("sighup", false, 0, None));
        let text = metrics.encode().unwrap();
        let generation = "xerotier_xem_credential_generation{credentials_ref=\"prod.yaml\"}";
        assert_eq!(value(&text, generation), Some(0.0));
        assert!(!text.contains("credential_age_seconds{"), "{text}");
    }

    #[tokio::test]
    async fn the_server_answers_get_metrics_and_stops_on_shutdown() {
        let (metrics, _clock) = metrics();
        metrics.invocation_refused();
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = spawn_server(listener, metrics, shutdown.clone());
        let resp = reqwest::get(format!("http://{addr}/metrics")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert_eq!(value(&text, "xerotier_xem_invocations_total{outcome=\"refused\"}"), Some(1.0));
        let other = reqwest::get(format!("http://{addr}/other")).await.unwrap();
        assert_eq!(other.status(), 404);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
    }
}
