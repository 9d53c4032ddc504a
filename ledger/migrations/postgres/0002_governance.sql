-- Issue 14: governance by quorum, issuance reports that tile time, removed members kept by
-- name so a name or key is never given to another operator.
ALTER TABLE operators ADD COLUMN removed_seq BIGINT;
ALTER TABLE token_keys ADD COLUMN reported_until BIGINT NOT NULL DEFAULT 0;
UPDATE token_keys SET reported_until = (info::json->>'valid_from')::BIGINT;
-- Entry bodies are mostly tokens (RSA signatures), which do not compress: PostgreSQL's
-- default pglz tried and discarded the result for each body, about a quarter of a spend's
-- commit time (BENCHMARKS.md, issue 14). Stored out of line, uncompressed.
ALTER TABLE entries ALTER COLUMN body SET STORAGE EXTERNAL;
