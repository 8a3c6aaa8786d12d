//! The span exporter's counters: how many spans went out, and how many were lost and why.

use std::sync::atomic::AtomicU64;

/// Span exporter counters (all zero while tracing is off).
#[derive(Debug, Default)]
pub struct TraceCounters {
    /// Spans the collector acknowledged.
    pub exported: AtomicU64,
    /// Spans dropped because the export queue was full (collector slow or away).
    pub dropped_queue_full: AtomicU64,
    /// Spans lost to the collector: in export calls that failed (unreachable, timeout,
    /// refusal), or dropped unsent while it counted as down after a failure.
    pub export_failed: AtomicU64,
}

pub static COUNTERS: TraceCounters = TraceCounters {
    exported: AtomicU64::new(0),
    dropped_queue_full: AtomicU64::new(0),
    export_failed: AtomicU64::new(0),
};

#[derive(Clone, Copy, Debug, Default, serde::Serialize, PartialEq, Eq)]
pub struct TraceSnapshot {
    pub exported: u64,
    pub dropped_queue_full: u64,
    pub export_failed: u64,
}
