//! Per-event spans without the `tracing` machinery.
//!
//! The journey of each probe is a handful of short leaf spans (`collector.event`,
//! `ingester.process_record`, `db.add_log`, ...) made at the event rate. Through
//! `tracing-opentelemetry` each costs a registry slot, field visits by every layer and an
//! SDK span: ~4.6 µs, which halved ingest throughput with tracing on. A [`LiteSpan`] is the
//! OpenTelemetry span record itself: ids from a thread-local generator, two clock reads, a
//! few attributes, handed to the exporter queue when dropped. Off (or built without the
//! `otel` feature) it is an empty value and every method is a no-op.

#[cfg(feature = "otel")]
pub use on::LiteSpan;

#[cfg(not(feature = "otel"))]
pub use off::LiteSpan;

#[cfg(feature = "otel")]
mod on {
    use std::{borrow::Cow, cell::Cell, time::SystemTime};

    use opentelemetry::{
        InstrumentationScope, KeyValue, Value,
        trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
    };
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

    struct Inner {
        cx: SpanContext,
        parent: SpanId,
        remote_parent: bool,
        name: &'static str,
        kind: SpanKind,
        start: SystemTime,
        attrs: Vec<KeyValue>,
    }

    /// A span that is exported when dropped; empty (free) when tracing is off.
    #[derive(Default)]
    pub struct LiteSpan(Option<Inner>);

    thread_local! {
        static RNG: Cell<u64> = Cell::new(seed());
    }

    fn seed() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS once per thread: unique per thread and process.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id() as u64);
        h.finish() | 1
    }

    /// xorshift64*: ids need to be unique and spread, not secret.
    fn next_id() -> u64 {
        RNG.with(|r| {
            let mut x = r.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            r.set(x);
            x.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1
        })
    }

    fn scope() -> InstrumentationScope {
        static SCOPE: std::sync::OnceLock<InstrumentationScope> = std::sync::OnceLock::new();
        SCOPE
            .get_or_init(|| InstrumentationScope::builder("decnet").build())
            .clone()
    }

    impl LiteSpan {
        pub fn none() -> Self {
            LiteSpan(None)
        }

        fn make(
            name: &'static str,
            kind: SpanKind,
            trace: TraceId,
            parent: SpanId,
            remote_parent: bool,
        ) -> Self {
            LiteSpan(Some(Inner {
                cx: SpanContext::new(
                    trace,
                    SpanId::from(next_id()),
                    TraceFlags::SAMPLED,
                    false,
                    TraceState::default(),
                ),
                parent,
                remote_parent,
                name,
                kind,
                start: SystemTime::now(),
                attrs: Vec::with_capacity(6),
            }))
        }

        /// The root of a new trace (when tracing is on).
        pub fn root(name: &'static str, kind: SpanKind) -> Self {
            if !super::super::enabled() {
                return Self::none();
            }
            let trace = ((next_id() as u128) << 64) | next_id() as u128;
            Self::make(name, kind, TraceId::from(trace), SpanId::INVALID, false)
        }

        /// A child of the remote span `trace_id`/`span_id` (hex), or a new root when they
        /// are missing or malformed.
        pub fn continuing(
            name: &'static str,
            trace_id: Option<&str>,
            span_id: Option<&str>,
        ) -> Self {
            if !super::super::enabled() {
                return Self::none();
            }
            match trace_id
                .zip(span_id)
                .and_then(|(t, s)| super::super::remote(t, s))
            {
                Some(sc) => Self::make(name, SpanKind::Consumer, sc.trace_id(), sc.span_id(), true),
                None => Self::root(name, SpanKind::Consumer),
            }
        }

        /// A child of this span (empty when this one is).
        pub fn child(&self, name: &'static str, kind: SpanKind) -> Self {
            match &self.0 {
                None => Self::none(),
                Some(p) => Self::make(name, kind, p.cx.trace_id(), p.cx.span_id(), false),
            }
        }

        pub fn is_none(&self) -> bool {
            self.0.is_none()
        }

        /// Sets an attribute. The value is only built when the span is recording.
        #[inline]
        pub fn attr<V: Into<Value>>(&mut self, key: &'static str, value: impl FnOnce() -> V) {
            if let Some(i) = &mut self.0 {
                i.attrs.push(KeyValue::new(key, value().into()));
            }
        }

        /// W3C traceparent of this span.
        pub fn traceparent(&self) -> Option<String> {
            self.0
                .as_ref()
                .map(|i| format!("00-{}-{}-01", i.cx.trace_id(), i.cx.span_id()))
        }
    }

    impl Drop for LiteSpan {
        fn drop(&mut self) {
            let Some(i) = self.0.take() else { return };
            super::super::export::submit(SpanData {
                span_context: i.cx,
                parent_span_id: i.parent,
                parent_span_is_remote: i.remote_parent,
                span_kind: i.kind,
                name: Cow::Borrowed(i.name),
                start_time: i.start,
                end_time: SystemTime::now(),
                attributes: i.attrs,
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status: Status::Unset,
                instrumentation_scope: scope(),
            });
        }
    }
}

#[cfg(not(feature = "otel"))]
mod off {
    /// Built without the `otel` feature: nothing, and every method compiles to nothing.
    #[derive(Default)]
    pub struct LiteSpan;

    /// Stands in for `opentelemetry::trace::SpanKind` in signatures.
    #[derive(Clone, Copy)]
    pub enum SpanKind {
        Internal,
        Producer,
        Consumer,
        Client,
        Server,
    }

    impl LiteSpan {
        #[inline(always)]
        pub fn none() -> Self {
            LiteSpan
        }
        #[inline(always)]
        pub fn root(_: &'static str, _: SpanKind) -> Self {
            LiteSpan
        }
        #[inline(always)]
        pub fn continuing(_: &'static str, _: Option<&str>, _: Option<&str>) -> Self {
            LiteSpan
        }
        #[inline(always)]
        pub fn child(&self, _: &'static str, _: SpanKind) -> Self {
            LiteSpan
        }
        #[inline(always)]
        pub fn is_none(&self) -> bool {
            true
        }
        #[inline(always)]
        pub fn attr<V>(&mut self, _: &'static str, _: impl FnOnce() -> V) {}
        #[inline(always)]
        pub fn traceparent(&self) -> Option<String> {
            None
        }
    }
}

#[cfg(not(feature = "otel"))]
pub use off::SpanKind;
/// The span kinds the pipeline uses, with or without the `otel` feature.
#[cfg(feature = "otel")]
pub use opentelemetry::trace::SpanKind;
