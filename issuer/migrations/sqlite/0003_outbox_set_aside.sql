-- Issue 17: an item the ledger refused for good (a refusal of the request itself, not a
-- replay, a stale timestamp or a report to re-tile) is set aside: no longer sent, so it no
-- longer holds up the items behind it, and kept with the ledger's answer for the operator.
ALTER TABLE outbox ADD COLUMN set_aside_at INTEGER;
ALTER TABLE outbox ADD COLUMN refusal TEXT;
