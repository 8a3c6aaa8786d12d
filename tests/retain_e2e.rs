//! Retention end to end, on the release daemon: 30 days of journal records (200,000, written
//! by another writer, their `ts` deciding their age) under `--retain-days 7`. No row older
//! than the cutoff is left, every newer row is there exactly once, the API answers within
//! 100 ms at p99 while pruning runs, an SSE client following live misses nothing, and a
//! client resuming from a pruned id is told where history now begins.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use decnet_tests::{
    API_TOKEN, Daemon, Lab, free_port, http_get, require_root,
    sse::{Seen, sse_client},
};

const ROWS: usize = 200_000;
const DAYS: i64 = 30;
const DAY_NS: i64 = 86_400 * 1_000_000_000;

fn now_ns() -> i64 {
    decnet_tests::receivers::unix_ns()
}

/// RFC 3339 UTC with nanoseconds, as decnet writes it.
fn rfc3339(ns: i64) -> String {
    let (secs, nanos) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// p99 of `v` (ms).
fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[test]
fn thirty_days_in_minutes() {
    if !require_root() {
        return;
    }
    // The binary users run: a debug build prunes (and ingests, and profiles) several times
    // slower, which is not what the latency goal is about.
    let Some(bin) = std::env::var_os("DECNET_SOAK_BIN").map(std::path::PathBuf::from) else {
        decnet_tests::skip(
            "retention runs on the release binary; set DECNET_SOAK_BIN \
             (cargo xtask test does)",
        );
        return;
    };
    let lab = Lab::new(47);
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    let decoys = [format!("{}=web", lab.decoy)];
    let api = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let daemon = Daemon::start_at(
        &bin,
        &lab.host_if,
        &decoys,
        &data,
        &[("DECNET_RETAIN_DAYS", "7")],
        api,
    );

    // An SSE client following live from the start.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sse = {
        let (api, stop, seen) = (Arc::new(Mutex::new(api)), stop.clone(), seen.clone());
        std::thread::spawn(move || sse_client(api, stop, seen))
    };
    std::thread::sleep(Duration::from_millis(500));
    // The API, asked over and over while rows arrive and are pruned.
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let poller = {
        let (stop, latencies) = (stop.clone(), latencies.clone());
        std::thread::spawn(move || {
            let paths = [
                "/api/v1/attackers?limit=50",
                "/api/v1/stats",
                "/api/v1/detections?limit=50",
            ];
            let mut i = 0;
            while !stop.load(Relaxed) {
                let t = Instant::now();
                let r = http_get(api, paths[i % paths.len()]);
                let ms = t.elapsed().as_secs_f64() * 1e3;
                assert!(matches!(r, Some((200, _))), "{} -> {r:?}", paths[i % 3]);
                latencies.lock().unwrap().push(ms);
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Another writer appends 30 days of records, 10,000 a second.
    let start_ns = now_ns() - DAYS * DAY_NS;
    let step = DAYS * DAY_NS / ROWS as i64;
    let ts = |i: usize| start_ns + i as i64 * step;
    {
        let mut j = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("events.jsonl"))
            .unwrap();
        for chunk in 0..ROWS / 1000 {
            let mut buf = String::new();
            for i in chunk * 1000..(chunk + 1) * 1000 {
                buf.push_str(&format!(
                    r#"{{"ts":"{}","decky":"web","service":"ssh","event_type":"tcp_syn","attacker_ip":"10.247.{}.{}","fields":{{"dst_port":22,"seq":{i}}}}}"#,
                    rfc3339(ts(i)),
                    i % 2000 / 250,
                    i % 250 + 1
                ));
                buf.push('\n');
            }
            j.write_all(buf.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Ingested, profiled, then a round of retention that pruned nothing more.
    let deadline = Instant::now() + Duration::from_secs(180);
    let stats = loop {
        let s = daemon.stats();
        let r = &s["retention"];
        let profiled =
            s["profile_lag_rows"] == 0 && s["ingest"]["rows"].as_u64() >= Some(ROWS as u64);
        if profiled
            && r["pruned"]["logs"].as_u64().unwrap_or(0) > 0
            && r["pruned_before"].is_string()
        {
            // One more round after this one: everything pruned that may be.
            let before = r["last_round"].clone();
            let mut s2 = daemon.stats();
            while s2["retention"]["last_round"] == before {
                assert!(Instant::now() < deadline, "no further round: {s2}");
                std::thread::sleep(Duration::from_millis(200));
                s2 = daemon.stats();
            }
            break s2;
        }
        assert!(
            Instant::now() < deadline,
            "not ingested, profiled and pruned: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, Relaxed);
    poller.join().unwrap();
    sse.join().unwrap();

    // The database: nothing older than the cutoff; every newer row exactly once.
    let cutoff = stats["retention"]["pruned_before"]
        .as_str()
        .unwrap()
        .to_owned();
    let db = rusqlite::Connection::open_with_flags(
        data.join("decnet.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let (older, rows, distinct): (i64, i64, i64) = db
        .query_row(
            "SELECT (SELECT COUNT(*) FROM logs WHERE ts < ?1), COUNT(*), \
             COUNT(DISTINCT json_extract(fields, '$.seq')) FROM logs WHERE ts >= ?1",
            [&cutoff],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let want = (0..ROWS).filter(|&i| rfc3339(ts(i)) >= cutoff).count() as i64;
    eprintln!(
        "cutoff {cutoff}: {rows} rows kept (want {want}), {older} older; pruned {}",
        stats["retention"]["pruned"]
    );
    assert_eq!(older, 0, "rows older than the cutoff are left");
    assert_eq!((rows, distinct), (want, want));
    assert_eq!(
        stats["retention"]["pruned"]["logs"].as_i64().unwrap(),
        ROWS as i64 - want,
        "{stats}"
    );
    let (_, metrics) = http_get(api, "/metrics").unwrap();
    assert!(
        metrics.contains(&format!(
            "decnet_retain_pruned_logs_total {}",
            ROWS as i64 - want
        )),
        "{metrics}"
    );

    // The API stayed fast; the stream missed nothing.
    let lat = latencies.lock().unwrap().clone();
    let p = p99(lat.clone());
    eprintln!(
        "API during ingest and pruning: {} requests, p99 {p:.1} ms",
        lat.len()
    );
    assert!(p < 100.0, "API p99 {p:.1} ms");
    let seen = seen.lock().unwrap().clone();
    eprintln!("SSE: {seen:?}");
    assert_eq!(
        (seen.logs, seen.gaps, seen.dups, seen.resets),
        (ROWS as u64, 0, 0, 0),
        "{seen:?}"
    );

    // A client resuming from before the pruned ids is told where history begins.
    let mut s = TcpStream::connect(api).unwrap();
    write!(
        s,
        "GET /api/v1/stream HTTP/1.0\r\nAuthorization: Bearer {API_TOKEN}\r\nLast-Event-ID: 0-0\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&got).contains("\n\n")
        || !String::from_utf8_lossy(&got).contains("event: ")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&got)
        );
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    let first = text.split("\n\n").find(|b| b.contains("event: ")).unwrap();
    assert!(first.contains("event: reset"), "{text}");
    assert!(first.contains("history pruned by retention"), "{first}");
    drop(daemon);
}
