//! HTTP calls to the router, with `--dry-run` and errors an operator can act on.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde_json::Value;
use xerotier_proto::ErrorEnvelope;

use crate::cli::OutputFormat;

/// The router refused a request: its error envelope, so commands can react to the `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code}, HTTP {status}, request {request_id})")]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub param: Option<String>,
    pub request_id: String,
}

/// A value as one URL path segment (tool names may hold `.`; nothing else is special here).
pub fn path_segment(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
use crate::settings::Target;

/// True when the TLS handshake failed on the router's certificate (somewhere in the chain of
/// causes reqwest wraps it in).
fn is_untrusted_certificate(err: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if text.contains("invalid peer certificate") || text.contains("UnknownIssuer") {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The client settings every request shares: connect timeout, user agent, and the one CA
/// trusted when `--ca-file` (or its env or context) names one.
fn http_builder(target: &Target) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("xeroctl/", env!("CARGO_PKG_VERSION")));
    if let Some(ca_file) = &target.ca_file {
        builder = builder.tls_built_in_root_certs(false).add_root_certificate(read_ca(ca_file)?);
    }
    Ok(builder)
}

/// The CA of `--ca-file`, `XEROCTL_CA_FILE` or the context's `ca_file`.
fn read_ca(path: &std::path::Path) -> anyhow::Result<reqwest::Certificate> {
    let pem = std::fs::read(path)
        .with_context(|| format!("reading the CA file {} (--ca-file)", path.display()))?;
    reqwest::Certificate::from_pem(&pem).with_context(|| {
        format!("{} is not a PEM certificate (give the router's tls/ca.pem)", path.display())
    })
}

#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    target: Target,
    dry_run: bool,
    output: OutputFormat,
}

/// One request to make.
#[derive(Debug)]
pub struct Call<'a> {
    pub method: Method,
    pub path: String,
    pub query: Vec<(&'a str, String)>,
    pub body: Option<Value>,
}

impl<'a> Call<'a> {
    pub fn get(path: impl Into<String>) -> Self {
        Self { method: Method::GET, path: path.into(), query: Vec::new(), body: None }
    }

    pub fn post(path: impl Into<String>, body: Value) -> Self {
        Self { method: Method::POST, path: path.into(), query: Vec::new(), body: Some(body) }
    }

    pub fn query(mut self, name: &'a str, value: Option<impl ToString>) -> Self {
        if let Some(value) = value {
            self.query.push((name, value.to_string()));
        }
        self
    }
}

impl Client {
    pub fn new(target: Target, dry_run: bool, output: OutputFormat) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("xeroctl/", env!("CARGO_PKG_VERSION")));
        if let Some(ca_file) = &target.ca_file {
            builder =
                builder.tls_built_in_root_certs(false).add_root_certificate(read_ca(ca_file)?);
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Self { http, target, dry_run, output })
    }

    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    fn url(&self, call: &Call<'_>) -> anyhow::Result<reqwest::Url> {
        let mut url = reqwest::Url::parse(&format!("{}{}", self.target.base_url, call.path))
            .with_context(|| format!("invalid router URL {:?}", self.target.base_url))?;
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(call.query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    /// Prints what `call` would send, with the API key redacted.
    pub fn print_plan(&self, call: &Call<'_>) -> anyhow::Result<()> {
        let url = self.url(call)?;
        let auth = self.target.api_key.as_ref().map(|_| "Bearer xero_…(redacted)");
        match self.output {
            OutputFormat::Json => {
                let plan = serde_json::json!({
                    "dry_run": true,
                    "method": call.method.as_str(),
                    "url": url.as_str(),
                    "authorization": auth,
                    "body": call.body,
                });
                println!("{}", serde_json::to_string_pretty(&plan)?);
            }
            OutputFormat::Table => {
                println!("# dry run: nothing was sent");
                println!("{} {}", call.method, url);
                if let Some(auth) = auth {
                    println!("Authorization: {auth}");
                }
                if let Some(body) = &call.body {
                    println!(
                        "Content-Type: application/json\n\n{}",
                        serde_json::to_string_pretty(body)?
                    );
                }
            }
        }
        Ok(())
    }

    /// Sends `call` and decodes the answer; `None` in dry-run mode (the plan was printed).
    pub async fn send<T: DeserializeOwned>(&self, call: Call<'_>) -> anyhow::Result<Option<T>> {
        if self.dry_run {
            self.print_plan(&call)?;
            return Ok(None);
        }
        self.fetch(call).await.map(Some)
    }

    /// Sends `call` even in dry-run mode: only for reads that a plan depends on.
    pub async fn fetch<T: DeserializeOwned>(&self, call: Call<'_>) -> anyhow::Result<T> {
        let api_key = self.target.api_key.as_ref().ok_or_else(|| {
            anyhow!("no API key: pass --api-key, set XEROCTL_API_KEY, or add a context with `xeroctl config add`")
        })?;
        let url = self.url(&call)?;
        let mut request =
            self.http.request(call.method.clone(), url).bearer_auth(api_key.expose_secret());
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|err| self.transport_error(err))?;
        let status = response.status();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let bytes = response.bytes().await.map_err(|err| self.transport_error(err))?;
        if !status.is_success() {
            match serde_json::from_slice::<ErrorEnvelope>(&bytes) {
                Ok(envelope) => {
                    return Err(ApiError {
                        status: status.as_u16(),
                        code: envelope.error.code,
                        message: envelope.error.message,
                        param: envelope.error.param,
                        request_id,
                    }
                    .into());
                }
                Err(_) => bail!("the router answered HTTP {status} (request {request_id})"),
            }
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("unexpected answer from the router (request {request_id})"))
    }

    /// Opens a server-sent events stream at `path` (a GET with `Accept: text/event-stream`).
    pub async fn event_stream(
        &self,
        path: &str,
    ) -> anyhow::Result<impl futures::Stream<Item = Result<eventsource_stream::Event, String>>>
    {
        use eventsource_stream::Eventsource;
        use futures::StreamExt;
        let api_key = self.target.api_key.as_ref().ok_or_else(|| anyhow!("no API key"))?;
        let url = self.url(&Call::get(path))?;
        // A stream stays open: no overall timeout, only the connect timeout.
        let http = http_builder(&self.target)?.build()?;
        let response = http
            .get(url)
            .bearer_auth(api_key.expose_secret())
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|err| self.transport_error(err))?;
        if !response.status().is_success() {
            let status = response.status();
            let bytes = response.bytes().await.unwrap_or_default();
            match serde_json::from_slice::<ErrorEnvelope>(&bytes) {
                Ok(envelope) => bail!(
                    "{} ({}, HTTP {})",
                    envelope.error.message,
                    envelope.error.code,
                    status.as_u16()
                ),
                Err(_) => bail!("the router answered HTTP {status}"),
            }
        }
        Ok(response.bytes_stream().eventsource().map(|item| item.map_err(|e| e.to_string())))
    }

    fn transport_error(&self, err: reqwest::Error) -> anyhow::Error {
        let base = &self.target.base_url;
        if is_untrusted_certificate(&err) {
            anyhow!(
                "the router at {base} presented a TLS certificate this client does not trust: \
                 give the router's CA with --ca-file (its <state-dir>/tls/ca.pem), \
                 XEROCTL_CA_FILE or the context's ca_file"
            )
        } else if err.is_connect() {
            anyhow!(
                "cannot reach the router at {base}: is it running? (set --base-url or XEROCTL_BASE_URL)"
            )
        } else if err.is_timeout() {
            anyhow!("the router at {base} did not answer in time")
        } else {
            anyhow!("request to {base} failed: {err}")
        }
    }
}
