CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Keys the wallet has tokens of, as the ledger announced them.
CREATE TABLE keys (
    key_id BLOB PRIMARY KEY,
    info TEXT NOT NULL
);

-- Openings sent (or about to be) whose answer is not yet stored: retried with the same id.
CREATE TABLE openings (
    request_id BLOB PRIMARY KEY,
    first_counter INTEGER NOT NULL,
    count INTEGER NOT NULL,
    issuer_url TEXT NOT NULL,
    request TEXT NOT NULL
);

CREATE TABLE tokens (
    nullifier BLOB PRIMARY KEY,
    token BLOB NOT NULL,
    key_id BLOB NOT NULL,
    kind TEXT NOT NULL,
    issuer TEXT NOT NULL,
    redeem_until INTEGER NOT NULL,
    state TEXT NOT NULL,          -- unspent, pending, spent, expired, invalid
    counter INTEGER,
    redeemer_url TEXT,
    grant_code TEXT,
    grant_expires_at INTEGER,
    note TEXT,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX tokens_by_kind ON tokens (kind, state, redeem_until);
