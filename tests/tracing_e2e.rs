//! Developer tracing end to end: the real daemon in a namespace lab, a real probe, and a
//! real OTLP/gRPC receiver (tests/otlp.rs). One probe must be one trace from capture to
//! the database; the profiler and the SSE stream must link back to it; nothing secret may
//! leave in a span; with tracing off nothing may connect; a dead collector must not cost a
//! single record.

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use decnet_tests::{
    API_TOKEN, Daemon, Lab,
    otlp::{Receiver, SpanRec},
    read_journal, require_root, require_tool,
};
use serde_json::Value;

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("decnet-trace-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("temp dir");
    p
}

/// A password that must never appear in a span.
const SECRET: &str = "Tr4ceS3cretPW";
/// base64("admin:Tr4ceS3cretPW")
const SECRET_B64: &str = "YWRtaW46VHI0Y2VTM2NyZXRQVw==";

/// Connects from the attacker namespace to `decoy:port` and sends an HTTP request with
/// Basic credentials.
fn send_credentials(lab: &Lab, port: u16) {
    let script = format!(
        "import socket\ns=socket.create_connection(('{}',{port}),timeout=5)\n\
         s.sendall(b'GET /admin HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Basic {SECRET_B64}\\r\\n\\r\\n')\n\
         s.recv(16)\ns.close()\n",
        lab.decoy
    );
    lab.exec(&["python3", "-c", &script], 20);
}

/// A listener on the decoy address that answers one connection with one line (so the
/// attacker's payload is sent over a completed handshake); gives up after `secs` seconds.
fn decoy_listener(addr: &str, port: u16, secs: u64) -> std::thread::JoinHandle<()> {
    let l = std::net::TcpListener::bind((addr, port)).expect("bind decoy listener");
    l.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(b"HTTP/1.0 401 Unauthorized\r\n\r\n");
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    })
}

/// An SSE connection to the daemon carrying a `traceparent` header.
struct Sse {
    sock: TcpStream,
    text: String,
}

impl Sse {
    fn open(daemon: &Daemon, traceparent: &str) -> Sse {
        let mut sock = TcpStream::connect(daemon.api).expect("connect API");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        write!(
            sock,
            "GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_TOKEN}\r\n\
             traceparent: {traceparent}\r\n\r\n"
        )
        .expect("send stream request");
        let mut s = Sse {
            sock,
            text: String::new(),
        };
        s.read_until(": keepalive", Duration::from_secs(10));
        s
    }

    fn read_until(&mut self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        let mut buf = [0u8; 8192];
        while !self.text.contains(needle) {
            assert!(
                Instant::now() < end,
                "stream never showed {needle:?}: {}",
                self.text
            );
            match self.sock.read(&mut buf) {
                Ok(0) => panic!("stream closed: {}", self.text),
                Ok(n) => self.text.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(_) => {}
            }
        }
    }
}

fn named<'a>(spans: &'a [SpanRec], name: &str) -> Vec<&'a SpanRec> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn child_of<'a>(spans: &'a [SpanRec], parent: &SpanRec, name: &str) -> Vec<&'a SpanRec> {
    spans
        .iter()
        .filter(|s| s.name == name && s.trace_id == parent.trace_id && s.parent == parent.span_id)
        .collect()
}

fn one<'a>(v: Vec<&'a SpanRec>, what: &str, spans: &[SpanRec]) -> &'a SpanRec {
    assert_eq!(
        v.len(),
        1,
        "expected exactly one {what}, got {}: {v:#?}\nnames: {:?}",
        v.len(),
        spans.iter().map(|s| &s.name).collect::<BTreeSet<_>>()
    );
    v[0]
}

fn links_to(s: &SpanRec, trace: &str, span: &str) -> bool {
    s.links.iter().any(|(t, p)| t == trace && p == span)
}

#[test]
fn one_probe_is_one_trace_from_capture_to_the_stream() {
    if !require_root() {
        return;
    }
    for t in ["ip", "python3"] {
        require_tool(t);
    }
    let receiver = Receiver::start();
    let lab = Lab::new(21);
    let dir = tempfile_dir("journey");
    let endpoint = receiver.endpoint();
    let mut daemon = Daemon::start_with_env(
        &lab.host_if,
        &[format!("{}=web", lab.decoy)],
        &dir,
        &[
            ("DECNET_DEVELOPER_TRACING", "true"),
            ("DECNET_OTEL_ENDPOINT", &endpoint),
            ("DECNET_LOG", "info,decnet::ingest=debug"),
        ],
    );
    let listener = decoy_listener(&lab.decoy, 8080, 30);
    // The stream's caller continues its own trace: the header's ids must be the server
    // span's trace and parent.
    let (http_trace, http_parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut sse = Sse::open(&daemon, &format!("00-{http_trace}-{http_parent}-01"));

    send_credentials(&lab, 8080);
    sse.read_until("\"event_type\":\"tcp_payload\"", Duration::from_secs(15));
    let health_tp = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    {
        let mut s = TcpStream::connect(daemon.api).expect("connect");
        write!(
            s,
            "GET /api/v1/health HTTP/1.1\r\nHost: x\r\ntraceparent: 00-{}-{}-01\r\nConnection: close\r\n\r\n",
            health_tp.0, health_tp.1
        )
        .expect("health request");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    let stats = daemon.settle();
    let journal = read_journal(&daemon.journal_path());
    let payload = journal
        .iter()
        .find(|r| r["attacker_ip"] == lab.attacker.as_str() && r["event_type"] == "tcp_payload")
        .unwrap_or_else(|| panic!("no tcp_payload record: {journal:?}"));
    // Every record carries the traceparent of its collector.event span.
    for r in &journal {
        let tp = r["traceparent"]
            .as_str()
            .unwrap_or_else(|| panic!("no traceparent: {r}"));
        assert!(tp.len() == 55 && tp.starts_with("00-"), "{tp}");
    }
    let tp = payload["traceparent"].as_str().expect("traceparent");
    let (trace, span) = (&tp[3..35], &tp[36..52]);

    // Profiles absorb the rows, and the stream's spans end once the client is gone (the
    // next stats event finds the socket closed).
    let p = daemon.attacker(&lab.attacker);
    assert!(p["bounty_count"].as_u64().unwrap_or(0) >= 1, "{p}");
    drop(sse);
    let attacker = lab.attacker.clone();
    let spans = receiver.wait_for(Duration::from_secs(20), |s| {
        s.iter()
            .any(|x| x.name == "sse.emit_logs" && links_to(x, trace, span))
            && s.iter().any(|x| {
                x.name == "profiler.process_ip" && x.attr("attacker_ip") == Some(&attacker)
            })
            && s.iter()
                .any(|x| x.attr("http.route") == Some("/api/v1/stream"))
            && s.iter()
                .any(|x| x.attr("http.route") == Some("/api/v1/health"))
    });
    let st = daemon.stop();
    assert!(st.success(), "decnet exit {st}:\n{}", daemon.log_text());
    listener.join().expect("listener");
    // Whatever was still queued is flushed at shutdown.
    let spans = {
        let n = spans.len();
        receiver.wait_for(Duration::from_secs(5), |s| s.len() > n)
    };

    // Resource.
    for s in &spans {
        assert_eq!(
            s.resource.get("service.name").map(String::as_str),
            Some("decnet")
        );
        assert_eq!(
            s.resource.get("service.version").map(String::as_str),
            Some(env!("CARGO_PKG_VERSION"))
        );
    }

    // collector.event -> ingester.process_record -> db.add_log, ingester.extract_bounty ->
    // db.add_bounty, all in the probe's own trace.
    let event = one(
        spans
            .iter()
            .filter(|s| s.name == "collector.event" && s.span_id == span)
            .collect(),
        "collector.event of the payload record",
        &spans,
    );
    assert_eq!(event.trace_id, trace);
    assert_eq!(event.parent, "", "collector.event starts the probe's trace");
    assert_eq!(event.attr("event_type"), Some("tcp_payload"), "{event:?}");
    let record = one(
        child_of(&spans, event, "ingester.process_record"),
        "process_record",
        &spans,
    );
    one(child_of(&spans, record, "db.add_log"), "db.add_log", &spans);
    let extract = one(
        child_of(&spans, record, "ingester.extract_bounty"),
        "ingester.extract_bounty",
        &spans,
    );
    let bounties = child_of(&spans, extract, "db.add_bounty");
    assert!(!bounties.is_empty(), "no db.add_bounty under {extract:?}");
    assert_eq!(
        extract.attr("bounties"),
        Some(bounties.len().to_string().as_str())
    );

    // The batch that committed the row: its own root, linked to the probe, with the
    // repository call (db.commit_batch) as its child.
    let commit = one(
        named(&spans, "ingester.commit_batch")
            .into_iter()
            .filter(|s| links_to(s, trace, span))
            .collect(),
        "ingester.commit_batch linking the probe",
        &spans,
    );
    assert_eq!(commit.parent, "");
    one(
        child_of(&spans, commit, "db.commit_batch"),
        "db.commit_batch",
        &spans,
    );

    // Profiler: incremental_update (linked) > update_profiles > process_ip with attributes.
    let update = one(
        named(&spans, "profiler.incremental_update")
            .into_iter()
            .filter(|s| links_to(s, trace, span))
            .collect(),
        "profiler.incremental_update linking the probe",
        &spans,
    );
    // One update_profiles per batch of the run; the attacker's row is in one of them.
    let per_batch = child_of(&spans, update, "profiler.update_profiles");
    assert!(
        !per_batch.is_empty(),
        "no profiler.update_profiles under {update:?}"
    );
    let ip = one(
        per_batch
            .iter()
            .flat_map(|b| child_of(&spans, b, "profiler.process_ip"))
            .filter(|s| s.attr("attacker_ip") == Some(lab.attacker.as_str()))
            .collect(),
        "profiler.process_ip of the attacker",
        &spans,
    );
    let profiles = per_batch
        .iter()
        .find(|b| b.span_id == ip.parent)
        .expect("the batch of the attacker's process_ip");
    for k in [
        "event_count",
        "is_traversal",
        "bounty_count",
        "command_count",
        "class",
        "risk",
    ] {
        assert!(ip.attrs.contains_key(k), "process_ip lacks {k}: {ip:?}");
    }
    assert_eq!(ip.attr("is_traversal"), Some("false"));
    assert!(ip.attr("bounty_count").unwrap_or("0") != "0", "{ip:?}");
    assert!(
        !child_of(&spans, update, "db.logs_after").is_empty(),
        "no db.logs_after under the profiler run"
    );
    assert!(
        !child_of(&spans, profiles, "db.load_behaviors").is_empty(),
        "no db.load_behaviors under the profiler batch"
    );
    // The profiler writes behind: what its batches changed is written by a
    // profiler.commit of the same run.
    let commits = child_of(&spans, update, "profiler.commit");
    assert!(
        commits
            .iter()
            .any(|c| !child_of(&spans, c, "db.commit_profiles").is_empty()),
        "no db.commit_profiles under a profiler.commit of the run"
    );

    // SSE: the emission that carried the row links to the probe's trace and sits in the
    // trace of the stream request, which continued the caller's traceparent.
    let stream = one(
        spans
            .iter()
            .filter(|s| s.attr("http.route") == Some("/api/v1/stream"))
            .collect(),
        "stream server span",
        &spans,
    );
    assert_eq!(stream.trace_id, http_trace);
    assert_eq!(stream.parent, http_parent);
    assert_eq!(stream.kind, 2, "SERVER kind");
    assert_eq!(stream.name, "GET /api/v1/stream");
    let emit = one(
        named(&spans, "sse.emit_logs")
            .into_iter()
            .filter(|s| links_to(s, trace, span))
            .collect(),
        "sse.emit_logs linking the probe",
        &spans,
    );
    assert_eq!(emit.trace_id, http_trace);
    assert_eq!(emit.parent, stream.span_id);
    let health = one(
        spans
            .iter()
            .filter(|s| s.attr("http.route") == Some("/api/v1/health") && s.trace_id == health_tp.0)
            .collect(),
        "health server span in the caller's trace",
        &spans,
    );
    assert_eq!(
        (health.trace_id.as_str(), health.parent.as_str()),
        health_tp
    );
    assert_eq!(health.attr("http.response.status_code"), Some("200"));
    assert_eq!(health.attr("http.request.method"), Some("GET"));

    // Workers' cycle roots.
    for root in ["sensor.drain", "collector.flush", "flood_guard.sweep"] {
        let r = named(&spans, root);
        assert!(!r.is_empty(), "no {root} span");
        assert!(
            r.iter().all(|s| s.parent.is_empty()),
            "{root} is not a root"
        );
    }

    // No secret leaves in a span: not the password, not its base64, not the header.
    for s in &spans {
        let t = s.all_text();
        for bad in [SECRET, SECRET_B64, "Authorization", API_TOKEN] {
            assert!(!t.contains(bad), "span carries {bad:?}: {s:?}");
        }
    }

    // Log lines inside spans carry the ids: the ingester's debug line names its batch span.
    let log = daemon.log_text();
    let line = log
        .lines()
        .find(|l| {
            l.contains("batch committed") && l.contains(&format!("trace_id={}", commit.trace_id))
        })
        .unwrap_or_else(|| panic!("no correlated log line for {commit:?}:\n{log}"));
    assert!(
        line.contains(&format!("span_id={}", commit.span_id)),
        "{line}"
    );

    assert_eq!(stats["tracing"]["dropped_queue_full"], 0, "{stats}");
    assert_eq!(stats["tracing"]["export_failed"], 0, "{stats}");
    eprintln!(
        "{} spans received; probe trace {trace}: {} spans",
        spans.len(),
        spans.iter().filter(|s| s.trace_id == trace).count()
    );
}

#[test]
fn tracing_off_never_connects_to_the_collector() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    let receiver = Receiver::start();
    let lab = Lab::new(22);
    let dir = tempfile_dir("off");
    let endpoint = receiver.endpoint();
    // Off is the default: the variable is absent (made so if the caller set it), while
    // both endpoint variables point at a live receiver.
    let mut env = vec![
        ("DECNET_OTEL_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
    ];
    if std::env::var_os("DECNET_DEVELOPER_TRACING").is_some() {
        env.push(("DECNET_DEVELOPER_TRACING", "false"));
    }
    let mut daemon =
        Daemon::start_with_env(&lab.host_if, &[format!("{}=web", lab.decoy)], &dir, &env);
    lab.exec(
        &[
            "hping3", "-S", "-p", "++1", "-i", "u2000", "-c", "50", &lab.decoy,
        ],
        30,
    );
    let stats = daemon.settle();
    assert_eq!(stats["tracing"], Value::Null, "{stats}");
    let journal = read_journal(&daemon.journal_path());
    assert!(journal.len() >= 50, "{} records", journal.len());
    assert!(
        journal.iter().all(|r| r.get("traceparent").is_none()),
        "a record has a traceparent with tracing off"
    );
    // Longer than the exporter's batch delay, then past shutdown (where a guard would flush).
    std::thread::sleep(Duration::from_secs(1));
    assert!(daemon.stop().success());
    assert_eq!(
        receiver.connections(),
        0,
        "something connected to the collector"
    );
    assert!(receiver.spans().is_empty());
}

#[test]
fn a_dead_collector_costs_spans_never_records() {
    if !require_root() {
        return;
    }
    require_tool("hping3");
    let mut receiver = Receiver::start();
    let lab = Lab::new(23);
    let dir = tempfile_dir("dead");
    let endpoint = receiver.endpoint();
    let mut daemon = Daemon::start_with_env(
        &lab.host_if,
        &[format!("{}=web", lab.decoy)],
        &dir,
        &[
            ("DECNET_DEVELOPER_TRACING", "true"),
            ("DECNET_OTEL_ENDPOINT", &endpoint),
        ],
    );
    lab.exec(
        &[
            "hping3", "-S", "-p", "++1", "-i", "u1000", "-c", "300", &lab.decoy,
        ],
        30,
    );
    daemon.settle();
    let got = receiver.wait_for(Duration::from_secs(10), |s| {
        s.iter().any(|x| x.name == "ingester.process_record")
    });
    assert!(
        got.iter().any(|x| x.name == "ingester.process_record"),
        "the live receiver got no spans"
    );
    // The collector dies mid-run; probes keep coming.
    receiver.kill();
    lab.exec(
        &[
            "hping3", "-S", "-p", "++1000", "-i", "u300", "-c", "3000", &lab.decoy,
        ],
        60,
    );
    let s = daemon.settle();
    let k = &s["kernel"];
    let p = &s["pipeline"];
    assert_eq!(k["ring_reserve_failed"], 0, "{s}");
    assert_eq!(p["channel_full_dropped"], 0, "{s}");
    assert_eq!(p["journal_write_failed"], 0, "{s}");
    assert_eq!(k["events_emitted"], p["journal_written"], "{s}");
    assert_eq!(p["journal_written"], s["ingest"]["rows"], "{s}");
    assert_eq!(s["ingest"]["dead_letters"], 0, "{s}");
    let rows = s["ingest"]["rows"].as_u64().unwrap_or(0);
    assert!(rows >= 3300, "{rows} rows for 3,300 probes");
    // The loss shows in the exporter's counters, not in the pipeline.
    let end = Instant::now() + Duration::from_secs(15);
    let lost = loop {
        let t = daemon.stats()["tracing"].clone();
        let lost = t["export_failed"].as_u64().unwrap_or(0)
            + t["dropped_queue_full"].as_u64().unwrap_or(0);
        if lost > 0 || Instant::now() > end {
            break lost;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        lost > 0,
        "spans to a dead collector were not counted as lost"
    );
    // Shutdown does not hang on the dead collector (its flush is bounded).
    let t = Instant::now();
    let st = daemon.stop();
    assert!(st.success(), "exit {st}:\n{}", daemon.log_text());
    eprintln!(
        "{rows} rows ingested with the collector dead; {lost} spans counted lost; stop took {:?}",
        t.elapsed()
    );
}
