-- Every CURVE public key ever bound to an agent (enrolled with, or promoted to by a rotation),
-- kept forever: a key is never enrolled or promoted again once any agent used it, even after
-- it was rotated away, retired or revoked. Written in the same transaction as the enrollment
-- or promotion; the primary key decides, on both backends.
CREATE TABLE agent_curve_keys (
    curve_public_key TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    bound_at BIGINT NOT NULL
);
CREATE INDEX agent_curve_keys_agent ON agent_curve_keys (agent_id);

-- Backfill: every agent's current key, its previous (rotated-away, not yet retired) key, and
-- every key a rotation promoted (retired keys survive only there).
INSERT INTO agent_curve_keys (curve_public_key, agent_id, bound_at)
SELECT curve_public_key, id, enrolled_at FROM agents WHERE curve_public_key IS NOT NULL
ON CONFLICT DO NOTHING;
INSERT INTO agent_curve_keys (curve_public_key, agent_id, bound_at)
SELECT previous_curve_public_key, id, enrolled_at FROM agents
WHERE previous_curve_public_key IS NOT NULL
ON CONFLICT DO NOTHING;
INSERT INTO agent_curve_keys (curve_public_key, agent_id, bound_at)
SELECT new_public_key, agent_id, COALESCE(completed_at, requested_at) FROM curve_rotations
WHERE status = 'promoted' AND new_public_key IS NOT NULL
ON CONFLICT DO NOTHING;
