//! Expiry, grace windows and revocation decided by the injected clock: deterministic, no sleeps,
//! against a real store on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// test code
// A deadline on polling a background write; the code under test runs on the ManualClock.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;

use axum::http::HeaderValue;
use secrecy::ExposeSecret;
use xerotier_core::{ManualClock, SeededEntropy};
use xerotier_proto::api_keys::{CreateApiKeyRequest, RotateApiKeyRequest};
use xerotier_proto::{ErrorCode, Scope, Scopes};
use xerotier_router::AppState;
use xerotier_router::audit::{Actor, AuditContext};
use xerotier_router::fleet::FleetSettings;
use xerotier_router::request_limits::RequestLimits;
use xerotier_store::Store;
use xerotier_testkit::TestDb;

const START: i64 = 1_790_000_000_000;

struct Fixture {
    _db: TestDb,
    state: AppState,
    clock: Arc<ManualClock>,
    admin: AuditContext,
}

async fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    for db in TestDb::all().await {
        let store = Store::connect(db.url()).await.unwrap();
        let clock = Arc::new(ManualClock::new(START));
        let entropy: xerotier_core::SharedEntropy = Arc::new(SeededEntropy::new(42));
        let sealer = xerotier_seal::Sealer::new(
            xerotier_seal::MasterKey::generate(entropy.as_ref()),
            entropy.clone(),
        );
        let state = AppState::load(
            store,
            clock.clone(),
            entropy,
            sealer,
            FleetSettings::default(),
            RequestLimits::default(),
        )
        .await
        .unwrap();
        // In-process: no replica task holds a lease for this state.
        state.replication.run_standalone();
        // What the daemon starts beside the HTTP API: the writer of `last_used_at`.
        let _writer =
            state.gate.auth.spawn_last_used_writer(tokio_util::sync::CancellationToken::new());
        let admin = AuditContext::new(
            Actor { key_id: "key_admin".into(), name: "admin".into() },
            None,
            None,
        );
        out.push(Fixture { _db: db, state, clock, admin });
    }
    out
}

fn bearer(value: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {value}")).unwrap()
}

impl Fixture {
    async fn create(&self, name: &str, expires_in_seconds: Option<u64>) -> (String, String) {
        let request = CreateApiKeyRequest {
            name: name.into(),
            scopes: Scopes::new(vec![Scope::Execution]),
            expires_in_seconds,
        };
        let issued = self.state.api_keys.create(&self.admin, request).await.unwrap();
        (issued.key.record.id, issued.value.expose_secret().to_string())
    }

    async fn accepted(&self, value: &str) -> bool {
        match self.state.gate.auth.authenticate(Some(&bearer(value)), None).await {
            Ok(_) => true,
            Err(err) => {
                assert_eq!(err.code(), ErrorCode::InvalidApiKey, "{err}");
                false
            }
        }
    }
}

#[tokio::test]
async fn old_value_works_until_the_grace_window_ends_and_not_a_millisecond_longer() {
    for f in fixtures().await {
        let (id, old) = f.create("ops", None).await;
        let rotate =
            RotateApiKeyRequest { grace_seconds: Some(60), reason: Some("scheduled".into()) };
        let new = f.state.api_keys.rotate(&f.admin, &id, rotate).await.unwrap();
        assert!(f.accepted(&old).await && f.accepted(new.value.expose_secret()).await);
        f.clock.advance_millis(59_999);
        assert!(f.accepted(&old).await, "still inside the grace window");
        f.clock.advance_millis(1);
        assert!(!f.accepted(&old).await, "the window is over");
        assert!(f.accepted(new.value.expose_secret()).await);
        let view = f.state.api_keys.get(&id).await.unwrap();
        assert_eq!(view.previous_valid_until, None, "a closed window is not shown");
    }
}

#[tokio::test]
async fn default_grace_is_a_day() {
    for f in fixtures().await {
        let (id, old) = f.create("ops", None).await;
        f.state.api_keys.rotate(&f.admin, &id, RotateApiKeyRequest::default()).await.unwrap();
        f.clock.advance_secs(24 * 3600 - 1);
        assert!(f.accepted(&old).await);
        f.clock.advance_secs(1);
        assert!(!f.accepted(&old).await);
    }
}

#[tokio::test]
async fn zero_grace_ends_the_old_value_at_once() {
    for f in fixtures().await {
        let (id, old) = f.create("ops", None).await;
        let rotate = RotateApiKeyRequest { grace_seconds: Some(0), reason: None };
        f.state.api_keys.rotate(&f.admin, &id, rotate).await.unwrap();
        assert!(!f.accepted(&old).await);
    }
}

#[tokio::test]
async fn key_expires_exactly_at_its_expiry() {
    for f in fixtures().await {
        let (id, value) = f.create("short", Some(30)).await;
        f.clock.advance_millis(29_999);
        assert!(f.accepted(&value).await);
        assert_eq!(f.state.api_keys.get(&id).await.unwrap().status.as_str(), "active");
        f.clock.advance_millis(1);
        assert!(!f.accepted(&value).await);
        assert_eq!(f.state.api_keys.get(&id).await.unwrap().status.as_str(), "expired");
    }
}

#[tokio::test]
async fn revoke_holds_on_the_next_authentication_even_with_a_warm_cache() {
    for f in fixtures().await {
        let (id, value) = f.create("ops", None).await;
        for _ in 0..3 {
            assert!(f.accepted(&value).await, "warms the key cache on SQLite");
        }
        f.state.api_keys.revoke(&f.admin, &id, Some("leak"), false).await.unwrap();
        assert!(!f.accepted(&value).await);
    }
}

#[tokio::test]
async fn revoking_also_ends_a_grace_window() {
    for f in fixtures().await {
        let (id, old) = f.create("ops", None).await;
        let new =
            f.state.api_keys.rotate(&f.admin, &id, RotateApiKeyRequest::default()).await.unwrap();
        f.state.api_keys.revoke(&f.admin, &id, None, false).await.unwrap();
        assert!(!f.accepted(&old).await && !f.accepted(new.value.expose_secret()).await);
    }
}

#[tokio::test]
async fn last_used_is_written_once_per_minute_not_per_request() {
    for f in fixtures().await {
        let (id, value) = f.create("ops", None).await;
        assert!(f.accepted(&value).await);
        let first = wait_for_last_used(&f, &id, START).await;
        f.clock.advance_secs(30);
        assert!(f.accepted(&value).await);
        f.clock.advance_secs(31);
        assert!(f.accepted(&value).await);
        let later = wait_for_last_used(&f, &id, START + 61_000).await;
        assert_eq!(first, START);
        assert_eq!(later, START + 61_000, "the use at +30s was not written, the one at +61s was");
    }
}

/// The write is asynchronous; poll the store (with a deadline) until it shows `expected`.
async fn wait_for_last_used(f: &Fixture, id: &str, expected: i64) -> i64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let record = f.state.store.api_key(id).await.unwrap().unwrap();
        if record.last_used_at == Some(expected) || std::time::Instant::now() > deadline {
            return record.last_used_at.unwrap_or_default();
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
