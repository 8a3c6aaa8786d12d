//! The analyst stage of a running daemon: the profiler, fed by this process's ingester (one
//! SQLite process) or elected among a fleet's analysts (PostgreSQL), and the alert sinks
//! that follow its detections.

use std::sync::{Arc, atomic::Ordering::Relaxed};

use tokio::{sync::watch, task::JoinHandle};

use super::stop::{Progress, Stage};
use crate::{
    alert::{self, AlertStats},
    config::RunConfig,
    hub::Hub,
    profile::{ProfileStats, Profiler, analyst},
    store::Store,
};

/// The running profiler and alert sinks (roles with the analyst), or nothing.
pub(super) struct Analysis {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    /// One process's sinks (SQLite); a fleet's run inside the analyst, under its lock.
    stop_sinks: watch::Sender<bool>,
    sinks: Vec<JoinHandle<()>>,
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
        alert_stats: &Arc<AlertStats>,
    ) -> Self {
        let (stop, rx) = watch::channel(false);
        let (stop_sinks, sinks_rx) = watch::channel(false);
        let mut sinks = Vec::new();
        let task = if !cfg.role.analyst() {
            None
        } else if fleet {
            // Only the analyst holding the lock delivers alerts: two would send each twice.
            let companion: Option<analyst::Companion> = (!cfg.alerts.sinks.is_empty()).then(|| {
                let (plan, store, stats) = (cfg.alerts.clone(), store.clone(), alert_stats.clone());
                let c: analyst::Companion =
                    Arc::new(move |stop| alert::spawn(&plan, &store, None, &stats, stop));
                c
            });
            // Detections reach the streams through the database (relay), like rows.
            Some(tokio::spawn(analyst::run(
                store.clone(),
                Hub::default(),
                stats.clone(),
                companion,
                rx,
            )))
        } else {
            sinks = alert::spawn(&cfg.alerts, store, Some(hub), alert_stats, sinks_rx);
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
