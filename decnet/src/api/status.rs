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
use crate::sensor::AttachMode;

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
        (status = 401, description = "Missing or wrong token", body = super::error::ErrorBody),
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
        (status = 401, description = "Not from loopback and no valid token", body = super::error::ErrorBody),
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
