//! The SSE stream against a real server on port 0, a real SQLite file and the real hub.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use decnet::{
    api::{self, AppState, auth::Auth},
    client::{Client, SseEvent},
    hub::Hub,
    row::NewLog,
    stats::PipelineStats,
    store::{Batch, Store},
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

// The first-bytes-before-the-database test is a unit test in `api::stream` (it slows the
// store through a test-only delay).

const TOKEN: &str = "stream-test-token";

struct Server {
    addr: SocketAddr,
    store: Store,
    hub: Hub,
    dir: tempfile::TempDir,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api-token"), TOKEN).unwrap();
    let store = Store::open(&dir.path().join("decnet.db")).await.unwrap();
    let hub = Hub::default();
    let state = AppState {
        started: Instant::now(),
        kernel: None,
        pipeline: Arc::new(PipelineStats::default()),
        attached: None,
        egress: None,
        pin: None,
        iface_status: None,
        ingest: None,
        store: Some(store.clone()),
        hub: hub.clone(),
        auth: Arc::new(Auth::new(TOKEN)),
        profile: None,
        alerts: None,
        retain: None,
        http: Default::default(),
        role: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            api::app(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Server {
        addr,
        store,
        hub,
        dir,
    }
}

fn log(i: usize, pad: usize) -> NewLog {
    NewLog {
        ts: decnet::timefmt::rfc3339_ns(1_795_723_674_000_000_000 + i as i64 * 1_000_000),
        decky: "web".into(),
        service: "ssh".into(),
        event_type: "tcp_syn".into(),
        attacker_ip: format!("10.5.{}.{}", i / 250 % 250, i % 250 + 1),
        fields: format!(
            r#"{{"dst_port":22,"flags":"S","note":"{}"}}"#,
            "x".repeat(pad)
        ),
        trace_id: None,
        span_id: None,
        sensor: Default::default(),
    }
}

/// Commits rows as the ingester does, and announces them on the hub after the commit.
async fn publish(store: &Store, hub: &Hub, logs: Vec<NewLog>) {
    let first = store
        .commit_batch_copy(&Batch {
            logs: logs.clone(),
            ..Batch::default()
        })
        .await
        .unwrap()
        .unwrap();
    hub.logs(first, move || logs);
}

/// A raw stream request; returns the socket after the request is sent.
async fn open_raw(addr: SocketAddr, recv_buf: Option<u32>) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(n) = recv_buf {
        sock.set_recv_buffer_size(n).unwrap();
    }
    let mut s = sock.connect(addr).await.unwrap();
    let req = format!(
        "GET /api/v1/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

fn log_id(e: &SseEvent) -> Option<i64> {
    (e.event == "log").then(|| {
        serde_json::from_str::<serde_json::Value>(&e.data).unwrap()["id"]
            .as_i64()
            .unwrap()
    })
}

/// `ids` is exactly `from..=to`, or the first place it is not is named.
fn assert_exact(ids: &[i64], from: i64, to: i64) {
    let want: Vec<i64> = (from..=to).collect();
    if let Some(i) = (0..ids.len().min(want.len())).find(|i| ids[*i] != want[*i]) {
        panic!(
            "gap or duplicate at position {i}: got {} where {} was due",
            ids[i], want[i]
        );
    }
    assert_eq!(
        ids.len(),
        want.len(),
        "{} ids for {}..={}",
        ids.len(),
        from,
        to
    );
}

fn ids_of(events: &[SseEvent]) -> Vec<i64> {
    events.iter().filter_map(log_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_after_a_disconnect_loses_and_repeats_nothing() {
    let srv = server().await;
    let (store, hub) = (srv.store.clone(), srv.hub.clone());
    let client = Client::new(srv.addr, srv.dir.path()).unwrap();
    // 10,000 rows in 100 commits while the client reads, disconnects and resumes.
    let producer = tokio::spawn(async move {
        for b in 0..100 {
            publish(
                &store,
                &hub,
                (0..100).map(|i| log(b * 100 + i, 0)).collect(),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut first = Vec::new();
    let last = tokio::time::timeout(
        Duration::from_secs(60),
        client.tail("", None, |e| {
            first.push(e.clone());
            first.iter().filter(|e| e.event == "log").count() < 3000
        }),
    )
    .await
    .expect("first part")
    .unwrap();
    let last = last.expect("an id");
    // Rows keep arriving while nobody is connected.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut second = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(60),
        client.tail("", Some(last.clone()), |e| {
            second.push(e.clone());
            log_id(e) != Some(10_000)
        }),
    )
    .await
    .expect("second part")
    .unwrap();
    producer.await.unwrap();
    let mut all = ids_of(&first);
    // A new client starts live, so the first id seen is whatever was newest then.
    let start = all[0];
    all.extend(ids_of(&second));
    assert_exact(&all, start, 10_000);
    assert!(start < 3000, "first part began at {start}");
    // Every event id is `<log>-<detection>` and grows.
    assert!(first.iter().chain(&second).all(|e| e.id.is_some()));
    assert!(last.ends_with("-0"), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_does_not_slow_another() {
    let srv = server().await;
    // A client that never reads, with a tiny receive buffer.
    let mut stalled = open_raw(srv.addr, Some(4096)).await;
    let client = Client::new(srv.addr, srv.dir.path()).unwrap();
    // Let both streams reach the live phase.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (store, hub) = (srv.store.clone(), srv.hub.clone());
    let total = 3000usize;
    let producer = tokio::spawn(async move {
        let t = Instant::now();
        // One message per row, 1.5 KiB each: far more than the stalled client's buffers
        // and its hub queue (1024 messages) hold.
        for i in 0..total {
            publish(&store, &hub, vec![log(i, 1500)]).await;
        }
        t.elapsed()
    });
    let mut got = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(120),
        // From the beginning: replayed rows hand over to live ones without a seam.
        client.tail("", Some("0-0".into()), |e| {
            got.push(e.clone());
            log_id(e) != Some(total as i64)
        }),
    )
    .await
    .expect("the reading client fell behind")
    .unwrap();
    let produced_in = producer.await.unwrap();
    assert_exact(&ids_of(&got), 1, total as i64);
    eprintln!("{total} rows committed and announced in {produced_in:?}");
    // The stalled client, read now, was cut off with a reset telling it where to resume.
    let mut text = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(30);
    // Until the whole reset event is in: its `data:` line may come in a later read than its
    // `event:` line.
    let whole_reset = |t: &[u8]| {
        let t = String::from_utf8_lossy(t);
        t.find("event: reset")
            .is_some_and(|i| t[i..].contains("resume_after") && t[i..].contains("\n\n"))
    };
    while !whole_reset(&text) {
        assert!(Instant::now() < deadline, "no reset for the stalled client");
        match tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => text.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("{e}"),
        }
    }
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("event: reset"), "stalled client never reset");
    assert!(text.contains("resume_after"));
}
