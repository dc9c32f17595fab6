-- While a rotated-away key may still be in use (until the agent is seen on the new one).
ALTER TABLE agents ADD COLUMN previous_curve_public_key TEXT;

CREATE TABLE curve_rotations (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    nonce TEXT NOT NULL,
    status TEXT NOT NULL,
    failure_reason TEXT,
    requested_at BIGINT NOT NULL,
    requested_by TEXT,
    requested_by_name TEXT,
    deadline_at BIGINT NOT NULL,
    acknowledged_at BIGINT,
    completed_at BIGINT,
    new_public_key TEXT,
    request_id TEXT
);
-- One rotation in flight per agent.
CREATE UNIQUE INDEX curve_rotations_one_pending ON curve_rotations (agent_id) WHERE status = 'pending';
CREATE INDEX curve_rotations_agent ON curve_rotations (agent_id, id);

CREATE TABLE agent_events (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    request_id TEXT,
    details TEXT
);
CREATE INDEX agent_events_agent ON agent_events (agent_id, id);
