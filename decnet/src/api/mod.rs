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
};

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    pub started: Instant,
    pub kernel: Option<KernelStats>,
    pub pipeline: Arc<PipelineStats>,
    pub attached: Option<(String, AttachMode)>,
    pub ingest: Option<Arc<IngestStats>>,
}

/// Errors as JSON `{"error": ..., "detail": ...}`; internal error text is logged, not sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("internal error")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
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
