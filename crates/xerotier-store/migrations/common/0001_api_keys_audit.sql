CREATE TABLE store_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    verifier TEXT NOT NULL,
    previous_verifier TEXT,
    previous_valid_until BIGINT,
    created_at BIGINT NOT NULL,
    created_by TEXT,
    expires_at BIGINT,
    last_used_at BIGINT,
    rotated_at BIGINT,
    revoked_at BIGINT,
    revoked_by TEXT,
    revoked_reason TEXT
);
CREATE UNIQUE INDEX api_keys_name_unrevoked ON api_keys (name) WHERE revoked_at IS NULL;

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor_key_id TEXT,
    actor_name TEXT,
    action TEXT NOT NULL,
    target_type TEXT,
    target_id TEXT,
    target_name TEXT,
    reason TEXT,
    request_id TEXT,
    outcome TEXT NOT NULL,
    client_addr TEXT,
    details TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_target ON audit_log (target_id);
