-- Issue 18: what the issuer last heard from its ledger (the ledger's id and catalog), so the
-- local admin commands (minting, voiding, card status, key list, activation queued for later)
-- work while the ledger is down. One row, replaced each time the ledger answers.
CREATE TABLE ledger_info (
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    ledger_id BLOB NOT NULL,
    catalog TEXT NOT NULL, -- the catalog, JSON
    heard_at INTEGER NOT NULL
);
