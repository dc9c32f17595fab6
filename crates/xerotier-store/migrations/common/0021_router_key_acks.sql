-- The router mesh key rollout (SPEC §9): which router mesh keys each agent has saved durably
-- (its `RouterKeysAck`, kids space-separated in its order) and the serving key its last hello
-- came in on, so every replica computes the same progress; and the nonces of signed key
-- fetches (`POST /v1/agents/router-keys`), kept for the replay window.
CREATE TABLE router_key_acks (
    agent_id TEXT PRIMARY KEY,
    kids TEXT NOT NULL,
    acked_at BIGINT NOT NULL,
    seen_kid TEXT,
    seen_at BIGINT
);

CREATE TABLE router_key_fetch_nonces (
    nonce TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    at BIGINT NOT NULL
);

CREATE INDEX router_key_fetch_nonces_at ON router_key_fetch_nonces (at);
