-- Issue 14: governance by quorum, issuance reports that tile time, removed members kept by
-- name so a name or key is never given to another operator.
ALTER TABLE operators ADD COLUMN removed_seq INTEGER;
ALTER TABLE token_keys ADD COLUMN reported_until INTEGER NOT NULL DEFAULT 0;
UPDATE token_keys SET reported_until = json_extract(info, '$.valid_from');
