-- An opening the user gave up waiting for (`wallet open --abandon`): kept, so a later answer
-- is still stored, but no longer blocking new openings.
ALTER TABLE openings ADD COLUMN set_aside_at INTEGER;
