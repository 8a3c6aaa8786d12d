-- Journal ingestion: rows, extracted artifacts, parse failures, and cursors.
CREATE TABLE logs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          TEXT    NOT NULL,
    decky       TEXT    NOT NULL,
    service     TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    attacker_ip TEXT    NOT NULL,
    fields      TEXT    NOT NULL,   -- JSON object
    trace_id    TEXT,
    span_id     TEXT
);
-- The API pages by id, per attacker by (attacker_ip, id), and by time.
CREATE INDEX logs_attacker_id ON logs (attacker_ip, id);
CREATE INDEX logs_ts ON logs (ts);

-- One row per distinct artifact per attacker.
CREATE TABLE bounties (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    attacker_ip TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    first_seen  TEXT    NOT NULL,
    last_seen   TEXT    NOT NULL,
    count       INTEGER NOT NULL DEFAULT 1,
    first_log_id INTEGER,
    UNIQUE (attacker_ip, kind, value)
);

-- Journal lines that could not be ingested, kept with the reason and where they were.
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT    NOT NULL,
    file        TEXT    NOT NULL,
    byte_offset INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    raw         TEXT    NOT NULL    -- capped
);

-- Cursors and other small state: key -> JSON.
CREATE TABLE state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
