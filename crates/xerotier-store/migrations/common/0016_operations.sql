-- Fleet-wide emergency operations (issue 13 item 4): one row per operation, its plan fixed at
-- creation as one row per target. A runner lease (`lease_owner`, `lease_expires_at`, the
-- owning replica's id and when its claim ends) makes exactly one replica execute it at a time.
CREATE TABLE operations (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    selector TEXT NOT NULL,
    reason TEXT NOT NULL,
    requested_by TEXT,
    requested_by_name TEXT,
    request_id TEXT,
    status TEXT NOT NULL,
    wave_size BIGINT NOT NULL,
    max_failures BIGINT NOT NULL,
    wave_count BIGINT NOT NULL,
    target_count BIGINT NOT NULL,
    succeeded_count BIGINT NOT NULL DEFAULT 0,
    failed_count BIGINT NOT NULL DEFAULT 0,
    skipped_count BIGINT NOT NULL DEFAULT 0,
    cancelled_count BIGINT NOT NULL DEFAULT 0,
    -- Failures recorded before the latest resume: the threshold counts only those after it.
    failure_baseline BIGINT NOT NULL DEFAULT 0,
    current_wave BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT,
    lease_owner TEXT,
    lease_expires_at BIGINT
);
CREATE INDEX operations_unfinished ON operations (status, finished_at);

CREATE TABLE operation_targets (
    operation_id TEXT NOT NULL,
    target_id TEXT NOT NULL,
    target_name TEXT,
    position BIGINT NOT NULL,
    wave BIGINT NOT NULL,
    status TEXT NOT NULL,
    result_reason TEXT,
    rotation_request_id TEXT,
    finished_at BIGINT,
    PRIMARY KEY (operation_id, target_id)
);
CREATE INDEX operation_targets_order ON operation_targets (operation_id, position);
