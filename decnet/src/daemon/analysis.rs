//! The analyst stage of a running daemon: the profiler, fed by this process's ingester (one
//! SQLite process) or elected among a fleet's analysts (PostgreSQL).

use std::sync::{Arc, atomic::Ordering::Relaxed};

use tokio::{sync::watch, task::JoinHandle};

use super::stop::{Progress, Stage};
use crate::{
    config::RunConfig,
    hub::Hub,
    profile::{ProfileStats, Profiler, analyst},
    store::Store,
};

/// The running profiler (roles with the analyst), or nothing.
pub(super) struct Analysis {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
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
    ) -> Self {
        let (stop, rx) = watch::channel(false);
        let task = if !cfg.role.analyst() {
            None
        } else if fleet {
            // Detections reach the streams through the database (relay), like rows.
            Some(tokio::spawn(analyst::run(
                store.clone(),
                Hub::default(),
                stats.clone(),
                rx,
            )))
        } else {
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
        Self { stop, task }
    }

    /// Lets the profiles take in the last committed rows, then stops.
    pub(super) async fn stop(self, progress: &Progress) {
        progress.set(Stage::UpdatingProfiles);
        let _ = self.stop.send(true);
        if let Some(t) = self.task
            && let Err(e) = t.await
        {
            tracing::error!(error = %e, "profiler task panicked");
        }
    }
}
