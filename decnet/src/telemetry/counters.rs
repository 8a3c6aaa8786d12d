//! The span exporter's counters: how many spans went out, and how many were lost and why.

use std::sync::atomic::AtomicU64;

use crate::counters::{Kind, write_metric};

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

impl TraceSnapshot {
    /// The exporter's counters in the Prometheus text format.
    pub(crate) fn write_prometheus(&self, out: &mut String) {
        let all = [
            (
                "trace_spans_exported_total",
                "Developer-tracing spans the collector accepted.",
                self.exported,
            ),
            (
                "trace_spans_dropped_total",
                "Developer-tracing spans dropped because the export queue was full.",
                self.dropped_queue_full,
            ),
            (
                "trace_spans_export_failed_total",
                "Developer-tracing spans lost in failed exports (collector unreachable).",
                self.export_failed,
            ),
        ];
        for (name, help, v) in all {
            write_metric(out, name, help, Kind::Counter, v);
        }
    }
}
