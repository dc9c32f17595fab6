-- PostgreSQL's half of 0011 (after the common half): `seq` is assigned late.
--
-- A sequence taken at insert time is not enough: values are taken in insert order but
-- transactions commit in another, so a reader could move its cursor past a value whose
-- transaction commits later and never see it. A counter row locked to the commit would be
-- exact, but it would serialize every transaction that writes an audit record (each invocation
-- creation among them) behind one row lock held across each commit's WAL flush.
--
-- So rows are inserted with `seq` NULL (readers skip them) and `insert_order` from a plain
-- sequence, and `xerotier_assign_seq` numbers the rows that have committed, under an advisory
-- lock and after every earlier numbering committed: each numbering's values are above every
-- value already visible, and a row not yet committed is numbered by a later call, above them.
-- Readers call it before they read. Within one call, rows are numbered in `insert_order`: a row
-- that committed before another was inserted is always numbered first.
CREATE SEQUENCE insert_order;

ALTER TABLE agent_events ADD COLUMN insert_order BIGINT;
ALTER TABLE agent_events ALTER COLUMN insert_order SET DEFAULT nextval('insert_order');
CREATE INDEX agent_events_unsequenced ON agent_events (insert_order) WHERE seq IS NULL;

ALTER TABLE audit_log ADD COLUMN insert_order BIGINT;
ALTER TABLE audit_log ALTER COLUMN insert_order SET DEFAULT nextval('insert_order');
CREATE INDEX audit_log_unsequenced ON audit_log (insert_order) WHERE seq IS NULL;

-- Numbers the committed, unnumbered rows of `target` (agent_events or audit_log); returns how
-- many. Run as a statement of its own (autocommit): the advisory lock is held until that
-- commit, so the next call's statements, each with a fresh snapshot (READ COMMITTED, a
-- volatile function), see these numbers and everything committed before them.
CREATE FUNCTION xerotier_assign_seq(target TEXT) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    pending BOOLEAN;
    assigned BIGINT;
BEGIN
    IF target NOT IN ('agent_events', 'audit_log') THEN
        RAISE EXCEPTION 'xerotier_assign_seq: % is not a sequenced table', target;
    END IF;
    -- The common case, nothing to number, takes no lock.
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE seq IS NULL)', target) INTO pending;
    IF NOT pending THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(7311, CASE target WHEN 'agent_events' THEN 1 ELSE 2 END);
    EXECUTE format(
        'UPDATE %1$I AS t SET seq = o.base + o.n
           FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY insert_order) AS n,
                        (SELECT COALESCE(MAX(seq), 0) FROM %1$I) AS base
                   FROM %1$I WHERE seq IS NULL) AS o
          WHERE t.id = o.id', target);
    GET DIAGNOSTICS assigned = ROW_COUNT;
    RETURN assigned;
END
$$;
