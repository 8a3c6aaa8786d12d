-- What campaign matching reads of a keyed source's state, written by sharded analysts
-- (PostgreSQL) so the campaign pass need not read the whole state; null elsewhere. The
-- column is in both engines because the profiler's upsert is one statement for both.
ALTER TABLE attacker_behavior ADD COLUMN match_facts TEXT;
