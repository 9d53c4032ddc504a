CREATE TABLE batches (
    batch_id TEXT PRIMARY KEY,
    value INTEGER NOT NULL,
    count INTEGER NOT NULL,
    state TEXT NOT NULL,          -- minted, activating, active
    created_at INTEGER NOT NULL
);

-- Only the hash of each card code is stored.
CREATE TABLE cards (
    code_hash BLOB PRIMARY KEY,
    batch_id TEXT NOT NULL REFERENCES batches (batch_id),
    serial INTEGER NOT NULL,
    value INTEGER NOT NULL,
    remaining INTEGER NOT NULL,
    state TEXT NOT NULL           -- minted, active, opened, used, void
) WITHOUT ROWID;

CREATE INDEX cards_by_batch ON cards (batch_id, serial);

CREATE TABLE openings (
    request_id BLOB PRIMARY KEY,
    card_hash BLOB NOT NULL,
    price INTEGER NOT NULL,
    requests BLOB NOT NULL,       -- canonical encoding of the requests
    responses BLOB NOT NULL,      -- canonical encoding of the responses
    created_at INTEGER NOT NULL
);

CREATE TABLE token_keys (
    key_id BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    info TEXT NOT NULL,           -- TokenKeyInfo as JSON
    pem_path TEXT NOT NULL,
    announced INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

-- Tokens signed and not yet reported to the ledger, per key.
CREATE TABLE issuance_pending (
    key_id BLOB PRIMARY KEY,
    count INTEGER NOT NULL,
    since INTEGER NOT NULL
);

-- Signed ledger requests not yet acknowledged by the ledger, with what to do once they are.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request TEXT NOT NULL,
    on_success TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
