//! The HTTP API (DESIGN.md "HTTP API"): `app(state)` builds the router, so tests can drive
//! it without a socket.
//!
//! - `auth`: bearer token and stream tickets; `params`: query validation;
//! - `data`: logs, attackers, campaigns, detections; `stream`: the SSE stream.
//!
//! Public: `/` (the dashboard page, which then asks for the token), `/api/v1/health`,
//! `/api/v1/openapi.json` (`openapi`, generated from the handlers' annotations), and
//! `/metrics` from loopback. Everything else needs the token.

pub mod auth;
pub mod dashboard;
pub mod data;
pub mod http_metrics;
mod http_trace;
pub mod openapi;
pub mod params;
pub mod stream;

use std::{sync::Arc, time::Instant};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Serialize;
use serde_json::json;

use crate::{
    ingest::IngestStats,
    sensor::{AttachMode, KernelStats},
    stats::PipelineStats,
    store::Store,
};

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    pub started: Instant,
    pub kernel: Option<KernelStats>,
    pub pipeline: Arc<PipelineStats>,
    pub attached: Option<(String, AttachMode)>,
    /// How the TC egress program is attached (None: not attached, no probe outcomes).
    pub egress: Option<crate::sensor::EgressMode>,
    /// Pinning (`--pin`): where, and how this daemon's counters started.
    pub pin: Option<crate::handover::PinStatus>,
    /// The decoy interface: attached, gone, re-attached.
    pub iface_status: Option<Arc<crate::reattach::IfaceStatus>>,
    pub ingest: Option<Arc<IngestStats>>,
    pub store: Option<Store>,
    /// Live announcements (logs, detections) for the stream.
    pub hub: crate::hub::Hub,
    pub auth: Arc<auth::Auth>,
    pub profile: Option<Arc<crate::profile::ProfileStats>>,
    pub http: Arc<http_metrics::HttpMetrics>,
    /// `--role` of this process.
    pub role: crate::config::Role,
}

/// Errors as JSON `{"error": ..., "detail": ...}`; internal error text is logged, not sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("internal error")]
    Internal(String),
    #[error("bad parameter {0}: {1}")]
    BadParameter(&'static str, String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadParameter(name, why) => (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "bad_parameter", "detail": format!("{name}: {why}")})),
            )
                .into_response(),
            ApiError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "not_found", "detail": what})),
            )
                .into_response(),
            ApiError::Unauthorized(why) => (
                StatusCode::UNAUTHORIZED,
                [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({"error": "unauthorized", "detail": why})),
            )
                .into_response(),
            ApiError::Unavailable(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "unavailable", "detail": why})),
            )
                .into_response(),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "API internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": "internal", "detail": "see the daemon log"})),
                )
                    .into_response()
            }
        }
    }
}

pub fn app(state: AppState) -> Router {
    let protected = Router::new()
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/logs", get(data::logs))
        .route("/api/v1/attackers", get(data::attackers))
        .route("/api/v1/attackers/{ip}", get(data::attacker))
        .route("/api/v1/campaigns", get(data::campaigns))
        .route("/api/v1/campaigns/{id}", get(data::campaign))
        .route("/api/v1/detections", get(data::detections))
        .route("/api/v1/stream/ticket", post(ticket))
        .route("/api/v1/stream", get(stream::stream))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ));
    let metrics = Router::new().route("/metrics", get(metrics)).route_layer(
        axum::middleware::from_fn_with_state(state.clone(), auth::require_unless_loopback),
    );
    let app = Router::new()
        .route("/", get(dashboard::page))
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi::document))
        .merge(protected)
        .merge(metrics)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            http_metrics::track,
        ));
    http_trace::layer(app).with_state(state)
}

/// `POST /api/v1/stream/ticket`: a single-use ticket for `GET /api/v1/stream?ticket=`.
#[utoipa::path(post, path = "/api/v1/stream/ticket", tag = "stream",
    responses(
        (status = 200, description = "`{ticket, expires_in_s}`: opens one stream within 30 s", body = Object),
        (status = 401, description = "Missing or wrong token", body = openapi::ErrorBody),
        (status = 503, description = "Too many outstanding tickets", body = openapi::ErrorBody),
    ))]
pub async fn ticket(State(st): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let t = st.auth.issue_ticket()?;
    Ok(Json(json!({
        "ticket": t,
        "expires_in_s": auth::TICKET_TTL.as_secs(),
    })))
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "not_found", "detail": "no such route"})),
    )
        .into_response()
}

#[derive(Serialize)]
pub struct Health {
    status: &'static str,
    version: &'static str,
    uptime_s: f64,
    iface: Option<String>,
    xdp_mode: Option<AttachMode>,
    egress_mode: Option<crate::sensor::EgressMode>,
    pin: Option<crate::handover::PinStatus>,
    iface_state: Option<crate::reattach::IfaceSnapshot>,
    /// `--role`: what this process runs.
    role: crate::config::Role,
    /// The store's engine: `sqlite` or `postgres` (a fleet's shared database).
    store: Option<&'static str>,
}

#[utoipa::path(get, path = "/api/v1/health", tag = "status", security(()),
    responses((status = 200, description = "`{status, version, uptime_s, iface, xdp_mode, egress_mode, pin, iface_state, role, store}`", body = Object)))]
pub async fn health(State(st): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: st.started.elapsed().as_secs_f64(),
        iface: st.attached.as_ref().map(|(i, _)| i.clone()),
        xdp_mode: st.attached.as_ref().map(|(_, m)| *m),
        egress_mode: st.egress,
        pin: st.pin.clone(),
        iface_state: st.iface_status.as_ref().map(|s| s.snapshot()),
        role: st.role,
        store: st.store.as_ref().map(|s| match s.backend() {
            crate::store::Backend::Sqlite => "sqlite",
            crate::store::Backend::Postgres => "postgres",
        }),
    })
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "status",
    responses(
        (status = 200, description = "Every counter: kernel, pipeline, ingest, lost, stream_clients", body = Object),
        (status = 401, description = "Missing or wrong token", body = openapi::ErrorBody),
    ))]
pub async fn stats(State(st): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    stats_json(&st).map(Json)
}

/// Every counter, as `/api/v1/stats` and the stream's `stats` events show them.
pub fn stats_json(st: &AppState) -> Result<serde_json::Value, ApiError> {
    let kernel = match &st.kernel {
        Some(k) => Some(k.read().map_err(|e| ApiError::Internal(e.to_string()))?),
        None => None,
    };
    let pipeline = st.pipeline.snapshot();
    Ok(json!({
        "kernel": kernel,
        "pipeline": pipeline,
        "ingest": st.ingest.as_ref().map(|i| i.snapshot()),
        "lost": {
            "ring_reserve_failed": kernel.map(|k| k.ring_reserve_failed),
            "decode_errors": pipeline.decode_errors,
            "channel_full_dropped": pipeline.channel_full_dropped,
            "journal_write_failed": pipeline.journal_write_failed,
            "dead_letters": st.ingest.as_ref().map(|i| i.snapshot().dead_letters),
        },
        "profile": st.profile.as_ref().map(|p| p.snapshot()),
        "profile_lag_rows": profile_lag(st),
        "stream_clients": st.hub.subscribers(),
        "pin": st.pin,
        "iface": st.iface_status.as_ref().map(|s| s.snapshot()),
        // The per-source budget loaded into the kernel (withheld counts: kernel.suppressed).
        "flood_guard": st.kernel.as_ref().map(|k| k.flood),
        // Developer tracing's exporter (null when tracing is off).
        "tracing": crate::telemetry::snapshot(),
    }))
}

/// Rows committed but not yet profiled.
fn profile_lag(st: &AppState) -> Option<u64> {
    let ingested = st
        .ingest
        .as_ref()?
        .last_id
        .load(std::sync::atomic::Ordering::Relaxed);
    let profiled = st
        .profile
        .as_ref()?
        .cursor
        .load(std::sync::atomic::Ordering::Relaxed);
    Some(ingested.saturating_sub(profiled))
}

fn counter_to(out: &mut String, name: &str, help: &str, v: u64) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "# HELP decnet_{name} {help}\n# TYPE decnet_{name} counter\ndecnet_{name} {v}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "# HELP decnet_{name} {help}\n# TYPE decnet_{name} gauge\ndecnet_{name} {v}"
    );
}

/// Prometheus text exposition of every counter /api/v1/stats reports.
#[utoipa::path(get, path = "/metrics", tag = "status",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "Not from loopback and no valid token", body = openapi::ErrorBody),
    ))]
pub async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let mut out = String::with_capacity(4096);
    if let Some(k) = &st.kernel {
        let k = k.read().map_err(|e| ApiError::Internal(e.to_string()))?;
        counter_to(
            &mut out,
            "kernel_packets_seen_total",
            "Frames the XDP program ran on.",
            k.packets_seen,
        );
        counter_to(
            &mut out,
            "kernel_packets_to_decoy_total",
            "IP packets addressed to a decoy.",
            k.packets_to_decoy,
        );
        counter_to(
            &mut out,
            "kernel_events_emitted_total",
            "Events submitted to the ring buffer.",
            k.events_emitted,
        );
        counter_to(
            &mut out,
            "kernel_ring_reserve_failed_total",
            "Events lost because the ring was full.",
            k.ring_reserve_failed,
        );
        counter_to(
            &mut out,
            "kernel_malformed_total",
            "Frames cut short or with impossible headers.",
            k.malformed,
        );
        counter_to(
            &mut out,
            "kernel_decoy_not_emitted_total",
            "Decoy packets not emitted (flow already reported).",
            k.decoy_not_emitted,
        );
        counter_to(
            &mut out,
            "kernel_suppressed_total",
            "Events the flood guard withheld from over-budget sources (counted in summaries).",
            k.suppressed,
        );
        counter_to(
            &mut out,
            "kernel_suppressed_summaries_total",
            "source_suppressed summaries the kernel submitted.",
            k.suppressed_summaries,
        );
        for (name, help, v) in [
            (
                "kernel_egress_seen_total",
                "Frames the TC egress program ran on.",
                k.egress_seen,
            ),
            (
                "kernel_egress_from_decoy_total",
                "Egress packets sent by a decoy (its answers).",
                k.egress_from_decoy,
            ),
            (
                "kernel_probe_outcomes_total",
                "probe_outcome events submitted (decoy answered a reported probe).",
                k.probe_outcomes,
            ),
            (
                "kernel_outcomes_unmatched_total",
                "Decoy answers to no probe in the flow map (evicted or older than the sensor).",
                k.outcomes_unmatched,
            ),
            (
                "kernel_outcomes_withheld_total",
                "Decoy answers to probes the flood guard withheld.",
                k.outcomes_withheld,
            ),
            (
                "kernel_flow_summaries_total",
                "tcp_flow summaries the kernel submitted.",
                k.flow_summaries,
            ),
            (
                "kernel_egress_malformed_total",
                "Decoy egress frames that could not be parsed.",
                k.egress_malformed,
            ),
        ] {
            counter_to(&mut out, name, help, v);
        }
    }
    if let Some(k) = &st.kernel {
        gauge(
            &mut out,
            "flood_guard_rate",
            "Flood guard: events per second per source before summarising (0: off).",
            k.flood.rate as f64,
        );
        gauge(
            &mut out,
            "flood_guard_burst",
            "Flood guard: burst allowance per source.",
            k.flood.burst as f64,
        );
    }
    let p = st.pipeline.snapshot();
    counter_to(
        &mut out,
        "suppressed_reported_total",
        "Withheld events accounted for by written source_suppressed records.",
        p.suppressed_reported,
    );
    counter_to(
        &mut out,
        "flows_swept_total",
        "tcp_flow summaries written by the userspace sweep (idle, evicted, shutdown).",
        p.flows_swept,
    );
    counter_to(
        &mut out,
        "flows_unwatched_total",
        "Flows not watched for idle/eviction because the watch list was full.",
        p.flows_unwatched,
    );
    counter_to(
        &mut out,
        "ring_read_total",
        "Ring entries read by userspace.",
        p.ring_read,
    );
    counter_to(
        &mut out,
        "decode_errors_total",
        "Ring entries that did not decode.",
        p.decode_errors,
    );
    counter_to(
        &mut out,
        "channel_full_dropped_total",
        "Journal lines dropped because the writer channel was full.",
        p.channel_full_dropped,
    );
    counter_to(
        &mut out,
        "journal_written_total",
        "Journal lines written.",
        p.journal_written,
    );
    counter_to(
        &mut out,
        "journal_write_failed_total",
        "Journal lines lost to write errors.",
        p.journal_write_failed,
    );
    counter_to(
        &mut out,
        "journal_bytes_total",
        "Bytes written to the journal.",
        p.journal_bytes,
    );
    counter_to(
        &mut out,
        "summaries_swept_total",
        "Flood-guard summaries written by the userspace sweep of quiet sources.",
        p.summaries_swept,
    );
    counter_to(
        &mut out,
        "summaries_merged_total",
        "Kernel flood-guard summaries a sweep had already reported (not written).",
        p.summaries_merged,
    );
    if let Some(i) = &st.ingest {
        let i = i.snapshot();
        counter_to(
            &mut out,
            "ingest_rows_total",
            "Journal lines committed as rows.",
            i.rows,
        );
        counter_to(
            &mut out,
            "ingest_dead_letters_total",
            "Journal lines that could not be ingested.",
            i.dead_letters,
        );
        counter_to(
            &mut out,
            "ingest_batches_total",
            "Committed ingest batches.",
            i.batches,
        );
        counter_to(
            &mut out,
            "ingest_commit_retries_total",
            "Batch commits retried because the database was busy.",
            i.commit_retries,
        );
        counter_to(
            &mut out,
            "ingest_rotations_total",
            "Journal rotations followed.",
            i.rotations,
        );
        counter_to(
            &mut out,
            "ingest_truncations_total",
            "Journal truncations detected.",
            i.truncations,
        );
        counter_to(
            &mut out,
            "ingest_cursor_lost_total",
            "Times the saved journal position could not be found.",
            i.cursor_lost,
        );
        gauge(
            &mut out,
            "ingest_lag_bytes",
            "Journal bytes written but not yet read by the ingester.",
            i.lag_bytes as f64,
        );
        gauge(
            &mut out,
            "ingest_lag_seconds",
            "Seconds since the last commit while journal bytes wait (0 when caught up).",
            i.lag_seconds,
        );
    }
    if let Some(p) = &st.profile {
        use std::sync::atomic::Ordering::Relaxed;
        counter_to(
            &mut out,
            "profile_rows_total",
            "Rows folded into attacker profiles.",
            p.rows.load(Relaxed),
        );
        counter_to(
            &mut out,
            "profile_fed_rows_total",
            "Rows of those taken from this process's ingester in memory, not read back.",
            p.fed.load(Relaxed),
        );
        counter_to(
            &mut out,
            "profile_detections_total",
            "Detections emitted (class, tools, campaign or risk band changed).",
            p.detections.load(Relaxed),
        );
        counter_to(
            &mut out,
            "profile_retries_total",
            "Profile updates that failed (database busy, disk full) and were retried.",
            p.retries.load(Relaxed),
        );
    }
    if let Some(lag) = profile_lag(&st) {
        gauge(
            &mut out,
            "profile_lag_rows",
            "Rows committed but not yet profiled.",
            lag as f64,
        );
    }
    gauge(
        &mut out,
        "stream_clients",
        "SSE clients connected.",
        st.hub.subscribers() as f64,
    );
    if let Some(t) = crate::telemetry::snapshot() {
        counter_to(
            &mut out,
            "trace_spans_exported_total",
            "Developer-tracing spans the collector accepted.",
            t.exported,
        );
        counter_to(
            &mut out,
            "trace_spans_dropped_total",
            "Developer-tracing spans dropped because the export queue was full.",
            t.dropped_queue_full,
        );
        counter_to(
            &mut out,
            "trace_spans_export_failed_total",
            "Developer-tracing spans lost in failed exports (collector unreachable).",
            t.export_failed,
        );
    }
    st.http.render(&mut out);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{body::Body, extract::connect_info::MockConnectInfo};
    use tower::ServiceExt as _;

    const TOKEN: &str = "test-token-0123456789";

    fn state(store: Option<Store>) -> AppState {
        let pipeline = Arc::new(PipelineStats::default());
        PipelineStats::add(&pipeline.journal_written, 42);
        AppState {
            started: Instant::now(),
            kernel: None,
            pipeline,
            attached: None,
            egress: None,
            pin: None,
            iface_status: None,
            ingest: Some(Arc::default()),
            store,
            hub: Default::default(),
            auth: Arc::new(auth::Auth::new(TOKEN)),
            profile: None,
            http: Default::default(),
            role: Default::default(),
        }
    }

    /// A store with 30 rows from 3 sources, profiled.
    async fn seeded() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("decnet.db")).await.unwrap();
        let logs = (0..30)
            .map(|i| crate::store::NewLog {
                ts: crate::timefmt::rfc3339_ns(1_795_723_674_000_000_000 + i * 10_000_000),
                decky: "web".into(),
                service: format!("tcp/{}", 20 + i),
                event_type: if i % 3 == 0 { "tcp_probe" } else { "tcp_syn" }.into(),
                attacker_ip: format!("10.0.0.{}", i % 3 + 1),
                fields: format!(
                    r#"{{"dst_port":{},"flags":"S","window":1024,"ttl":50,"options":"M1460"}}"#,
                    20 + i
                ),
                trace_id: None,
                span_id: None,
                sensor: Default::default(),
            })
            .collect();
        store
            .commit_batch(&crate::store::Batch {
                logs,
                ..Default::default()
            })
            .await
            .unwrap();
        crate::profile::Profiler::new(store.clone())
            .catch_up()
            .await
            .unwrap();
        (dir, store)
    }

    async fn call(
        app: Router,
        method: &str,
        uri: &str,
        token: Option<&str>,
    ) -> (StatusCode, String) {
        let mut req = axum::http::Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 22)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn json(body: &str) -> serde_json::Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    #[tokio::test]
    async fn health_is_public_metrics_public_on_loopback_only() {
        let (status, body) = call(app(state(None)), "GET", "/api/v1/health", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body)["status"], "ok");
        // No peer address known (or a remote one): the token is required.
        let (status, _) = call(app(state(None)), "GET", "/metrics", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let remote = app(state(None)).layer(MockConnectInfo(std::net::SocketAddr::from((
            [192, 0, 2, 1],
            4000,
        ))));
        assert_eq!(
            call(remote, "GET", "/metrics", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (status, body) = call(app(state(None)), "GET", "/metrics", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK);
        let local = app(state(None)).layer(MockConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            4000,
        ))));
        let (status, local_body) = call(local, "GET", "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        for b in [&body, &local_body] {
            assert!(
                b.contains(
                    "# TYPE decnet_journal_written_total counter\ndecnet_journal_written_total 42\n"
                ),
                "{b}"
            );
            assert!(b.contains("decnet_ingest_rows_total 0"));
        }
    }

    #[tokio::test]
    async fn metrics_carry_lags_stream_clients_and_request_durations() {
        let st = state(None);
        st.ingest
            .as_ref()
            .unwrap()
            .lag_bytes
            .store(1234, std::sync::atomic::Ordering::Relaxed);
        let _rx = st.hub.subscribe();
        call(app(st.clone()), "GET", "/api/v1/health", None).await;
        call(app(st.clone()), "GET", "/api/v1/attackers/x", Some(TOKEN)).await;
        let (status, body) = call(app(st), "GET", "/metrics", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK);
        for want in [
            "# TYPE decnet_ingest_lag_bytes gauge\ndecnet_ingest_lag_bytes 1234\n",
            "decnet_ingest_lag_seconds ",
            "decnet_stream_clients 1\n",
            "# TYPE decnet_http_request_duration_seconds histogram",
            "decnet_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/health\"} 1\n",
            // Routes are patterns, not the paths asked for.
            "route=\"/api/v1/attackers/{ip}\"",
        ] {
            assert!(body.contains(want), "{want} missing:\n{body}");
        }
    }

    #[tokio::test]
    async fn every_protected_route_needs_the_token() {
        let (_d, store) = seeded().await;
        let routes = [
            ("GET", "/api/v1/stats"),
            ("GET", "/api/v1/logs"),
            ("GET", "/api/v1/attackers"),
            ("GET", "/api/v1/attackers/10.0.0.1"),
            ("GET", "/api/v1/campaigns"),
            ("GET", "/api/v1/detections"),
            ("POST", "/api/v1/stream/ticket"),
        ];
        for (method, uri) in routes {
            let st = state(Some(store.clone()));
            let (status, body) = call(app(st.clone()), method, uri, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {body}");
            assert_eq!(json(&body)["error"], "unauthorized");
            let (status, _) = call(app(st.clone()), method, uri, Some("wrong-token")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
            let (status, body) = call(app(st), method, uri, Some(TOKEN)).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            json(&body);
        }
        // The stream with neither token nor ticket.
        let (status, _) = call(app(state(Some(store))), "GET", "/api/v1/stream", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn bad_parameters_are_json_400s_naming_the_parameter() {
        let (_d, store) = seeded().await;
        let cases = [
            ("/api/v1/logs?limit=0", "limit"),
            ("/api/v1/logs?limit=1001", "limit"),
            ("/api/v1/logs?limit=abc", "limit"),
            ("/api/v1/logs?after_id=-1", "after_id"),
            ("/api/v1/logs?attacker_ip=10.0.0.999", "attacker_ip"),
            ("/api/v1/logs?event_type=nope", "event_type"),
            ("/api/v1/logs?limit=1&limit=2", "limit"),
            ("/api/v1/logs?bogus=1", "query"),
            ("/api/v1/attackers?sort=name", "sort"),
            ("/api/v1/attackers?offset=99999999", "offset"),
            ("/api/v1/attackers/not-an-ip", "ip"),
            ("/api/v1/campaigns/abc", "id"),
            ("/api/v1/campaigns/0", "id"),
            ("/api/v1/detections?after_id=x", "after_id"),
            ("/api/v1/stream?last_event_id=nope", "last_event_id"),
            ("/api/v1/stream?min_risk=101", "min_risk"),
        ];
        for (uri, param) in cases {
            let (status, body) =
                call(app(state(Some(store.clone()))), "GET", uri, Some(TOKEN)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            let v = json(&body);
            assert_eq!(v["error"], "bad_parameter", "{uri}");
            assert!(
                v["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{param}:")),
                "{uri}: {v}"
            );
        }
        for uri in [
            "/api/v1/attackers/10.9.9.9",
            "/api/v1/campaigns/999",
            "/nope",
        ] {
            let (status, body) =
                call(app(state(Some(store.clone()))), "GET", uri, Some(TOKEN)).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(json(&body)["error"], "not_found");
        }
    }

    #[tokio::test]
    async fn pages_cover_everything_once() {
        let (_d, store) = seeded().await;
        let st = state(Some(store));
        let mut after = 0;
        let mut ids = vec![];
        loop {
            let (status, body) = call(
                app(st.clone()),
                "GET",
                &format!("/api/v1/logs?after_id={after}&limit=7"),
                Some(TOKEN),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            let v = json(&body);
            let page = v["logs"].as_array().unwrap();
            if page.is_empty() {
                assert_eq!(v["next_after_id"], after);
                break;
            }
            assert!(page.len() <= 7);
            ids.extend(page.iter().map(|l| l["id"].as_i64().unwrap()));
            assert!(
                page[0]["fields"]["dst_port"].is_u64(),
                "fields is an object"
            );
            after = v["next_after_id"].as_i64().unwrap();
        }
        assert_eq!(ids, (1..=30).collect::<Vec<_>>());
        let (_, body) = call(
            app(st.clone()),
            "GET",
            "/api/v1/logs?attacker_ip=10.0.0.2&event_type=tcp_syn&limit=1000",
            Some(TOKEN),
        )
        .await;
        let v = json(&body);
        let rows = v["logs"].as_array().unwrap();
        assert!(!rows.is_empty());
        assert!(
            rows.iter()
                .all(|r| r["attacker_ip"] == "10.0.0.2" && r["event_type"] == "tcp_syn")
        );
        let (_, body) = call(
            app(st.clone()),
            "GET",
            "/api/v1/attackers?limit=2&offset=1&sort=events",
            Some(TOKEN),
        )
        .await;
        let v = json(&body);
        assert_eq!(v["total"], 3);
        assert_eq!(v["attackers"].as_array().unwrap().len(), 2);
        assert_eq!(v["attackers"][0]["event_count"], 10);
        assert_eq!(v["attackers"][0]["class"], "scanning");
    }

    #[tokio::test]
    async fn a_stream_ticket_works_once() {
        let (_d, store) = seeded().await;
        let st = state(Some(store));
        let (status, body) = call(
            app(st.clone()),
            "POST",
            "/api/v1/stream/ticket",
            Some(TOKEN),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let v = json(&body);
        assert_eq!(v["expires_in_s"], 30);
        let uri = format!("/api/v1/stream?ticket={}", v["ticket"].as_str().unwrap());
        let res = app(st.clone())
            .oneshot(axum::http::Request::get(&uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        assert_eq!(res.headers()["cache-control"], "no-cache");
        assert_eq!(res.headers()["x-accel-buffering"], "no");
        drop(res);
        let (status, body) = call(app(st), "GET", &uri, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
}
