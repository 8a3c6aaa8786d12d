//! The incremental profiler: reads `logs` after its cursor in batches of 2,000, folds each
//! row into its IP's streaming state and matches campaigns. It writes behind: the sources
//! that changed, with campaigns, detections and the cursor, go in one transaction at the
//! end of each pass over the backlog, and every second while a long backlog lasts, so a
//! busy source's rows between two commits cost one write. A commit is written in the
//! background while the next batches fold; the next commit waits for it. Woken by the
//! ingester after each commit (50 ms debounce); there is no timer and no separate
//! cold-start path: an empty cursor is id 0.
//!
//! In memory it keeps the campaign index (a small summary per source with a campaign key),
//! the campaigns and the states it profiled lately (bounded). All of it is rebuilt from the
//! database on start and after any failed commit, so what survives a restart, or a crash
//! between two commits, is exactly what was committed: the rows after the committed
//! cursor are folded again, once.
//!
//! In one process (SQLite) the rows themselves come from the ingester's commits through
//! the hub ([`Feed`]), so they are not read back and decoded again; the database is read
//! only for what the feed does not hold (rows before it, or a gap after it lagged).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tracing::Instrument as _;

use super::{
    campaign,
    detection::detection,
    intake::{Feed, Parsed, ReadAhead, Row},
    matcher::CAMPAIGN_ID_KEY,
    memory::{Memory, Work},
};
use crate::{
    counters::{Kind, write_metric},
    hub::Hub,
    store::{CursorUpdate, DetectionRow, ProfileCommit, ProfileRow, Shard, Store, StoreError},
    timefmt,
};

pub(crate) const PROFILE_CURSOR_KEY: &str = "attacker_worker_cursor";
/// Rows per profiler batch. Each batch also costs a cursor read, a load of its sources'
/// states and one transaction; under a flood a drain's rows (a few hundred to a few
/// thousand) then go through in one batch instead of several.
pub(crate) const BATCH: i64 = 2000;
const DEBOUNCE: Duration = Duration::from_millis(50);

pub struct Profiler {
    store: Store,
    hub: Hub,
    mem: Option<Memory>,
    stats: Arc<ProfileStats>,
    feed: Option<Feed>,
    /// A commit still being written when its pass failed: the next pass waits for it to
    /// end before it reads the cursor, so it resumes from what is really committed.
    writing: Option<Writing>,
    /// Profiles only this shard's sources, and takes their campaigns from the campaign
    /// pass (`coordinator`) instead of matching them (None: every source).
    shard: Option<Shard>,
}

/// A commit handed to the store: it is written while the next batches fold, and the
/// profiler waits for it before the next commit (whose cursor update expects its value).
struct Writing {
    task: tokio::task::JoinHandle<Result<ProfileCommit, StoreError>>,
    /// The last log id it commits.
    last_id: i64,
}

/// Counters of the profiler, for /api/v1/stats and /metrics.
#[derive(Debug, Default)]
pub struct ProfileStats {
    /// The last log id profiled (the cursor).
    pub cursor: AtomicU64,
    pub rows: AtomicU64,
    /// Rows of those taken from the ingester's announcements instead of read back.
    pub fed: AtomicU64,
    pub batches: AtomicU64,
    pub detections: AtomicU64,
    /// Profile updates that failed and were retried (database busy, disk full).
    pub retries: AtomicU64,
    /// This process holds the analyst lock and profiles (false: standing by for the
    /// instance that holds it).
    pub active: std::sync::atomic::AtomicBool,
    /// Times this process took the analyst lock.
    pub takeovers: AtomicU64,
}

/// A Prometheus counter of [`ProfileStats`]: name, help, and the field it reads.
type ProfileMetric = (&'static str, &'static str, fn(&ProfileStats) -> &AtomicU64);

impl ProfileStats {
    const METRICS: [ProfileMetric; 4] = [
        (
            "profile_rows_total",
            "Rows folded into attacker profiles.",
            |s| &s.rows,
        ),
        (
            "profile_fed_rows_total",
            "Rows of those taken from this process's ingester in memory, not read back.",
            |s| &s.fed,
        ),
        (
            "profile_detections_total",
            "Detections emitted (class, tools, campaign or risk band changed).",
            |s| &s.detections,
        ),
        (
            "profile_retries_total",
            "Profile updates that failed (database busy, disk full) and were retried.",
            |s| &s.retries,
        ),
    ];

    pub(crate) fn write_prometheus(&self, out: &mut String) {
        for (name, help, counter) in Self::METRICS {
            write_metric(out, name, help, Kind::Counter, counter(self).load(Relaxed));
        }
    }

    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "cursor": self.cursor.load(Relaxed),
            "rows": self.rows.load(Relaxed),
            "fed": self.fed.load(Relaxed),
            "batches": self.batches.load(Relaxed),
            "detections": self.detections.load(Relaxed),
            "retries": self.retries.load(Relaxed),
            "active": self.active.load(Relaxed),
            "takeovers": self.takeovers.load(Relaxed),
        })
    }
}

impl Profiler {
    pub fn new(store: Store) -> Self {
        Self::with_hub(store, Hub::default())
    }

    /// A profiler announcing its detections on `hub`.
    pub fn with_hub(store: Store, hub: Hub) -> Self {
        Self {
            store,
            hub,
            mem: None,
            stats: Arc::default(),
            feed: None,
            writing: None,
            shard: None,
        }
    }

    /// A profiler of `shard`'s sources only (PostgreSQL).
    pub(crate) fn with_shard(mut self, shard: Shard) -> Self {
        self.shard = Some(shard);
        self
    }

    /// The `state` key of this profiler's cursor.
    fn cursor_key(&self) -> String {
        self.shard
            .map_or_else(|| PROFILE_CURSOR_KEY.to_owned(), Shard::cursor_key)
    }

    /// Takes rows from the ingester's announcements on `hub` (subscribed now) instead of
    /// reading them back, where they follow the cursor. Only where this process's ingester
    /// announces every commit there, in id order (one process, SQLite).
    pub fn with_feed(mut self, hub: &Hub) -> Self {
        self.feed = Some(Feed::new(hub));
        self
    }

    /// Counts into `stats` (kept across the profilers of successive takeovers).
    pub(crate) fn with_stats(mut self, stats: Arc<ProfileStats>) -> Self {
        self.stats = stats;
        self
    }

    pub fn stats(&self) -> Arc<ProfileStats> {
        self.stats.clone()
    }

    /// Profiles everything after the cursor; returns the rows absorbed.
    pub async fn catch_up(&mut self) -> Result<u64, StoreError> {
        self.step(usize::MAX).await
    }

    /// Profiles at most `max_batches` batches after the cursor (each committed on its own,
    /// as a crash between batches would leave it).
    pub async fn step(&mut self, max_batches: usize) -> Result<u64, StoreError> {
        // Developer tracing: one root span per run over the backlog, linked to the probe
        // traces whose rows it absorbs; one `profiler.update_profiles` per batch inside.
        let span = crate::dev_span!(
            parent: None,
            "profiler.incremental_update",
            rows = tracing::field::Empty,
            batches = tracing::field::Empty,
        );
        self.step_inner(max_batches, &span)
            .instrument(span.clone())
            .await
    }

    async fn step_inner(
        &mut self,
        max_batches: usize,
        span: &tracing::Span,
    ) -> Result<u64, StoreError> {
        if let Some(w) = self.writing.take() {
            // Left by a failed pass: whatever it did, the cursor read next says so.
            let _ = w.task.await;
        }
        let mut batches = 0u64;
        let key = self.cursor_key();
        let mut prev = self.store.get_state(&key).await?;
        let mut cursor: i64 = match &prev {
            Some(v) => v.parse().unwrap_or(0),
            // A new shard of a fleet that profiled unsharded until now: every source's rows
            // up to that cursor are in its state.
            None if self.shard.is_some() => self
                .store
                .get_state_json::<i64>(PROFILE_CURSOR_KEY)
                .await?
                .unwrap_or(0),
            None => 0,
        };
        self.stats.cursor.store(cursor.max(0) as u64, Relaxed);
        // Taken out for the pass and put back only when it succeeds: an error anywhere
        // drops it with whatever was not committed, and the next pass rebuilds it from the
        // database and resumes from the committed cursor.
        let mut mem = match self.mem.take() {
            Some(m) => m,
            None => Memory::load(&self.store, self.shard).await?,
        };
        if let Some(shard) = self.shard {
            self.apply_moves(&mut mem, shard, cursor).await?;
        }
        let mut absorbed = 0;
        // The next batch, read while this one folds (dropped unread if the pass ends).
        let mut ahead: Option<ReadAhead> = None;
        for _ in 0..max_batches {
            let fed = match self.feed.as_mut() {
                Some(f) => f.after(cursor, BATCH as usize),
                None => Err(None),
            };
            let mut read: Parsed = Vec::new();
            let mut through = cursor;
            let mut more = false;
            let rows: Vec<Row<'_>> = match &fed {
                Ok(segments) => segments
                    .iter()
                    .flat_map(|(b, at, n)| {
                        b.logs[*at..*at + *n]
                            .iter()
                            .enumerate()
                            .map(move |(i, l)| (b.first_id + (*at + i) as i64, l, b.facts(*at + i)))
                    })
                    .collect(),
                Err(hole) => {
                    let limit = hole.map_or(BATCH, |h| h.min(BATCH));
                    (read, through, more) = match ahead.take() {
                        Some(a) if a.after == cursor && a.limit == limit => a.rows().await?,
                        _ => {
                            ReadAhead::start(&self.store, self.shard, cursor, limit)
                                .rows()
                                .await?
                        }
                    };
                    // More follow (a full batch, or a shard's window short of the newest
                    // row). Read and parse them while this one folds (on the runtime's
                    // other threads), so folding never waits for the database. Only
                    // without a feed: with one, the next rows are probably in memory.
                    if self.feed.is_none() && hole.is_none() && more {
                        ahead = Some(ReadAhead::start(&self.store, self.shard, through, BATCH));
                    }
                    read.iter().map(|(id, l, f)| (*id, l, Some(f))).collect()
                }
            };
            let Some((last_id, _, _)) = rows.last() else {
                if through > cursor {
                    // None of this shard's, up to there: the cursor moves on alone.
                    mem.pending.last_id = Some(through);
                    mem.pending.since.get_or_insert_with(Instant::now);
                    cursor = through;
                }
                if more {
                    continue;
                }
                break;
            };
            let (first_id, last_id) = (rows[0].0, *last_id);
            let through = through.max(last_id);
            crate::telemetry::link_all(
                span,
                rows.iter()
                    .filter_map(|(_, l, _)| Some((l.trace_id.as_deref()?, l.span_id.as_deref()?))),
            );
            let batch_span = crate::dev_span!(
                "profiler.update_profiles",
                rows = rows.len(),
                first_id,
                last_id,
                ips = tracing::field::Empty,
            );
            self.absorb(&mut mem, &rows).instrument(batch_span).await?;
            batches += 1;
            absorbed += rows.len() as u64;
            self.stats.rows.fetch_add(rows.len() as u64, Relaxed);
            if fed.is_ok() {
                self.stats.fed.fetch_add(rows.len() as u64, Relaxed);
            }
            self.stats.batches.fetch_add(1, Relaxed);
            mem.pending.last_id = Some(through);
            cursor = through;
            // A commit written already: its detections go out now, not when the next
            // commit is due (up to a second later under a long backlog).
            if self.writing.as_ref().is_some_and(|w| w.task.is_finished()) {
                self.landed(&mut mem).await?;
            }
            if mem.pending.due() {
                // The previous commit has had this batch's folding to finish in.
                self.landed(&mut mem).await?;
                prev = Some(self.send(&mut mem, prev));
            }
            // Freeing 2,000 rows and their fields is a few percent of folding them: done
            // on another thread.
            drop(rows);
            if !read.is_empty() {
                tokio::task::spawn_blocking(move || drop(read));
            }
            // Never stall the runtime, whatever the backlog.
            tokio::task::yield_now().await;
        }
        self.landed(&mut mem).await?;
        if mem.pending.last_id.is_some() {
            self.send(&mut mem, prev);
            self.landed(&mut mem).await?;
        }
        self.mem = Some(mem);
        span.record("rows", absorbed);
        span.record("batches", batches);
        Ok(absorbed)
    }

    /// Folds one batch of rows into the held states and matches campaigns; nothing is
    /// written until [`commit`](Self::commit).
    async fn absorb(&mut self, mem: &mut Memory, rows: &[Row<'_>]) -> Result<(), StoreError> {
        let mut ips: Vec<&str> = rows
            .iter()
            .map(|(_, l, _)| l.attacker_ip.as_str())
            .collect();
        ips.sort_unstable();
        ips.dedup();
        tracing::Span::current().record("ips", ips.len());
        mem.hold(&self.store, &ips).await?;
        let generation = mem.generation;
        for (_, log, facts) in rows {
            if let Some(h) = mem.hot.get_mut(&log.attacker_ip) {
                match facts {
                    Some(f) => h.st.fold(log, f),
                    None => h.st.update(log),
                }
                h.used = generation;
            }
        }
        for ip in &ips {
            mem.pending.source(ip);
        }
        let mut work = Work::default();
        if self.shard.is_some() {
            // The campaign pass matches them, from the keys fixed here.
            for ip in &ips {
                if let Some(h) = mem.hot.get_mut(*ip) {
                    campaign::refresh_key(&mut h.st);
                }
            }
        } else {
            for ip in &ips {
                work.match_campaign(mem, ip);
            }
        }
        if !work.moved.is_empty() {
            let moved: Vec<&str> = work.moved.keys().map(String::as_str).collect();
            mem.hold(&self.store, &moved).await?;
            for (ip, id) in &work.moved {
                if let Some(h) = mem.hot.get_mut(ip) {
                    h.st.campaign_id = Some(*id);
                    mem.pending.source(ip);
                }
            }
        }
        // The batch's sources and those campaign matching touched, in address order.
        let mut touched = ips.clone();
        touched.extend(
            work.touched
                .iter()
                .map(String::as_str)
                .filter(|t| ips.binary_search(t).is_err()),
        );
        touched.sort_unstable();
        verdicts(mem, &touched);
        mem.pending.last_id = rows.last().map(|(id, _, _)| *id);
        mem.pending.since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Applies the campaign pass's moves of this shard's sources, in order, since the last
    /// one applied: each source's state takes its campaign, as a matching profiler would
    /// have set it, and its verdict follows. Committed with the next commit (at the cursor
    /// it is at, `cursor`, when no row comes).
    ///
    /// The shard's move cursor then stands at the newest move of any shard, so that one
    /// whose sources never join a campaign does not hold back the pass's pruning of moves.
    async fn apply_moves(
        &mut self,
        mem: &mut Memory,
        shard: Shard,
        cursor: i64,
    ) -> Result<(), StoreError> {
        const PAGE: i64 = 10_000;
        // Read first: a move committed after it waits for the next pass.
        let newest = self.store.newest_move().await?;
        if newest <= mem.moves_seq {
            return Ok(());
        }
        // Committed even if none of the moves is this shard's.
        mem.pending.last_id.get_or_insert(cursor);
        mem.pending.since.get_or_insert_with(Instant::now);
        mem.pending.moves = true;
        loop {
            let moves = self
                .store
                .campaign_moves(Some(shard), mem.moves_seq, newest, PAGE)
                .await?;
            let Some((last, _, _)) = moves.last() else {
                mem.moves_seq = newest;
                return Ok(());
            };
            mem.moves_seq = *last;
            let mut ips: Vec<&str> = moves.iter().map(|(_, ip, _)| ip.as_str()).collect();
            ips.sort_unstable();
            ips.dedup();
            mem.hold(&self.store, &ips).await?;
            for (_, ip, id) in &moves {
                if let Some(h) = mem.hot.get_mut(ip.as_str()) {
                    h.st.campaign_id = Some(*id);
                    h.used = mem.generation;
                }
                mem.pending.source(ip);
            }
            verdicts(mem, &ips);
            if (moves.len() as i64) < PAGE {
                mem.moves_seq = newest;
                return Ok(());
            }
        }
    }
}

/// Each of `touched`'s verdict (in this order) and the detection it raises, if its
/// headline changed. Per batch, as if each batch were committed on its own: which
/// detections a backlog gives does not depend on when commits fall (a restart's included).
fn verdicts(mem: &mut Memory, touched: &[&str]) {
    {
        let now = timefmt::rfc3339_ns(timefmt::unix_now_ns());
        for &ip in touched {
            let Some(h) = mem.hot.get_mut(ip) else {
                continue;
            };
            let st = &mut h.st;
            let v = st.verdict_unexplained(ip);
            let _span = crate::dev_span!(
                "profiler.process_ip",
                attacker_ip = ip,
                event_count = st.events,
                is_traversal = st.is_traversal(),
                bounty_count = st.bounties,
                command_count = st.command_count,
                class = v.class,
                risk = v.risk.score,
            )
            .entered();
            if !st
                .reported
                .as_deref()
                .is_some_and(|r| v.is_headline(r, st.campaign_id))
            {
                let now_reported = v.headline(st.campaign_id);
                if let Some(mut body) = detection(ip, st, st.reported.as_deref(), &now_reported, &v)
                {
                    let id = mem.next_detection;
                    mem.next_detection += 1;
                    body["id"] = id.into();
                    body["ts"] = now.clone().into();
                    mem.pending.detections.push(DetectionRow {
                        id,
                        ts: now.clone(),
                        ip: ip.to_owned(),
                        body: body.to_string(),
                    });
                }
                st.reported = Some(Box::new(now_reported));
            }
            h.verdict = Some(Box::new(v));
        }
    }
}

impl Profiler {
    /// Hands every change since the last commit (profiles and states of the sources that
    /// changed, campaigns, detections) with the cursor after the last row folded to the
    /// store, as one transaction written in the background ([`landed`](Self::landed) waits
    /// for it); returns the cursor's new value. At most one commit is in flight.
    fn send(&mut self, mem: &mut Memory, prev: Option<String>) -> String {
        let pending = std::mem::take(&mut mem.pending);
        let last_id = pending.last_id.unwrap_or(0);
        let value = last_id.to_string();
        let span = crate::dev_span!(
            "profiler.commit",
            ips = pending.sources.len(),
            detections = pending.detections.len(),
        );
        let guard = span.enter();
        let mut commit = ProfileCommit {
            cursor: Some(CursorUpdate {
                key: self.cursor_key(),
                prev,
                value: value.clone(),
            }),
            ..ProfileCommit::default()
        };
        // Rendered now, while the states are at this commit's point: the batches folded
        // while it is written change them again.
        let hot = &mut mem.hot;
        let sharded = self.shard.is_some();
        let rows: Vec<ProfileRow> = pending
            .sources
            .iter()
            .filter_map(|ip| {
                let h = hot.get_mut(ip)?;
                let st = &h.st;
                let v = h
                    .verdict
                    .take()
                    .map_or_else(|| st.verdict_unexplained(ip), |v| *v);
                Some(ProfileRow {
                    ip: ip.clone(),
                    first_seen: st.first_seen.clone(),
                    last_seen: st.last_seen.clone(),
                    event_count: st.events as i64,
                    class: v.class.to_owned(),
                    risk_score: v.risk.score as i64,
                    campaign_id: st.campaign_id,
                    campaign_key: st.campaign_key.clone(),
                    summary: st.summary_text(ip, &v),
                    state: serde_json::to_string(st).unwrap_or_default(),
                    // The campaign pass of sharded analysts reads these instead of the state.
                    match_facts: sharded.then(|| campaign::Facts::encode(st)).flatten(),
                })
            })
            .collect();
        commit.detections = pending.detections;
        let m = &mut mem.matcher;
        for id in std::mem::take(&mut m.changed) {
            if let Some(c) = m.campaigns.get(&id) {
                commit.campaigns.push((id, c.summary().to_string()));
            }
        }
        commit.dropped_campaigns = std::mem::take(&mut m.dropped);
        match self.shard {
            // The campaign pass numbers campaigns; a shard says how far it applied its moves.
            Some(shard) => {
                if pending.moves {
                    commit
                        .state
                        .push((shard.moves_key(), mem.moves_seq.to_string()));
                }
            }
            None => commit
                .state
                .push((CAMPAIGN_ID_KEY.into(), m.next_campaign.to_string())),
        }
        drop(guard);
        // States folded from here on belong to the next commit: eviction after this one
        // lands keeps them (`Memory::evict`).
        mem.generation += 1;
        let store = self.store.clone();
        let task = tokio::spawn(
            async move {
                let mut commit = commit;
                store
                    .commit_profiles(&mut commit, &mut rows.into_iter())
                    .await
                    .map(|()| commit)
            }
            .instrument(span),
        );
        self.writing = Some(Writing { task, last_id });
        value
    }

    /// Waits for the commit in flight, if any; once it is in, announces its detections
    /// and lets go of the states it made durable.
    async fn landed(&mut self, mem: &mut Memory) -> Result<(), StoreError> {
        let Some(w) = self.writing.take() else {
            return Ok(());
        };
        let commit = w
            .task
            .await
            .map_err(|e| StoreError::Task(format!("profile commit: {e}")))??;
        mem.evict();
        self.stats.cursor.store(w.last_id.max(0) as u64, Relaxed);
        self.stats
            .detections
            .fetch_add(commit.detections.len() as u64, Relaxed);
        self.hub.detections(commit.detections);
        Ok(())
    }

    /// Catches up, then again after every ingester commit, until `shutdown`. A failed
    /// catch-up (the database busy or locked by another process past the busy timeout, a
    /// full disk) is retried with backoff: nothing of it was committed, its in-memory
    /// campaign state is dropped and reloaded, and the cursor still says where to resume.
    pub async fn run(
        mut self,
        mut ingested: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Err(e) = self.catch_up().await {
                self.stats.retries.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "profile update failed; retrying");
                let stop = tokio::select! {
                    _ = tokio::time::sleep(backoff) => false,
                    r = shutdown.wait_for(|v| *v) => r.is_ok(),
                };
                if stop {
                    return self.catch_up().await.map(|_| ());
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            backoff = Duration::from_millis(50);
            let stop = tokio::select! {
                r = ingested.changed() => r.is_err(),
                _ = shutdown.wait_for(|v| *v) => true,
            };
            if stop {
                // Shut down, or the ingester is gone: absorb what it committed and stop.
                self.catch_up().await?;
                return Ok(());
            }
            tokio::time::sleep(DEBOUNCE).await;
        }
    }
}
