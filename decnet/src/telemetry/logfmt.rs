//! The subscriber used when developer tracing is on: console logs (filtered by
//! `DECNET_LOG`) whose lines start with the `trace_id`/`span_id` of the span they were logged
//! in, beside the OpenTelemetry layer (decnet's own spans only, whatever the log filter).

use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::trace::SdkTracer;
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::{
    EnvFilter, Layer as _,
    filter::Targets,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::SubscriberExt as _,
    registry::LookupSpan,
    util::SubscriberInitExt as _,
};

/// The global dispatcher, for looking up a span's OpenTelemetry context while formatting.
static DISPATCH: OnceLock<Dispatch> = OnceLock::new();

pub(super) fn install(filter: EnvFilter, tracer: SdkTracer) -> anyhow::Result<()> {
    // Only decnet's spans become OpenTelemetry spans: the exporter's own gRPC stack logs
    // through `tracing` too, and tracing it would feed the exporter its own traffic.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(Targets::new().with_target("decnet", tracing::Level::INFO));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(crate::textsafe::stderr)
        .event_format(Correlated(tracing_subscriber::fmt::format()))
        .with_filter(filter);
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(otel).with(fmt));
    let _ = DISPATCH.set(dispatch.clone());
    // Also routes `log` records (aya-log's kernel diagnostics) into tracing.
    dispatch
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}

/// Prefixes each line with the ids of the span it was logged in.
struct Correlated<F>(F);

impl<S, N, F> FormatEvent<S, N> for Correlated<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let id = ctx.parent_span().map(|s| s.id());
        if let (Some(id), Some(d)) = (id, DISPATCH.get())
            && let Some(cx) = tracing_opentelemetry::get_otel_context(&id, d)
        {
            let sc = cx.span().span_context().clone();
            if sc.is_valid() {
                write!(
                    writer,
                    "trace_id={} span_id={} ",
                    sc.trace_id(),
                    sc.span_id()
                )?;
            }
        }
        self.0.format_event(ctx, writer, event)
    }
}
