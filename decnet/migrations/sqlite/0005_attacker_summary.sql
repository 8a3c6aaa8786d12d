-- The attackers-list row of each source, written by the profiler with the sortable columns,
-- so listing attackers reads small JSON rows instead of rendering every streaming state.
-- NULL for rows written before this migration (the API renders those from the state).
ALTER TABLE attackers ADD COLUMN summary TEXT;
