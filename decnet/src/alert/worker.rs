//! One sink's worker: it follows the stored detections from its own cursor, lets its rules
//! decide, delivers each message until the receiver takes it, and only then commits the
//! cursor with the re-arm windows and open digests. The commit runs beside the next
//! page's delivery, one at a time. Delivery is at least once: a crash between a delivery
//! and its commit sends that message again, with the same idempotency key. A dead sink holds up nothing but itself: capture, ingest and the profiler never
//! wait for it, it backs off between retries, and when it falls more than `max_backlog`
//! detections behind, the oldest are skipped and counted.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::sync::{broadcast, watch};

use super::{
    render::Message,
    rule::{Detection, Digest, Rearm, Windows, into_digest},
    spec::{Rule, Sink},
    stats::SinkStats,
    transport::Transport,
};
use crate::{
    hub::{Hub, HubMsg},
    store::{CursorUpdate, SinkCommit, SinkWindow, Store, StoreError, sink_cursor_key},
};
use std::sync::atomic::Ordering::Relaxed;

/// Detections read per query.
const PAGE: i64 = 256;
/// Webhook requests in flight at once: a receiver's round trip, not decnet, then bounds
/// the rate (one at a time managed about 2,200 a second to a loopback receiver).
const IN_FLIGHT: usize = 8;
/// How often the worker looks for detections without being woken (another process's
/// commits; digests that close by the clock).
const POLL: Duration = Duration::from_millis(500);
/// The first retry's wait; doubled per failure up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often a pass working through a backlog looks at the newest detection (the backlog
/// bound, and the lag the API shows).
const HEAD_EVERY: Duration = Duration::from_secs(1);
/// The least time between two cursor commits of a pass working through a burst. Each
/// commit takes SQLite's one write lock, and every writer waiting for it sleeps in
/// SQLite's busy handler: a commit per page from three sinks cut ingest's rate in half
/// (bench alerts). A crash re-sends at most this much, with the same keys.
const COMMIT_EVERY: Duration = Duration::from_millis(250);
/// How long the last pass at shutdown may take before giving up on a sink.
pub const FINAL_PASS: Duration = Duration::from_secs(2);

/// A sink and the rules that deliver to it.
pub struct Worker {
    pub store: Store,
    pub sink: Sink,
    pub rules: Vec<Rule>,
    pub stats: Arc<SinkStats>,
    /// This process's hub: a committed detection wakes the worker at once.
    pub hub: Option<Hub>,
}

/// The sink's progress since it was loaded.
struct Progress {
    /// The cursor committed, or being committed by `pending`: everything up to it was
    /// delivered.
    cursor: i64,
    /// The last detection delivered (or skipped); ahead of `cursor` until the next commit.
    delivered: i64,
    /// The commit under way. Every commit waits for the database's write lock behind
    /// ingest's and the profiler's transactions (about 60 ms each under a full-speed
    /// ingest); awaited between pages, that wait left a burst's last messages seconds
    /// behind, so it runs beside the next page's delivery.
    pending: Option<tokio::task::JoinHandle<Result<(), String>>>,
    /// When the last commit started (see [`COMMIT_EVERY`]).
    committed_at: std::time::Instant,
    windows: Windows,
    digests: BTreeMap<String, Option<Digest>>,
    /// Digests changed since the last commit.
    digests_dirty: Vec<String>,
}

impl Progress {
    /// Something delivered or decided is not committed (nor being committed) yet.
    fn dirty(&self) -> bool {
        self.delivered != self.cursor
            || !self.windows.dirty.is_empty()
            || !self.digests_dirty.is_empty()
    }
}

/// Why a pass stopped early.
enum Halt {
    /// Shutdown while a message was failing: resume from the cursor next start.
    Stopped,
    /// The store failed or another process moved the cursor: reload and go on.
    Reload(String),
}

impl Worker {
    /// Delivers until `stop`; then one last pass of at most [`FINAL_PASS`] without
    /// retries, so detections of the daemon's last profile batch still go out.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut transport = match Transport::new(&self.sink) {
            Ok(t) => t,
            Err(e) => {
                // check-config and the start refuse this; a CA file removed since then.
                tracing::error!(sink = %self.sink.name, error = %e, "alert sink cannot start");
                self.stats.fail(&e);
                return;
            }
        };
        let mut wake = self.hub.as_ref().map(Hub::subscribe);
        self.stats.active.store(true, Relaxed);
        'load: loop {
            let Some(mut p) = self.load(&mut stop).await else {
                break;
            };
            loop {
                match self.pass(&mut p, &mut transport, Some(&mut stop)).await {
                    Ok(()) => {}
                    Err(Halt::Stopped) => {
                        // What was delivered before the failing message is committed.
                        let _ = tokio::time::timeout(FINAL_PASS, self.settle(&mut p)).await;
                        break 'load;
                    }
                    Err(Halt::Reload(why)) => {
                        if let Some(h) = p.pending.take() {
                            let _ = h.await;
                        }
                        tracing::warn!(sink = %self.sink.name, why, "alert sink: reloading its cursor");
                        if sleep_or_stop(Duration::from_secs(1), &mut stop).await {
                            break 'load;
                        }
                        continue 'load;
                    }
                }
                if *stop.borrow() {
                    // The last pass: the profiler has committed its final batch.
                    let last = self.pass(&mut p, &mut transport, None);
                    let _ = tokio::time::timeout(FINAL_PASS, last).await;
                    break 'load;
                }
                wait(&mut wake, &mut stop).await;
            }
        }
        self.stats.active.store(false, Relaxed);
    }

    /// Loads the cursor, windows and digests; a new sink starts at the newest detection
    /// (it does not send the history). None: stopped before the store answered.
    async fn load(&self, stop: &mut watch::Receiver<bool>) -> Option<Progress> {
        loop {
            match self.try_load().await {
                Ok(p) => {
                    self.stats.cursor.store(p.cursor, Relaxed);
                    return Some(p);
                }
                Err(e) => {
                    tracing::warn!(sink = %self.sink.name, error = %e, "alert sink: loading its cursor failed; retrying");
                    self.stats.fail(&format!("store: {e}"));
                    if sleep_or_stop(Duration::from_secs(1), stop).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn try_load(&self) -> Result<Progress, StoreError> {
        let name = &self.sink.name;
        let saved = self.store.load_sink(name).await?;
        let cursor = match saved.cursor {
            Some(c) => c,
            None => {
                let head = self.store.last_detection_id().await?;
                self.store
                    .commit_sink(
                        name,
                        &SinkCommit {
                            cursor: Some(CursorUpdate {
                                key: sink_cursor_key(name),
                                prev: None,
                                value: head.to_string(),
                            }),
                            ..SinkCommit::default()
                        },
                    )
                    .await?;
                tracing::info!(sink = %name, from_detection = head, "alert sink: new; starting after the newest detection");
                head
            }
        };
        let mut windows = Windows::default();
        for w in saved.windows {
            windows.map.insert(
                (w.rule, w.ip),
                Rearm {
                    last_alert_ns: w.last_alert_ns,
                    folded: w.folded.max(0) as u64,
                    folded_changes: serde_json::from_str(&w.folded_changes).unwrap_or_default(),
                },
            );
        }
        let mut digests = BTreeMap::new();
        for (rule, json) in saved.digests {
            // A digest of a rule since removed from the configuration is dropped.
            if self.rules.iter().any(|r| r.name == rule && r.digest_ns > 0) {
                digests.insert(rule, serde_json::from_str(&json).ok());
            }
        }
        Ok(Progress {
            cursor,
            delivered: cursor,
            pending: None,
            committed_at: std::time::Instant::now(),
            windows,
            digests,
            digests_dirty: Vec::new(),
        })
    }

    /// Reads every detection after the last delivered and delivers what the rules raise,
    /// then closes the digests whose window has passed. A page's commit starts when the
    /// previous one has finished, and the pass ends by starting one for what is left.
    /// `stop`: None in the last pass (a failed delivery then ends the pass instead of
    /// being retried, and the pass waits for its commit).
    async fn pass(
        &self,
        p: &mut Progress,
        transport: &mut Transport,
        mut stop: Option<&mut watch::Receiver<bool>>,
    ) -> Result<(), Halt> {
        let store_err = |e: StoreError| Halt::Reload(e.to_string());
        let last_pass = stop.is_none();
        let mut head_at: Option<std::time::Instant> = None;
        loop {
            if head_at.is_none_or(|t| t.elapsed() >= HEAD_EVERY) {
                head_at = Some(std::time::Instant::now());
                let head = self.store.last_detection_id().await.map_err(store_err)?;
                self.stats.head.store(head, Relaxed);
                if head - p.delivered > self.sink.max_backlog as i64 {
                    let to = head - self.sink.max_backlog as i64;
                    tracing::warn!(
                        sink = %self.sink.name,
                        skipped = to - p.delivered,
                        max_backlog = self.sink.max_backlog,
                        "alert sink fell too far behind: skipping its oldest detections"
                    );
                    let skipped = (to - p.delivered) as u64;
                    self.advance(p, to);
                    self.commit(p).await?;
                    self.stats.skipped.fetch_add(skipped, Relaxed);
                }
            }
            let rows = self
                .store
                .detections_after(p.delivered, PAGE)
                .await
                .map_err(store_err)?;
            let Some(last) = rows.last().map(|r| r.id) else {
                break;
            };
            // The page's messages are decided first (windows and digests change in memory
            // only), then delivered; then a commit of the cursor with those windows starts.
            // A crash re-sends what was delivered since the last finished commit, each
            // message with the idempotency key it had; a stop mid-page drops the page's
            // windows with it, so a restart decides the page again.
            let mut messages = Vec::new();
            for row in &rows {
                match Detection::from_row(row) {
                    Ok(d) => messages.extend(self.decide(p, &d)),
                    Err(e) => {
                        tracing::warn!(sink = %self.sink.name, detection = row.id, error = %e, "unreadable detection skipped");
                    }
                }
            }
            self.deliver_all(transport, &messages, stop.as_deref_mut())
                .await?;
            self.advance(p, last);
            if p.pending.as_ref().is_none_or(|h| h.is_finished())
                && p.committed_at.elapsed() >= COMMIT_EVERY
            {
                self.commit(p).await?;
            }
        }
        // Caught up: commit what is left (after the commit under way).
        if p.dirty() {
            self.commit(p).await?;
        }
        // Digests close by the clock too: a quiet window must not wait for the next alert.
        let now = crate::timefmt::unix_now_ns();
        let due: Vec<String> = p
            .digests
            .iter()
            .filter(|(_, d)| d.as_ref().is_some_and(|d| d.end_ns <= now))
            .map(|(r, _)| r.clone())
            .collect();
        for rule in due {
            let Some(d) = p.digests.get_mut(&rule).and_then(Option::take) else {
                continue;
            };
            self.deliver(transport, &[Message::Digest(d)], stop.as_deref_mut())
                .await?;
            p.digests_dirty.push(rule);
            self.commit(p).await?;
        }
        if last_pass {
            self.settle(p).await?;
        }
        Ok(())
    }

    /// Marks everything up to `to` delivered (or skipped); the API's lag follows it.
    fn advance(&self, p: &mut Progress, to: i64) {
        if to > p.delivered {
            p.delivered = to;
            self.stats.cursor.store(to, Relaxed);
        }
    }

    /// The messages `d` raises (windows and digests are updated in memory).
    fn decide(&self, p: &mut Progress, d: &Detection) -> Vec<Message> {
        let mut out = Vec::new();
        for r in &self.rules {
            // Only a re-arm window folds (and its key costs two copies per look).
            let folded = |p: &Progress| {
                (r.rearm_ns > 0)
                    .then(|| p.windows.map.get(&(r.name.clone(), d.ip.clone())))
                    .flatten()
                    .map(|w| w.folded)
            };
            let before = folded(p);
            let Some(alert) = p.windows.decide(r, d) else {
                if folded(p) > before {
                    self.stats.folded.fetch_add(1, Relaxed);
                }
                continue;
            };
            if r.digest_ns > 0 {
                let open = p.digests.entry(r.name.clone()).or_default();
                if let Some(closed) = into_digest(open, r, alert) {
                    out.push(Message::Digest(closed));
                }
                p.digests_dirty.push(r.name.clone());
            } else {
                out.push(Message::Alert(Box::new(alert)));
            }
        }
        out
    }

    /// Delivers `messages`. A webhook gets them in POSTs of the sink's `batch`, up to
    /// [`IN_FLIGHT`] at once (they may arrive out of order; each message carries its
    /// idempotency key and time); a syslog stream or a file gets them in one write. What
    /// failed is then retried, in order, as [`deliver`](Self::deliver) does; a batch the
    /// receiver refused is tried one message at a time, so one bad message (or a body too
    /// large) costs only itself.
    async fn deliver_all(
        &self,
        transport: &mut Transport,
        messages: &[Message],
        mut stop: Option<&mut watch::Receiver<bool>>,
    ) -> Result<(), Halt> {
        if messages.is_empty() {
            return Ok(());
        }
        let Some((client, url, format)) = transport.webhook() else {
            // One write for the page; a failure falls back to one message at a time (at
            // least once: some may have been written).
            if messages.len() > 1 && transport.send_many(messages).await.is_ok() {
                self.delivered(messages.len());
                return Ok(());
            }
            for m in messages {
                self.deliver(transport, std::slice::from_ref(m), stop.as_deref_mut())
                    .await?;
            }
            return Ok(());
        };
        use futures_util::StreamExt as _;
        // Futures made up front (a closure building them is not general enough over the
        // borrow for `tokio::spawn`); `buffered` still polls at most IN_FLIGHT at once.
        let requests: Vec<_> = messages
            .chunks(self.sink.batch.max(1))
            .map(|ms| posted(&client, &url, format, ms))
            .collect();
        let mut results = futures_util::stream::iter(requests).buffered(IN_FLIGHT);
        while let Some((ms, r)) = results.next().await {
            match r {
                Ok(()) => self.delivered(ms.len()),
                Err(e) if !e.retry && ms.len() == 1 => self.rejected(&ms[0], &e),
                Err(e) if !e.retry => {
                    tracing::warn!(sink = %self.sink.name, messages = ms.len(), error = %e, "alert batch refused; sending its messages one at a time");
                    for m in ms {
                        self.deliver(transport, std::slice::from_ref(m), stop.as_deref_mut())
                            .await?;
                    }
                }
                Err(_) => self.deliver(transport, ms, stop.as_deref_mut()).await?,
            }
        }
        Ok(())
    }

    fn delivered(&self, n: usize) {
        self.stats.delivered.fetch_add(n as u64, Relaxed);
        self.stats
            .last_delivery_ns
            .store(crate::timefmt::unix_now_ns(), Relaxed);
        self.stats.retrying.store(false, Relaxed);
    }

    fn rejected(&self, m: &Message, e: &super::transport::SendError) {
        tracing::warn!(sink = %self.sink.name, key = %m.idempotency_key(), error = %e, "alert refused by the receiver; skipped");
        self.stats.rejected.fetch_add(1, Relaxed);
        *self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(e.msg.clone());
    }

    /// Sends `ms` (one message, or a webhook batch) until the receiver takes or refuses
    /// it. With `stop`, retries back off until it; without, one failure ends the pass. A
    /// refused batch is tried one message at a time.
    async fn deliver(
        &self,
        transport: &mut Transport,
        ms: &[Message],
        mut stop: Option<&mut watch::Receiver<bool>>,
    ) -> Result<(), Halt> {
        let mut backoff = BACKOFF_MIN;
        loop {
            match transport.send_many(ms).await {
                Ok(()) => {
                    self.delivered(ms.len());
                    return Ok(());
                }
                Err(e) if !e.retry => {
                    if let [m] = ms {
                        self.rejected(m, &e);
                    } else {
                        for m in ms {
                            Box::pin(self.deliver(
                                transport,
                                std::slice::from_ref(m),
                                stop.as_deref_mut(),
                            ))
                            .await?;
                        }
                    }
                    return Ok(());
                }
                Err(e) => {
                    if !self.stats.retrying.load(Relaxed) {
                        let key = ms.first().map(Message::idempotency_key).unwrap_or_default();
                        tracing::warn!(sink = %self.sink.name, key = %key, messages = ms.len(), error = %e, "alert delivery failed; retrying with backoff");
                    }
                    self.stats.fail(&e.msg);
                    let Some(stop) = stop.as_deref_mut() else {
                        return Err(Halt::Stopped);
                    };
                    if sleep_or_stop(backoff, stop).await {
                        return Err(Halt::Stopped);
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Waits for the commit under way; its failure (the store, or another process moved
    /// the cursor) makes the worker reload.
    async fn settle(&self, p: &mut Progress) -> Result<(), Halt> {
        match p.pending.take() {
            None => Ok(()),
            Some(h) => match h.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Halt::Reload(e)),
                Err(e) => Err(Halt::Reload(format!("commit task: {e}"))),
            },
        }
    }

    /// Starts committing the cursor at the last delivered detection with the changed
    /// windows and digests, once the commit under way has finished.
    async fn commit(&self, p: &mut Progress) -> Result<(), Halt> {
        self.settle(p).await?;
        let to = p.delivered;
        let windows: Vec<SinkWindow> = p
            .windows
            .take_dirty()
            .into_iter()
            .map(|(rule, ip, w)| SinkWindow {
                rule,
                ip,
                last_alert_ns: w.last_alert_ns,
                folded: w.folded as i64,
                folded_changes: serde_json::to_string(&w.folded_changes)
                    .unwrap_or_else(|_| "[]".into()),
            })
            .collect();
        let mut digests = Vec::new();
        p.digests_dirty.sort();
        p.digests_dirty.dedup();
        for rule in p.digests_dirty.drain(..) {
            let v = p
                .digests
                .get(&rule)
                .and_then(Option::as_ref)
                .and_then(|d| serde_json::to_string(d).ok());
            digests.push((rule, v));
        }
        let c = SinkCommit {
            cursor: (to != p.cursor).then(|| CursorUpdate {
                key: sink_cursor_key(&self.sink.name),
                prev: Some(p.cursor.to_string()),
                value: to.to_string(),
            }),
            windows,
            digests,
        };
        let (store, name) = (self.store.clone(), self.sink.name.clone());
        p.committed_at = std::time::Instant::now();
        p.pending = Some(tokio::spawn(async move {
            // A busy or restarting database passes; keep trying (the messages are out).
            let mut tries = 0;
            loop {
                match store.commit_sink(&name, &c).await {
                    Ok(()) => return Ok(()),
                    Err(e) if e.is_transient() && tries < 30 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        }));
        // The next commit's expected previous value (a failure reloads from the store).
        p.cursor = to;
        Ok(())
    }
}

/// One webhook POST of `ms`, with `ms` to tell which it was.
async fn posted<'a>(
    client: &reqwest::Client,
    url: &reqwest::Url,
    format: super::spec::Format,
    ms: &'a [Message],
) -> (&'a [Message], Result<(), super::transport::SendError>) {
    (ms, super::transport::post(client, url, format, ms).await)
}

/// Waits for a committed detection on the hub, the poll interval, or `stop`.
async fn wait(wake: &mut Option<broadcast::Receiver<HubMsg>>, stop: &mut watch::Receiver<bool>) {
    let hub = async {
        match wake.as_mut() {
            Some(rx) => loop {
                match rx.recv().await {
                    Ok(HubMsg::Detections(_)) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        return;
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = hub => {}
        _ = tokio::time::sleep(POLL) => {}
        _ = stop.wait_for(|v| *v) => {}
    }
}

/// Sleeps `d`; true when `stop` came first.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|v| *v) => true,
    }
}
