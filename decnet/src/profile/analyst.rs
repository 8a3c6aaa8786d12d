//! One analyst per fleet: the profiler runs only in the process holding the store's
//! analyst lock (a PostgreSQL advisory lock); every other analyst stands by, queued on the
//! lock (re-queued each second, to notice a shutdown), and takes over when the holder dies. The cursor is in the database, so
//! a takeover carries on from the last committed profile batch; the profiler's commit is a
//! compare-and-set of that cursor, so even two profilers that both believe they hold the
//! lock (a holder cut off from the database before it noticed) never both commit a batch.

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};

use super::{ProfileStats, Profiler};
use crate::{
    hub::Hub,
    store::{Change, Store},
};

/// How long a standby waits on the lock per request, and how often the holder checks its
/// lock and looks for rows without a notification.
pub(crate) const TICK: Duration = Duration::from_secs(1);

/// Work that may run in only one process of a fleet at a time (the alert sinks): started
/// with a stop signal when this analyst takes the lock, stopped (and awaited) at shutdown,
/// aborted when the lock is lost.
pub type Companion = Arc<dyn Fn(watch::Receiver<bool>) -> Vec<JoinHandle<()>> + Send + Sync>;

/// Stands by or profiles until `shutdown`. `hub`: where detections are announced (in a
/// fleet the API instances read them from the database: pass a hub nobody reads).
pub async fn run(
    store: Store,
    hub: Hub,
    stats: Arc<ProfileStats>,
    companion: Option<Companion>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut standby_said = false;
    loop {
        // Waiting inside the lock request: granted the moment the holder's session ends.
        let lock = match store.analyst_lock(TICK).await {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                if !standby_said {
                    tracing::info!("another analyst holds the lock: standing by");
                    standby_said = true;
                }
                if *shutdown.borrow() {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "analyst lock: database unreachable; retrying");
                if wait(TICK, &mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        standby_said = false;
        stats.takeovers.fetch_add(1, Relaxed);
        stats.active.store(true, Relaxed);
        tracing::info!(
            cursor = stats.cursor.load(Relaxed),
            "analyst lock taken: profiling"
        );
        let stopped = hold(
            &store,
            &hub,
            &stats,
            companion.as_ref(),
            lock,
            &mut shutdown,
        )
        .await;
        stats.active.store(false, Relaxed);
        if stopped {
            return;
        }
        tracing::warn!("analyst lock lost: standing by");
    }
}

/// Profiles while the lock is held. True: shut down; false: the lock was lost.
async fn hold(
    store: &Store,
    hub: &Hub,
    stats: &Arc<ProfileStats>,
    companion: Option<&Companion>,
    mut lock: crate::store::AnalystLock,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let (wake, woken) = watch::channel(0u64);
    let (stop, stop_rx) = watch::channel(false);
    let profiler = Profiler::with_hub(store.clone(), hub.clone()).with_stats(stats.clone());
    let mut task = tokio::spawn(profiler.run(woken, stop_rx));
    let (stop_companion, companion_rx) = watch::channel(false);
    let companions = companion.map(|c| c(companion_rx)).unwrap_or_default();
    let mut changes = match store.changes().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "LISTEN failed: profiling on a 1 s timer");
            None
        }
    };
    let mut ticks = tokio::time::interval(TICK);
    let shut = loop {
        tokio::select! {
            r = async {
                match changes.as_mut() {
                    Some(c) => c.next().await,
                    None => std::future::pending().await,
                }
            } => match r {
                Ok(Change::Logs) => { wake.send_modify(|v| *v += 1); }
                Ok(Change::Detections) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN lost: profiling on a 1 s timer");
                    changes = None;
                }
            },
            _ = ticks.tick() => {
                if !lock.held().await {
                    break false;
                }
                wake.send_modify(|v| *v += 1);
            }
            r = &mut task => {
                // The profiler only returns on its own after an error it does not retry.
                match r {
                    Ok(Err(e)) => tracing::error!(error = %e, "profiler failed"),
                    Err(e) => tracing::error!(error = %e, "profiler task panicked"),
                    Ok(Ok(())) => {}
                }
                break false;
            }
            _ = stopped(shutdown) => break true,
        }
    };
    if !shut {
        // Lost: stop at once, without the final catch-up a shutdown does (the next holder
        // does it; the cursor compare-and-set would refuse it anyway).
        task.abort();
        for c in &companions {
            c.abort();
        }
    } else {
        if !task.is_finished() {
            let _ = stop.send(true);
            match (&mut task).await {
                Ok(Err(e)) => tracing::error!(error = %e, "profiler failed"),
                Err(e) => tracing::error!(error = %e, "profiler task panicked"),
                Ok(Ok(())) => {}
            }
        }
        // After the profiler's last batch, so the companions see its detections.
        let _ = stop_companion.send(true);
        for c in companions {
            let _ = c.await;
        }
    }
    // Dropping the lock closes its session: the next analyst may take over.
    drop(lock);
    shut
}

/// Sleeps `d`; true when `shutdown` came first.
async fn wait(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stopped(shutdown) => true,
    }
}

/// Resolves once `shutdown` is true (or its sender is gone); returns no guard, so a future
/// waiting on it stays `Send`.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|v| *v).await;
}
