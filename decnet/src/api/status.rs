//! Status routes: health, every counter as JSON (`/api/v1/stats`) and as Prometheus text
//! (`/metrics`).

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::json;

use super::{error::ApiError, state::AppState};
use crate::{
    counters::{Kind, Metric, write_metric},
    sensor::{AttachMode, kernel_stats::KernelCounters},
};

#[derive(Serialize)]
pub struct Health {
    status: &'static str,
    version: &'static str,
    uptime_s: f64,
    iface: Option<String>,
    xdp_mode: Option<AttachMode>,
    egress_mode: Option<crate::sensor::EgressMode>,
    pin: Option<crate::sensor::pin::PinStatus>,
    iface_state: Option<crate::sensor::iface::IfaceSnapshot>,
    /// `--role`: what this process runs.
    role: crate::config::Role,
    /// The store's engine: `sqlite` or `postgres` (a fleet's shared database).
    store: Option<&'static str>,
    /// Each alert sink's state, lag and last error (targets redacted); empty without sinks.
    sinks: Vec<crate::alert::SinkSnapshot>,
}

#[utoipa::path(get, path = "/api/v1/health", tag = "status", security(()),
    responses((status = 200, description = "`{status, version, uptime_s, iface, xdp_mode, egress_mode, pin, iface_state, role, store, sinks}`", body = Object)))]
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
        sinks: st.alerts.as_ref().map(|a| a.snapshot()).unwrap_or_default(),
    })
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "status",
    responses(
        (status = 200, description = "Every counter: kernel, pipeline, ingest, lost, profile, sinks, retention, stream_clients", body = Object),
        (status = 401, description = "Missing or wrong token", body = super::error::ErrorBody),
    ))]
pub async fn stats(State(st): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    stats_json(&st).map(Json)
}

/// Every counter, as `/api/v1/stats` and the stream's `stats` events show them.
pub(crate) fn stats_json(st: &AppState) -> Result<serde_json::Value, ApiError> {
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
            "journal_rotated_unread": pipeline.journal_rotated_unread,
            "dead_letters": st.ingest.as_ref().map(|i| i.snapshot().dead_letters),
        },
        "profile": st.profile.as_ref().map(|p| p.snapshot()),
        "profile_lag_rows": profile_lag(st),
        "sinks": st.alerts.as_ref().map(|a| a.snapshot()),
        "retention": st.retain.as_ref().map(|r| r.snapshot()),
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

/// Prometheus text exposition of every counter /api/v1/stats reports.
#[utoipa::path(get, path = "/metrics", tag = "status",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "Not from loopback and no valid token", body = super::error::ErrorBody),
    ))]
pub(crate) async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let mut out = String::with_capacity(4096);
    if let Some(k) = &st.kernel {
        let counters = k.read().map_err(|e| ApiError::Internal(e.to_string()))?;
        Metric::write_all(KernelCounters::METRICS, &counters, &mut out);
        let budget = [
            (
                "flood_guard_rate",
                "Flood guard: events per second per source before summarising (0: off).",
                k.flood.rate,
            ),
            (
                "flood_guard_burst",
                "Flood guard: burst allowance per source.",
                k.flood.burst,
            ),
        ];
        for (name, help, v) in budget {
            write_metric(&mut out, name, help, Kind::Gauge, v);
        }
    }
    st.pipeline.snapshot().write_prometheus(&mut out);
    if let Some(i) = &st.ingest {
        i.snapshot().write_prometheus(&mut out);
    }
    if let Some(p) = &st.profile {
        p.write_prometheus(&mut out);
    }
    if let Some(a) = &st.alerts {
        a.write_prometheus(&mut out);
    }
    if let Some(r) = &st.retain {
        r.write_prometheus(&mut out);
    }
    if let Some(lag) = profile_lag(&st) {
        write_metric(
            &mut out,
            "profile_lag_rows",
            "Rows committed but not yet profiled.",
            Kind::Gauge,
            lag,
        );
    }
    write_metric(
        &mut out,
        "stream_clients",
        "SSE clients connected.",
        Kind::Gauge,
        st.hub.subscribers(),
    );
    if let Some(t) = crate::telemetry::snapshot() {
        t.write_prometheus(&mut out);
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
