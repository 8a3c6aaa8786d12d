//! The HTTP API. So far: health and stats; the rest of DESIGN.md's API lands with the store.
//!
//! `app(state)` builds the router so tests can drive it without a socket.

use std::{sync::Arc, time::Instant};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
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
    pub ingest: Option<Arc<IngestStats>>,
    pub store: Option<Store>,
    /// Live announcements (detections) for the stream.
    pub hub: crate::hub::Hub,
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
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/api/v1/attackers/{ip}", get(attacker))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "not_found", "detail": "no such route"})),
    )
        .into_response()
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    uptime_s: f64,
    iface: Option<String>,
    xdp_mode: Option<AttachMode>,
}

async fn health(State(st): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: st.started.elapsed().as_secs_f64(),
        iface: st.attached.as_ref().map(|(i, _)| i.clone()),
        xdp_mode: st.attached.as_ref().map(|(_, m)| *m),
    })
}

async fn stats(State(st): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let kernel = match &st.kernel {
        Some(k) => Some(k.read().map_err(|e| ApiError::Internal(e.to_string()))?),
        None => None,
    };
    let pipeline = st.pipeline.snapshot();
    Ok(Json(json!({
        "kernel": kernel,
        "pipeline": pipeline,
        "ingest": st.ingest.as_ref().map(|i| i.snapshot()),
        "lost": {
            "ring_reserve_failed": kernel.map(|k| k.ring_reserve_failed),
            "decode_errors": pipeline.decode_errors,
            "channel_full_dropped": pipeline.channel_full_dropped,
            "journal_write_failed": pipeline.journal_write_failed,
            "dead_letters": st.ingest.as_ref().map(|i| i.snapshot().dead_letters),
        }
    })))
}

/// Prometheus text exposition of every counter /api/v1/stats reports.
async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(4096);
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP decnet_{name} {help}\n# TYPE decnet_{name} counter\ndecnet_{name} {v}"
        );
    };
    if let Some(k) = &st.kernel {
        let k = k.read().map_err(|e| ApiError::Internal(e.to_string()))?;
        counter(
            "kernel_packets_seen_total",
            "Frames the XDP program ran on.",
            k.packets_seen,
        );
        counter(
            "kernel_packets_to_decoy_total",
            "IP packets addressed to a decoy.",
            k.packets_to_decoy,
        );
        counter(
            "kernel_events_emitted_total",
            "Events submitted to the ring buffer.",
            k.events_emitted,
        );
        counter(
            "kernel_ring_reserve_failed_total",
            "Events lost because the ring was full.",
            k.ring_reserve_failed,
        );
        counter(
            "kernel_malformed_total",
            "Frames cut short or with impossible headers.",
            k.malformed,
        );
        counter(
            "kernel_decoy_not_emitted_total",
            "Decoy packets not emitted (flow already reported).",
            k.decoy_not_emitted,
        );
    }
    let p = st.pipeline.snapshot();
    counter(
        "ring_read_total",
        "Ring entries read by userspace.",
        p.ring_read,
    );
    counter(
        "decode_errors_total",
        "Ring entries that did not decode.",
        p.decode_errors,
    );
    counter(
        "channel_full_dropped_total",
        "Journal lines dropped because the writer channel was full.",
        p.channel_full_dropped,
    );
    counter(
        "journal_written_total",
        "Journal lines written.",
        p.journal_written,
    );
    counter(
        "journal_write_failed_total",
        "Journal lines lost to write errors.",
        p.journal_write_failed,
    );
    counter(
        "journal_bytes_total",
        "Bytes written to the journal.",
        p.journal_bytes,
    );
    if let Some(i) = &st.ingest {
        let i = i.snapshot();
        counter(
            "ingest_rows_total",
            "Journal lines committed as rows.",
            i.rows,
        );
        counter(
            "ingest_dead_letters_total",
            "Journal lines that could not be ingested.",
            i.dead_letters,
        );
        counter(
            "ingest_batches_total",
            "Committed ingest batches.",
            i.batches,
        );
        counter(
            "ingest_commit_retries_total",
            "Batch commits retried because the database was busy.",
            i.commit_retries,
        );
        counter(
            "ingest_rotations_total",
            "Journal rotations followed.",
            i.rotations,
        );
        counter(
            "ingest_truncations_total",
            "Journal truncations detected.",
            i.truncations,
        );
        counter(
            "ingest_cursor_lost_total",
            "Times the saved journal position could not be found.",
            i.cursor_lost,
        );
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

/// `GET /api/v1/attackers/{ip}`: the profile, rendered from the stored state.
async fn attacker(
    State(st): State<AppState>,
    axum::extract::Path(ip): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let addr: std::net::IpAddr = ip
        .parse()
        .map_err(|_| ApiError::BadParameter("ip", "not an IPv4 or IPv6 address".into()))?;
    let store = st
        .store
        .as_ref()
        .ok_or_else(|| ApiError::Internal("no store".into()))?;
    let profile = crate::profile::load(store, &addr.to_string())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("no profile for {addr}")))?;
    Ok(Json(profile).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt as _;

    fn state() -> AppState {
        let pipeline = Arc::new(PipelineStats::default());
        PipelineStats::add(&pipeline.journal_written, 42);
        AppState {
            started: Instant::now(),
            kernel: None,
            pipeline,
            attached: None,
            ingest: Some(Arc::default()),
            store: None,
            hub: Default::default(),
        }
    }

    async fn get(uri: &str) -> (StatusCode, String) {
        let res = app(state())
            .oneshot(
                axum::http::Request::builder()
                    .uri(uri)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let (status, body) = get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains(
                "# TYPE decnet_journal_written_total counter\ndecnet_journal_written_total 42\n"
            ),
            "{body}"
        );
        assert!(body.contains("decnet_ingest_rows_total 0"));
    }

    #[tokio::test]
    async fn attacker_ip_is_validated() {
        let (status, body) = get("/api/v1/attackers/not-an-ip").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "bad_parameter");
        assert!(v["detail"].as_str().unwrap().starts_with("ip:"));
    }

    #[tokio::test]
    async fn unknown_routes_are_json_404() {
        let (status, body) = get("/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "not_found");
    }
}
