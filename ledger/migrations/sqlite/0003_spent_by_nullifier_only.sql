-- Issue 17: the spent set is one B-tree, keyed by nullifier. The index by key was a second
-- B-tree on random keys (key_no, then the nullifier), so every spent token dirtied a page of
-- its own in it too, and the WAL wrote each such page twice (decision 58). Only pruning read
-- it, once per key after `forget_after`: it now scans the spent set instead.
DROP INDEX spent_by_key;
