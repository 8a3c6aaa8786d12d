//! Journal rotation under a stalled ingester, with the real writer thread and the real
//! ingester: nothing unread is deleted until `keep` more files are held; past that the
//! oldest go (never the one the ingester is in) and exactly their lines are counted in
//! `journal_rotated_unread`; the ingester then takes in every line left, so written ==
//! ingested + counted drops.

use std::{
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use decnet::{
    collector::{Chunk, JournalConfig, JournalWriter, rotation::ReadPosition},
    ingest::{IngestConfig, Ingester},
    stats::PipelineStats,
    store::Store,
};

const KEEP: usize = 2;
/// Lines per chunk; each chunk is one flush and, past the first, one rotation.
const PER_CHUNK: usize = 200;

fn chunk(first: usize) -> Chunk {
    let mut c = Chunk::with_capacity(64 << 10);
    for i in first..first + PER_CHUNK {
        c.bytes.extend_from_slice(
            format!(
                r#"{{"ts":"2026-12-05T00:00:00.{i:09}Z","decky":"web","service":"ssh","event_type":"tcp_syn","attacker_ip":"10.6.0.{}","fields":{{"dst_port":22,"seq":{i}}}}}"#,
                i % 200 + 1
            )
            .as_bytes(),
        );
        c.bytes.push(b'\n');
        c.lines += 1;
    }
    c
}

/// `seq` of every line of every journal file in `dir`.
fn lines_on_disk(dir: &Path) -> Vec<usize> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("events.jsonl") {
            continue;
        }
        for l in std::fs::read_to_string(e.path()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            out.push(v["fields"]["seq"].as_u64().unwrap() as usize);
        }
    }
    out.sort_unstable();
    out
}

fn journal_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("events.jsonl"))
        .count()
}

/// Writes `chunks` chunks with the reader stalled at the journal's first byte (or, with
/// `keeping_up`, published at the live file's end before each chunk); returns the stats.
fn write(dir: &Path, chunks: usize, keeping_up: bool) -> Arc<PipelineStats> {
    let path = dir.join("events.jsonl");
    let reader = Arc::new(ReadPosition::default());
    let mut cfg = JournalConfig::new(path.clone());
    cfg.flush_interval = Duration::from_millis(1);
    cfg.max_bytes = 32 << 10;
    cfg.keep = KEEP;
    cfg.reader = Some(reader.clone());
    let stats = Arc::new(PipelineStats::default());
    let (handle, writer) = JournalWriter::spawn(cfg, stats.clone()).unwrap();
    let m = std::fs::metadata(&path).unwrap();
    reader.publish(m.dev(), m.ino(), 0);
    for c in 0..chunks {
        if keeping_up {
            let m = std::fs::metadata(&path).unwrap();
            reader.publish(m.dev(), m.ino(), m.len());
        }
        assert!(handle.send_wait(chunk(c * PER_CHUNK)));
        // One flush per chunk (the writer flushes every millisecond).
        std::thread::sleep(Duration::from_millis(15));
    }
    drop(handle);
    writer.join();
    stats
}

/// Ingests everything the data dir holds; returns the rows' seqs.
async fn ingest_all(dir: &Path) -> Vec<usize> {
    let store = Store::open(&dir.join("decnet.db")).await.unwrap();
    let mut cfg = IngestConfig::new(dir.to_owned());
    cfg.keep = 2 * KEEP + 1;
    let ingester = Ingester::new(store.clone(), cfg, Arc::new(tokio::sync::Notify::new()));
    let (_idle_tx, idle) = tokio::sync::watch::channel(false);
    ingester.run(idle, true).await.unwrap();
    let c = rusqlite::Connection::open(dir.join("decnet.db")).unwrap();
    let mut st = c
        .prepare("SELECT json_extract(fields, '$.seq') FROM logs ORDER BY 1")
        .unwrap();
    let seqs = st
        .query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|r| r.unwrap() as usize)
        .collect();
    store.close().await;
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_ingester_loses_nothing_until_the_limit_then_exactly_the_counted() {
    // Within the limit: 1 live + KEEP rotated + KEEP held files; nothing deleted.
    let dir = tempfile::tempdir().unwrap();
    let chunks = 1 + 2 * KEEP;
    let stats = write(dir.path(), chunks, false);
    assert_eq!(stats.journal_rotated_unread.load(Relaxed), 0);
    assert_eq!(stats.journal_held_files.load(Relaxed), KEEP as u64);
    assert_eq!(journal_files(dir.path()), 1 + 2 * KEEP);
    let all: Vec<usize> = (0..chunks * PER_CHUNK).collect();
    assert_eq!(lines_on_disk(dir.path()), all);
    assert_eq!(ingest_all(dir.path()).await, all);

    // Past it: the oldest files go, and exactly their lines are counted.
    let dir = tempfile::tempdir().unwrap();
    let chunks = 4 + 2 * KEEP;
    let stats = write(dir.path(), chunks, false);
    let written = stats.journal_written.load(Relaxed) as usize;
    let dropped = stats.journal_rotated_unread.load(Relaxed) as usize;
    assert_eq!(written, chunks * PER_CHUNK);
    // Files beyond `keep`: the newest KEEP held, the one the ingester is in (the first)
    // never deleted, the two between them deleted and counted.
    assert_eq!(dropped, 2 * PER_CHUNK, "two files past the limit");
    assert_eq!(stats.journal_held_files.load(Relaxed), KEEP as u64 + 1);
    assert_eq!(journal_files(dir.path()), 2 + 2 * KEEP);
    // What is left, every line of it, the ingester takes in.
    let left: Vec<usize> = (0..PER_CHUNK).chain(3 * PER_CHUNK..written).collect();
    assert_eq!(lines_on_disk(dir.path()), left);
    let rows = ingest_all(dir.path()).await;
    assert_eq!(rows, left);
    assert_eq!(written, rows.len() + dropped);

    // An ingester that keeps up: files beyond `keep` go as soon as they are read.
    let dir = tempfile::tempdir().unwrap();
    let stats = write(dir.path(), 4 + 2 * KEEP, true);
    assert_eq!(stats.journal_rotated_unread.load(Relaxed), 0);
    assert_eq!(stats.journal_held_files.load(Relaxed), 0);
    assert_eq!(journal_files(dir.path()), 1 + KEEP);
}
