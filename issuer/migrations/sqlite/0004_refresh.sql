-- Issue 16: refreshes. A refresh is recorded (its id, the hash of its body, the blinded
-- requests, and the signed ledger request) before the ledger is asked, so a crash after the
-- ledger's commit loses nothing: a retry resumes it. `responses` is set once the outputs are
-- signed. Every input's nullifier is unique here, so a token in one refresh of this issuer
-- can be in no other, and "spent by this issuer" at the ledger means "by this refresh".
CREATE TABLE refreshes (
    request_id BLOB PRIMARY KEY,
    body_hash BLOB NOT NULL,
    requests BLOB NOT NULL,       -- canonical encoding of the blinded requests
    ledger_request TEXT NOT NULL, -- the signed ledger request, JSON (re-signed when stale)
    responses BLOB,               -- canonical encoding of the responses, once signed
    created_at INTEGER NOT NULL
);

CREATE TABLE refreshed_tokens (
    nullifier BLOB PRIMARY KEY,
    request_id BLOB NOT NULL REFERENCES refreshes (request_id) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE INDEX refreshed_tokens_by_request ON refreshed_tokens (request_id);
