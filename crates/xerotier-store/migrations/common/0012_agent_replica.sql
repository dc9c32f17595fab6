-- Which replica holds each agent's mesh session (issue 12, membership and failover).
--
-- Written with the buffered lease renewals (no write of its own), so it follows the agent from
-- replica to replica. `replica_since` is when the agent was first seen on that replica. A
-- replica whose lease ran out long ago still named here has lost those agents: the failover
-- sweep requeues or fails what they held and clears the column.
ALTER TABLE agents ADD COLUMN replica_id TEXT;
ALTER TABLE agents ADD COLUMN replica_since BIGINT;
CREATE INDEX agents_replica ON agents (replica_id);
