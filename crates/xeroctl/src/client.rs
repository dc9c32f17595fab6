//! HTTP calls to the router, with `--dry-run` and errors an operator can act on.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::Value;
use xerotier_proto::ErrorEnvelope;

use crate::exit::{self, CliError};
use crate::output::Printer;

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

/// A value as one URL path segment (tool names may hold `.`; nothing else is special here), so
/// an id given on the command line (`del_../x`, `a/b`, `?`) stays the one segment it was meant
/// to be. A URL parser still reads a segment of dots alone (`..`, even as `%2E%2E`) as a step
/// up: callers check an id's prefix first.
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

#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    /// For streams: no overall timeout, only the connect timeout.
    streaming: reqwest::Client,
    target: Target,
    dry_run: bool,
    printer: Printer,
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

/// A client builder with what every request of xeroctl shares: the connect timeout, the user
/// agent, and the CA to trust (`--ca-file`: only that one).
fn builder(target: &Target) -> anyhow::Result<reqwest::ClientBuilder> {
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("xeroctl/", env!("CARGO_PKG_VERSION")));
    match &target.ca_file {
        Some(path) => {
            let bundle = crate::tls::load_ca(path)?;
            let builder = builder.tls_built_in_root_certs(false);
            Ok(bundle.into_iter().fold(builder, |b, ca| b.add_root_certificate(ca)))
        }
        None => Ok(builder),
    }
}

impl Client {
    pub fn new(target: Target, dry_run: bool, printer: Printer) -> anyhow::Result<Self> {
        let http = builder(&target)?
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        let streaming = builder(&target)?.build().context("building the HTTP client")?;
        Ok(Self { http, streaming, target, dry_run, printer })
    }

    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    fn api_key(&self) -> anyhow::Result<&SecretString> {
        self.target.api_key.as_ref().ok_or_else(|| {
            exit::usage(
                "no API key: pass --api-key, set XEROCTL_API_KEY, or add a context with `xeroctl config add`",
            )
        })
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
        match self.printer.is_data() {
            true => {
                let plan = serde_json::json!({
                    "dry_run": true,
                    "method": call.method.as_str(),
                    "url": url.as_str(),
                    "authorization": auth,
                    "body": call.body,
                });
                self.printer.data(&plan)?;
            }
            false => {
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
        let api_key = self.api_key()?;
        let url = self.url(&call)?;
        let mut request =
            self.http.request(call.method.clone(), url).bearer_auth(api_key.expose_secret());
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|err| self.transport_error(err))?;
        let status = response.status();
        let request_id = request_id_of(&response);
        let bytes = response.bytes().await.map_err(|err| self.transport_error(err))?;
        if !status.is_success() {
            return Err(refusal(status, &bytes, request_id));
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("unexpected answer from the router (request {request_id})"))
    }

    /// Opens a server-sent events stream at `path` (a GET with `Accept: text/event-stream`),
    /// resuming after `last_event_id` when given.
    pub async fn event_stream(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> anyhow::Result<
        impl futures::Stream<Item = Result<eventsource_stream::Event, String>> + use<>,
    > {
        use eventsource_stream::Eventsource;
        use futures::StreamExt;
        let api_key = self.api_key()?;
        let url = self.url(&Call::get(path))?;
        let mut request = self
            .streaming
            .get(url)
            .bearer_auth(api_key.expose_secret())
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.map_err(|err| self.transport_error(err))?;
        let status = response.status();
        if !status.is_success() {
            let request_id = request_id_of(&response);
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(refusal(status, &bytes, request_id));
        }
        Ok(response.bytes_stream().eventsource().map(|item| item.map_err(|e| e.to_string())))
    }

    fn transport_error(&self, err: reqwest::Error) -> anyhow::Error {
        let base = &self.target.base_url;
        let message = if err.is_connect() {
            match tls_cause(&err) {
                Some(cause) => format!(
                    "TLS with the router at {base} failed: {cause} (trust its CA with --ca-file, \
                     XEROCTL_CA_FILE or `xeroctl config add … --fetch-ca`)"
                ),
                None => format!(
                    "cannot reach the router at {base}: is it running? (set --base-url or \
                     XEROCTL_BASE_URL)"
                ),
            }
        } else if err.is_timeout() {
            format!("the router at {base} did not answer in time")
        } else {
            format!("request to {base} failed: {err:#}")
        };
        CliError::Unavailable(message).into()
    }
}

fn request_id_of(response: &reqwest::Response) -> String {
    response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string()
}

/// The router's refusal: its envelope as an [`ApiError`], or the bare status.
fn refusal(status: reqwest::StatusCode, body: &[u8], request_id: String) -> anyhow::Error {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(envelope) => ApiError {
            status: status.as_u16(),
            code: envelope.error.code,
            message: envelope.error.message,
            param: envelope.error.param,
            request_id,
        }
        .into(),
        // Not the router's envelope (a proxy in between, say): the status still classifies it.
        Err(_) => ApiError {
            status: status.as_u16(),
            code: "http_error".into(),
            message: format!("the router answered HTTP {status}"),
            param: None,
            request_id,
        }
        .into(),
    }
}

/// The TLS failure behind a connection error, if that is what it was (an unknown CA, a name
/// mismatch, HTTPS spoken to a plain HTTP port, …). rustls's error sits inside nested
/// `io::Error`s, whose `source()` skips them, so those are opened too.
fn tls_cause(err: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(tls) = rustls_error_in(cause) {
            return Some(tls.to_string());
        }
        source = cause.source();
    }
    None
}

fn rustls_error_in<'a>(
    mut err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    loop {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let inner = err.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref)?;
        err = inner;
    }
}

#[cfg(test)]
mod tests {
    use super::path_segment;

    #[test]
    fn an_id_stays_one_path_segment() {
        assert_eq!(path_segment("del_01abc"), "del_01abc");
        assert_eq!(path_segment("del_../../x"), "del_..%2F..%2Fx");
        assert_eq!(path_segment("del_a?b#c d"), "del_a%3Fb%23c%20d");
        assert_eq!(path_segment("del_é"), "del_%C3%A9");
    }
}
