//! One analyst per fleet: the profiler runs only in the process holding the store's
//! analyst lock (a PostgreSQL advisory lock); every other analyst stands by, queued on the
//! lock (re-queued each second, to notice a shutdown), and takes over when the holder dies. The cursor is in the database, so
//! a takeover carries on from the last committed profile batch; the profiler's commit is a
//! compare-and-set of that cursor, so even two profilers that both believe they hold the
//! lock (a holder cut off from the database before it noticed) never both commit a batch.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};

use super::{
    ProfileStats, Profiler,
    coordinator::{Coordinator, LAYOUT_KEY},
};
use crate::{
    hub::Hub,
    store::{Change, Shard, Store},
};

/// How long a standby waits on the lock per request, and how often the holder checks its
/// lock and looks for rows without a notification.
pub(crate) const TICK: Duration = Duration::from_secs(1);

/// Work that may run in only one process of a fleet at a time (the alert sinks): started
/// with a stop signal when this analyst takes the lock, stopped (and awaited) at shutdown,
/// aborted when the lock is lost.
pub type Companion = Arc<dyn Fn(watch::Receiver<bool>) -> Vec<JoinHandle<()>> + Send + Sync>;

/// What an analyst does while it holds one of the fleet's locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Duty {
    /// Profiles every source (the analyst lock, unsharded).
    Whole,
    /// Matches campaigns over every shard's sources (the analyst lock, sharded into N).
    Campaigns(u32),
    /// Profiles one shard's sources (that shard's lock).
    Shard(Shard),
}

impl Duty {
    fn name(self) -> String {
        match self {
            Duty::Whole => "analyst lock".into(),
            Duty::Campaigns(_) => "analyst lock (campaign pass)".into(),
            Duty::Shard(s) => format!("shard {s}"),
        }
    }
}

/// How long a process already holding K shards waits, per shard held, before it asks for
/// another free one: an analyst standing by with none asks at once and so takes it first.
/// A process holding several shards also hands one over when another analyst is queued
/// on its lock, so analysts started one after another share the shards.
const SHARE_WAIT: Duration = Duration::from_secs(3);

/// How long one lock request waits: under sqlx's 1 s slow-statement warning, which every
/// standby's request would raise otherwise.
const LOCK_WAIT: Duration = Duration::from_millis(900);

/// How holding a lock ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    Shutdown,
    Lost,
    /// A shard handed to an analyst queued on it (this process kept another).
    Yielded,
}

/// Stands by or profiles until `shutdown`. `hub`: where detections are announced (in a
/// fleet the API instances read them from the database: pass a hub nobody reads).
/// `shards` above 1: the profiles are split by source into that many shards, each
/// profiled by whichever analyst holds its lock, and the holder of the analyst lock runs
/// the campaign pass (`coordinator`) and the companions (PostgreSQL).
pub async fn run(
    store: Store,
    hub: Hub,
    stats: Arc<ProfileStats>,
    companion: Option<Companion>,
    shards: u32,
    shutdown: watch::Receiver<bool>,
) {
    let held = Arc::new(AtomicU64::new(0));
    let shards_held = Arc::new(AtomicU64::new(0));
    let go = |duty: Duty, companion: Option<Companion>| {
        let on = Holder {
            store: store.clone(),
            hub: hub.clone(),
            stats: stats.clone(),
            held: held.clone(),
            shards: shards_held.clone(),
            duty,
        };
        tokio::spawn(on.run(companion, shutdown.clone()))
    };
    if shards <= 1 {
        let _ = go(Duty::Whole, companion).await;
        return;
    }
    let mut tasks = vec![go(Duty::Campaigns(shards), companion)];
    for index in 0..shards {
        tasks.push(go(
            Duty::Shard(Shard {
                index,
                count: shards,
            }),
            None,
        ));
    }
    for t in tasks {
        if let Err(e) = t.await {
            tracing::error!(error = %e, "analyst task panicked");
        }
    }
}

/// One duty of this analyst, and what all of them share.
struct Holder {
    store: Store,
    hub: Hub,
    stats: Arc<ProfileStats>,
    /// Locks this process holds.
    held: Arc<AtomicU64>,
    /// Shard locks of those.
    shards: Arc<AtomicU64>,
    duty: Duty,
}

impl Holder {
    async fn run(self, companion: Option<Companion>, mut shutdown: watch::Receiver<bool>) {
        let mut standby_said = false;
        loop {
            if let Duty::Shard(s) = self.duty {
                // A process holding shards lets those with none take a free one first.
                let mine = self.shards.load(Relaxed);
                if mine > 0 && wait(SHARE_WAIT * mine as u32, &mut shutdown).await {
                    return;
                }
                // Not before the campaign pass has laid the profiles out in these shards
                // (it takes over from an unsharded analyst only once that one is gone).
                match self.store.get_state_json::<u32>(LAYOUT_KEY).await {
                    Ok(Some(n)) if n == s.count => {}
                    Ok(_) | Err(_) => {
                        if wait(TICK / 4, &mut shutdown).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            // Waiting inside the lock request: granted the moment the holder's session ends.
            let lock = match self.duty {
                Duty::Shard(s) => self.store.shard_lock(s, LOCK_WAIT).await,
                Duty::Whole | Duty::Campaigns(_) => self.store.analyst_lock(LOCK_WAIT).await,
            };
            let lock = match lock {
                Ok(Some(lock)) => lock,
                Ok(None) => {
                    if !standby_said {
                        tracing::info!(duty = %self.duty.name(), "another analyst holds the lock: standing by");
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
            if let Err(why) = self.layout().await {
                // Two layouts at once would fold rows twice: this analyst stays out.
                tracing::error!(duty = %self.duty.name(), "{why}");
                return;
            }
            self.stats.takeovers.fetch_add(1, Relaxed);
            self.held.fetch_add(1, Relaxed);
            if matches!(self.duty, Duty::Shard(_)) {
                self.shards.fetch_add(1, Relaxed);
            }
            self.stats.active.store(true, Relaxed);
            tracing::info!(
                duty = %self.duty.name(),
                cursor = self.stats.cursor.load(Relaxed),
                "analyst lock taken: profiling"
            );
            let ended = self.hold(companion.as_ref(), lock, &mut shutdown).await;
            if self.held.fetch_sub(1, Relaxed) == 1 {
                self.stats.active.store(false, Relaxed);
            }
            // A yielded shard was taken off the count when it was given up.
            if matches!(self.duty, Duty::Shard(_)) && ended != Ended::Yielded {
                self.shards.fetch_sub(1, Relaxed);
            }
            match ended {
                Ended::Shutdown => return,
                Ended::Lost => {
                    tracing::warn!(duty = %self.duty.name(), "analyst lock lost: standing by")
                }
                Ended::Yielded => tracing::info!(
                    duty = %self.duty.name(),
                    "another analyst is queued for this shard: handed over"
                ),
            }
        }
    }

    /// Checks, under the lock, that the profiles are laid out as this duty needs; the
    /// campaign pass of N shards lays them out so when they were unsharded (whose analyst
    /// holds this same lock, so is gone). Err: why this analyst must not run.
    async fn layout(&self) -> Result<(), String> {
        let now = self
            .store
            .get_state_json::<u32>(LAYOUT_KEY)
            .await
            .map_err(|e| format!("reading the profile layout: {e}"))?
            .unwrap_or(1);
        let want = match self.duty {
            Duty::Whole => 1,
            Duty::Campaigns(n) => n,
            Duty::Shard(s) => s.count,
        };
        if now == want {
            return Ok(());
        }
        if now == 1
            && let Duty::Campaigns(n) = self.duty
        {
            tracing::info!(shards = n, "profiles laid out in shards from here on");
            return self
                .store
                .set_state(LAYOUT_KEY, &n.to_string())
                .await
                .map_err(|e| format!("recording the profile layout: {e}"));
        }
        Err(format!(
            "the fleet's profiles are laid out in {now} analyst shard(s) (state key \
             `{LAYOUT_KEY}`), this analyst is configured for {want} (analyst_shards): it \
             does not profile. Start every analyst with analyst_shards = {now}."
        ))
    }

    /// Whether to hand this duty's shard to an analyst queued on its lock: only while this
    /// process holds another shard (it is then taken off the count, so two of its shards
    /// never both go).
    async fn give_up_shard(&self) -> bool {
        let Duty::Shard(s) = self.duty else {
            return false;
        };
        if self.shards.load(Relaxed) < 2 || !self.store.shard_wanted(s).await.unwrap_or(false) {
            return false;
        }
        self.shards
            .fetch_update(Relaxed, Relaxed, |n| (n > 1).then(|| n - 1))
            .is_ok()
    }

    /// Profiles while the lock is held, until shutdown, the lock is lost, or the shard is
    /// handed over.
    async fn hold(
        &self,
        companion: Option<&Companion>,
        mut lock: crate::store::AnalystLock,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Ended {
        let (store, hub, stats) = (&self.store, &self.hub, &self.stats);
        let (wake, woken) = watch::channel(0u64);
        let (stop, stop_rx) = watch::channel(false);
        let mut task = match self.duty {
            Duty::Campaigns(n) => {
                tokio::spawn(Coordinator::new(store.clone(), n).run(woken, stop_rx))
            }
            Duty::Whole | Duty::Shard(_) => {
                let mut profiler =
                    Profiler::with_hub(store.clone(), hub.clone()).with_stats(stats.clone());
                if let Duty::Shard(s) = self.duty {
                    profiler = profiler.with_shard(s);
                }
                tokio::spawn(profiler.run(woken, stop_rx))
            }
        };
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
        let ended = loop {
            tokio::select! {
                r = async {
                    match changes.as_mut() {
                        Some(c) => c.next().await,
                        None => std::future::pending().await,
                    }
                } => match r {
                    Ok(Change::Logs) => { wake.send_modify(|v| *v += 1); }
                    Ok(Change::Campaigns) => { wake.send_modify(|v| *v += 1); }
                    Ok(Change::Detections) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN lost: profiling on a 1 s timer");
                        changes = None;
                    }
                },
                _ = ticks.tick() => {
                    if !lock.held().await {
                        break Ended::Lost;
                    }
                    if self.give_up_shard().await {
                        break Ended::Yielded;
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
                    break Ended::Lost;
                }
                _ = stopped(shutdown) => break Ended::Shutdown,
            }
        };
        if ended == Ended::Lost {
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
            // Shut down or handed over: the profiler's last batch is committed first, and the
            // companions stop after it, so they see its detections.
            let _ = stop_companion.send(true);
            for c in companions {
                let _ = c.await;
            }
        }
        // Dropping the lock closes its session: the next analyst may take over.
        drop(lock);
        ended
    }
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
