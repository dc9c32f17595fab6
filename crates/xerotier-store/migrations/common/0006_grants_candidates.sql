-- What an operator granted. A join key may carry a grant (the workspaces an agent enrolled with
-- it serves at once) and may require the whole agent to be approved first.
ALTER TABLE join_keys ADD COLUMN grant_workspaces TEXT;
ALTER TABLE join_keys ADD COLUMN require_approval BIGINT NOT NULL DEFAULT 0;

-- `approved` (serves its granted workspaces), `pending` (enrolled with a join key that requires
-- approval: no work, no rotation) or `rejected`.
ALTER TABLE agents ADD COLUMN approval TEXT NOT NULL DEFAULT 'approved';

-- Each workspace an agent declared, and what was decided about it. The decision holds for the
-- tool definitions it was made for (`definitions_hash`): a change makes it a candidate again.
-- `state`: `granted`, `candidate`, `rejected` or `withdrawn`.
CREATE TABLE agent_workspaces (
    agent_id TEXT NOT NULL,
    workspace TEXT NOT NULL,
    state TEXT NOT NULL,
    definitions_hash TEXT NOT NULL,
    tools TEXT NOT NULL,
    since BIGINT NOT NULL,
    decided_at BIGINT,
    decided_by TEXT,
    source TEXT NOT NULL,
    PRIMARY KEY (agent_id, workspace)
);
