//! Alerting: the `[[sink]]`s detections are delivered to (webhooks, syslog, files) and the
//! `[[alert]]` rules that choose them.
//!
//! - `spec`: the config tables, checked (names, targets, formats, secrets redacted);
//! - `rule`: which detections become alerts: conditions, re-arm windows, digests;
//! - `render`: the messages (decnet JSON, Slack, ECS, RFC 5424 syslog);
//! - `target`: where a sink delivers, parsed and redacted;
//! - `transport`: sending one message (HTTP, UDP/TCP/TLS syslog, a file);
//! - `worker`: one sink following the stored detections from its own cursor;
//! - `stats`: each sink's health for the API and `/metrics`.
//!
//! Each sink reads the detections table, never the profiler's memory: it can fall behind,
//! fail or restart without the profiler, ingest or capture noticing.
//!
//! Stage 8 (alert) of the pipeline: docs/architecture.md.

pub mod render;
pub mod rule;
pub mod spec;
pub mod stats;
pub mod target;
pub mod transport;
pub mod worker;

use std::sync::Arc;

use tokio::{sync::watch, task::JoinHandle};

pub use spec::{Plan, RuleFile, SinkFile, SpecError};
pub use stats::{AlertStats, SinkSnapshot};

use crate::{hub::Hub, store::Store};

/// Starts one worker per sink that some rule delivers to; they run until `stop`, then
/// make one last pass (see [`worker::Worker::run`]).
pub fn spawn(
    plan: &Plan,
    store: &Store,
    hub: Option<&Hub>,
    stats: &Arc<AlertStats>,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    plan.sinks
        .iter()
        .filter_map(|sink| {
            let rules = plan.rules_for(&sink.name);
            if rules.is_empty() {
                tracing::warn!(sink = %sink.name, "alert sink: no rule delivers to it; not started");
                return None;
            }
            let worker = worker::Worker {
                store: store.clone(),
                sink: sink.clone(),
                rules,
                stats: stats.sink(&sink.name)?.clone(),
                hub: hub.cloned(),
            };
            Some(tokio::spawn(worker.run(stop.clone())))
        })
        .collect()
}
