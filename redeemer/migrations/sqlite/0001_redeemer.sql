-- Grants: only the hash of each code is stored.
CREATE TABLE grants (
    hash BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    nullifier BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    state TEXT NOT NULL,          -- issued, consumed, revoked
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX grants_by_nullifier ON grants (nullifier);

-- Optimistic mode: spends granted locally and not yet committed by the ledger.
CREATE TABLE pending_spends (
    nullifier BLOB PRIMARY KEY,
    key_id BLOB NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
