//! Security events for outbound webhooks: the outbox (`security_events`), written by
//! [`AuditEntry::insert`] in the transaction of the audit record it comes from, and the
//! durable deliveries (`webhook_deliveries`) the router's dispatcher claims, one replica at a
//! time, and settles. On PostgreSQL a new security event and a retried delivery also send
//! `NOTIFY xerotier_webhooks` ([`WEBHOOK_CHANNEL`]), which wakes every replica's dispatcher;
//! the rows are what counts, a lost notification leaves them to the next poll.

use sqlx::{Any, Row, Transaction};
use xerotier_core::{UnixMillis, format_rfc3339};

use crate::rows::{Record, record, sql};
use crate::{AuditEntry, PageRequest, PageSlice, Store, StoreError};

/// The PostgreSQL channel that wakes every replica's webhook dispatcher: a security event
/// committed (payload: its `seq`) or a delivery put back to pending (payload empty).
pub const WEBHOOK_CHANNEL: &str = "xerotier_webhooks";

/// The security events a webhook can subscribe to. Their wire names are dotted
/// (`rotation.failed`), so this is written out rather than generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityEventType {
    RotationFailed,
    CredentialsRevoked,
    Quarantined,
    EnrollmentDenied,
    CredentialOverdue,
    CredentialExpired,
    /// A phase of a rotation of the router's own keys (SPEC §9), its rollback, or an old key
    /// dropped: the moments a security team follows a router key rotation by.
    RouterKeyPhase,
}

impl SecurityEventType {
    pub const ALL: &'static [SecurityEventType] = &[
        Self::RotationFailed,
        Self::CredentialsRevoked,
        Self::Quarantined,
        Self::EnrollmentDenied,
        Self::CredentialOverdue,
        Self::CredentialExpired,
        Self::RouterKeyPhase,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RotationFailed => "rotation.failed",
            Self::CredentialsRevoked => "agent.credentials_revoked",
            Self::Quarantined => "agent.quarantined",
            Self::EnrollmentDenied => "enrollment.denied",
            Self::CredentialOverdue => "credential.overdue",
            Self::CredentialExpired => "credential.expired",
            Self::RouterKeyPhase => "router_key.phase_changed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.as_str() == text)
    }

    /// The security event an audit record is, if any. The mapping is on the record alone
    /// (action and outcome), so every path that audits one of these emits the event.
    pub fn of(entry: &AuditEntry) -> Option<Self> {
        let success = entry.outcome == "success";
        match entry.action.as_str() {
            // A rotation's terminal record: `failed` is the only failure outcome it writes.
            "agent.curve_rotate" if entry.outcome == "failed" => Some(Self::RotationFailed),
            "agent.revoke_credentials" if success => Some(Self::CredentialsRevoked),
            "agent.quarantine" if success => Some(Self::Quarantined),
            // A refused enrollment is audited `denied` (or `failed`); a success is an agent.
            "agent.enroll" if !success => Some(Self::EnrollmentDenied),
            // Written by the posture monitor when a credential changes state.
            "credential.overdue" => Some(Self::CredentialOverdue),
            "credential.expired" => Some(Self::CredentialExpired),
            "router_key.init"
            | "router_key.update_clients"
            | "router_key.update_servers"
            | "router_key.complete"
            | "router_key.rollback"
            | "router_key.dropped"
                if success =>
            {
                Some(Self::RouterKeyPhase)
            }
            _ => None,
        }
    }
}

/// Detail keys never copied into an event, whatever wrote them: the payload leaves the
/// deployment, and a secret, or a hash of one, has no business there.
const WITHHELD_DETAIL_WORDS: &[&str] =
    &["secret", "token", "hash", "verifier", "password", "value", "private", "jwt"];

/// One security event, as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityEvent {
    pub id: String,
    pub event_type: String,
    pub occurred_at: UnixMillis,
    pub audit_id: String,
    /// The JSON document sent to webhooks (no secrets).
    pub payload: String,
}

record!(SecurityEvent in "security_events" { id, event_type, occurred_at, audit_id, payload });

/// The event id made from its audit record's id (`aud_X` → `sev_X`): unique, and the same on
/// every replica.
pub fn security_event_id(audit_id: &str) -> String {
    format!("sev_{}", audit_id.strip_prefix("aud_").unwrap_or(audit_id))
}

/// The payload of the event `kind` that `entry` is.
fn payload(kind: SecurityEventType, entry: &AuditEntry) -> String {
    let details: serde_json::Value = entry
        .details
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(serde_json::Value::Null);
    let details = match details {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .filter(|(k, _)| {
                    let k = k.to_ascii_lowercase();
                    !WITHHELD_DETAIL_WORDS.iter().any(|w| k.contains(w))
                })
                .collect(),
        ),
        other => other,
    };
    let target_kind = entry.target_type.as_deref();
    let agent_id = match target_kind {
        Some("agent") => entry.target_id.clone(),
        _ => details.get("agent_id").and_then(|v| v.as_str()).map(str::to_string),
    };
    let credential = match target_kind {
        Some("agent") | None => serde_json::Value::Null,
        Some(kind) => serde_json::json!({ "kind": kind, "id": entry.target_id }),
    };
    serde_json::json!({
        "id": security_event_id(&entry.id),
        "type": kind.as_str(),
        "occurred_at": format_rfc3339(entry.at),
        "audit_id": entry.id,
        "outcome": entry.outcome,
        "agent_id": agent_id,
        "credential": credential,
        "actor": entry.actor_key_id,
        "reason": entry.reason,
        "details": details,
    })
    .to_string()
}

/// Writes the outbox row of `entry` in `tx` when it is a security event (called by
/// [`AuditEntry::insert`], so both commit or neither).
pub(crate) async fn outbox_for(
    tx: &mut Transaction<'static, Any>,
    entry: &AuditEntry,
) -> Result<(), StoreError> {
    let Some(kind) = SecurityEventType::of(entry) else { return Ok(()) };
    // The counter row stays locked until this transaction ends: `seq` order is commit order,
    // so a cursor never passes an event that commits later.
    let row = sqlx::query(
        "UPDATE sequence_counters SET value = value + 1 WHERE name = 'security_events'
         RETURNING value",
    )
    .fetch_one(&mut **tx)
    .await?;
    let seq: i64 = row.try_get("value")?;
    sqlx::query(
        "INSERT INTO security_events (seq, id, event_type, occurred_at, audit_id, payload)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(seq)
    .bind(security_event_id(&entry.id))
    .bind(kind.as_str())
    .bind(entry.at)
    .bind(&entry.id)
    .bind(payload(kind, entry))
    .execute(&mut **tx)
    .await?;
    // To every replica's dispatcher.
    crate::replicas::notify_at_commit(tx, WEBHOOK_CHANNEL, &seq.to_string()).await
}

/// One delivery of one event to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub id: String,
    pub webhook: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub last_status_code: Option<i64>,
    /// A short, bounded description (never the receiver's whole body).
    pub last_error: Option<String>,
    pub created_at: UnixMillis,
    pub next_attempt_at: UnixMillis,
    pub delivered_at: Option<UnixMillis>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<UnixMillis>,
}

record!(WebhookDelivery in "webhook_deliveries" {
    id, webhook, event_id, event_type, status, attempts, last_status_code, last_error,
    created_at, next_attempt_at, delivered_at, lease_owner, lease_until,
});

/// A delivery to create: the event and the webhook, with its id made by the caller.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
}

/// What one attempt ended in.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub at: UnixMillis,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub end: AttemptEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    Delivered,
    /// Try again at this time.
    Retry(UnixMillis),
    /// The last attempt failed: give up.
    Failed,
}

/// Filters for listing deliveries; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub webhook: Option<String>,
    pub status: Option<String>,
}

/// The most of an error text a delivery row keeps.
pub const MAX_ERROR_CHARS: usize = 200;

impl Store {
    /// Security events numbered after `seq`, in order, with their numbers.
    pub async fn security_events_after(
        &self,
        seq: i64,
        limit: u32,
    ) -> Result<Vec<(i64, SecurityEvent)>, StoreError> {
        let rows = sqlx::query(sql::<SecurityEvent>(
            "SELECT {cols}, seq FROM {table} WHERE seq > $1 ORDER BY seq LIMIT $2",
        ))
        .bind(seq)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|row| Ok((row.try_get("seq")?, SecurityEvent::from_row(row)?))).collect()
    }

    pub async fn security_event(&self, id: &str) -> Result<Option<SecurityEvent>, StoreError> {
        self.get(id).await
    }

    /// Where `webhook`'s deliveries were created up to. A webhook seen for the first time
    /// starts at the events committed so far: it is sent what happens from now on.
    pub async fn webhook_cursor(&self, webhook: &str) -> Result<i64, StoreError> {
        // A read first: this runs every dispatcher pass, and a write would take SQLite's
        // write lock (and an fsync) each time for nothing.
        let select = "SELECT seq FROM webhook_cursors WHERE webhook = $1";
        if let Some(row) = sqlx::query(select).bind(webhook).fetch_optional(self.pool()).await? {
            return Ok(row.try_get("seq")?);
        }
        sqlx::query(
            "INSERT INTO webhook_cursors (webhook, seq)
             SELECT $1, value FROM sequence_counters WHERE name = 'security_events'
             ON CONFLICT (webhook) DO NOTHING",
        )
        .bind(webhook)
        .execute(self.pool())
        .await?;
        let row = sqlx::query("SELECT seq FROM webhook_cursors WHERE webhook = $1")
            .bind(webhook)
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("seq")?)
    }

    /// Creates `deliveries` for `webhook` (each event once per webhook, whichever replica gets
    /// there first) and moves its cursor to `up_to`, in one transaction.
    pub async fn enqueue_deliveries(
        &self,
        webhook: &str,
        up_to: i64,
        deliveries: &[NewDelivery],
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for d in deliveries {
            sqlx::query(
                "INSERT INTO webhook_deliveries
                   (id, webhook, event_id, event_type, status, attempts, created_at, next_attempt_at)
                 VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5)
                 ON CONFLICT (webhook, event_id) DO NOTHING",
            )
            .bind(&d.id)
            .bind(webhook)
            .bind(&d.event_id)
            .bind(&d.event_type)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE webhook_cursors SET seq = $2 WHERE webhook = $1 AND seq < $2")
            .bind(webhook)
            .bind(up_to)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims up to `limit` due deliveries for `owner` until `now + lease_ms`. Each claim is a
    /// conditional `UPDATE` (still pending, lease free or lapsed), so of two replicas racing
    /// for one delivery exactly one gets it, on either backend.
    pub async fn claim_deliveries(
        &self,
        owner: &str,
        now: UnixMillis,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let candidates = sqlx::query(
            "SELECT id FROM webhook_deliveries
             WHERE status = 'pending' AND next_attempt_at <= $1
               AND (lease_until IS NULL OR lease_until <= $1)
             ORDER BY next_attempt_at, id LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        let mut claimed = Vec::new();
        for row in candidates {
            let id: String = row.try_get("id")?;
            let won = self
                .fetch_optional::<WebhookDelivery>(
                    sqlx::query(sql::<WebhookDelivery>(
                        "UPDATE {table} SET lease_owner = $2, lease_until = $3
                         WHERE id = $1 AND status = 'pending' AND next_attempt_at <= $4
                           AND (lease_until IS NULL OR lease_until <= $4)
                         RETURNING {cols}",
                    ))
                    .bind(id)
                    .bind(owner)
                    .bind(now + lease_ms)
                    .bind(now),
                )
                .await?;
            claimed.extend(won);
        }
        Ok(claimed)
    }

    /// Records an attempt on a delivery `owner` holds, and releases it. `None` when `owner`
    /// no longer held it (its lease lapsed and another replica took it).
    pub async fn finish_attempt(
        &self,
        id: &str,
        owner: &str,
        result: &AttemptResult,
    ) -> Result<Option<WebhookDelivery>, StoreError> {
        let (status, next, delivered_at) = match result.end {
            AttemptEnd::Delivered => ("delivered", result.at, Some(result.at)),
            AttemptEnd::Retry(at) => ("pending", at, None),
            AttemptEnd::Failed => ("failed", result.at, None),
        };
        let error: Option<String> =
            result.error.as_deref().map(|e| e.chars().take(MAX_ERROR_CHARS).collect());
        self.fetch_optional(
            sqlx::query(sql::<WebhookDelivery>(
                "UPDATE {table} SET attempts = attempts + 1, status = $3, last_status_code = $4,
                   last_error = $5, next_attempt_at = $6, delivered_at = $7,
                   lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND lease_owner = $2 AND status = 'pending'
                 RETURNING {cols}",
            ))
            .bind(id)
            .bind(owner)
            .bind(status)
            .bind(result.status_code)
            .bind(error)
            .bind(next)
            .bind(delivered_at),
        )
        .await
    }

    /// Puts a settled delivery back to `pending` now (an operator's retry), with its audit
    /// record. `None` when it was still pending or absent.
    pub async fn retry_delivery(
        &self,
        id: &str,
        now: UnixMillis,
        audit: &AuditEntry,
    ) -> Result<Option<WebhookDelivery>, StoreError> {
        self.update_audited(
            sqlx::query(sql::<WebhookDelivery>(
                "UPDATE {table} SET status = 'pending', attempts = 0, next_attempt_at = $2,
                   lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND status <> 'pending' RETURNING {cols}",
            ))
            .bind(id)
            .bind(now),
            &[],
            audit,
        )
        .await
    }

    /// Wakes every replica's webhook dispatcher (PostgreSQL; nothing on SQLite, whose one
    /// router wakes its own): a delivery was put back to pending.
    pub async fn notify_webhooks(&self) -> Result<(), StoreError> {
        self.notify(WEBHOOK_CHANNEL).await
    }

    pub async fn webhook_delivery(&self, id: &str) -> Result<Option<WebhookDelivery>, StoreError> {
        self.get(id).await
    }

    /// Deliveries in id (creation) order.
    pub async fn list_webhook_deliveries(
        &self,
        filter: &DeliveryFilter,
        page: &PageRequest,
    ) -> Result<PageSlice<WebhookDelivery>, StoreError> {
        self.page(page, "($3 IS NULL OR webhook = $3) AND ($4 IS NULL OR status = $4)", |q| {
            q.bind(&filter.webhook).bind(&filter.status)
        })
        .await
    }

    /// How many deliveries are pending (for the gauge).
    pub async fn pending_webhook_deliveries(&self) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM webhook_deliveries WHERE status = 'pending'")
                .fetch_one(self.pool())
                .await?;
        Ok(row.try_get("n")?)
    }
}
