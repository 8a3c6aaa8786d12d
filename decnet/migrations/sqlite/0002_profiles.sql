-- Attacker profiles (filled by the incremental profiler). The API reads `attackers`; the
-- profiler's bounded per-IP streaming state lives in `attacker_behavior` so a restart
-- resumes without re-reading old rows.
CREATE TABLE attackers (
    ip          TEXT PRIMARY KEY,
    first_seen  TEXT    NOT NULL,
    last_seen   TEXT    NOT NULL,
    event_count INTEGER NOT NULL,
    class       TEXT    NOT NULL DEFAULT 'unknown',
    risk_score  INTEGER NOT NULL DEFAULT 0,
    campaign_id INTEGER,
    profile     TEXT    NOT NULL,   -- the full profile JSON served by GET /api/v1/attackers/{ip}
    updated_at  TEXT    NOT NULL
);
-- The API sorts and pages attackers by risk and by recency.
CREATE INDEX attackers_risk ON attackers (risk_score DESC, ip);
CREATE INDEX attackers_last_seen ON attackers (last_seen DESC, ip);

CREATE TABLE attacker_behavior (
    ip         TEXT PRIMARY KEY,
    state      TEXT NOT NULL,       -- serialized streaming summary (counts, moments, sketches)
    updated_at TEXT NOT NULL
);

CREATE TABLE campaigns (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    summary    TEXT NOT NULL        -- JSON: members, shared tool, targets, window
);
