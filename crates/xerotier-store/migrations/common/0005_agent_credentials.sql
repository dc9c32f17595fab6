-- The latest reload report of each agent's workspace credential files: what the fleet's
-- credential ages are listed from. Replaced as a whole by each report.
CREATE TABLE agent_credentials (
    agent_id TEXT NOT NULL,
    credentials_ref TEXT NOT NULL,
    sha256 TEXT,
    generation BIGINT NOT NULL,
    mtime_ms BIGINT,
    ok BIGINT NOT NULL,
    error TEXT,
    reported_at BIGINT NOT NULL,
    PRIMARY KEY (agent_id, credentials_ref)
);
