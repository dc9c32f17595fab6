use sqlx::{Any, Transaction};
use xerotier_core::UnixMillis;

use crate::rows::{AnyQuery, Record, record};
use crate::{Backend, PageRequest, PageSlice, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Denied,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

/// One audit record. Written in the transaction of the change it describes, or on its own for
/// a denied or failed attempt (which changed nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: String,
    pub at: UnixMillis,
    pub actor_key_id: Option<String>,
    pub actor_name: Option<String>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub target_name: Option<String>,
    pub reason: Option<String>,
    /// The router's own id of the request that caused it (`req_…`): unique, never the client's.
    pub request_id: Option<String>,
    /// What the client sent as `X-Request-ID`, when it was a valid label: its own correlation,
    /// never trusted to be unique.
    pub correlation_id: Option<String>,
    /// `success`, `denied` or `failed`.
    pub outcome: String,
    pub client_addr: Option<String>,
    /// A JSON document, or nothing.
    pub details: Option<String>,
}

/// Filters for listing audit records; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor_key_id: Option<String>,
    pub target_id: Option<String>,
    pub outcome: Option<String>,
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
    pub since: Option<UnixMillis>,
    pub until: Option<UnixMillis>,
}

record!(AuditEntry in "audit_log" {
    id, at, actor_key_id, actor_name, action, target_type, target_id, target_name, reason,
    request_id, correlation_id, outcome, client_addr, details,
});

impl AuditEntry {
    pub(crate) async fn insert(
        &self,
        tx: &mut Transaction<'static, Any>,
    ) -> Result<(), StoreError> {
        let backend =
            if crate::order::is_postgres(tx) { Backend::Postgres } else { Backend::Sqlite };
        self.bind(sqlx::query(sqlx::AssertSqlSafe(Self::insert_statement(1, backend))))
            .execute(&mut **tx)
            .await?;
        // A security event leaves through the outbox written with its record.
        crate::webhooks::outbox_for(tx, self).await?;
        // The change this record describes is one other replicas must act on.
        crate::replicas::signal_for(tx, self).await
    }

    /// The `INSERT` of one record, its parameters numbered from `$first` (for a statement that
    /// does more, with parameters of its own before these); [`Self::bind`] binds them. On
    /// SQLite it numbers the record (`seq`) as it inserts it; on PostgreSQL the record is
    /// numbered after it committed (`order.rs`), so the insert takes no lock and an
    /// invocation's creation stays one statement that waits on nobody.
    pub(crate) fn insert_statement(first: usize, backend: Backend) -> String {
        let params: Vec<String> = (first..first + 14).map(|n| format!("${n}")).collect();
        match backend {
            Backend::Postgres => format!(
                "INSERT INTO {} ({}) VALUES ({})",
                Self::TABLE,
                Self::COLUMNS,
                params.join(", ")
            ),
            Backend::Sqlite => format!(
                "INSERT INTO {} ({}, seq) VALUES ({}, {})",
                Self::TABLE,
                Self::COLUMNS,
                params.join(", "),
                crate::order::sqlite_seq_value(Self::TABLE)
            ),
        }
    }

    /// Binds this record's values, in the order of [`Self::insert_statement`].
    pub(crate) fn bind<'q>(&'q self, query: AnyQuery<'q>) -> AnyQuery<'q> {
        query
            .bind(&self.id)
            .bind(self.at)
            .bind(&self.actor_key_id)
            .bind(&self.actor_name)
            .bind(&self.action)
            .bind(&self.target_type)
            .bind(&self.target_id)
            .bind(&self.target_name)
            .bind(&self.reason)
            .bind(&self.request_id)
            .bind(&self.correlation_id)
            .bind(&self.outcome)
            .bind(&self.client_addr)
            .bind(&self.details)
    }
}

impl AuditEntry {
    /// Writes this record in `tx` and commits: the end of every audited change.
    pub(crate) async fn commit_with(
        &self,
        mut tx: Transaction<'static, Any>,
    ) -> Result<(), StoreError> {
        self.insert(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// Records an attempt that changed nothing (denied or failed).
    pub async fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        entry.commit_with(self.begin_write().await?).await
    }

    /// Audit records in the order they committed (`seq`), after the record whose id is
    /// `page.after`, whichever replica wrote them.
    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<PageSlice<AuditEntry>, StoreError> {
        self.page_by_seq(
            page,
            "($3 IS NULL OR action = $3)
               AND ($4 IS NULL OR actor_key_id = $4)
               AND ($5 IS NULL OR target_id = $5)
               AND ($6 IS NULL OR outcome = $6)
               AND ($7 IS NULL OR request_id = $7)
               AND ($8 IS NULL OR correlation_id = $8)
               AND ($9 IS NULL OR at >= $9)
               AND ($10 IS NULL OR at < $10)",
            |q| {
                q.bind(&filter.action)
                    .bind(&filter.actor_key_id)
                    .bind(&filter.target_id)
                    .bind(&filter.outcome)
                    .bind(&filter.request_id)
                    .bind(&filter.correlation_id)
                    .bind(filter.since)
                    .bind(filter.until)
            },
        )
        .await
    }
}
