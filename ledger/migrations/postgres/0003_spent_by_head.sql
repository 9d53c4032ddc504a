-- Issue 17: the spent set in at most 128 bytes per token. A unique B-tree on the 32-byte
-- nullifier cost about 78 bytes per row on its own (random inserts leave pages part full);
-- one on the nullifier's first 8 bytes, as a BIGINT, costs about 26 (BENCHMARKS.md).
--
-- The head maps the first 8 bytes to a BIGINT in the same order as the bytes (the top bit
-- flipped turns unsigned order into signed order), so a range of nullifiers is a range of heads.
CREATE FUNCTION nullifier_head(nullifier BYTEA) RETURNS BIGINT
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT (('x' || encode(substring(nullifier FROM 1 FOR 8), 'hex'))::bit(64)
                  # x'8000000000000000')::BIGINT $$;

-- Columns in this order waste no alignment: 8 + 8 + 4, then the 33-byte nullifier.
CREATE TABLE spent_by_head (
    head BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    key_no INTEGER NOT NULL,
    nullifier BYTEA NOT NULL
);

-- A nullifier whose head another spent nullifier already has is spent here, keyed by all its
-- bytes, so that it is a spend of its own exactly as on SQLite. A wallet can find two nonces
-- whose nullifiers share a head with about 2^32 hashes; each clash still costs it a token.
CREATE TABLE spent_clash (
    nullifier BYTEA PRIMARY KEY,
    key_no INTEGER NOT NULL,
    seq BIGINT NOT NULL
);

INSERT INTO spent_by_head (head, seq, key_no, nullifier)
    SELECT nullifier_head(nullifier), seq, key_no, nullifier FROM spent ORDER BY nullifier
    ON CONFLICT (head) DO NOTHING;
INSERT INTO spent_clash (nullifier, key_no, seq)
    SELECT s.nullifier, s.key_no, s.seq FROM spent s
    WHERE NOT EXISTS (SELECT 1 FROM spent_by_head h
                      WHERE h.head = nullifier_head(s.nullifier) AND h.nullifier = s.nullifier);

DROP TABLE spent;
ALTER TABLE spent_by_head RENAME TO spent;
ALTER INDEX spent_by_head_pkey RENAME TO spent_pkey;
CREATE INDEX spent_by_key ON spent (key_no);
