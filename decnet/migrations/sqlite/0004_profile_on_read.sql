-- The public profile is rendered from `attacker_behavior.state` when it is read, so the
-- profiler writes one small state per IP per batch instead of the state and a rendering of
-- it, and a profile always reflects the current rules. `attackers` keeps the columns that
-- lists sort and filter on.
ALTER TABLE attackers DROP COLUMN profile;
