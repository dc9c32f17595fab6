-- Several replicas on one database (issue 12).
--
-- Every replica registers itself and renews a lease. Times in this table are the database's
-- own clock (milliseconds), never a replica's, so a replica whose clock is off cannot make its
-- lease look longer or another's look expired. `applied_seq` is the last signal the replica
-- has acted on: a revoke returns once every replica with a live lease has applied it (or its
-- lease ran out and it fenced itself).
CREATE TABLE router_replicas (
    id TEXT PRIMARY KEY,
    https_url TEXT NOT NULL,
    mesh_addr TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    lease_expires_at BIGINT NOT NULL,
    applied_seq BIGINT NOT NULL DEFAULT 0,
    sessions BIGINT NOT NULL DEFAULT 0,
    stopped_at BIGINT
);

-- What other replicas must act on, committed in the transaction of the change itself (a
-- durable row; PostgreSQL also sends NOTIFY at commit). `seq` comes from `sequence_counters`,
-- whose row lock is held to the commit, so signals become visible in `seq` order and a reader's
-- cursor never passes one that commits later.
CREATE TABLE replica_signals (
    seq BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    at BIGINT NOT NULL
);

CREATE TABLE sequence_counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO sequence_counters (name, value) VALUES ('signals', 0);
