-- Issue 14: governance by quorum, issuance reports that tile time, removed members kept by
-- name so a name or key is never given to another operator.
ALTER TABLE operators ADD COLUMN removed_seq BIGINT;
ALTER TABLE token_keys ADD COLUMN reported_until BIGINT NOT NULL DEFAULT 0;
UPDATE token_keys SET reported_until = (info::json->>'valid_from')::BIGINT;
