-- Issue 16: refreshes. A refresh sent (or about to be) whose answer is not yet stored, retried
-- with the same id; its inputs are in state 'refreshing' meanwhile (their nullifiers are in
-- the stored request).
CREATE TABLE refreshes (
    request_id BLOB PRIMARY KEY,
    first_counter INTEGER NOT NULL,
    count INTEGER NOT NULL,
    issuer_url TEXT NOT NULL,
    request TEXT NOT NULL
);

-- Where each issuer was reached when a card of it was opened: refreshes go back there.
CREATE TABLE issuers (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL
);
