-- An agent's Ed25519 signing key rotates with its CURVE key (SPEC §9): the acknowledgement,
-- signed with the old signing key, binds the new signing public key, kept with the rotation
-- (hex) and made the agent's own at promotion, when `signing_key_rotated_at` is set.
ALTER TABLE curve_rotations ADD COLUMN new_signing_public_key TEXT;
ALTER TABLE agents ADD COLUMN signing_key_rotated_at BIGINT;
