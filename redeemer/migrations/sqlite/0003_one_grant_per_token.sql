-- Issue 17: at most one live grant per token, and a repeat costs nothing. One row per
-- nullifier holds what the re-grant rule needs; the grant code of generation g is derived from
-- the redeemer's grant key and (nullifier, g), so only its hash is stored, as before.
CREATE TABLE token_grants (
    nullifier BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    generation INTEGER NOT NULL,  -- of the current grant; a re-grant after expiry adds one
    hash BLOB NOT NULL,           -- the current grant's storage hash
    state TEXT NOT NULL,          -- issued, consumed, refused
    expires_at INTEGER NOT NULL,  -- of the current grant
    redeem_until INTEGER,         -- the token key's: the row is swept after it (NULL: not yet known)
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Rows from before: one per nullifier, the grant that decides what a repeat gets. A consumed
-- grant outranks a refused one, which outranks the issued one (a nullifier had at most one
-- issued grant; replaced ones were revoked). A nullifier with revoked grants only keeps one as
-- an expired grant, so it can never be consumed. Their codes were random, not derived: a repeat
-- finds that the derived code does not match the hash and gives the next generation. Their
-- key's redeem_until is unknown here and is filled in at start (service.rs).
INSERT INTO token_grants (nullifier, kind, generation, hash, state, expires_at, redeem_until, created_at)
SELECT nullifier, kind, 0, hash,
       CASE state WHEN 'revoked' THEN 'issued' ELSE state END,
       CASE state WHEN 'revoked' THEN 0 ELSE expires_at END,
       NULL, created_at
FROM (
    SELECT grants.*, ROW_NUMBER() OVER (
        PARTITION BY nullifier
        ORDER BY CASE state WHEN 'consumed' THEN 0 WHEN 'refused' THEN 1 WHEN 'issued' THEN 2 ELSE 3 END,
                 created_at DESC, hash
    ) AS pick
    FROM grants
)
WHERE pick = 1;

DROP TABLE grants;
ALTER TABLE token_grants RENAME TO grants;
CREATE UNIQUE INDEX grants_by_hash ON grants (hash);
CREATE INDEX grants_by_redeem_until ON grants (redeem_until);
