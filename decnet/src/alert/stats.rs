//! Each sink's health for the API (`/api/v1/health`, `/api/v1/stats`) and `/metrics`: what
//! it delivered, how far behind it is, and why it last failed.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed},
};

use serde::Serialize;

use super::spec::Plan;
use crate::counters::Kind;

/// One sink's counters.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub name: String,
    pub kind: &'static str,
    /// The target with its secrets redacted.
    pub target: String,
    /// Messages the receiver took.
    pub delivered: AtomicU64,
    /// Failed attempts (each retry that fails counts).
    pub failures: AtomicU64,
    /// Messages the receiver refused for good (HTTP 4xx), skipped after logging.
    pub rejected: AtomicU64,
    /// Detections skipped because the sink fell more than `max_backlog` behind.
    pub skipped: AtomicU64,
    /// Detections a re-arm window folded into a later alert.
    pub folded: AtomicU64,
    /// The last detection id the sink finished.
    pub cursor: AtomicI64,
    /// The newest detection id it has seen stored.
    pub head: AtomicI64,
    /// A message is failing and being retried.
    pub retrying: AtomicBool,
    /// The sink's worker runs in this process (in a fleet: only on the analyst that holds
    /// the lock).
    pub active: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    /// Unix ns of the last delivery (0: none yet).
    pub last_delivery_ns: AtomicI64,
}

/// A sink's state as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SinkSnapshot {
    pub name: String,
    pub kind: &'static str,
    pub target: String,
    /// `ok`, `retrying`, or `standby` (the worker runs elsewhere or not yet).
    pub state: &'static str,
    pub delivered: u64,
    pub failures: u64,
    pub rejected: u64,
    pub skipped: u64,
    pub folded: u64,
    pub cursor: i64,
    /// Detections stored but not yet finished by this sink.
    pub lag: i64,
    pub last_error: Option<String>,
    pub last_delivery: Option<String>,
}

impl SinkStats {
    pub fn snapshot(&self) -> SinkSnapshot {
        let cursor = self.cursor.load(Relaxed);
        let last = self.last_delivery_ns.load(Relaxed);
        SinkSnapshot {
            name: self.name.clone(),
            kind: self.kind,
            target: self.target.clone(),
            state: if !self.active.load(Relaxed) {
                "standby"
            } else if self.retrying.load(Relaxed) {
                "retrying"
            } else {
                "ok"
            },
            delivered: self.delivered.load(Relaxed),
            failures: self.failures.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            folded: self.folded.load(Relaxed),
            cursor,
            lag: (self.head.load(Relaxed) - cursor).max(0),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            last_delivery: (last != 0).then(|| crate::timefmt::rfc3339_ns(last)),
        }
    }

    pub(crate) fn fail(&self, why: &str) {
        self.failures.fetch_add(1, Relaxed);
        self.retrying.store(true, Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_owned());
    }
}

/// One labelled metric: name, help, kind, and its value in a sink's snapshot.
type Series = (&'static str, &'static str, Kind, fn(&SinkSnapshot) -> i64);

/// Every sink of the configuration.
#[derive(Debug, Default)]
pub struct AlertStats {
    pub sinks: Vec<Arc<SinkStats>>,
}

impl AlertStats {
    pub fn new(plan: &Plan) -> Self {
        Self {
            sinks: plan
                .sinks
                .iter()
                .map(|s| {
                    Arc::new(SinkStats {
                        name: s.name.clone(),
                        kind: s.kind(),
                        target: s.display_target(),
                        ..SinkStats::default()
                    })
                })
                .collect(),
        }
    }

    pub fn sink(&self, name: &str) -> Option<&Arc<SinkStats>> {
        self.sinks.iter().find(|s| s.name == name)
    }

    pub fn snapshot(&self) -> Vec<SinkSnapshot> {
        self.sinks.iter().map(|s| s.snapshot()).collect()
    }

    /// `decnet_sink_*{sink="NAME"}` for every sink.
    pub fn write_prometheus(&self, out: &mut String) {
        if self.sinks.is_empty() {
            return;
        }
        let snaps = self.snapshot();
        let series: [Series; 8] = [
            (
                "sink_delivered_total",
                "Alert messages the sink's receiver took.",
                Kind::Counter,
                |s| s.delivered as i64,
            ),
            (
                "sink_failures_total",
                "Failed delivery attempts (each failed retry counts).",
                Kind::Counter,
                |s| s.failures as i64,
            ),
            (
                "sink_rejected_total",
                "Messages the receiver refused for good (skipped).",
                Kind::Counter,
                |s| s.rejected as i64,
            ),
            (
                "sink_skipped_total",
                "Detections skipped because the sink fell more than max_backlog behind.",
                Kind::Counter,
                |s| s.skipped as i64,
            ),
            (
                "sink_folded_total",
                "Detections folded into a later alert by a re-arm window.",
                Kind::Counter,
                |s| s.folded as i64,
            ),
            (
                "sink_lag_detections",
                "Detections stored but not yet finished by the sink.",
                Kind::Gauge,
                |s| s.lag,
            ),
            (
                "sink_retrying",
                "1 while a message is failing and being retried.",
                Kind::Gauge,
                |s| i64::from(s.state == "retrying"),
            ),
            (
                "sink_active",
                "1 where the sink's worker runs (a fleet's analyst holding the lock).",
                Kind::Gauge,
                |s| i64::from(s.state != "standby"),
            ),
        ];
        for (name, help, kind, value) in series {
            let kind = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            out.push_str(&format!(
                "# HELP decnet_{name} {help}\n# TYPE decnet_{name} {kind}\n"
            ));
            for s in &snaps {
                // Sink names are A-Z a-z 0-9 . _ - (spec::check_name): no label escaping.
                out.push_str(&format!(
                    "decnet_{name}{{sink=\"{}\"}} {}\n",
                    s.name,
                    value(s)
                ));
            }
        }
    }
}
