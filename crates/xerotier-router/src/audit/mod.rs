//! The audit log: records built for every credential change and committed with it, records of
//! refused and denied attempts, and (in `handlers`) the log served over HTTP.

pub mod handlers;

use std::future::Future;

use xerotier_core::{IdGenerator, IdKind, SharedClock};
use xerotier_store::{AuditEntry, Outcome, Store, StoreError};

use crate::replication::Replication;
use crate::service_error::ServiceError;

/// Changes that take something away (a credential, a grant, a session's right to work): each
/// returns only once every replica has applied it ([`Replication::await_everywhere`]), so it is
/// in force everywhere when the caller hears it succeeded.
const TAKES_AWAY: &[&str] = &[
    "api_key.revoke",
    "api_key.rotate",
    "api_key.end_grace",
    "join_key.revoke",
    "agent.revoke_credentials",
    "agent.quarantine",
    "agent.pause_exec",
    "agent.candidate_reject",
    "agent.grant_withdraw",
    // A router key phase is in force on every replica before the next may begin.
    "router_key.update_clients",
    "router_key.update_servers",
    "router_key.complete",
    "router_key.rollback",
    "router_key.dropped",
];

/// What an audited action acted on.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub kind: &'static str,
    /// Absent when the action failed before the target existed.
    pub id: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// Who acted: an API key, a join key (its own enrollment), or the router itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub key_id: String,
    pub name: String,
}

/// What every audit record needs from the request that caused it. Services take this, never
/// an HTTP type.
#[derive(Debug, Clone, Default)]
pub struct AuditContext {
    /// None only for the router's own actions (bootstrap).
    pub actor: Option<Actor>,
    /// The router's own id of the request (`req_…`).
    pub request_id: Option<String>,
    /// The client's `X-Request-ID`, when it sent a valid one: a label, never an identity.
    pub correlation_id: Option<String>,
    pub client_addr: Option<String>,
}

impl AuditContext {
    pub fn new(actor: Actor, request_id: Option<String>, client_addr: Option<String>) -> Self {
        Self { actor: Some(actor), request_id, correlation_id: None, client_addr }
    }

    /// The acting key's id, as stored in `created_by` / `revoked_by` columns.
    pub fn actor_key_id(&self) -> Option<&str> {
        self.actor.as_ref().map(|a| a.key_id.as_str())
    }

    /// For logs: the acting key's id, or `router`.
    pub fn actor_label(&self) -> &str {
        self.actor_key_id().unwrap_or("router")
    }
}

/// One credential change as the audit log describes it.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub action: &'static str,
    pub target: Option<Target<'a>>,
    pub reason: Option<&'a str>,
    pub details: serde_json::Value,
    /// The target's id is only known if the change succeeds (a create): a refused attempt is
    /// recorded without it.
    pub creates_target: bool,
}

impl<'a> Change<'a> {
    pub fn new(action: &'static str, target: Target<'a>) -> Self {
        Self {
            action,
            target: Some(target),
            reason: None,
            details: serde_json::Value::Null,
            creates_target: false,
        }
    }

    /// An attempt at no particular resource (a denied request).
    pub fn untargeted(action: &'static str) -> Self {
        Self { target: None, ..Self::new(action, Target { kind: "", id: None, name: None }) }
    }

    pub fn reason(mut self, reason: Option<&'a str>) -> Self {
        self.reason = reason;
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn creating(mut self) -> Self {
        self.creates_target = true;
        self
    }
}

#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Store,
    clock: SharedClock,
    ids: IdGenerator,
    replication: Replication,
}

impl AuditLog {
    pub fn new(
        store: Store,
        clock: SharedClock,
        ids: IdGenerator,
        replication: Replication,
    ) -> Self {
        Self { store, clock, ids, replication }
    }

    /// A record to be committed together with the change it describes.
    pub fn entry(
        &self,
        context: &AuditContext,
        change: &Change<'_>,
        outcome: Outcome,
    ) -> AuditEntry {
        let target = change.target.as_ref();
        AuditEntry {
            id: self.ids.next(IdKind::Audit),
            at: self.clock.now_millis(),
            actor_key_id: context.actor.as_ref().map(|a| a.key_id.clone()),
            actor_name: context.actor.as_ref().map(|a| a.name.clone()),
            action: change.action.to_string(),
            target_type: target.map(|t| t.kind.to_string()),
            target_id: target.and_then(|t| t.id.map(str::to_string)),
            target_name: target.and_then(|t| t.name.map(str::to_string)),
            reason: change.reason.map(str::to_string),
            request_id: context.request_id.clone(),
            correlation_id: context.correlation_id.clone(),
            outcome: outcome.as_str().to_string(),
            client_addr: context.client_addr.clone(),
            details: (!change.details.is_null()).then(|| change.details.to_string()),
        }
    }

    /// The one way a credential changes: the store commits `commit`'s change together with the
    /// success record it is handed (and the signal other replicas act on); if the store
    /// refuses, nothing changed and the refusal is recorded (outcome `failed`, with the error
    /// code the caller will see). A change that takes something away returns only once every
    /// replica applied it or fenced itself ([`TAKES_AWAY`]).
    pub async fn audited<T, Fut>(
        &self,
        context: &AuditContext,
        change: Change<'_>,
        commit: impl FnOnce(AuditEntry) -> Fut,
    ) -> Result<T, ServiceError>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let entry = self.entry(context, &change, Outcome::Success);
        match commit(entry).await {
            Ok(value) => {
                if TAKES_AWAY.contains(&change.action) {
                    self.in_force_everywhere(change.action).await;
                }
                Ok(value)
            }
            Err(err) => {
                let err = ServiceError::from(err);
                self.record_failure(context, change, &err).await;
                Err(err)
            }
        }
    }

    /// [`Self::audited`] for a caller that records refusals itself (enrollment: a `denied`
    /// record naming the join key, rate-limited per peer): the success record commits with the
    /// change; a refusal comes back unrecorded, as the store's error. A change that takes
    /// something away waits for every replica as with [`Self::audited`].
    pub async fn audited_refusal_to_caller<T, Fut>(
        &self,
        context: &AuditContext,
        change: &Change<'_>,
        commit: impl FnOnce(AuditEntry) -> Fut,
    ) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let value = commit(self.entry(context, change, Outcome::Success)).await?;
        if TAKES_AWAY.contains(&change.action) {
            self.in_force_everywhere(change.action).await;
        }
        Ok(value)
    }

    /// Waits until every replica applied the change just committed. The change is durable
    /// already; if the replicas cannot be read, the wait falls back to the lease bound, after
    /// which a replica that did not apply it has fenced itself.
    async fn in_force_everywhere(&self, action: &str) {
        if let Err(err) = self.replication.await_everywhere().await {
            tracing::warn!(%action, error = %err, "could not confirm the change on every replica; waiting out the lease");
            let settings = self.replication.settings();
            tokio::time::sleep(settings.lease + settings.renew_every * 2).await;
        }
    }

    /// Records a mutation the store refused (nothing changed), with the error code it answers.
    pub async fn record_failure(
        &self,
        context: &AuditContext,
        change: Change<'_>,
        err: &ServiceError,
    ) {
        let mut change = change;
        if change.creates_target
            && let Some(target) = change.target.as_mut()
        {
            target.id = None;
        }
        let mut details = match change.details.take() {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        details.insert("error".into(), err.code().as_str().into());
        change.details = serde_json::Value::Object(details);
        self.record_attempt(context, &change, Outcome::Failed).await;
    }

    /// Records an attempt that changed nothing (denied, or failed). Best effort: the caller's
    /// answer does not depend on it, but a failure to record is logged.
    pub async fn record_attempt(
        &self,
        context: &AuditContext,
        change: &Change<'_>,
        outcome: Outcome,
    ) {
        let entry = self.entry(context, change, outcome);
        if let Err(err) = self.store.record_audit(&entry).await {
            tracing::warn!(action = %change.action, error = %err, "could not record audit attempt");
        }
    }

    /// Reads the log (for the HTTP handler).
    pub async fn list(
        &self,
        filter: &xerotier_store::AuditFilter,
        page: &xerotier_store::PageRequest,
    ) -> Result<xerotier_store::PageSlice<AuditEntry>, ServiceError> {
        Ok(self.store.list_audit(filter, page).await?)
    }
}
