-- Campaign matching rebuilds its in-memory index on start from the states of keyed sources;
-- the key column lets it read only those.
ALTER TABLE attacker_behavior ADD COLUMN campaign_key TEXT;
CREATE INDEX attacker_behavior_campaign_key ON attacker_behavior (campaign_key)
    WHERE campaign_key IS NOT NULL;
CREATE INDEX attackers_campaign ON attackers (campaign_id) WHERE campaign_id IS NOT NULL;

-- Detections: a profile changed class, tools, campaign or risk band. Written in the same
-- transaction as the profiles that changed; the SSE stream resumes from these ids.
CREATE TABLE detections (
    id  INTEGER PRIMARY KEY,
    ts  TEXT NOT NULL,
    ip  TEXT NOT NULL,
    body TEXT NOT NULL          -- the detection JSON as streamed
);
CREATE INDEX detections_ip ON detections (ip, id);
