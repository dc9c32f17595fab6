-- The router's own keys (SPEC §9), each rotated in phases: every key of every kind, with its
-- secret sealed (NULL once the key is dropped), and every rotation with its phase. A kind has
-- at most one `current` and one `next` key, and at most one unfinished rotation: `open_kind`
-- holds the kind while the rotation is unfinished and NULL after, so a unique index on it lets
-- exactly one of two racing `init` requests win, on both backends.
CREATE TABLE router_keys (
    kid TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    public_key TEXT NOT NULL,
    secret_sealed TEXT,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    activated_at BIGINT,
    retired_at BIGINT,
    rotation_id TEXT
);
CREATE UNIQUE INDEX router_keys_one_current ON router_keys (kind) WHERE state = 'current';
CREATE UNIQUE INDEX router_keys_one_next ON router_keys (kind) WHERE state = 'next';

CREATE TABLE router_key_rotations (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    phase TEXT NOT NULL,
    old_kid TEXT NOT NULL,
    new_kid TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    phase_changed_at BIGINT NOT NULL,
    ended_at BIGINT,
    outcome TEXT,
    requested_by TEXT,
    reason TEXT,
    open_kind TEXT
);
CREATE UNIQUE INDEX router_key_rotations_one_open ON router_key_rotations (open_kind);
CREATE INDEX router_key_rotations_kind ON router_key_rotations (kind, started_at);

-- The join-key signing key that signed each join key (its `kid`); NULL for keys minted before
-- this migration, which the router's first start after it attributes to the key then in force.
ALTER TABLE join_keys ADD COLUMN signing_kid TEXT;
