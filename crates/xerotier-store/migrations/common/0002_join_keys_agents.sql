CREATE TABLE join_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    region TEXT,
    role TEXT NOT NULL,
    router_addr TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT,
    expires_at BIGINT NOT NULL,
    consumed_at BIGINT,
    consumed_by_agent TEXT,
    revoked_at BIGINT,
    revoked_by TEXT,
    revoked_reason TEXT
);

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    region TEXT,
    join_key_id TEXT NOT NULL,
    enrolled_at BIGINT NOT NULL,
    curve_public_key TEXT NOT NULL,
    signing_public_key TEXT NOT NULL,
    manifest TEXT NOT NULL,
    manifest_hash TEXT NOT NULL,
    manifest_version BIGINT NOT NULL,
    lease_interval_ms BIGINT NOT NULL,
    last_heartbeat_at BIGINT,
    revoked_at BIGINT,
    revoked_by TEXT,
    revoked_reason TEXT
);
CREATE UNIQUE INDEX agents_name_live ON agents (name) WHERE revoked_at IS NULL;
-- A CURVE key identifies one agent forever: a revoked agent's key is never accepted again.
CREATE UNIQUE INDEX agents_curve_key ON agents (curve_public_key);

-- Router-wide key material (mesh CURVE key, join-key signing key), shared by every replica of
-- one database. Created once by the first router to start.
CREATE TABLE router_secrets (
    name TEXT PRIMARY KEY,
    secret_hex TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
