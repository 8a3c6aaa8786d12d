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
    /// Bounties counted in this transaction, as (index into `logs` that produced it,
    /// bounty).
    pub bounties: Vec<(usize, NewBounty)>,
    /// Bounties the ingester counts later (in a [`Tally`]): rows not stored yet are created
    /// with a count of 0, and existing ones are left alone.
    pub new_bounties: Vec<(usize, NewBounty)>,
    /// Counts gathered since the last tally, written with their own cursor.
    pub tally: Option<Tally>,
    pub dead: Vec<DeadLetter>,
    /// The cursor written in the same transaction.
    pub cursor: Option<CursorUpdate>,
}

/// One artifact's count since the last tally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BountyCount {
    pub first_seen: String,
    pub last_seen: String,
    pub count: i64,
}

/// Bounty counts of every log of one sensor after the last tally, through `through` (None:
/// this batch's last log), added to the stored counts with the tally's cursor (`key`
/// becomes that id), so that a restart recounts exactly the logs after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub key: String,
    pub through: Option<i64>,
    /// (attacker, kind, value) -> count, in the order first seen.
    pub counts: Vec<((String, &'static str, String), BountyCount)>,
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

/// A batch's bounties, one per distinct (attacker, kind, value), in the order first seen
/// (so ids follow the journal): (first position, index of its log, first ts, last ts,
/// count).
#[allow(clippy::type_complexity)]
pub(super) fn aggregate_bounties(
    bounties: &[(usize, NewBounty)],
) -> Vec<((&str, &str, &str), (usize, usize, &str, &str, i64))> {
    let mut agg: std::collections::HashMap<(&str, &str, &str), (usize, usize, &str, &str, i64)> =
        std::collections::HashMap::new();
    for (seq, (idx, b)) in bounties.iter().enumerate() {
        agg.entry((b.attacker_ip.as_str(), b.kind, b.value.as_str()))
            .and_modify(|e| {
                e.3 = b.ts.as_str();
                e.4 += 1;
            })
            .or_insert((seq, *idx, b.ts.as_str(), b.ts.as_str(), 1));
    }
    let mut agg: Vec<_> = agg.into_iter().collect();
    agg.sort_by_key(|(_, v)| v.0);
    agg
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
    /// What campaign matching reads of the state (sharded analysts; see `profile::campaign`).
    pub match_facts: Option<String>,
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
    /// Sharded analysts' campaign pass: sources put in campaigns, (ip, campaign id), for
    /// their shards to apply (PostgreSQL `campaign_moves`).
    pub moves: Vec<(String, i64)>,
    /// Moves up to this `seq` every shard has applied: deleted.
    pub moves_applied: Option<i64>,
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
