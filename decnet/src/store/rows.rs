//! The rows the store writes and reads, as the stages hand them over.

use crate::{row::NewLog, telemetry::lite::LiteSpan};

/// A journal line that could not be ingested.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub file: String,
    pub byte_offset: u64,
    pub reason: String,
    pub raw: String,
}

/// An artifact extracted from a record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NewBounty {
    pub attacker_ip: String,
    pub kind: &'static str,
    pub value: String,
    pub ts: String,
}

/// Everything one ingest batch writes, committed in one transaction with the cursor.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub logs: Vec<NewLog>,
    /// Bounties as (index into `logs` that produced it, bounty).
    pub bounties: Vec<(usize, NewBounty)>,
    pub dead: Vec<DeadLetter>,
    /// The cursor written in the same transaction.
    pub cursor: Option<CursorUpdate>,
}

impl Batch {
    /// Stages a journal record for the batch's transaction; returns its index in `logs`.
    /// `span`: the record's developer-tracing span (`db.add_log` goes below it).
    pub fn add_log(&mut self, log: NewLog, span: &LiteSpan) -> usize {
        crate::telemetry::db_step(span, "db.add_log", || {
            self.logs.push(log);
            self.logs.len() - 1
        })
    }

    /// Stages a bounty found in `logs[log_idx]` (`db.add_bounty` below `span`).
    pub fn add_bounty(&mut self, log_idx: usize, bounty: NewBounty, span: &LiteSpan) {
        crate::telemetry::db_step(span, "db.add_bounty", || {
            self.bounties.push((log_idx, bounty))
        })
    }
}

/// A state cursor moving from `prev` (None: not stored yet) to `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorUpdate {
    pub key: String,
    pub prev: Option<String>,
    pub value: String,
}

/// One attacker's profile and streaming state, as the profiler writes them.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileRow {
    pub ip: String,
    pub first_seen: String,
    pub last_seen: String,
    pub event_count: i64,
    pub class: String,
    pub risk_score: i64,
    pub campaign_id: Option<i64>,
    pub campaign_key: Option<String>,
    /// The attackers-list row (JSON).
    pub summary: String,
    /// The serialized streaming state (the public profile is rendered from it on read).
    pub state: String,
}

/// A row of the attackers list: its stored summary, or (rows from before the summary
/// column) the state to render it from.
#[derive(Clone, Debug, PartialEq)]
pub struct AttackerRow {
    pub ip: String,
    pub summary: Option<String>,
    pub state: Option<String>,
}

/// A detection row (id allocated by the profiler, so it can publish it after the commit).
#[derive(Clone, Debug, PartialEq)]
pub struct DetectionRow {
    pub id: i64,
    pub ts: String,
    pub ip: String,
    pub body: String,
}

/// Everything one profiler commit writes, in one transaction, beside its profile rows
/// (which [`Store::commit_profiles`](super::Store::commit_profiles) takes as they are
/// rendered).
#[derive(Debug, Default)]
pub struct ProfileCommit {
    /// Campaigns created or changed: (id, summary JSON).
    pub campaigns: Vec<(i64, String)>,
    /// Campaigns merged into others.
    pub dropped_campaigns: Vec<i64>,
    pub detections: Vec<DetectionRow>,
    /// Extra `state` entries (the next campaign id), written as they are.
    pub state: Vec<(String, String)>,
    pub cursor: Option<CursorUpdate>,
}

/// An alert sink's re-arm window for one rule and source (see `alert::rule`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkWindow {
    pub rule: String,
    pub ip: String,
    pub last_alert_ns: i64,
    pub folded: i64,
    /// JSON array of change kinds.
    pub folded_changes: String,
}

/// What an alert sink saved with its cursor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SinkSaved {
    /// The last detection id it finished (None: a new sink).
    pub cursor: Option<i64>,
    pub windows: Vec<SinkWindow>,
    /// Open digests: (rule, JSON).
    pub digests: Vec<(String, String)>,
}

/// What one alert sink commits: its cursor (compare-and-set), the windows it changed, and
/// its open digests (None: closed).
#[derive(Clone, Debug, Default)]
pub struct SinkCommit {
    pub cursor: Option<CursorUpdate>,
    pub windows: Vec<SinkWindow>,
    pub digests: Vec<(String, Option<String>)>,
}
