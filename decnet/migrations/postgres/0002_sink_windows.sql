-- Alert sinks: per sink, rule and source, the re-arm window (when the source last alerted,
-- and what was folded since). Committed with the sink's cursor (`state` key
-- `sink:NAME:cursor`), so a restarted sink decides exactly as it would have.
CREATE TABLE sink_windows (
    sink           TEXT   NOT NULL,
    rule           TEXT   NOT NULL,
    ip             TEXT   NOT NULL,
    last_alert_ns  BIGINT NOT NULL,
    folded         BIGINT NOT NULL,
    folded_changes TEXT   NOT NULL,  -- JSON array of change kinds
    PRIMARY KEY (sink, rule, ip)
);
