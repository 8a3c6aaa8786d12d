//! `GET /api/v1/stream`: Server-Sent Events of logs, detections and stats.
//!
//! - The first bytes are a `: keepalive` comment, sent before any database work, so a
//!   client (or a proxy) sees the stream open at once; comments repeat every 15 s.
//! - Every event's `id:` is `<last log id>-<last detection id>` sent so far. Resuming with
//!   `Last-Event-ID` (header, or `last_event_id` in the query for browsers re-opening with a
//!   new ticket) replays what came after from the database, then goes live.
//! - No gap, no duplicate: the client subscribes to the hub *before* it replays, so every
//!   row committed after the replay's last query is also in its hub queue, and anything
//!   both replayed and queued is skipped by id.
//! - Pull-based: a client that stops reading stops being polled; its hub queue (bounded,
//!   `hub::CAPACITY` messages) overflows without slowing the ingester or other clients, and
//!   it then gets a `reset` event telling it where to resume, and the stream ends.
//! - History pruned by retention: a client resuming at an id at or below the highest one
//!   pruned gets a `reset` event naming it (`pruned_through`), then the rows still kept.
//! - A rotated API token (`POST /api/v1/token/rotate`) ends every open stream with a
//!   `reset` event; the client reconnects with the new token and `Last-Event-ID`.
//! - Filters: `attacker_ip` (logs and detections), `event_type` (logs), `min_risk`
//!   (detections: risk score at least this), `classification` (detections: `benign`,
//!   `malicious`, `suspicious` or `unknown`).

use std::{collections::VecDeque, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use tokio::sync::broadcast::{self, error::RecvError};

use super::{data::EVENT_TYPES, error::ApiError, params::Params, state::AppState};
use crate::{
    hub::{HubMsg, LogBatch, log_json},
    store::DetectionRow,
};

/// Rows per replay query.
const REPLAY_PAGE: i64 = 1000;
const STATS_EVERY: Duration = Duration::from_secs(1);
pub(crate) const KEEPALIVE_EVERY: Duration = Duration::from_secs(15);

#[derive(Clone, Default)]
struct Filter {
    ip: Option<String>,
    event_type: Option<&'static str>,
    min_risk: Option<u64>,
    classification: Option<&'static str>,
}

impl Filter {
    fn log(&self, ip: &str, event_type: &str) -> bool {
        self.ip.as_deref().is_none_or(|f| f == ip)
            && self.event_type.is_none_or(|f| f == event_type)
    }

    fn detection(&self, ip: &str, body: &str) -> bool {
        if self.ip.as_deref().is_some_and(|f| f != ip) {
            return false;
        }
        if self.min_risk.is_none() && self.classification.is_none() {
            return true;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
            return false;
        };
        self.min_risk
            .is_none_or(|min| v["risk"]["score"].as_u64().is_some_and(|s| s >= min))
            && self
                .classification
                .is_none_or(|c| v["classification"].as_str() == Some(c))
    }
}

/// `L-D`: the last log id and the last detection id delivered.
pub(crate) fn parse_event_id(s: &str) -> Option<(i64, i64)> {
    let (l, d) = s.trim().split_once('-')?;
    let (l, d) = (l.parse().ok()?, d.parse().ok()?);
    (l >= 0 && d >= 0).then_some((l, d))
}

struct Client {
    st: AppState,
    rx: broadcast::Receiver<HubMsg>,
    filter: Filter,
    log: i64,
    det: i64,
    pending: VecDeque<Event>,
    /// The live batch being sent and the next row in it: rows become events one at a time,
    /// so a client holds one event, not a copy of a whole (up to 10,000-row) batch.
    batch: Option<(Arc<LogBatch>, usize)>,
    /// The live commit's detections being sent and the next one, as `batch` is for logs.
    dets: Option<(Arc<[DetectionRow]>, usize)>,
    /// Developer tracing: the `sse.emit_logs` span of the live batch being sent (it ends
    /// with the batch's last row).
    emit: tracing::Span,
    logs_replayed: bool,
    dets_replayed: bool,
    /// A resuming client is told first when retention pruned rows it had not seen.
    check_pruned: bool,
    /// A new client (no Last-Event-ID) starts from the newest ids, without history; the
    /// lookup happens after the first comment is out.
    starts_live: bool,
    stats: tokio::time::Interval,
    ended: bool,
}

impl Client {
    fn id(&self) -> String {
        format!("{}-{}", self.log, self.det)
    }

    fn push_log(&mut self, id: i64, json: &str) {
        self.log = id;
        let e = Event::default().event("log").id(self.id()).data(json);
        self.pending.push_back(e);
    }

    fn push_detection(&mut self, id: i64, body: &str) {
        self.det = id;
        let e = Event::default().event("detection").id(self.id()).data(body);
        self.pending.push_back(e);
    }

    fn fail(&mut self, what: &str, e: impl std::fmt::Display) {
        tracing::warn!(error = %e, "stream {what} failed");
        let e = Event::default().event("error").id(self.id()).data(format!(
            r#"{{"error":"internal","resume_after":"{}"}}"#,
            self.id()
        ));
        self.pending.push_back(e);
        self.ended = true;
    }

    async fn start_at_newest(&mut self) {
        self.logs_replayed = true;
        self.dets_replayed = true;
        let Some(store) = self.st.store.clone() else {
            return;
        };
        match (store.last_log_id().await, store.last_detection_id().await) {
            (Ok(l), Ok(d)) => {
                self.log = l;
                self.det = d;
            }
            (Err(e), _) | (_, Err(e)) => self.fail("start", e),
        }
    }

    /// One replay page of logs, then of detections.
    async fn replay(&mut self) {
        let Some(store) = self.st.store.clone() else {
            self.logs_replayed = true;
            self.dets_replayed = true;
            return;
        };
        if self.check_pruned {
            self.check_pruned = false;
            match store.pruned_through().await {
                Ok((l, d)) if l > self.log || d > self.det => {
                    let e = Event::default().event("reset").id(self.id()).data(format!(
                        r#"{{"reason":"history pruned by retention","pruned_through":"{l}-{d}","resume_after":"{}"}}"#,
                        self.id()
                    ));
                    self.pending.push_back(e);
                }
                Ok(_) => {}
                Err(e) => self.fail("replay", e),
            }
            return;
        }
        if !self.logs_replayed {
            match store
                .logs_page(
                    self.log,
                    REPLAY_PAGE,
                    self.filter.ip.as_deref(),
                    self.filter.event_type,
                )
                .await
            {
                Ok(rows) => {
                    self.logs_replayed = (rows.len() as i64) < REPLAY_PAGE;
                    let span = emit_span(true, rows.iter().map(|(_, l)| l));
                    let _emit = span.enter();
                    for (id, l) in &rows {
                        self.push_log(*id, &log_json(*id, l));
                    }
                }
                Err(e) => self.fail("replay", e),
            }
            return;
        }
        match store
            .detections_page(self.det, REPLAY_PAGE, self.filter.ip.as_deref())
            .await
        {
            Ok(rows) => {
                self.dets_replayed = (rows.len() as i64) < REPLAY_PAGE;
                for d in &rows {
                    if self.filter.detection(&d.ip, &d.body) {
                        self.push_detection(d.id, &d.body);
                    } else {
                        self.det = d.id;
                    }
                }
            }
            Err(e) => self.fail("replay", e),
        }
    }

    /// The next event of the live log batch or detections, if any is left.
    fn next_of_batch(&mut self) -> Option<Event> {
        self.next_log().or_else(|| self.next_detection())
    }

    /// The next detection of the live commit that passes the filter, if any is left.
    fn next_detection(&mut self) -> Option<Event> {
        let (ds, mut next) = self.dets.take()?;
        while next < ds.len() {
            let d = &ds[next];
            next += 1;
            if d.id > self.det && self.filter.detection(&d.ip, &d.body) {
                self.det = d.id;
                let e = Event::default()
                    .event("detection")
                    .id(self.id())
                    .data(&d.body);
                self.dets = Some((ds.clone(), next));
                return Some(e);
            }
        }
        None
    }

    /// The next event of the live log batch, if any is left.
    fn next_log(&mut self) -> Option<Event> {
        let (batch, next) = self.batch.as_mut()?;
        while *next < batch.logs.len() {
            let i = *next;
            *next += 1;
            let id = batch.first_id + i as i64;
            let l = &batch.logs[i];
            // Already replayed, or filtered out.
            if id <= self.log || !self.filter.log(&l.attacker_ip, &l.event_type) {
                continue;
            }
            self.log = id;
            let json = &batch.json()[i];
            return Some(
                Event::default()
                    .event("log")
                    .id(format!("{}-{}", self.log, self.det))
                    .data(&**json),
            );
        }
        self.batch = None;
        self.emit = tracing::Span::none();
        None
    }

    fn live(&mut self, msg: HubMsg) {
        match msg {
            HubMsg::Logs(batch) => {
                if crate::telemetry::enabled() {
                    let first = batch.first_id;
                    let rows = batch.logs.iter().enumerate().filter(|(i, l)| {
                        first + *i as i64 > self.log
                            && self.filter.log(&l.attacker_ip, &l.event_type)
                    });
                    self.emit = emit_span(false, rows.map(|(_, l)| l));
                }
                self.batch = Some((batch, 0));
            }
            HubMsg::Detections(ds) => self.dets = Some((ds, 0)),
            HubMsg::TokenRotated => {
                let e = Event::default().event("reset").id(self.id()).data(format!(
                    r#"{{"reason":"API token rotated: reconnect with the new one","resume_after":"{}"}}"#,
                    self.id()
                ));
                self.pending.push_back(e);
                self.ended = true;
            }
            HubMsg::Shutdown => {
                // Last words: where to resume (Last-Event-ID) when the daemon is back.
                let e = Event::default()
                    .event("shutdown")
                    .id(self.id())
                    .data(format!(
                        r#"{{"reason":"daemon stopping","resume_after":"{}"}}"#,
                        self.id()
                    ));
                self.pending.push_back(e);
                self.ended = true;
            }
        }
    }

    async fn next(mut self) -> Option<(Result<Event, Infallible>, Client)> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some((Ok(e), self));
            }
            if let Some(e) = self.next_of_batch() {
                return Some((Ok(e), self));
            }
            if self.ended {
                return None;
            }
            if self.starts_live {
                self.starts_live = false;
                self.start_at_newest().await;
                continue;
            }
            if !(self.logs_replayed && self.dets_replayed) {
                self.replay().await;
                continue;
            }
            tokio::select! {
                m = self.rx.recv() => match m {
                    Ok(msg) => self.live(msg),
                    Err(RecvError::Lagged(n)) => {
                        let e = Event::default().event("reset").id(self.id()).data(format!(
                            r#"{{"reason":"client too slow, {n} messages behind","resume_after":"{}"}}"#,
                            self.id()
                        ));
                        self.pending.push_back(e);
                        self.ended = true;
                    }
                    Err(RecvError::Closed) => self.ended = true,
                },
                _ = self.stats.tick() => {
                    let data = super::status::stats_json(&self.st).map(|v| v.to_string()).unwrap_or_default();
                    let e = Event::default().event("stats").id(self.id()).data(data);
                    self.pending.push_back(e);
                }
            }
        }
    }
}

/// `sse.emit_logs`: the rows one client is sent from one batch, linked to the traces of
/// those rows (their probes' journeys). A null span when tracing is off.
fn emit_span<'a>(
    replay: bool,
    rows: impl Iterator<Item = &'a crate::row::NewLog>,
) -> tracing::Span {
    if !crate::telemetry::enabled() {
        return tracing::Span::none();
    }
    let rows: Vec<&crate::row::NewLog> = rows.collect();
    if rows.is_empty() {
        return tracing::Span::none();
    }
    let span = crate::dev_span!(
        "sse.emit_logs",
        otel.kind = "producer",
        replay,
        rows = rows.len()
    );
    crate::telemetry::link_all(
        &span,
        rows.iter()
            .filter_map(|l| Some((l.trace_id.as_deref()?, l.span_id.as_deref()?))),
    );
    span
}

#[utoipa::path(get, path = "/api/v1/stream", tag = "stream",
    params(
        ("ticket" = Option<String>, Query, description = "A ticket from POST /api/v1/stream/ticket (instead of the bearer token)."),
        ("last_event_id" = Option<String>, Query, description = "Resume after this event id (`<log id>-<detection id>`); the Last-Event-ID header does the same."),
        ("attacker_ip" = Option<String>, Query, description = "Only this source."),
        ("event_type" = Option<String>, Query, description = "Only logs of this event type."),
        ("min_risk" = Option<u8>, Query, minimum = 0, maximum = 100, description = "Only detections with at least this risk score."),
        ("classification" = Option<String>, Query, description = "Only detections of this classification: benign, malicious, suspicious or unknown."),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: log, detection, stats, reset", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad parameter, named in `detail`", body = super::error::ErrorBody),
        (status = 401, description = "Missing token, or an unknown, used or expired ticket", body = super::error::ErrorBody),
    ))]
pub async fn stream(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(
        q.as_deref(),
        &[
            "ticket",
            "last_event_id",
            "attacker_ip",
            "event_type",
            "min_risk",
            "classification",
        ],
    )?;
    let filter = Filter {
        ip: p.ip("attacker_ip")?,
        event_type: p.one_of("event_type", EVENT_TYPES, None)?,
        min_risk: p
            .str("min_risk")
            .map(|_| p.uint("min_risk", 0, 100))
            .transpose()?,
        classification: p.one_of(
            "classification",
            crate::profile::classify::CLASSIFICATIONS,
            None,
        )?,
    };
    let header = headers
        .get("last-event-id")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let resume = match header.as_deref().or(p.str("last_event_id")) {
        None => None,
        Some(v) => Some(parse_event_id(v).ok_or_else(|| {
            ApiError::BadParameter(
                "last_event_id",
                "expected <log id>-<detection id>, as sent in `id:`".into(),
            )
        })?),
    };
    // Subscribe first: everything committed from here on is queued for this client.
    let rx = st.hub.subscribe();
    let (log, det) = resume.unwrap_or((0, 0));
    let mut stats = tokio::time::interval(STATS_EVERY);
    stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let client = Client {
        st,
        rx,
        filter,
        log,
        det,
        pending: VecDeque::from([Event::default().comment("keepalive")]),
        batch: None,
        dets: None,
        emit: tracing::Span::none(),
        logs_replayed: false,
        dets_replayed: false,
        check_pruned: resume.is_some(),
        starts_live: resume.is_none(),
        stats,
        ended: false,
    };
    let events = futures_util::stream::unfold(client, Client::next);
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEPALIVE_EVERY).text("keepalive"))
        .into_response();
    let h = resp.headers_mut();
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, sync::Arc, time::Instant};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::{api::auth::Auth, stats::PipelineStats, store::Store};

    /// Serves the API on loopback with `store` and `hub`, token `t`.
    async fn serve(store: Store, hub: crate::hub::Hub) -> SocketAddr {
        let state = AppState {
            started: Instant::now(),
            kernel: None,
            pipeline: Arc::new(PipelineStats::default()),
            attached: None,
            egress: None,
            pin: None,
            iface_status: None,
            ingest: None,
            store: Some(store),
            hub,
            auth: Arc::new(Auth::new("t")),
            profile: None,
            alerts: None,
            retain: None,
            http: Default::default(),
            role: Default::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                crate::api::app(state).into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_bytes_arrive_before_the_database_answers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("decnet.db")).await.unwrap();
        // Every query the stream starts with now takes 3 s.
        store
            .delay
            .store(3000, std::sync::atomic::Ordering::Relaxed);
        let addr = serve(store, Default::default()).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n")
            .await
            .unwrap();
        let t = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains(": keepalive") {
            let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
                .await
                .expect("no first bytes within 2 s while the database is slow")
                .unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        let first = t.elapsed();
        let text = String::from_utf8_lossy(&got).to_string();
        assert!(first < Duration::from_secs(1), "{first:?}");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(!text.contains("event:"), "{text}");
        // The rest follows once the database has answered.
        while !String::from_utf8_lossy(&got).contains("event: stats") {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("the stream never went live")
                .unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert!(t.elapsed() >= Duration::from_secs(3), "{:?}", t.elapsed());
    }

    /// A profiler commit in a burst announces thousands of detections at once: a live
    /// client gets every one, not a reset. One hub message each overran the channel.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_of_thousands_of_detections_reaches_a_live_client_whole() {
        const N: i64 = 3000;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("decnet.db")).await.unwrap();
        let hub = crate::hub::Hub::default();
        let addr = serve(store, hub.clone()).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        // Subscribed once the first bytes are out.
        while !String::from_utf8_lossy(&got).contains(": keepalive") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("first bytes")
                .unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        hub.detections(
            (1..=N)
                .map(|id| crate::store::DetectionRow {
                    id,
                    ts: "2026-12-07T00:00:00Z".into(),
                    ip: format!("10.0.{}.{}", id / 256, id % 256),
                    body: format!(r#"{{"id":{id},"risk":{{"score":10}}}}"#),
                })
                .collect(),
        );
        let count = |g: &[u8]| {
            String::from_utf8_lossy(g)
                .matches("event: detection")
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while count(&got) < N as usize && Instant::now() < deadline {
            let text = String::from_utf8_lossy(&got);
            assert!(
                !text.contains("event: reset"),
                "reset instead of detections"
            );
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await
            {
                assert!(n > 0, "the stream ended");
                got.extend_from_slice(&buf[..n]);
            }
        }
        let text = String::from_utf8_lossy(&got);
        assert_eq!(count(&got), N as usize);
        assert!(!text.contains("event: reset"), "a reset");
        assert!(text.contains(&format!("id: 0-{N}")), "the last id");
    }

    #[test]
    fn event_ids() {
        assert_eq!(parse_event_id("12-3"), Some((12, 3)));
        assert_eq!(parse_event_id(" 0-0 "), Some((0, 0)));
        for bad in ["", "12", "-1-2", "a-b", "1-2-3"] {
            assert_eq!(parse_event_id(bad), None, "{bad}");
        }
    }
}
