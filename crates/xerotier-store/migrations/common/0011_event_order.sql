-- Events and audit records in the order the database made them visible (issue 12, "Ordering").
--
-- Ids (`evt_…`, `aud_…`) carry the writing router's clock and are made before the commit, so
-- across replicas they order neither by commit nor by any one clock: a cursor compared by id
-- skips a record written by a replica whose clock lags, or by a writer that committed after a
-- later-made id. Listings and cursors use `seq`, assigned by the database so that a reader who
-- has seen `seq` n has seen, and will only ever be shown beyond n, what committed before it.
--
-- How `seq` is assigned differs by backend (this file is the part both share):
-- * SQLite: in the inserting statement (`MAX(seq) + 1`); SQLite has one writer at a time, so
--   insert order is commit order.
-- * PostgreSQL: late, after the commit (see postgres/0011_event_order.sql).
--
-- Existing rows are numbered in id order (one router's clock wrote them, as before).
ALTER TABLE agent_events ADD COLUMN seq BIGINT;
UPDATE agent_events SET seq = ordered.n
  FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS n FROM agent_events) AS ordered
 WHERE agent_events.id = ordered.id;
CREATE UNIQUE INDEX agent_events_seq ON agent_events (seq);
CREATE INDEX agent_events_agent_seq ON agent_events (agent_id, seq);

ALTER TABLE audit_log ADD COLUMN seq BIGINT;
UPDATE audit_log SET seq = ordered.n
  FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS n FROM audit_log) AS ordered
 WHERE audit_log.id = ordered.id;
CREATE UNIQUE INDEX audit_log_seq ON audit_log (seq);
