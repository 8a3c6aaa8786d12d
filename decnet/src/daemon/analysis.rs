//! The analyst stage of a running daemon: the profiler, fed by this process's ingester (one
//! SQLite process) or elected among a fleet's analysts (PostgreSQL), and the alert sinks
//! that follow its detections, and retention (`retain`), which must know how far they
//! have read.

use std::sync::{Arc, atomic::Ordering::Relaxed};

use tokio::{sync::watch, task::JoinHandle};

use super::stop::{Progress, Stage};
use crate::{
    alert::{self, AlertStats},
    config::RunConfig,
    hub::Hub,
    profile::{ProfileStats, Profiler, analyst},
    retain::{RetainStats, Retention},
    store::Store,
};

/// The running profiler, alert sinks and retention (roles with the analyst), or nothing.
pub(super) struct Analysis {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    /// One process's sinks and retention (SQLite); a fleet's run inside the analyst, under
    /// its lock.
    stop_sinks: watch::Sender<bool>,
    sinks: Vec<JoinHandle<()>>,
}

/// The stats of what runs beside the profiler.
pub(super) struct Beside<'a> {
    pub(super) alerts: &'a Arc<AlertStats>,
    pub(super) retain: &'a Arc<RetainStats>,
}

/// Starts retention (unless its policy keeps everything), bounded by `cfg`'s sinks.
fn retention(
    cfg: &RunConfig,
    store: &Store,
    stats: &Arc<RetainStats>,
    stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    if cfg.retention.is_off() {
        return None;
    }
    let r = Retention {
        store: store.clone(),
        policy: cfg.retention,
        sinks: cfg.alerts.sinks.iter().map(|s| s.name.clone()).collect(),
        stats: stats.clone(),
    };
    Some(tokio::spawn(r.run(stop)))
}

impl Analysis {
    /// Starts the profiler when `cfg.role` has the analyst. `committed` wakes it on every
    /// ingest commit of this process (None: no ingester here).
    pub(super) fn spawn(
        cfg: &RunConfig,
        store: &Store,
        hub: &Hub,
        fleet: bool,
        committed: Option<watch::Receiver<u64>>,
        stats: &Arc<ProfileStats>,
        beside: Beside<'_>,
    ) -> Self {
        let alert_stats = beside.alerts;
        let (stop, rx) = watch::channel(false);
        let (stop_sinks, sinks_rx) = watch::channel(false);
        let mut sinks = Vec::new();
        let task = if !cfg.role.analyst() {
            None
        } else if fleet {
            // Only the analyst holding the lock delivers alerts (two would send each twice)
            // and prunes.
            let busy = !cfg.alerts.sinks.is_empty() || !cfg.retention.is_off();
            let companion: Option<analyst::Companion> = busy.then(|| {
                let (cfg, store, stats) = (cfg.clone(), store.clone(), alert_stats.clone());
                let retain = beside.retain.clone();
                let c: analyst::Companion = Arc::new(move |stop| {
                    let mut tasks = alert::spawn(&cfg.alerts, &store, None, &stats, stop.clone());
                    tasks.extend(retention(&cfg, &store, &retain, stop));
                    tasks
                });
                c
            });
            // Detections reach the streams through the database (relay), like rows.
            Some(tokio::spawn(analyst::run(
                store.clone(),
                Hub::default(),
                stats.clone(),
                companion,
                cfg.analyst_shards,
                rx,
            )))
        } else {
            sinks = alert::spawn(&cfg.alerts, store, Some(hub), alert_stats, sinks_rx.clone());
            sinks.extend(retention(cfg, store, beside.retain, sinks_rx));
            stats.active.store(true, Relaxed);
            // One process does everything (SQLite: `--role all`): the ingester's commits
            // wake it.
            let wake = committed.unwrap_or_else(|| watch::channel(0u64).1);
            let profiler = Profiler::with_hub(store.clone(), hub.clone())
                .with_stats(stats.clone())
                .with_feed(hub);
            Some(tokio::spawn(async move {
                if let Err(e) = profiler.run(wake, rx).await {
                    tracing::error!(error = %e, "profiler failed");
                }
            }))
        };
        Self {
            stop,
            task,
            stop_sinks,
            sinks,
        }
    }

    /// Lets the profiles take in the last committed rows, then the sinks deliver what they
    /// raised, then stops.
    pub(super) async fn stop(self, progress: &Progress) {
        progress.set(Stage::UpdatingProfiles);
        let _ = self.stop.send(true);
        if let Some(t) = self.task
            && let Err(e) = t.await
        {
            tracing::error!(error = %e, "profiler task panicked");
        }
        progress.set(Stage::DeliveringAlerts);
        let _ = self.stop_sinks.send(true);
        for s in self.sinks {
            if let Err(e) = s.await {
                tracing::error!(error = %e, "alert sink task panicked");
            }
        }
    }
}
