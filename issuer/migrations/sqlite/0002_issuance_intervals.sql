-- Issue 14: an issuance report covers the interval from the end of the key's previous report
-- (its valid_from before the first) to the moment it is made, so it reveals no opening time.
-- `issuance_pending.since` is no longer written with the time of an opening.
CREATE TABLE issuance_reported (
    key_id BLOB PRIMARY KEY,
    until INTEGER NOT NULL
);
UPDATE issuance_pending SET since = 0;
