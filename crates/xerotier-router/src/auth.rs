//! API key authentication and scope enforcement for every `/v1/exec/*` and `/v1/management/*`
//! request.
//!
//! The key's row is found by primary key (the key id is embedded in the value), from the
//! [`KeyCache`] when this process owns the store, else from the store on every request, and the
//! secret is checked against the stored verifier in constant time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use xerotier_core::{SharedClock, UnixMillis};
use xerotier_credentials::{ApiKeyValue, Verifier};
use xerotier_proto::{Scope, Scopes};
use xerotier_store::{ApiKeyRecord, Outcome, Store};

use crate::api_keys::GraceUseCounter;
use crate::audit::{Actor, AuditLog, Change};
use crate::error::ApiError;
use crate::http::extract::RequestContext;
use crate::key_cache::KeyCache;
use crate::metrics::Metrics;
use crate::request_limits::{RequestLimits, SourceLimiter, source_of};

/// `last_used_at` is written at most this often per key, so the hot path stays read-only.
const LAST_USED_RESOLUTION_MILLIS: i64 = 60_000;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub name: String,
    pub scopes: Scopes,
    /// The verifier of the value presented (the current one, or the previous one within its
    /// grace window): what a long-lived request checks its credential against again.
    pub credential: Presented,
}

/// The verifier of a presented key value. A hash, not the secret, but it never appears in
/// `Debug` output or logs all the same.
#[derive(Clone)]
pub struct Presented(pub Verifier);

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Presented(..)")
    }
}

impl Principal {
    pub fn actor(&self) -> Actor {
        Actor { key_id: self.key_id.clone(), name: self.name.clone() }
    }
}

/// The writer's end of the last-used queue, until the writer task takes it.
type LastUsedQueue = Arc<Mutex<Option<mpsc::Receiver<(String, UnixMillis)>>>>;

/// Uses of a key waiting to be written as its `last_used_at`.
const LAST_USED_QUEUE: usize = 1_024;

#[derive(Debug, Clone)]
pub struct Authenticator {
    store: Store,
    clock: SharedClock,
    cache: Arc<KeyCache>,
    /// Uses of previous values within their grace window, flushed by `ApiKeyService`.
    grace_uses: Arc<GraceUseCounter>,
    /// When each key's last use was last handed to the writer: read by every request, written
    /// once a minute per key.
    last_used_written: Arc<RwLock<HashMap<String, UnixMillis, foldhash::fast::RandomState>>>,
    last_used: mpsc::Sender<(String, UnixMillis)>,
    /// Taken by [`Self::spawn_last_used_writer`].
    last_used_queue: LastUsedQueue,
}

impl Authenticator {
    pub fn new(
        store: Store,
        clock: SharedClock,
        cache: Arc<KeyCache>,
        grace_uses: Arc<GraceUseCounter>,
    ) -> Self {
        let (last_used, queue) = mpsc::channel(LAST_USED_QUEUE);
        Self {
            store,
            clock,
            cache,
            grace_uses,
            last_used_written: Arc::default(),
            last_used,
            last_used_queue: Arc::new(Mutex::new(Some(queue))),
        }
    }

    /// Writes `last_used_at` off the request path until `shutdown`, then writes what is queued
    /// and returns, before the store closes.
    pub fn spawn_last_used_writer(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let queue = self.last_used_queue.lock().take();
        let store = self.store.clone();
        tokio::spawn(async move {
            let Some(mut queue) = queue else { return };
            loop {
                let next = tokio::select! {
                    biased;
                    next = queue.recv() => next,
                    () = shutdown.cancelled() => break,
                };
                let Some((key_id, at)) = next else { return };
                touch(&store, &key_id, at).await;
            }
            queue.close();
            while let Some((key_id, at)) = queue.recv().await {
                touch(&store, &key_id, at).await;
            }
        })
    }

    /// The key's row: from the cache when this process owns the store, else from the store.
    pub(crate) async fn record(&self, key_id: &str) -> Result<Option<Arc<ApiKeyRecord>>, ApiError> {
        let ticket = match self.cache.get(key_id) {
            Ok(record) => return Ok(Some(record)),
            Err(ticket) => ticket,
        };
        let record = self.store.api_key(key_id).await?.map(Arc::new);
        if let Some(record) = &record {
            self.cache.insert(ticket, record);
        }
        Ok(record)
    }

    /// `peer`: the connection's address, recorded when a previous value is used.
    pub async fn authenticate(
        &self,
        header: Option<&HeaderValue>,
        peer: Option<SocketAddr>,
    ) -> Result<Principal, ApiError> {
        let presented = presented_value(header)?;
        let record = self.record(presented.key_id()).await?.ok_or(ApiError::InvalidApiKey)?;
        let now = self.clock.now_millis();
        let credential = presented.verifier();
        let (accepted, scopes) = check(&record, &credential, now)?;
        Ok(self.admitted(&record, credential, accepted, scopes, now, peer))
    }

    /// [`Self::authenticate`] without waiting: `Some` only for a key whose row is in the
    /// cache and that accepts the value presented, with its scopes. Nothing is recorded: the
    /// caller admits it with [`Self::admitted`], or falls back to [`Self::authenticate`],
    /// which decides (and records) every other case.
    fn cached(&self, header: Option<&HeaderValue>) -> Option<Cached> {
        let presented = presented_value(header).ok()?;
        let record = self.cache.get(presented.key_id()).ok()?;
        let now = self.clock.now_millis();
        let credential = presented.verifier();
        let (accepted, scopes) = check(&record, &credential, now).ok()?;
        Some(Cached { record, credential, accepted, scopes, now })
    }

    /// Records the use of an accepted value (last use; a previous value's use within its grace
    /// window) and names the caller.
    fn admitted(
        &self,
        record: &ApiKeyRecord,
        credential: Verifier,
        accepted: Accepted,
        scopes: Scopes,
        now: UnixMillis,
        peer: Option<SocketAddr>,
    ) -> Principal {
        if accepted == Accepted::Previous {
            let rotated_at = record.rotated_at.unwrap_or_default();
            self.grace_uses.note(&record.id, rotated_at, now, peer);
        }
        self.note_use(&record.id, now);
        Principal {
            key_id: record.id.clone(),
            name: record.name.clone(),
            scopes,
            credential: Presented(credential),
        }
    }

    fn note_use(&self, key_id: &str, now: UnixMillis) {
        let recent = |last: Option<&UnixMillis>| {
            last.is_some_and(|last| now - last < LAST_USED_RESOLUTION_MILLIS)
        };
        if recent(self.last_used_written.read().get(key_id)) {
            return;
        }
        let due = {
            let mut written = self.last_used_written.write();
            // Another request may have been first since the read.
            let due = !recent(written.get(key_id));
            if due {
                written.insert(key_id.to_string(), now);
            }
            due
        };
        // Only bookkeeping: when the writer is behind (or stopped), the use is not recorded.
        if due && self.last_used.try_send((key_id.to_string(), now)).is_err() {
            tracing::debug!(%key_id, "last use not recorded: writer busy or stopped");
        }
    }
}

/// The key value in an `Authorization: Bearer …` header.
fn presented_value(header: Option<&HeaderValue>) -> Result<ApiKeyValue, ApiError> {
    let header = header.ok_or(ApiError::MissingApiKey)?;
    let text = header.to_str().map_err(|_| ApiError::InvalidApiKey)?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .ok_or(ApiError::InvalidApiKey)?;
    ApiKeyValue::parse(token).map_err(|_| ApiError::InvalidApiKey)
}

/// Whether `record` accepts `credential` now, and the scopes it grants.
fn check(
    record: &ApiKeyRecord,
    credential: &Verifier,
    now: UnixMillis,
) -> Result<(Accepted, Scopes), ApiError> {
    let accepted = accepted_value(record, credential, now).ok_or(ApiError::InvalidApiKey)?;
    let scopes = Scopes::from_csv(&record.scopes).map_err(|e| {
        ApiError::Service(crate::service_error::ServiceError::internal(format!(
            "stored scopes of {}: {e}",
            record.id
        )))
    })?;
    Ok((accepted, scopes))
}

/// A cached key that accepts the presented value (see [`Authenticator::cached`]).
struct Cached {
    record: Arc<ApiKeyRecord>,
    credential: Verifier,
    accepted: Accepted,
    scopes: Scopes,
    now: UnixMillis,
}

async fn touch(store: &Store, key_id: &str, at: UnixMillis) {
    if let Err(err) = store.touch_api_key(key_id, at).await {
        tracing::warn!(%key_id, error = %err, "could not record last use");
    }
}

/// What the scope-checking middleware needs, behind one `Arc` (it is cloned per request).
#[derive(Debug, Clone)]
pub struct AuthGate(Arc<GateParts>);

impl AuthGate {
    pub fn new(parts: GateParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AuthGate {
    type Target = GateParts;

    fn deref(&self) -> &GateParts {
        &self.0
    }
}

#[derive(Debug)]
pub struct GateParts {
    pub auth: Authenticator,
    /// A fenced replica (its lease lost) may hold stale keys: it authenticates nothing.
    pub replication: crate::replication::Replication,
    pub audit: AuditLog,
    pub metrics: Metrics,
    pub failures: FailureLimit,
}

/// Failed authentications per source address: each failure (no key, or a key that is
/// malformed, unknown, wrong, expired or revoked) takes a token from the source's bucket; a
/// source with none left is refused (429, `Retry-After`) before its key is even looked at,
/// until the bucket refills. Limits: [`RequestLimits`].
#[derive(Debug, Clone)]
pub struct FailureLimit {
    clock: SharedClock,
    limiter: Arc<Mutex<SourceLimiter>>,
    /// No source is refused at or after this time (Unix ms): only a failure that empties a
    /// bucket moves it. Every authenticated request asks [`Self::refusal`]; while nobody is
    /// refused it answers from this atomic, without the lock all requests would share.
    refusing_until: Arc<AtomicI64>,
}

impl FailureLimit {
    pub fn new(clock: SharedClock, limits: &RequestLimits) -> Self {
        let limiter =
            SourceLimiter::new(limits.auth_failures_per_minute, limits.auth_failure_burst);
        Self {
            clock,
            limiter: Arc::new(Mutex::new(limiter)),
            refusing_until: Arc::new(AtomicI64::new(i64::MIN)),
        }
    }

    /// When the source of `peer` may not try now: the seconds to wait (at least 1).
    pub fn refusal(&self, peer: Option<SocketAddr>) -> Option<u64> {
        let now = self.clock.now_millis();
        if now >= self.refusing_until.load(Ordering::Acquire) {
            return None;
        }
        let wait = self.limiter.lock().wait_millis(&source_of(peer), now)?;
        Some(u64::try_from(wait.saturating_add(999) / 1_000).unwrap_or(u64::MAX).max(1))
    }

    /// Counts one failure of the source of `peer`.
    pub fn failed(&self, peer: Option<SocketAddr>) {
        let source = source_of(peer);
        let now = self.clock.now_millis();
        let mut limiter = self.limiter.lock();
        limiter.admit(&source, now);
        if let Some(wait) = limiter.wait_millis(&source, now) {
            self.refusing_until.fetch_max(now.saturating_add(wait), Ordering::AcqRel);
            tracing::info!(%source, wait_ms = wait, "too many failed authentications; refusing this address for now");
        }
    }
}

/// Whether `record` accepts a presented secret with verifier `presented` at time `now`:
/// not revoked, not expired, and matching the current verifier or, within the grace window
/// after a rotation, the previous one.
pub fn accepts(record: &ApiKeyRecord, presented: &Verifier, now: UnixMillis) -> bool {
    accepted_value(record, presented, now).is_some()
}

/// Which of a key's values a presented secret is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Current,
    /// The value from before the last rotation, within its grace window.
    Previous,
}

/// [`accepts`], saying which value was presented.
pub fn accepted_value(
    record: &ApiKeyRecord,
    presented: &Verifier,
    now: UnixMillis,
) -> Option<Accepted> {
    if record.revoked_at.is_some() || record.expires_at.is_some_and(|at| now >= at) {
        return None;
    }
    let stored = |hex: &str| Verifier::from_hex(hex).is_some_and(|v| v.matches(presented));
    let current = stored(&record.verifier);
    let previous = match (&record.previous_verifier, record.previous_valid_until) {
        (Some(hex), Some(until)) if now < until => stored(hex),
        _ => false,
    };
    // Both comparisons always run, so timing does not reveal which value was presented.
    match (current, previous) {
        (true, _) => Some(Accepted::Current),
        (false, true) => Some(Accepted::Previous),
        (false, false) => None,
    }
}

/// The scope check as a tower layer (a hand-written one: `from_fn` boxes the rest of the stack
/// on every request, which showed in the authenticated route's profile).
#[derive(Debug, Clone)]
pub struct RequireScope {
    gate: AuthGate,
    scope: Scope,
}

impl RequireScope {
    pub fn new(gate: AuthGate, scope: Scope) -> Self {
        Self { gate, scope }
    }
}

impl<S> tower::Layer<S> for RequireScope {
    type Service = RequireScopeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScopeService { inner, gate: self.gate.clone(), scope: self.scope }
    }
}

#[derive(Debug, Clone)]
pub struct RequireScopeService<S> {
    inner: S,
    gate: AuthGate,
    scope: Scope,
}

impl<S> tower::Service<Request> for RequireScopeService<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<
        S::Future,
        futures::future::BoxFuture<'static, Result<Response, std::convert::Infallible>>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The common case decides without waiting: the ready service answers at once, with no
        // clone of it and no boxed future (both showed in the authenticated route's profile).
        let req = match admit_cached(&self.gate, self.scope, req) {
            Fast::Admitted(req) => return futures::future::Either::Left(self.inner.call(req)),
            Fast::Undecided(req) => req,
        };
        // The ready service answers this request; a fresh clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (gate, scope) = (self.gate.clone(), self.scope);
        futures::future::Either::Right(Box::pin(async move {
            match admit(&gate, scope, req).await {
                Ok(req) => inner.call(req).await,
                Err(refused) => Ok(refused),
            }
        }))
    }
}

/// What [`admit_cached`] decided.
enum Fast {
    /// Authenticated, with its `Principal`: pass it on.
    Admitted(Request),
    /// Given back unchanged, nothing recorded: [`admit`] decides.
    Undecided(Request),
}

/// [`admit`] for a request it would pass without waiting on anything: a serving replica, a
/// source not refused, a cached key accepting the value with the scope, a well-formed path.
/// Anything else gives the request back, unchanged and with nothing recorded, for [`admit`]
/// to decide, so both paths answer alike (e2e `security::scopes_are_enforced_both_ways`, one
/// audit record of a denied POST by a cached key; `security::missing_and_invalid_keys_get_401`;
/// `contract::…` malformed path ids; `grace_evidence::…` previous-value uses counted once).
fn admit_cached(gate: &AuthGate, scope: Scope, req: Request) -> Fast {
    if !gate.replication.is_serving() {
        return Fast::Undecided(req);
    }
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| *addr);
    if gate.failures.refusal(peer).is_some() {
        return Fast::Undecided(req);
    }
    let Some(cached) = gate.auth.cached(req.headers().get(header::AUTHORIZATION)) else {
        return Fast::Undecided(req);
    };
    if !cached.scopes.contains(scope) {
        return Fast::Undecided(req);
    }
    let (mut parts, body) = req.into_parts();
    // Never pending (the path's parameters are already in the request); if it were, `admit`
    // decides.
    let path_ok = matches!(
        crate::http::contract::refuse_malformed_path(&mut parts).now_or_never(),
        Some(None)
    );
    if !path_ok {
        return Fast::Undecided(Request::from_parts(parts, body));
    }
    let Cached { record, credential, accepted, scopes, now } = cached;
    let principal = gate.auth.admitted(&record, credential, accepted, scopes, now, peer);
    parts.extensions.insert(principal);
    Fast::Admitted(Request::from_parts(parts, body))
}

/// Authenticates and checks the scope: the request to pass on (with its `Principal`), or the
/// refusal to answer.
async fn admit(gate: &AuthGate, scope: Scope, req: Request) -> Result<Request, Response> {
    // The request's context (strings) is built only on the paths that record something.
    if !gate.replication.is_serving() {
        gate.metrics.auth_failure("replica_fenced");
        return Err(ApiError::ReplicaFenced.into_response());
    }
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| *addr);
    if let Some(retry_after_seconds) = gate.failures.refusal(peer) {
        gate.metrics.auth_rate_limited();
        return Err(ApiError::TooManyAuthFailures { retry_after_seconds }.into_response());
    }
    let presented = req.headers().get(header::AUTHORIZATION);
    let principal = match gate.auth.authenticate(presented, peer).await {
        Ok(principal) => principal,
        Err(err) => {
            if matches!(err, ApiError::MissingApiKey | ApiError::InvalidApiKey) {
                gate.failures.failed(peer);
            }
            gate.metrics.auth_failure(err.code().as_str());
            return Err(err.into_response());
        }
    };
    if !principal.scopes.contains(scope) {
        gate.metrics.auth_failure("scope_insufficient");
        if req.method() != Method::GET {
            let request = RequestContext::from_http(req.extensions());
            let context = request.audit(Some(principal.actor()));
            let change = Change::untargeted("authz.denied").details(serde_json::json!({
                "method": req.method().as_str(),
                "path": req.uri().path(),
                "required_scope": scope.as_str(),
            }));
            gate.audit.record_attempt(&context, &change, Outcome::Denied).await;
        }
        return Err(ApiError::ScopeInsufficient(scope).into_response());
    }
    let (mut parts, body) = req.into_parts();
    if let Some(refused) = crate::http::contract::refuse_malformed_path(&mut parts).await {
        return Err(refused);
    }
    parts.extensions.insert(principal);
    Ok(Request::from_parts(parts, body))
}
