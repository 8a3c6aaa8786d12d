//! The in-process hub: what the daemon's stages announce to live subscribers (the SSE
//! stream). One broadcast channel carries committed log batches and detections in the
//! order they were committed; a slow subscriber lags (and resumes from the database)
//! instead of holding anything up, and publishing with no subscriber costs one atomic load.
//!
//! Stage 5 (live) of the pipeline: docs/architecture.md.

use std::sync::{Arc, OnceLock};

use tokio::sync::broadcast;

use crate::{
    row::{Facts, NewLog},
    store::DetectionRow,
};

/// Messages a subscriber may fall behind by before it is told it lagged.
pub(crate) const CAPACITY: usize = 1024;

/// Rows of one committed ingest batch; ids are consecutive from `first_id`.
pub struct LogBatch {
    pub first_id: i64,
    pub logs: Vec<NewLog>,
    /// Each row's parsed fields when the ingester announced them (same length as `logs`),
    /// else empty.
    pub facts: Vec<Facts>,
    /// Each row as the stream's JSON, rendered once for all subscribers.
    json: OnceLock<Vec<Arc<str>>>,
}

impl LogBatch {
    pub fn new(first_id: i64, logs: Vec<NewLog>) -> Self {
        Self::parsed(first_id, logs, Vec::new())
    }

    /// A batch with each row's parsed fields (ignored unless there is one per row).
    pub fn parsed(first_id: i64, logs: Vec<NewLog>, mut facts: Vec<Facts>) -> Self {
        if facts.len() != logs.len() {
            facts.clear();
        }
        Self {
            first_id,
            logs,
            facts,
            json: OnceLock::new(),
        }
    }

    /// Row `i`'s parsed fields, when announced.
    pub fn facts(&self, i: usize) -> Option<&Facts> {
        self.facts.get(i)
    }

    pub fn json(&self) -> &[Arc<str>] {
        self.json.get_or_init(|| {
            self.logs
                .iter()
                .enumerate()
                .map(|(i, l)| log_json(self.first_id + i as i64, l).into())
                .collect()
        })
    }
}

/// A log row as the API and the stream show it: the record with its id, `fields` as an
/// object.
pub(crate) fn log_json(id: i64, l: &NewLog) -> String {
    #[derive(serde::Serialize)]
    struct Row<'a> {
        id: i64,
        ts: &'a str,
        decky: &'a str,
        service: &'a str,
        event_type: &'a str,
        attacker_ip: &'a str,
        fields: &'a serde_json::value::RawValue,
        trace_id: Option<&'a str>,
        span_id: Option<&'a str>,
        sensor: &'a str,
    }
    let empty = serde_json::value::RawValue::from_string("{}".into()).ok();
    let parsed: Option<&serde_json::value::RawValue> = serde_json::from_str(&l.fields).ok();
    let Some(fields) = parsed.or(empty.as_deref()) else {
        return "{}".into();
    };
    serde_json::to_string(&Row {
        id,
        ts: &l.ts,
        decky: &l.decky,
        service: &l.service,
        event_type: &l.event_type,
        attacker_ip: &l.attacker_ip,
        fields,
        trace_id: l.trace_id.as_deref(),
        span_id: l.span_id.as_deref(),
        sensor: &l.sensor,
    })
    .unwrap_or_else(|_| "{}".into())
}

#[derive(Clone)]
pub enum HubMsg {
    Logs(Arc<LogBatch>),
    /// One profiler commit's detections (or one page a relay read), in id order: one
    /// message, not one per detection. A commit in a burst holds thousands, and one message
    /// each overran the channel's 1,024 slots at once: every live stream was reset ("client
    /// too slow") and every alert sink fell back to reading the database.
    Detections(Arc<[DetectionRow]>),
    /// The daemon is stopping; everything committed has been announced before this.
    Shutdown,
    /// The API token was rotated: streams opened with the old one end.
    TokenRotated,
}

#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<HubMsg>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Hub {
    /// Announces committed detections (in id order), as one message.
    pub fn detections(&self, ds: Vec<DetectionRow>) {
        if !ds.is_empty() && self.tx.receiver_count() > 0 {
            let _ = self.tx.send(HubMsg::Detections(ds.into()));
        }
    }

    /// Announces committed log rows (ids `first_id..`); `logs` is only built when someone
    /// listens.
    pub fn logs(&self, first_id: i64, logs: impl FnOnce() -> Vec<NewLog>) {
        self.logs_parsed(first_id, || (logs(), Vec::new()));
    }

    /// [`logs`](Self::logs) with each row's parsed fields, for the profiler.
    pub fn logs_parsed(&self, first_id: i64, logs: impl FnOnce() -> (Vec<NewLog>, Vec<Facts>)) {
        if self.tx.receiver_count() > 0 {
            let (logs, facts) = logs();
            let _ = self.tx.send(HubMsg::Logs(Arc::new(LogBatch::parsed(
                first_id, logs, facts,
            ))));
        }
    }

    /// Tells every subscriber the daemon is stopping (the stream ends with a final event).
    pub fn shutdown(&self) {
        let _ = self.tx.send(HubMsg::Shutdown);
    }

    pub fn token_rotated(&self) {
        let _ = self.tx.send(HubMsg::TokenRotated);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<HubMsg> {
        self.tx.subscribe()
    }

    pub(crate) fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}
