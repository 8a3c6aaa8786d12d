//! Crash test: `decnet ingest` is SIGKILLed at random moments while the journal grows and
//! rotates; after the last restart, `logs` holds every record exactly once. Once into the
//! SQLite file, once into PostgreSQL (a fleet's shared store).

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use decnet::store::Store;

// Shared with the decnet-tests crate, where its items are its library's public API.
#[path = "../../tests/pg.rs"]
#[allow(unreachable_pub)]
mod pg;

const TOTAL: usize = 200_000;

fn line(i: usize) -> String {
    format!(
        r#"{{"ts":"2026-11-26T20:00:00.{i:09}Z","decky":"web","service":"ssh","event_type":"tcp_syn","attacker_ip":"{}","fields":{}}}"#,
        ip(i),
        fields(i)
    )
}

/// Few attackers, each sending many lines: one TCP fingerprint each, counted once per line.
fn ip(i: usize) -> String {
    format!("10.0.{}.{}", i % 7, i % 50 + 1)
}

fn fields(i: usize) -> String {
    format!(
        r#"{{"dst_port":{},"n":{i},"ttl":50,"window":1024}}"#,
        i % 65535
    )
}

fn append(dir: &Path, from: usize, to: usize) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("events.jsonl"))
        .unwrap();
    let text: String = (from..to).map(|i| line(i) + "\n").collect();
    f.write_all(text.as_bytes()).unwrap();
}

fn key(ts: &str, ip: &str, fields: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (ts, ip, fields).hash(&mut h);
    h.finish()
}

/// xorshift: reproducible from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    crash_test(None);
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing_on_postgres() {
    let pg = pg::Postgres::start();
    let url = pg.create_db("crash");
    crash_test(Some(&url));
    // The rows carry the sensor they came from, and its cursor is its own.
    assert_eq!(
        pg.psql("crash", "SELECT DISTINCT sensor FROM logs"),
        "crash-sensor"
    );
    assert_eq!(
        pg.psql(
            "crash",
            "SELECT key FROM state WHERE key LIKE 'ingest_worker_position%'"
        ),
        "ingest_worker_position:crash-sensor"
    );
}

/// Into `store` (None: the data dir's SQLite file).
fn crash_test(store: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bin = env!("CARGO_BIN_EXE_decnet");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);

    append(d, 0, TOTAL / 2);
    let mut written = TOTAL / 2;
    let chunk = TOTAL / 2 / 12;
    let mut kills = 0;
    let started = Instant::now();
    for round in 0..12 {
        let mut child = Command::new(bin)
            .args(["ingest", "--data-dir"])
            .arg(d)
            .args(store_args(store))
            .env("DECNET_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn decnet ingest");
        // The journal keeps growing while the ingester runs, and rotates once mid-way.
        let to = if round == 11 { TOTAL } else { written + chunk };
        append(d, written, to);
        written = to;
        if round == 5 {
            std::fs::rename(d.join("events.jsonl"), d.join("events.jsonl.1")).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20 + rng.next(250)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(
        kills >= 10,
        "only {kills} kills landed while the ingester ran"
    );
    let out = Command::new(bin)
        .args(["ingest", "--once", "--data-dir"])
        .arg(d)
        .args(store_args(store))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{kills} SIGKILLs over {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = match store {
            Some(url) => Store::connect(url).await.unwrap(),
            None => Store::open(&d.join("decnet.db")).await.unwrap(),
        };
        assert_eq!(store.count_logs().await.unwrap(), TOTAL as i64);
        assert_eq!(store.count_dead_letters().await.unwrap(), 0);
        let mut got: HashMap<u64, u32> = HashMap::new();
        let mut after = 0;
        loop {
            let rows = store.logs_after(after, 50_000).await.unwrap();
            let Some((last, _)) = rows.last() else { break };
            after = *last;
            for (_, l) in &rows {
                *got.entry(key(&l.ts, &l.attacker_ip, &l.fields))
                    .or_default() += 1;
            }
        }
        let mut want: HashMap<u64, u32> = HashMap::new();
        for i in 0..TOTAL {
            let v: serde_json::Value = serde_json::from_str(&line(i)).unwrap();
            let fields = fields(i);
            *want
                .entry(key(
                    v["ts"].as_str().unwrap(),
                    v["attacker_ip"].as_str().unwrap(),
                    &fields,
                ))
                .or_default() += 1;
        }
        assert_eq!(got.len(), want.len(), "distinct records");
        assert!(got == want, "the multiset of record hashes differs");
        // Bounty counts are added in tallies, not with every batch: after all the kills,
        // each attacker's fingerprint still counts each of its lines once.
        let mut lines_of: HashMap<String, i64> = HashMap::new();
        for i in 0..TOTAL {
            *lines_of.entry(ip(i)).or_default() += 1;
        }
        let counted: HashMap<String, i64> =
            store.bounty_totals().await.unwrap().into_iter().collect();
        assert_eq!(counted, lines_of, "bounty counts per attacker");
    });
}

fn store_args(store: Option<&str>) -> Vec<String> {
    match store {
        Some(url) => vec![
            "--store".into(),
            url.into(),
            "--sensor-id".into(),
            "crash-sensor".into(),
        ],
        None => Vec::new(),
    }
}
