//! The span exporter: finished spans go into a bounded queue; one thread batches them and
//! ships them over OTLP/gRPC with its own single-threaded tokio runtime.
//!
//! The SDK's batch processor would do most of this, but it neither reports what it drops nor
//! lets us say that a full queue is never waited on. Here a finished span is a `try_send`:
//! when the collector is slow or gone the queue fills, and further spans are dropped and
//! counted in [`COUNTERS`](super::counters::COUNTERS) — the pipeline that made them never waits on the
//! network. The thread polls the queue every 50 ms rather than sleeping in `recv`: a
//! blocked receiver makes every send a futex wake-up and a context switch, which at the
//! event rate cost more than the spans themselves.

use std::{
    sync::{
        Mutex,
        atomic::Ordering::Relaxed,
        mpsc::{self, SyncSender, TryRecvError, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor},
};

use super::{counters::COUNTERS, settings::TraceConfig};

/// Spans waiting for export before new ones are dropped (the channel preallocates them:
/// ~12 MB, only when tracing is on).
const QUEUE_SPANS: usize = 32_768;
/// How often the exporter thread takes what is queued.
const POLL: Duration = Duration::from_millis(50);
/// Spans per export request.
const MAX_BATCH: usize = 2048;
/// A span waits at most this long for its batch to fill.
const MAX_DELAY: Duration = Duration::from_millis(500);
/// One export attempt gives up after this (the exporter retries 3 times with backoff).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// Export failures are logged at most this often; the counters are always exact.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);
/// After a failed export the collector counts as down for this long: batches in that time
/// are dropped (and counted) without an attempt, so a dead collector neither backs up the
/// queue with doomed retries nor holds up the flush at shutdown.
const DOWN_FOR: Duration = Duration::from_secs(5);

// Spans travel by value: boxing them would add an allocation per span to save queue slots
// for the rare flush message.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Span(SpanData),
    /// Export everything queued before this message, then answer.
    Flush(SyncSender<()>),
}

/// The running exporter: the tracer provider and the thread behind its queue.
pub(super) struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    pub(super) fn start(cfg: &TraceConfig) -> anyhow::Result<Exporter> {
        let resource = Resource::builder()
            .with_service_name("decnet")
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let queue = std::sync::Arc::new(Queue::spawn(cfg.endpoint.clone(), resource.clone())?);
        // Lite spans (lite.rs) go straight into the same queue.
        let _ = QUEUE.set(queue.clone());
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Processor(queue))
            .with_resource(resource)
            .build();
        Ok(Exporter { provider })
    }

    pub(super) fn tracer(&self) -> SdkTracer {
        self.provider.tracer("decnet")
    }

    /// Exports what is queued (waiting at most `timeout`), then stops the thread.
    pub(super) fn shutdown(self, timeout: Duration) {
        if let Err(e) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!(error = %e, "span exporter did not shut down cleanly");
        }
    }
}

/// The queue of the running exporter, for [`submit`].
static QUEUE: std::sync::OnceLock<std::sync::Arc<Queue>> = std::sync::OnceLock::new();

/// Hands a finished span to the exporter (dropped and counted when the queue is full).
pub(super) fn submit(span: SpanData) {
    if let Some(q) = QUEUE.get() {
        q.push(span);
    }
}

/// The SDK's view of the queue.
#[derive(Debug)]
struct Processor(std::sync::Arc<Queue>);

#[derive(Debug)]
struct Queue {
    tx: Mutex<Option<SyncSender<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Queue {
    fn spawn(endpoint: String, resource: Resource) -> anyhow::Result<Queue> {
        let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE_SPANS);
        // The exporter (its tonic channel) must be built inside the runtime that drives it.
        let (ready_tx, ready_rx) = mpsc::sync_channel::<anyhow::Result<()>>(1);
        let thread = std::thread::Builder::new()
            .name("span-exporter".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::anyhow!("span exporter runtime: {e}")));
                        return;
                    }
                };
                let built = rt.block_on(async {
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(endpoint.clone())
                        .with_timeout(EXPORT_TIMEOUT)
                        .with_retry_policy(opentelemetry_otlp::RetryPolicy::recommended())
                        .build()
                });
                let mut exporter = match built {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready_tx
                            .send(Err(anyhow::anyhow!("OTLP exporter for {endpoint}: {e}")));
                        return;
                    }
                };
                exporter.set_resource(&resource);
                let _ = ready_tx.send(Ok(()));
                run(&rt, &exporter, &endpoint, rx);
                let _ = exporter.shutdown();
            })?;
        ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("span exporter thread ended at start"))??;
        Ok(Queue {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    fn sender(&self) -> Option<SyncSender<Msg>> {
        self.tx.lock().ok().and_then(|g| g.clone())
    }
}

/// The exporter thread: collect spans into batches, export on size or age.
fn run(
    rt: &tokio::runtime::Runtime,
    exporter: &opentelemetry_otlp::SpanExporter,
    endpoint: &str,
    rx: mpsc::Receiver<Msg>,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    let mut oldest: Option<Instant> = None;
    let mut last_error_log: Option<Instant> = None;
    let mut down_until: Option<Instant> = None;
    let mut export = |batch: &mut Vec<SpanData>| {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        if down_until.is_some_and(|t| Instant::now() < t) {
            COUNTERS.export_failed.fetch_add(n, Relaxed);
            batch.clear();
            return;
        }
        match rt.block_on(exporter.export(std::mem::take(batch))) {
            Ok(()) => {
                COUNTERS.exported.fetch_add(n, Relaxed);
                if down_until.take().is_some() {
                    tracing::info!(endpoint, "span export works again");
                }
            }
            Err(e) => {
                COUNTERS.export_failed.fetch_add(n, Relaxed);
                let now = Instant::now();
                down_until = Some(now + DOWN_FOR);
                if last_error_log.is_none_or(|t| now - t >= ERROR_LOG_EVERY) {
                    last_error_log = Some(now);
                    tracing::warn!(endpoint, error = %e,
                        spans_lost = COUNTERS.export_failed.load(Relaxed),
                        dropped_queue_full = COUNTERS.dropped_queue_full.load(Relaxed),
                        "span export failed; spans are dropped and counted, the pipeline goes on");
                }
            }
        }
        batch.reserve(MAX_BATCH);
    };
    loop {
        std::thread::sleep(POLL);
        let mut closed = false;
        loop {
            match rx.try_recv() {
                Ok(Msg::Span(s)) => {
                    oldest.get_or_insert_with(Instant::now);
                    batch.push(s);
                    if batch.len() >= MAX_BATCH {
                        export(&mut batch);
                        oldest = None;
                    }
                }
                Ok(Msg::Flush(done)) => {
                    // Everything sent before the flush request is already in the batch.
                    export(&mut batch);
                    oldest = None;
                    let _ = done.send(());
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            export(&mut batch);
            return;
        }
        if oldest.is_some_and(|t| t.elapsed() >= MAX_DELAY) {
            export(&mut batch);
            oldest = None;
        }
    }
}

impl Queue {
    fn push(&self, span: SpanData) {
        let Ok(guard) = self.tx.lock() else { return };
        let Some(tx) = guard.as_ref() else { return };
        if tx.try_send(Msg::Span(span)).is_err() {
            COUNTERS.dropped_queue_full.fetch_add(1, Relaxed);
        }
    }
}

impl SpanProcessor for Processor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        self.0.push(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.flush(Duration::from_secs(5))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown(timeout)
    }
}

impl Queue {
    fn shutdown(&self, timeout: Duration) -> OTelSdkResult {
        let r = self.flush(timeout);
        // Closing the queue ends the thread; join only if it is done, never wait past the
        // timeout on a collector that does not answer.
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        if r.is_ok()
            && let Some(t) = self.thread.lock().ok().and_then(|mut g| g.take())
        {
            let _ = t.join();
        }
        r
    }
}

impl Queue {
    fn flush(&self, timeout: Duration) -> OTelSdkResult {
        use opentelemetry_sdk::error::OTelSdkError;
        let Some(tx) = self.sender() else {
            return Err(OTelSdkError::AlreadyShutdown);
        };
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        // A full queue is the one place we wait: at shutdown, bounded by the timeout.
        let deadline = Instant::now() + timeout;
        let mut msg = Msg::Flush(done_tx);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return Err(OTelSdkError::Timeout(timeout)),
            }
        }
        done_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}
