-- Retention prunes by age: detections by their time, bounties by when last seen, dead
-- letters by when received (logs have logs_ts already).
CREATE INDEX detections_ts ON detections (ts);
CREATE INDEX bounties_last_seen ON bounties (last_seen);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);
