-- Tool invocations. `status` is one of queued, running, succeeded, failed, cancelled,
-- timed_out. A queued invocation with an `agent_id` has been handed to that agent but not yet
-- started; dispatch claims it with `UPDATE … WHERE agent_id IS NULL`, so one agent wins.
CREATE TABLE invocations (
    id TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    workspace TEXT NOT NULL,
    args TEXT NOT NULL,
    status TEXT NOT NULL,
    agent_id TEXT,
    created_at BIGINT NOT NULL,
    created_by TEXT,
    dispatched_at BIGINT,
    started_at BIGINT,
    finished_at BIGINT,
    exit_code BIGINT,
    stdout TEXT NOT NULL DEFAULT '',
    stderr TEXT NOT NULL DEFAULT '',
    stdout_truncated BIGINT NOT NULL DEFAULT 0,
    stderr_truncated BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    credential_generation BIGINT,
    cancel_requested_at BIGINT
);
CREATE INDEX invocations_status ON invocations (status, id);
CREATE INDEX invocations_agent ON invocations (agent_id, status);

-- Containment: no new dispatch to a paused agent (workspace '') or to one workspace on it.
CREATE TABLE exec_pauses (
    agent_id TEXT NOT NULL,
    workspace TEXT NOT NULL,
    paused_at BIGINT NOT NULL,
    paused_by TEXT,
    reason TEXT,
    PRIMARY KEY (agent_id, workspace)
);
