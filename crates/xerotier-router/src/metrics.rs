//! Prometheus metrics, served at `/metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindStateLabels {
    kind: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    webhook: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// The router's metrics, behind one `Arc`: middleware holds a copy per request, so a clone must
/// be one reference count, not one per family.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<MetricFamilies>);

impl std::ops::Deref for Metrics {
    type Target = MetricFamilies;

    fn deref(&self) -> &MetricFamilies {
        &self.0
    }
}

#[derive(Debug)]
pub struct MetricFamilies {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    auth_failures: Family<ReasonLabels, Counter>,
    auth_rate_limited: Counter,
    mesh_frames: Family<KindLabels, Counter>,
    mesh_dropped: Family<ReasonLabels, Counter>,
    mesh_flood_disconnects: Counter,
    enroll_denied_unrecorded: Counter,
    agents_quarantined: Counter,
    /// The credential posture gauges, named `xerotier_credential…` (no `router` prefix: they
    /// describe the fleet, whichever replica serves them).
    posture_registry: Arc<Registry>,
    credentials: Family<KindStateLabels, Gauge>,
    credential_oldest_age: Family<KindLabels, Gauge>,
    webhook_deliveries: Family<WebhookLabels, Counter>,
    webhook_pending: Gauge,
    router_key_phase: Family<KindLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("xerotier_router");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency", latency.clone());
        registry.register(
            "auth_failures",
            "Requests refused by authentication or scope",
            auth_failures.clone(),
        );
        let auth_rate_limited = Counter::default();
        registry.register(
            "auth_rate_limited",
            "Requests refused (429) before authentication: their source address failed to \
             authenticate too often",
            auth_rate_limited.clone(),
        );
        let mesh_frames = Family::<KindLabels, Counter>::default();
        let mesh_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "mesh_frames",
            "Authenticated mesh frames handled, by type",
            mesh_frames.clone(),
        );
        registry.register(
            "mesh_frames_dropped",
            "Mesh frames dropped before the application, by reason",
            mesh_dropped.clone(),
        );
        let mesh_flood_disconnects = Counter::default();
        registry.register(
            "mesh_flood_disconnects",
            "Agents silenced for a cool-down because they flooded the mesh past their frame rate",
            mesh_flood_disconnects.clone(),
        );
        let agents_quarantined = Counter::default();
        registry.register(
            "agents_quarantined",
            "Agents put in quarantine as suspected clones (two live sessions on one key)",
            agents_quarantined.clone(),
        );
        let enroll_denied_unrecorded = Counter::default();
        registry.register(
            "enroll_denied_unrecorded",
            "Refused enrollment attempts not written to the audit log (per-source rate limit)",
            enroll_denied_unrecorded.clone(),
        );
        let mut posture_registry = Registry::with_prefix("xerotier");
        let credentials = Family::<KindStateLabels, Gauge>::default();
        let credential_oldest_age = Family::<KindLabels, Gauge>::default();
        posture_registry.register(
            "credentials",
            "Credentials by kind and posture state (ok, due_soon, overdue, expired), as of the \
             posture monitor's latest run",
            credentials.clone(),
        );
        posture_registry.register(
            "credential_oldest_age_seconds",
            "Age of the oldest credential of each kind, since creation or last rotation",
            credential_oldest_age.clone(),
        );
        // Every kind and state from the start, zeros included, so the set of series never
        // changes (a dashboard sees `0`, not a missing series, before the first monitor run).
        for kind in xerotier_posture::CredentialKind::ALL {
            if kind == xerotier_posture::CredentialKind::RouterKey {
                continue;
            }
            for state in xerotier_posture::PostureState::ALL {
                drop(credentials.get_or_create(&KindStateLabels {
                    kind: kind.as_str().to_string(),
                    state: state.as_str().to_string(),
                }));
            }
            drop(
                credential_oldest_age
                    .get_or_create(&KindLabels { kind: kind.as_str().to_string() }),
            );
        }
        let webhook_deliveries = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by webhook and outcome (delivered, retry, failed: the \
             last attempt failed)",
            webhook_deliveries.clone(),
        );
        let webhook_pending = Gauge::default();
        registry.register(
            "webhook_deliveries_pending",
            "Webhook deliveries waiting for an attempt, fleet-wide",
            webhook_pending.clone(),
        );
        let router_key_phase = Family::<KindLabels, Gauge>::default();
        registry.register(
            "router_key_rotation_phase",
            "Phase of each router key kind's rotation as this replica applies it: 0 standby, \
             1 init, 2 update_clients, 3 update_servers",
            router_key_phase.clone(),
        );
        Self(Arc::new(MetricFamilies {
            router_key_phase,
            posture_registry: Arc::new(posture_registry),
            credentials,
            credential_oldest_age,
            webhook_deliveries,
            webhook_pending,
            registry: Arc::new(registry),
            enroll_denied_unrecorded,
            requests,
            latency,
            auth_failures,
            auth_rate_limited,
            mesh_frames,
            mesh_dropped,
            mesh_flood_disconnects,
            agents_quarantined,
        }))
    }
}

impl Metrics {
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    pub fn auth_rate_limited(&self) {
        self.auth_rate_limited.inc();
    }

    pub fn mesh_frame(&self, kind: &str) {
        self.mesh_frames.get_or_create(&KindLabels { kind: kind.to_string() }).inc();
    }

    pub fn mesh_dropped(&self, reason: &str) {
        self.mesh_dropped_many(reason, 1);
    }

    pub fn mesh_dropped_many(&self, reason: &str, count: u64) {
        if count > 0 {
            self.mesh_dropped
                .get_or_create(&ReasonLabels { reason: reason.to_string() })
                .inc_by(count);
        }
    }

    pub fn mesh_flood_disconnect(&self) {
        self.mesh_flood_disconnects.inc();
    }

    pub fn agent_quarantined(&self) {
        self.agents_quarantined.inc();
    }

    pub fn enroll_denied_unrecorded(&self) {
        self.enroll_denied_unrecorded.inc();
    }

    /// Sets the posture gauges: a count per kind and state (every pair given, zeros included)
    /// and the oldest age per kind.
    pub fn set_posture(&self, counts: &[(&str, &str, i64)], oldest: &[(&str, i64)]) {
        for (kind, state, count) in counts {
            self.credentials
                .get_or_create(&KindStateLabels {
                    kind: kind.to_string(),
                    state: state.to_string(),
                })
                .set(*count);
        }
        for (kind, age) in oldest {
            self.credential_oldest_age
                .get_or_create(&KindLabels { kind: kind.to_string() })
                .set(*age);
        }
    }

    pub fn webhook_delivery(&self, webhook: &str, outcome: &str) {
        let labels = WebhookLabels { webhook: webhook.to_string(), outcome: outcome.to_string() };
        self.webhook_deliveries.get_or_create(&labels).inc();
    }

    /// The phase a router key kind is in on this replica (see the family's help).
    pub fn set_router_key_phase(&self, kind: &str, phase: i64) {
        self.router_key_phase.get_or_create(&KindLabels { kind: kind.to_string() }).set(phase);
    }

    pub fn webhook_pending(&self, pending: i64) {
        self.webhook_pending.set(pending);
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        use prometheus_client::encoding::text;
        let mut out = String::new();
        text::encode_registry(&mut out, &self.registry)?;
        text::encode_registry(&mut out, &self.posture_registry)?;
        text::encode_eof(&mut out)?;
        Ok(out)
    }
}

/// The `method` label: the standard methods by name, anything else (a client may send any
/// token as a method) as `other`, so callers cannot grow `/metrics`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The `route` label: the route template that matched (never the raw path), or `unmatched`.
fn route_label(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string())
}

/// Counts and times every request by its route template and a bounded method label: nothing
/// a caller sends (a raw path, an invented method) becomes a label value of its own.
#[expect(clippy::disallowed_methods, reason = "measures latency for /metrics; decides nothing")]
pub async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method()).to_string();
    let route = route_label(&req);
    let response = next.run(req).await;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    metrics.latency.get_or_create(&RouteLabels { route }).observe(started.elapsed().as_secs_f64());
    response
}

/// Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "OpenMetrics text exposition", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"))
)]
pub async fn serve_metrics(State(metrics): State<Metrics>) -> Response {
    match metrics.encode() {
        Ok(text) => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(_) => crate::error::ApiError::Service(crate::service_error::ServiceError::internal(
            "encoding metrics",
        ))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        for text in ["FOO", "BREW", "get", "X-1234", "PROPFIND"] {
            let method = Method::from_bytes(text.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other", "{text}");
        }
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
    }
}
