-- Evidence for ending a rotated API key's grace window: how often the previous value was used
-- since the last rotation, when last and from which address (flushed by each router, added up
-- atomically so replicas' counts sum), and an end scheduled for when the old value has been
-- unused for a while (`grace_end_quiet_ms`, requested at `grace_end_requested_at`).
ALTER TABLE api_keys ADD COLUMN grace_uses BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN grace_last_used_at BIGINT;
ALTER TABLE api_keys ADD COLUMN grace_last_used_from TEXT;
ALTER TABLE api_keys ADD COLUMN grace_end_quiet_ms BIGINT;
ALTER TABLE api_keys ADD COLUMN grace_end_requested_at BIGINT;
