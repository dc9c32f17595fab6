-- The posture state last announced for each credential (audit record + agent event), so each
-- transition into due_soon / overdue / expired is announced exactly once fleet-wide: replicas
-- and restarts claim it with one conditional upsert in the transaction of the record.
CREATE TABLE credential_posture (
    kind TEXT NOT NULL,
    credential_id TEXT NOT NULL,
    state TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    PRIMARY KEY (kind, credential_id)
);
