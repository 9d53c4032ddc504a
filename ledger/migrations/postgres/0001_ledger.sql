-- The append-only log: one row per entry, the canonical bytes of the entry as its body.
CREATE TABLE entries (
    seq BIGINT PRIMARY KEY,
    hash BYTEA NOT NULL,
    kind TEXT NOT NULL,
    signer BYTEA,
    request_digest BYTEA UNIQUE,
    recorded_at BIGINT NOT NULL,
    body BYTEA NOT NULL
);

CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE operators (
    id BYTEA PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    info TEXT NOT NULL,
    admitted_seq BIGINT NOT NULL
);

-- key_no is a compact local handle so the spent set does not repeat 32-byte key ids.
CREATE TABLE token_keys (
    key_no BIGSERIAL PRIMARY KEY,
    key_id BYTEA NOT NULL UNIQUE,
    issuer TEXT NOT NULL,
    kind TEXT NOT NULL,
    info TEXT NOT NULL,
    announced_seq BIGINT NOT NULL,
    revoked_seq BIGINT,
    issued BIGINT NOT NULL DEFAULT 0,
    spent BIGINT NOT NULL DEFAULT 0,
    pruned BIGINT NOT NULL DEFAULT 0
);

-- The spent set: the nullifier is the key, so the first insert wins.
CREATE TABLE spent (
    nullifier BYTEA PRIMARY KEY,
    key_no BIGINT NOT NULL,
    seq BIGINT NOT NULL
);

CREATE INDEX spent_by_key ON spent (key_no);

CREATE TABLE issuer_totals (
    issuer TEXT PRIMARY KEY,
    cards_sold BIGINT NOT NULL DEFAULT 0,
    credits_sold BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE cosignatures (
    checkpoint_seq BIGINT NOT NULL,
    operator BYTEA NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (checkpoint_seq, operator)
);
