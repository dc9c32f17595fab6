-- Outbound webhooks for security events (issue 13, alerting).
--
-- `security_events` is an outbox: a row is written by `AuditEntry::insert` in the transaction
-- of the audit record it comes from (rotation failed, credentials revoked, quarantine, denied
-- enrollment, credential overdue/expired), so a crash loses neither or both. `seq` comes from
-- `sequence_counters` ('security_events'), whose row lock is held to the commit: events become
-- visible in `seq` order and a reader's cursor never passes one that commits later.
CREATE TABLE security_events (
    seq BIGINT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    audit_id TEXT NOT NULL,
    payload TEXT NOT NULL
);
INSERT INTO sequence_counters (name, value) VALUES ('security_events', 0);

-- How far each configured webhook's deliveries were created (shared by every replica; the
-- unique pair below makes a race between two replicas harmless).
CREATE TABLE webhook_cursors (
    webhook TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);

-- One delivery of one event to one webhook. A replica claims it by setting `lease_owner` and
-- `lease_until` with a conditional UPDATE (one winner); a lapsed lease is claimable again.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_status_code BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    delivered_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    UNIQUE (webhook, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
