-- The append-only log: one row per entry, the canonical bytes of the entry as its body.
CREATE TABLE entries (
    seq INTEGER PRIMARY KEY,
    hash BLOB NOT NULL,
    kind TEXT NOT NULL,
    signer BLOB,
    request_digest BLOB UNIQUE,
    recorded_at INTEGER NOT NULL,
    body BLOB NOT NULL
);

CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE operators (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    info TEXT NOT NULL,
    admitted_seq INTEGER NOT NULL
);

-- key_no is a compact local handle so the spent set does not repeat 32-byte key ids.
CREATE TABLE token_keys (
    key_no INTEGER PRIMARY KEY,
    key_id BLOB NOT NULL UNIQUE,
    issuer TEXT NOT NULL,
    kind TEXT NOT NULL,
    info TEXT NOT NULL,
    announced_seq INTEGER NOT NULL,
    revoked_seq INTEGER,
    issued INTEGER NOT NULL DEFAULT 0,
    spent INTEGER NOT NULL DEFAULT 0,
    pruned INTEGER NOT NULL DEFAULT 0
);

-- The spent set: the nullifier is the key, so the first insert wins.
CREATE TABLE spent (
    nullifier BLOB PRIMARY KEY,
    key_no INTEGER NOT NULL,
    seq INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX spent_by_key ON spent (key_no);

CREATE TABLE issuer_totals (
    issuer TEXT PRIMARY KEY,
    cards_sold INTEGER NOT NULL DEFAULT 0,
    credits_sold INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE cosignatures (
    checkpoint_seq INTEGER NOT NULL,
    operator BLOB NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (checkpoint_seq, operator)
);
