-- Fleet mode: which sensor saw each row. Rows from before fleet mode belong to the one
-- sensor there was ('' = the local one).
ALTER TABLE logs ADD COLUMN sensor TEXT NOT NULL DEFAULT '';
