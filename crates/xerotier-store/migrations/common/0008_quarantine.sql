-- An agent seen on two live sessions at once (its identity copied to a second host) is put in
-- quarantine: no dispatch until an operator revokes its credentials or releases it.
ALTER TABLE agents ADD COLUMN quarantined_at BIGINT;
ALTER TABLE agents ADD COLUMN quarantine_reason TEXT;
