-- Issue 17, the soak: the grants table was a WITHOUT ROWID table keyed by the (random)
-- nullifier, so each new row landed on a random leaf of the table's B-tree, as well as of its
-- index by hash; once the table has many more leaves than a commit has rows, every grant
-- dirties a page of its own in each. Rows are now stored in the order they are made (a rowid
-- table: new rows share the last leaf), and the index by key window holds (redeem_until,
-- rowid), which also grows at its end. Only the two lookups by random value stay: by
-- nullifier (a presentation) and by code hash (a consume). Same columns, same meaning.
CREATE TABLE grants_in_row_order (
    id INTEGER PRIMARY KEY,
    nullifier BLOB NOT NULL,
    kind TEXT NOT NULL,
    generation INTEGER NOT NULL,
    hash BLOB NOT NULL,
    state TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    redeem_until INTEGER,
    created_at INTEGER NOT NULL
);
INSERT INTO grants_in_row_order
    (nullifier, kind, generation, hash, state, expires_at, redeem_until, created_at)
SELECT nullifier, kind, generation, hash, state, expires_at, redeem_until, created_at
FROM grants ORDER BY created_at, nullifier;
DROP TABLE grants;
ALTER TABLE grants_in_row_order RENAME TO grants;
CREATE UNIQUE INDEX grants_by_nullifier ON grants (nullifier);
CREATE UNIQUE INDEX grants_by_hash ON grants (hash);
CREATE INDEX grants_by_redeem_until ON grants (redeem_until);
