-- The runner reads an operation's running targets every 100 ms while a wave is in flight:
-- found by status, not by scanning every target of the plan (10,000 in a fleet rotation).
CREATE INDEX operation_targets_status ON operation_targets (operation_id, status);
