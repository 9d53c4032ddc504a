-- Issue 14: the ledger verifies every token it records, so a spend carries the token itself.
-- Rows written before have no token and cannot be spent at a ledger that checks tokens.
ALTER TABLE pending_spends ADD COLUMN token BLOB;
