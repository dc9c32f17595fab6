//! The `webhooks:` and `webhook_delivery:` sections of the router's config file, checked at
//! start: a webhook that cannot be trusted to stay secret (plain HTTP off loopback, a secret
//! file others can read, a short secret) stops the router with a message saying which.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretSlice};
use serde::Deserialize;
use xerotier_store::SecurityEventType;

/// One entry of `webhooks:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEntry {
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub secret_file: PathBuf,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// `webhook_delivery:` as written; every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryEntry {
    pub max_attempts: Option<u32>,
    pub backoff_initial_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub max_in_flight: Option<u32>,
    pub poll_interval_ms: Option<u64>,
}

/// Which events a webhook gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    All,
    Only(Vec<SecurityEventType>),
}

impl EventFilter {
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            EventFilter::All => true,
            EventFilter::Only(types) => types.iter().any(|t| t.as_str() == event_type),
        }
    }

    pub fn names(&self) -> Vec<String> {
        match self {
            EventFilter::All => vec!["*".into()],
            EventFilter::Only(types) => types.iter().map(|t| t.as_str().to_string()).collect(),
        }
    }
}

/// One checked webhook. The secret is read once, held as a secret, never shown.
#[derive(Clone)]
pub struct Webhook {
    pub name: String,
    pub url: String,
    pub events: EventFilter,
    pub secret: Arc<SecretSlice<u8>>,
    /// PEM bytes of the CA to trust for this receiver, besides the public roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("events", &self.events)
            .field("secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl Webhook {
    pub fn secret(&self) -> &[u8] {
        self.secret.expose_secret()
    }
}

/// How deliveries are attempted. Defaults: 8 attempts, 30 s doubling to at most 30 min
/// (about an hour in all), 5 s per attempt, 16 in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    pub max_attempts: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub timeout_ms: u64,
    pub max_in_flight: u32,
    pub poll_interval_ms: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            backoff_initial_ms: 30_000,
            backoff_max_ms: 1_800_000,
            timeout_ms: 5_000,
            max_in_flight: 16,
            poll_interval_ms: 1_000,
        }
    }
}

/// Every webhook and how to deliver to them.
#[derive(Debug, Clone, Default)]
pub struct WebhookSettings {
    pub webhooks: Vec<Webhook>,
    pub delivery: DeliverySettings,
}

impl WebhookSettings {
    /// The configured webhook of that name (names are unique: checked when the file is read).
    pub fn webhook(&self, name: &str) -> Option<&Webhook> {
        self.webhooks.iter().find(|w| w.name == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("webhook {name:?}: {message}")]
    Webhook { name: String, message: String },
    #[error("webhook_delivery.{field}: {message}")]
    Delivery { field: &'static str, message: String },
}

/// The smallest secret accepted: 32 bytes (256 bits if random).
pub const MIN_SECRET_BYTES: usize = 32;

/// Checks `entries` and `delivery` and reads each secret file.
pub fn load(
    entries: &[WebhookEntry],
    delivery: &DeliveryEntry,
) -> Result<WebhookSettings, WebhookConfigError> {
    let mut webhooks: Vec<Webhook> = Vec::new();
    for entry in entries {
        let fail =
            |message: String| WebhookConfigError::Webhook { name: entry.name.clone(), message };
        if !valid_name(&entry.name) {
            return Err(fail("the name must be 1-64 characters of a-z, 0-9 and -".into()));
        }
        if webhooks.iter().any(|w| w.name == entry.name) {
            return Err(fail("the name is used by another webhook".into()));
        }
        check_url(&entry.url).map_err(fail)?;
        let events = event_filter(&entry.events).map_err(fail)?;
        let secret = read_secret(&entry.secret_file).map_err(fail)?;
        let ca_pem = match &entry.ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| fail(format!("cannot read ca_file {}: {e}", path.display())))?,
            ),
            None => None,
        };
        webhooks.push(Webhook {
            name: entry.name.clone(),
            url: entry.url.clone(),
            events,
            secret: Arc::new(SecretSlice::from(secret)),
            ca_pem,
        });
    }
    let defaults = DeliverySettings::default();
    let settings = DeliverySettings {
        max_attempts: delivery.max_attempts.unwrap_or(defaults.max_attempts),
        backoff_initial_ms: delivery.backoff_initial_ms.unwrap_or(defaults.backoff_initial_ms),
        backoff_max_ms: delivery.backoff_max_ms.unwrap_or(defaults.backoff_max_ms),
        timeout_ms: delivery.timeout_ms.unwrap_or(defaults.timeout_ms),
        max_in_flight: delivery.max_in_flight.unwrap_or(defaults.max_in_flight),
        poll_interval_ms: delivery.poll_interval_ms.unwrap_or(defaults.poll_interval_ms),
    };
    let bad = |field, message: &str| {
        Err(WebhookConfigError::Delivery { field, message: message.to_string() })
    };
    if !(1..=50).contains(&settings.max_attempts) {
        return bad("max_attempts", "must be between 1 and 50");
    }
    if settings.backoff_initial_ms == 0 || settings.backoff_max_ms < settings.backoff_initial_ms {
        return bad("backoff_initial_ms", "must be positive and at most backoff_max_ms");
    }
    if !(100..=60_000).contains(&settings.timeout_ms) {
        return bad("timeout_ms", "must be between 100 and 60000");
    }
    if !(1..=256).contains(&settings.max_in_flight) {
        return bad("max_in_flight", "must be between 1 and 256");
    }
    if !(10..=60_000).contains(&settings.poll_interval_ms) {
        return bad("poll_interval_ms", "must be between 10 and 60000");
    }
    Ok(WebhookSettings { webhooks, delivery: settings })
}

pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `https://` anywhere; `http://` only to a loopback host (a receiver on this machine).
fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("url {url:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&parsed) => Ok(()),
        "http" => Err(format!(
            "url {} is plain http:// to a host that is not loopback: use https://",
            redact_url(url)
        )),
        other => Err(format!("url scheme {other:?} is not https")),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn event_filter(events: &[String]) -> Result<EventFilter, String> {
    if events.is_empty() {
        return Err("events is empty: name the events, or [\"*\"] for all".into());
    }
    if events.iter().any(|e| e == "*") {
        return Ok(EventFilter::All);
    }
    let mut types = Vec::new();
    for event in events {
        let Some(t) = SecurityEventType::parse(event) else {
            let known: Vec<&str> = SecurityEventType::ALL.iter().map(|t| t.as_str()).collect();
            return Err(format!("unknown event {event:?}; known: {}", known.join(", ")));
        };
        if !types.contains(&t) {
            types.push(t);
        }
    }
    Ok(EventFilter::Only(types))
}

/// The secret file's bytes (surrounding whitespace trimmed): a regular file readable by its
/// owner only (0600 or stricter), of at least [`MIN_SECRET_BYTES`].
fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read secret_file {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("secret_file {} is not a regular file", path.display()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "secret_file {} has mode {mode:04o}: it must be readable by its owner only \
             (chmod 600 {})",
            path.display(),
            path.display()
        ));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read secret_file {}: {e}", path.display()))?;
    let trimmed = bytes.trim_ascii().to_vec();
    if trimmed.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "secret_file {} holds {} bytes; at least {MIN_SECRET_BYTES} are needed \
             (e.g. openssl rand -hex 32)",
            path.display(),
            trimmed.len()
        ));
    }
    Ok(trimmed)
}

/// `url` with any user info and query replaced, for views and logs.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let had_user = !parsed.username().is_empty() || parsed.password().is_some();
            if had_user {
                let _ = parsed.set_username("redacted");
                let _ = parsed.set_password(None);
            }
            if parsed.query().is_some() {
                parsed.set_query(Some("redacted"));
            }
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => "[unparsable url]".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn secret_file(dir: &Path, mode: u32, bytes: &[u8]) -> PathBuf {
        let path = dir.join(format!("secret-{mode:o}-{}", bytes.len()));
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn entry(name: &str, url: &str, secret: PathBuf) -> WebhookEntry {
        WebhookEntry {
            name: name.into(),
            url: url.into(),
            events: vec!["rotation.failed".into()],
            secret_file: secret,
            ca_file: None,
        }
    }

    #[test]
    fn a_sound_webhook_loads_and_never_shows_its_secret() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_file(dir.path(), 0o600, &[b'k'; 40]);
        let hooks = [
            entry("soc", "https://siem.example/hooks", secret.clone()),
            entry("local", "http://127.0.0.1:9/x", secret),
        ];
        let settings = load(&hooks, &DeliveryEntry::default()).unwrap();
        assert_eq!(settings.webhooks.len(), 2);
        assert_eq!(settings.delivery, DeliverySettings::default());
        assert!(!format!("{settings:?}").contains("kkkk"));
    }

    #[test]
    fn unsafe_or_malformed_webhooks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = secret_file(dir.path(), 0o600, &[b'k'; 40]);
        let cases = [
            (entry("soc", "http://siem.example/hooks", good.clone()), "not loopback"),
            (entry("soc", "ftp://siem.example/", good.clone()), "not https"),
            (entry("Soc", "https://siem.example/", good.clone()), "the name"),
            (
                entry("soc", "https://siem.example/", secret_file(dir.path(), 0o644, &[b'k'; 40])),
                "mode 0644",
            ),
            (
                entry("soc", "https://siem.example/", secret_file(dir.path(), 0o600, &[b'k'; 31])),
                "at least 32",
            ),
            (entry("soc", "https://siem.example/", dir.path().join("absent")), "cannot read"),
        ];
        for (hook, expected) in cases {
            let err = load(&[hook], &DeliveryEntry::default()).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} lacks {expected}");
        }
        let mut unknown = entry("soc", "https://siem.example/", good.clone());
        unknown.events = vec!["agent.sneezed".into()];
        assert!(
            load(&[unknown], &DeliveryEntry::default())
                .unwrap_err()
                .to_string()
                .contains("unknown event")
        );
        let twice = [
            entry("soc", "https://a.example/", good.clone()),
            entry("soc", "https://b.example/", good),
        ];
        assert!(
            load(&twice, &DeliveryEntry::default())
                .unwrap_err()
                .to_string()
                .contains("another webhook")
        );
    }

    #[test]
    fn urls_lose_their_user_info_and_query_in_views() {
        assert_eq!(
            redact_url("https://user:pw@siem.example/h?token=abc"),
            "https://redacted@siem.example/h?redacted"
        );
        assert_eq!(redact_url("https://siem.example/h"), "https://siem.example/h");
    }
}
