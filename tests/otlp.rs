//! A real OTLP/gRPC trace receiver for tests and benchmarks: tonic serving opentelemetry-proto's
//! `TraceService` on a loopback port of its own, on its own thread and runtime. It keeps every
//! span it is sent (flattened with its resource's attributes) and counts the TCP connections
//! it accepts, so a test can also prove that nobody connected.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value as Any},
};

/// One received span, ids in lowercase hex (parent empty for a root).
#[derive(Clone, Debug)]
pub struct SpanRec {
    pub trace_id: String,
    pub span_id: String,
    pub parent: String,
    pub name: String,
    pub kind: i32,
    pub attrs: BTreeMap<String, String>,
    /// (trace id, span id) of each link.
    pub links: Vec<(String, String)>,
    /// Names and attributes of span events, flattened to text.
    pub events: Vec<String>,
    pub resource: BTreeMap<String, String>,
}

impl SpanRec {
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs.get(k).map(String::as_str)
    }

    /// Everything the span carries, as one string (for "never contains" checks).
    pub fn all_text(&self) -> String {
        format!("{} {:?} {:?}", self.name, self.attrs, self.events)
    }
}

#[derive(Default)]
struct Sink {
    spans: Mutex<Vec<SpanRec>>,
    requests: AtomicU64,
    /// Spans received (kept or not).
    count: AtomicU64,
    /// Count only, keep nothing (benchmarks send millions).
    count_only: bool,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Service(Arc<Sink>);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if self.0.count_only {
            let n: usize = req
                .get_ref()
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum();
            self.0.count.fetch_add(n as u64, Ordering::Relaxed);
            return Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: None,
            }));
        }
        let mut out = Vec::new();
        for rs in req.into_inner().resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .map(|r| attrs(&r.attributes))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(SpanRec {
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        name: s.name,
                        kind: s.kind,
                        attrs: attrs(&s.attributes),
                        links: s
                            .links
                            .iter()
                            .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                            .collect(),
                        events: s
                            .events
                            .iter()
                            .map(|e| format!("{} {:?}", e.name, attrs(&e.attributes)))
                            .collect(),
                        resource: resource.clone(),
                    });
                }
            }
        }
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        self.0.count.fetch_add(out.len() as u64, Ordering::Relaxed);
        self.0.spans.lock().expect("spans").extend(out);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The running receiver; stopped (connections cut, port closed) by [`kill`](Self::kill) or
/// on drop.
pub struct Receiver {
    pub addr: SocketAddr,
    sink: Arc<Sink>,
    connections: Arc<AtomicU64>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        Self::start_with(Sink::default())
    }

    /// A receiver that only counts the spans it is sent.
    pub fn start_counting() -> Receiver {
        Self::start_with(Sink {
            count_only: true,
            ..Sink::default()
        })
    }

    /// Spans received so far.
    pub fn span_count(&self) -> u64 {
        self.sink.count.load(Ordering::Relaxed)
    }

    fn start_with(sink: Sink) -> Receiver {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let sink = Arc::new(sink);
        let connections = Arc::new(AtomicU64::new(0));
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let (s, c) = (sink.clone(), connections.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("receiver runtime");
            rt.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                let incoming = futures_util::stream::unfold(listener, move |l| {
                    let c = c.clone();
                    async move {
                        let r = l.accept().await.map(|(sock, _)| {
                            c.fetch_add(1, Ordering::Relaxed);
                            sock
                        });
                        Some((r, l))
                    }
                });
                let _ = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(Service(s)))
                    .serve_with_incoming(incoming)
                    .await;
            });
            // Runs until killed; then every task (and socket) is dropped at once, as when
            // a collector process dies.
            let _ = stop_rx.recv();
            rt.shutdown_timeout(Duration::ZERO);
        });
        Receiver {
            addr,
            sink,
            connections,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn spans(&self) -> Vec<SpanRec> {
        self.sink.spans.lock().expect("spans").clone()
    }

    /// Waits (bounded) until `done` holds for the spans received so far; returns them.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[SpanRec]) -> bool) -> Vec<SpanRec> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() >= deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops serving: open connections are cut and the port refuses new ones.
    pub fn kill(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}
