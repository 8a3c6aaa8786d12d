//! `decnet run`: wires the stages together and owns the shutdown order.
//!
//! Each running stage is a handle with a `spawn` and a `stop`:
//! - `prepare`: the privileged start (data dir, token, programs loaded and attached);
//! - `capture`: ring reader -> journal writer -> ingester, and the interface watch;
//! - `analysis`: the profiler and the alert sinks;
//! - `serve`: the API and stream, and a fleet's relay;
//! - `lookups`: the known-scanner and allow lists and GeoIP databases, and their reload on
//!   SIGHUP;
//! - `stop`: the stages of an orderly stop, for the timeout's message.
//!
//! Start: data dir -> load + fill decoys -> attach -> store -> capture -> analysis -> serve.
//! Stop: detach (no new events) -> the reader drains the ring -> the writer flushes and
//! fsyncs -> the ingester commits the rest -> the profiler absorbs it -> the sinks deliver
//! what it raised -> the streams end ->
//! final counters logged. That order is what makes "kernel emitted == journal written +
//! counted drops" hold at exit.
//!
//! Stage 13 (daemon) of the pipeline: docs/architecture.md.

mod analysis;
mod capture;
mod error;
mod lookups;
mod prepare;
mod serve;
mod stop;

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

pub use error::DaemonError;
pub use prepare::{Prepared, prepare};

use self::{
    analysis::Analysis,
    capture::Capture,
    serve::{Serving, Shown},
    stop::Progress,
};
use crate::{
    alert::AlertStats,
    config::RunConfig,
    hub::Hub,
    profile::ProfileStats,
    stats::PipelineStats,
    store::{Backend, Store},
};

/// Runs until `shutdown` becomes true: the parts of decnet `cfg.role` names, over the
/// store `cfg.store`.
pub async fn run(
    cfg: RunConfig,
    prepared: Prepared,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    let Prepared { auth, tls, sensor } = prepared;
    lookups::spawn_reload(&cfg, shutdown.clone());
    let store = Store::connect(&cfg.store)
        .await
        .map_err(|e| DaemonError::Store(cfg.store_display(), e))?;
    // In a fleet, other processes commit too: streams and the analyst learn of new rows
    // from the database (relay, LISTEN), not from this process's ingester.
    let fleet = store.backend() == Backend::Postgres;
    tracing::info!(role = %cfg.role, store = %cfg.store_display(), "store open");
    let checkpoints = tokio::spawn(store.clone().checkpoint_loop(Duration::from_millis(500)));
    let hub = Hub::default();
    // A pinned sensor's counters continue from the daemon before it.
    let taken = sensor
        .as_ref()
        .and_then(|s| s.pinned.as_ref())
        .and_then(|p| p.taken.as_ref());
    let pipeline = Arc::new(
        taken
            .map(|h| PipelineStats::restore(&h.pipeline))
            .unwrap_or_default(),
    );
    let mut capture = match sensor {
        Some(p) => Some(Capture::spawn(
            &cfg,
            p,
            &store,
            (!fleet).then(|| hub.clone()),
            &pipeline,
            &shutdown,
        )?),
        None => None,
    };
    let profile_stats = Arc::new(ProfileStats::default());
    let committed = capture.as_ref().map(|c| c.committed.clone());
    let alert_stats = Arc::new(AlertStats::new(&cfg.alerts));
    let retain_stats = Arc::new(crate::retain::RetainStats::default());
    let beside = analysis::Beside {
        alerts: &alert_stats,
        retain: &retain_stats,
    };
    let analysis = Analysis::spawn(&cfg, &store, &hub, fleet, committed, &profile_stats, beside);
    let shown = Shown {
        capture: capture.as_ref(),
        pipeline: &pipeline,
        profile_stats: &profile_stats,
        alert_stats: &alert_stats,
        retain_stats: &retain_stats,
    };
    let front = auth.map(|auth| serve::Front { auth, tls });
    let serving = Serving::spawn(&cfg, front, &store, &hub, fleet, shown, &shutdown).await?;

    let _ = shutdown.wait_for(|v| *v).await;
    let progress = Progress::begin();
    let graceful = async {
        if let Some(c) = capture.as_mut() {
            c.stop(&cfg, &pipeline, &progress).await;
        }
        analysis.stop(&progress).await;
        serving.stop(&progress).await;
    };
    if tokio::time::timeout(cfg.shutdown_timeout, graceful)
        .await
        .is_err()
    {
        // Nothing is lost by stopping here: the journal is append-only and the ingester and
        // profiler resume from cursors committed with their rows.
        tracing::warn!(
            timeout_s = cfg.shutdown_timeout.as_secs(),
            stage = progress.stage().as_str(),
            "shutdown took too long; exiting (the next start resumes from the cursors)"
        );
    }
    checkpoints.abort();
    match capture {
        Some(c) => c.log_stopped(&pipeline, &progress)?,
        None => tracing::info!(shutdown_ms = progress.elapsed_ms(), "stopped"),
    }
    Ok(())
}
