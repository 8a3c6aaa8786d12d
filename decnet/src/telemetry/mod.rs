//! Telemetry: the log subscriber, always; OpenTelemetry developer tracing only when
//! `DECNET_DEVELOPER_TRACING=true`.
//!
//! Off (the default) installs exactly the console log subscriber: no exporter, no span
//! processor, no OpenTelemetry layer. Batch-level developer spans are made through
//! [`dev_span!`](crate::dev_span), which asks [`enabled`] first (one relaxed load) and
//! otherwise returns `Span::none()`; per-event spans are [`lite::LiteSpan`]s, empty values
//! when off. A packet path therefore costs no allocation and no subscriber call. Built
//! without the `otel` cargo feature, [`enabled`] is the constant `false` and the compiler
//! removes the spans altogether (the benchmark's baseline).
//!
//! On, spans go to an OTLP/gRPC collector through [`export`]'s queue: a bounded channel and an
//! exporter thread, so a dead or slow collector costs dropped (and counted) spans, never a
//! stalled pipeline. The journey of one probe is one trace: `collector.event` (its
//! `traceparent` goes into the journal record) -> `ingester.process_record` (parented by that
//! traceparent) -> `db.add_log`, `ingester.extract_bounty` -> `db.add_bounty`. Batch-level
//! work (ingest commits, profiler runs, SSE emission) has its own root spans, which carry
//! span links to the probe traces they handled.

mod counters;
#[cfg(feature = "otel")]
mod export;
pub mod lite;
#[cfg(feature = "otel")]
mod logfmt;
mod settings;

#[cfg(feature = "otel")]
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;

pub use counters::{COUNTERS, TraceCounters, TraceSnapshot};
pub use settings::{
    DEFAULT_ENDPOINT, ENDPOINT_ENV, LOG_ENV, STANDARD_ENDPOINT_ENV, TRACING_ENV, TraceConfig,
    config_from_env,
};
use tracing_subscriber::EnvFilter;

#[cfg(feature = "otel")]
static ON: AtomicBool = AtomicBool::new(false);

/// Whether developer spans are being made. Cheap enough for a per-packet branch.
#[inline(always)]
pub(crate) fn enabled() -> bool {
    #[cfg(feature = "otel")]
    {
        ON.load(Relaxed)
    }
    #[cfg(not(feature = "otel"))]
    {
        false
    }
}

/// An `info` span when developer tracing is on, `Span::none()` (no allocation, no
/// subscriber call) when it is off. Same syntax as `tracing::info_span!`.
#[macro_export]
macro_rules! dev_span {
    ($($t:tt)*) => {
        if $crate::telemetry::enabled() {
            ::tracing::info_span!($($t)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// The exporter's counters, or None when developer tracing is off.
pub fn snapshot() -> Option<TraceSnapshot> {
    enabled().then(|| TraceSnapshot {
        exported: COUNTERS.exported.load(Relaxed),
        dropped_queue_full: COUNTERS.dropped_queue_full.load(Relaxed),
        export_failed: COUNTERS.export_failed.load(Relaxed),
    })
}

/// Flushes and stops the span exporter when dropped (a no-op when tracing is off).
#[must_use = "dropping the guard stops the span exporter"]
pub struct Guard {
    #[cfg(feature = "otel")]
    exporter: Option<export::Exporter>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(e) = self.exporter.take() {
            e.shutdown(std::time::Duration::from_secs(5));
        }
    }
}

/// Installs the global subscriber: console logs filtered by `DECNET_LOG`, plus the
/// OpenTelemetry layer and exporter when `DECNET_DEVELOPER_TRACING` is true. Needs no
/// runtime: the exporter runs its own on its thread.
pub fn init() -> anyhow::Result<Guard> {
    let filter = || EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let cfg = config_from_env().map_err(anyhow::Error::msg)?;
    let Some(cfg) = cfg else {
        tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(false)
            .with_writer(crate::textsafe::stderr)
            .init();
        return Ok(Guard {
            #[cfg(feature = "otel")]
            exporter: None,
        });
    };
    #[cfg(feature = "otel")]
    {
        let exporter = export::Exporter::start(&cfg)?;
        logfmt::install(filter(), exporter.tracer())?;
        ON.store(true, Relaxed);
        tracing::info!(endpoint = %cfg.endpoint, "developer tracing on: exporting spans over OTLP/gRPC");
        Ok(Guard {
            exporter: Some(exporter),
        })
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = cfg;
        unreachable!("config_from refuses tracing in a build without the otel feature")
    }
}

/// The span context `trace_id`/`span_id` (hex, as the journal and `logs` keep them) name.
#[cfg(feature = "otel")]
fn remote(trace_id: &str, span_id: &str) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let sc = SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(span_id).ok()?,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

/// Makes the span (which must not have been entered yet) a child of the remote span
/// `trace_id`/`span_id`. Only the HTTP tracing layer uses it, which exists with `otel`.
#[cfg(feature = "otel")]
pub(crate) fn set_parent(span: &tracing::Span, trace_id: Option<&str>, span_id: Option<&str>) {
    if let (true, Some(t), Some(s)) = (enabled() && !span.is_none(), trace_id, span_id) {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        if let Some(sc) = remote(t, s) {
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
        }
    }
}

/// Most links a span gets (the OpenTelemetry default limit; more would be dropped anyway).
#[cfg(feature = "otel")]
pub(crate) const MAX_LINKS: usize = 128;

/// Adds span links from `span` to the traces of `ids` (trace id, span id), deduplicated,
/// up to [`MAX_LINKS`].
pub(crate) fn link_all<'a>(
    span: &tracing::Span,
    ids: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    #[cfg(feature = "otel")]
    if enabled() && !span.is_none() {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let mut seen = std::collections::HashSet::new();
        for (t, s) in ids {
            if seen.len() >= MAX_LINKS {
                break;
            }
            if seen.insert(s)
                && let Some(sc) = remote(t, s)
            {
                span.add_link(sc);
            }
        }
        return;
    }
    let _ = (span, ids.into_iter());
}

/// Runs one repository call inside a `db.<method>` span (see `store::repository!`). Off, it
/// is the bare call: `Span::none()` enters and exits as a branch on a null pointer.
#[inline(always)]
pub(crate) async fn db_call<T, F: Future<Output = T>>(name: &'static str, f: F) -> T {
    use tracing::Instrument as _;
    f.instrument(crate::dev_span!(
        "db",
        otel.name = name,
        otel.kind = "client",
        db.system.name = "sqlite"
    ))
    .await
}

/// [`db_call`] for synchronous repository steps at the event rate (staging a row into a
/// batch): a [`lite::LiteSpan`] child of `parent`, nothing when `parent` is empty.
#[inline(always)]
pub(crate) fn db_step<T>(parent: &lite::LiteSpan, name: &'static str, f: impl FnOnce() -> T) -> T {
    let mut s = parent.child(name, lite::SpanKind::Client);
    s.attr("db.system.name", || "sqlite");
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<Option<TraceConfig>, String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        super::settings::config_from(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn off_unless_asked() {
        assert_eq!(cfg(&[]), Ok(None));
        assert_eq!(cfg(&[(TRACING_ENV, "false")]), Ok(None));
        assert_eq!(cfg(&[(TRACING_ENV, "")]), Ok(None));
        assert_eq!(
            cfg(&[(TRACING_ENV, "0"), (ENDPOINT_ENV, "http://x:1")]),
            Ok(None)
        );
        let e = cfg(&[(TRACING_ENV, "maybe")]).unwrap_err();
        assert!(e.contains(TRACING_ENV) && e.contains("maybe"), "{e}");
    }

    #[test]
    fn off_spans_are_empty_and_calls_pass_through() {
        // No subscriber and no exporter in unit tests: tracing is off.
        assert!(!enabled());
        let root = lite::LiteSpan::root("collector.event", lite::SpanKind::Producer);
        assert!(root.is_none() && root.traceparent().is_none());
        let mut built = false;
        let mut child = lite::LiteSpan::continuing(
            "ingester.process_record",
            Some("0af7651916cd43dd8448eb211c80319c"),
            Some("b7ad6b7169203331"),
        );
        child.attr("x", || {
            built = true;
            1i64
        });
        assert!(child.is_none() && !built, "attribute built while off");
        assert_eq!(db_step(&child, "db.add_log", || 7), 7);
        let v = futures_util::FutureExt::now_or_never(db_call("db.x", async { 9 }));
        assert_eq!(v, Some(9));
        assert!(snapshot().is_none());
    }

    #[cfg(feature = "otel")]
    #[test]
    fn endpoint_precedence_and_validation() {
        let ep = |v: &[(&str, &str)]| cfg(v).map(|c| c.map(|c| c.endpoint));
        assert_eq!(
            ep(&[(TRACING_ENV, "true")]),
            Ok(Some(DEFAULT_ENDPOINT.into()))
        );
        assert_eq!(
            ep(&[
                (TRACING_ENV, "TRUE"),
                (STANDARD_ENDPOINT_ENV, "http://b:4317")
            ]),
            Ok(Some("http://b:4317".into()))
        );
        assert_eq!(
            ep(&[
                (TRACING_ENV, "1"),
                (ENDPOINT_ENV, "http://a:4317"),
                (STANDARD_ENDPOINT_ENV, "http://b:4317")
            ]),
            Ok(Some("http://a:4317".into()))
        );
        let e = ep(&[(TRACING_ENV, "true"), (ENDPOINT_ENV, "collector:4317")]).unwrap_err();
        assert!(
            e.contains(ENDPOINT_ENV) && e.contains("collector:4317"),
            "{e}"
        );
    }
}
