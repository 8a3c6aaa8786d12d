//! The ingester against a real SQLite file: exactly-once across restarts, dead letters,
//! lines appended by other processes, rotation while stopped.

use std::{io::Write as _, path::Path, sync::Arc};

use decnet::{
    ingest::{IngestConfig, Ingester},
    store::Store,
};
use tokio::sync::{Notify, watch};

fn line(i: usize) -> String {
    format!(
        r#"{{"ts":"2026-11-26T20:00:00.{i:09}Z","decky":"web","service":"ssh","event_type":"tcp_syn","attacker_ip":"10.0.{}.{}","fields":{{"dst_port":22,"n":{i}}}}}"#,
        (i / 250) % 250,
        i % 250 + 1
    )
}

fn append(dir: &Path, name: &str, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

async fn ingest_once(dir: &Path, store: &Store) {
    let ing = Ingester::new(
        store.clone(),
        IngestConfig::new(dir.to_owned()),
        Arc::new(Notify::new()),
    );
    let (_tx, rx) = watch::channel(false);
    ing.run(rx, true).await.expect("ingest");
}

async fn all_n(store: &Store) -> Vec<u64> {
    let rows = store.logs_after(0, 1_000_000).await.unwrap();
    rows.iter()
        .map(|(_, l)| {
            serde_json::from_str::<serde_json::Value>(&l.fields).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn restarts_neither_lose_nor_duplicate() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("decnet.db");
    let text: String = (0..2500).map(|i| line(i) + "\n").collect();
    append(d.path(), "events.jsonl", &text);
    let store = Store::open(&db).await.unwrap();
    ingest_once(d.path(), &store).await;
    assert_eq!(store.count_logs().await.unwrap(), 2500);
    // Nothing new: a second run adds nothing.
    ingest_once(d.path(), &store).await;
    assert_eq!(store.count_logs().await.unwrap(), 2500);
    // A partial line waits for its newline.
    let l = line(2500);
    append(d.path(), "events.jsonl", &l[..10]);
    drop(store);
    let store = Store::open(&db).await.unwrap();
    ingest_once(d.path(), &store).await;
    assert_eq!(store.count_logs().await.unwrap(), 2500);
    append(d.path(), "events.jsonl", &format!("{}\n", &l[10..]));
    ingest_once(d.path(), &store).await;
    assert_eq!(all_n(&store).await, (0..=2500).collect::<Vec<u64>>());
}

#[tokio::test]
async fn dead_letters_keep_reason_offset_and_text() {
    let d = tempfile::tempdir().unwrap();
    let good = line(1);
    let bad = r#"{"ts":"t","decky":"d"}"#;
    append(
        d.path(),
        "events.jsonl",
        &format!("{good}\n{bad}\nnot json at all\n{}\n", line(2)),
    );
    let store = Store::open(&d.path().join("decnet.db")).await.unwrap();
    ingest_once(d.path(), &store).await;
    assert_eq!(store.count_logs().await.unwrap(), 2);
    let dead = store.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].byte_offset, good.len() as u64 + 1);
    assert!(dead[0].reason.contains("service"), "{}", dead[0].reason);
    assert_eq!(dead[0].raw, bad);
    assert_eq!(dead[0].file, "events.jsonl");
    assert!(dead[1].reason.contains("not a journal record"));
}

#[tokio::test]
async fn a_line_appended_by_echo_is_ingested_like_any_other() {
    let d = tempfile::tempdir().unwrap();
    append(d.path(), "events.jsonl", &format!("{}\n", line(0)));
    let rec = r#"{"ts":"2026-11-26T21:00:00Z","decky":"honeypot-x","service":"http","event_type":"http_login","attacker_ip":"192.0.2.7","fields":{"user":"admin"}}"#;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo '{rec}' >> {}",
            d.path().join("events.jsonl").display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let store = Store::open(&d.path().join("decnet.db")).await.unwrap();
    ingest_once(d.path(), &store).await;
    let rows = store.logs_after(0, 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].1.event_type, "http_login");
    assert_eq!(rows[1].1.decky, "honeypot-x");
    assert_eq!(rows[1].1.fields, r#"{"user":"admin"}"#);
}

#[tokio::test]
async fn rotation_while_stopped_is_finished_in_order() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("decnet.db");
    append(
        d.path(),
        "events.jsonl",
        &(0..100).map(|i| line(i) + "\n").collect::<String>(),
    );
    let store = Store::open(&db).await.unwrap();
    ingest_once(d.path(), &store).await;
    // While the ingester is down: more lines, a rotation, more lines, another rotation.
    append(
        d.path(),
        "events.jsonl",
        &(100..200).map(|i| line(i) + "\n").collect::<String>(),
    );
    std::fs::rename(
        d.path().join("events.jsonl"),
        d.path().join("events.jsonl.1"),
    )
    .unwrap();
    append(
        d.path(),
        "events.jsonl",
        &(200..300).map(|i| line(i) + "\n").collect::<String>(),
    );
    std::fs::rename(
        d.path().join("events.jsonl.1"),
        d.path().join("events.jsonl.2"),
    )
    .unwrap();
    std::fs::rename(
        d.path().join("events.jsonl"),
        d.path().join("events.jsonl.1"),
    )
    .unwrap();
    append(
        d.path(),
        "events.jsonl",
        &(300..400).map(|i| line(i) + "\n").collect::<String>(),
    );
    ingest_once(d.path(), &store).await;
    assert_eq!(all_n(&store).await, (0..400).collect::<Vec<u64>>());
    // A truncated live file restarts at 0 (and its new lines are ingested).
    std::fs::OpenOptions::new()
        .write(true)
        .open(d.path().join("events.jsonl"))
        .unwrap()
        .set_len(0)
        .unwrap();
    append(d.path(), "events.jsonl", &format!("{}\n", line(400)));
    ingest_once(d.path(), &store).await;
    assert_eq!(store.count_logs().await.unwrap(), 401);
}

#[tokio::test]
async fn bounties_are_one_row_per_artifact_per_attacker_with_counts() {
    let d = tempfile::tempdir().unwrap();
    let syn = |ip: &str, i: usize| {
        format!(
            r#"{{"ts":"2026-11-26T20:00:00.{i:09}Z","decky":"web","service":"ssh","event_type":"tcp_syn","attacker_ip":"{ip}","fields":{{"ttl":50,"window":1024,"options":"M1460","flags":"S","df":false,"ip_id":1,"ack":0,"urg_ptr":0}}}}"#
        )
    };
    let http = r#"{"ts":"2026-11-26T20:00:01Z","decky":"web","service":"http","event_type":"tcp_payload","attacker_ip":"10.0.0.9","fields":{"dst_port":80,"payload_b64":"R0VUIC8gSFRUUC8xLjENClVzZXItQWdlbnQ6IG1hc3NjYW4vMS4zDQoNCg=="}}"#;
    let mut text = String::new();
    for i in 0..30 {
        text += &(syn("10.0.0.9", i) + "\n");
    }
    text += &(syn("10.0.0.8", 99) + "\n");
    text += &(http.to_owned() + "\n");
    append(d.path(), "events.jsonl", &text);
    let store = Store::open(&d.path().join("decnet.db")).await.unwrap();
    ingest_once(d.path(), &store).await;
    // A second journal batch for the same attacker adds to the count, not a row.
    append(d.path(), "events.jsonl", &(syn("10.0.0.9", 200) + "\n"));
    ingest_once(d.path(), &store).await;
    let b = store.bounties_for("10.0.0.9").await.unwrap();
    assert_eq!(
        b,
        vec![
            (
                "tcp_fingerprint".to_owned(),
                "64:1024:M1460:".to_owned(),
                31
            ),
            ("http_request".to_owned(), "GET / HTTP/1.1".to_owned(), 1),
            ("http_user_agent".to_owned(), "masscan/1.3".to_owned(), 1),
        ]
    );
    assert_eq!(store.bounties_for("10.0.0.8").await.unwrap().len(), 1);
}

/// Under a backlog, bounty counts wait for a tally (`ingest::tally`). An ingester stopped
/// dead between two tallies leaves counts behind; the next one counts the logs after the
/// last tally again, so each line is counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_a_crash_left_between_tallies_are_counted_once_at_restart() {
    let d = tempfile::tempdir().unwrap();
    let syn = |i: usize| {
        format!(
            r#"{{"ts":"2026-11-26T20:00:00.{i:09}Z","decky":"web","service":"ssh","event_type":"tcp_syn","attacker_ip":"10.0.0.{}","fields":{{"ttl":50,"window":1024,"n":{i}}}}}"#,
            i % 4 + 1
        )
    };
    const LINES: usize = 5_000;
    let text: String = (0..LINES).map(|i| syn(i) + "\n").collect();
    append(d.path(), "events.jsonl", &text);
    let store = Store::open(&d.path().join("decnet.db")).await.unwrap();
    let total = |store: Store| async move {
        let mut n = 0;
        for a in 1..=4 {
            for (_, _, c) in store.bounties_for(&format!("10.0.0.{a}")).await.unwrap() {
                n += c;
            }
        }
        n
    };
    // Small batches at a busy rate, and no tally due for an hour: only the first batch's
    // counts are added, then the task is dropped with every row committed, as a SIGKILL.
    let mut cfg = IngestConfig::new(d.path().to_owned());
    cfg.batch_lines = 100;
    cfg.tally_every = std::time::Duration::from_secs(3600);
    let ing = Ingester::new(store.clone(), cfg, Arc::new(Notify::new()));
    let stats = ing.stats();
    let (_tx, rx) = watch::channel(false);
    let task = tokio::spawn(ing.run(rx, false));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while stats.snapshot().rows < LINES as u64 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    task.abort();
    let _ = task.await;
    assert_eq!(store.count_logs().await.unwrap(), LINES as i64);
    let left = total(store.clone()).await;
    assert!(
        left < LINES as i64,
        "the dropped ingester had counted {left} of {LINES}: no count was left for the restart"
    );
    // The restart counts the rest: each line once, in the attackers' one row each.
    ingest_once(d.path(), &store).await;
    assert_eq!(total(store.clone()).await, LINES as i64);
    for a in 1..=4 {
        let b = store.bounties_for(&format!("10.0.0.{a}")).await.unwrap();
        assert_eq!(b.len(), 1, "one fingerprint row for 10.0.0.{a}");
        assert_eq!(b[0].2, (LINES / 4) as i64);
    }
}

/// The real writer rotating every few KiB while the ingester follows live: every line
/// lands exactly once, and rotated files hold whole lines only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_rotation_by_the_writer_is_followed() {
    use decnet::{
        collector::{Chunk, JournalConfig, JournalWriter},
        stats::PipelineStats,
    };
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(&d.path().join("decnet.db")).await.unwrap();
    let wake = Arc::new(Notify::new());
    let mut jc = JournalConfig::new(d.path().join("events.jsonl"));
    jc.max_bytes = 8 * 1024;
    jc.keep = 100;
    jc.wake = Some(wake.clone());
    let stats = Arc::new(PipelineStats::default());
    let (handle, writer) = JournalWriter::spawn(jc, stats.clone()).unwrap();
    let mut ic = IngestConfig::new(d.path().to_owned());
    ic.keep = 100;
    let ing = Ingester::new(store.clone(), ic, wake);
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(ing.run(rx, false));
    for c in 0..40 {
        let mut chunk = Chunk::default();
        for i in 0..50 {
            chunk
                .bytes
                .extend_from_slice((line(c * 50 + i) + "\n").as_bytes());
            chunk.lines += 1;
        }
        assert!(handle.send(chunk));
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    drop(handle);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .unwrap();
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    assert!(
        d.path().join("events.jsonl.5").exists(),
        "the writer rotated"
    );
    for i in 1..=100 {
        let p = d.path().join(format!("events.jsonl.{i}"));
        if let Ok(t) = std::fs::read_to_string(&p) {
            assert!(t.ends_with('\n'), "{} ends mid-line", p.display());
        }
    }
    assert_eq!(all_n(&store).await, (0..2000).collect::<Vec<u64>>());
    assert_eq!(stats.snapshot().journal_written, 2000);
}

#[tokio::test]
async fn a_second_ingester_on_the_same_database_fails_instead_of_duplicating() {
    use decnet::store::{Batch, CursorUpdate, StoreError};
    let d = tempfile::tempdir().unwrap();
    append(d.path(), "events.jsonl", &format!("{}\n", line(0)));
    let store = Store::open(&d.path().join("decnet.db")).await.unwrap();
    ingest_once(d.path(), &store).await;
    // Another writer that believes the cursor is still unset.
    let stale = Batch {
        cursor: Some(CursorUpdate {
            key: "ingest_worker_position".into(),
            prev: None,
            value: "{}".into(),
        }),
        ..Batch::default()
    };
    assert!(matches!(
        store.commit_batch_copy(&stale).await,
        Err(StoreError::CursorMoved(_))
    ));
    let stale = Batch {
        cursor: Some(CursorUpdate {
            key: "ingest_worker_position".into(),
            prev: Some("{\"x\":1}".into()),
            value: "{}".into(),
        }),
        ..Batch::default()
    };
    assert!(matches!(
        store.commit_batch_copy(&stale).await,
        Err(StoreError::CursorMoved(_))
    ));
    // The real cursor is untouched and a normal run continues.
    append(d.path(), "events.jsonl", &format!("{}\n", line(1)));
    ingest_once(d.path(), &store).await;
    assert_eq!(all_n(&store).await, vec![0, 1]);
}

/// A small tmpfs of the test's own, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A commit that fails on a full disk leaves nothing locked: once there is room, the next
/// commits go through at once, on whichever pooled connection, and so does a checkpoint.
/// (Store closes a connection whose transaction failed; this checks the recovery path, but
/// did not reproduce here the stuck connection a CI run once showed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_leaves_no_transaction_open() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip("mounting a tmpfs needs root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("decnet-store-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs");
    let _mount = Tmpfs(dir.clone());
    let store = Store::open(&dir.join("decnet.db")).await.unwrap();
    let batch = |from: usize| {
        let mut b = decnet::store::Batch::default();
        for i in from..from + 200 {
            let mut l = decnet::ingest::parse::parse_line(line(i).as_bytes()).unwrap();
            l.fields = format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(900));
            b.add_log(l, &decnet::telemetry::lite::LiteSpan::none());
        }
        b
    };
    // Fill the disk, leaving the database some room to fail in.
    {
        let mut filler = std::fs::File::create(dir.join("filler")).unwrap();
        let block = vec![0u8; 64 << 10];
        let mut written = 0usize;
        while written < (7 << 20) && filler.write_all(&block).is_ok() {
            written += block.len();
        }
    }
    let mut n = 0;
    let mut failed = None;
    for _ in 0..100 {
        match store.commit_batch_copy(&batch(n)).await {
            Ok(_) => n += 200,
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    let failed = failed.expect("the disk filled up");
    assert!(failed.contains("full"), "{failed}");
    std::fs::remove_file(dir.join("filler")).unwrap();
    // Room again: four commits in parallel (so every pooled connection is used) and a
    // checkpoint, all well within the 10 s busy timeout a held lock would cost.
    let t0 = std::time::Instant::now();
    let commits: Vec<_> = (0..4)
        .map(|k| {
            let (store, b) = (store.clone(), batch(100_000 + k * 200));
            tokio::spawn(async move { store.commit_batch_copy(&b).await })
        })
        .collect();
    for c in commits {
        c.await.unwrap().expect("commit after the space came back");
    }
    store.checkpoint().await.expect("checkpoint");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(3),
        "commits waited {:?} on a lock",
        t0.elapsed()
    );
    assert_eq!(all_n(&store).await.len(), n + 800);
}

/// Says `skipping: <why>` straight to stderr: the harness captures `eprintln!` of a passing
/// test, so a skip said that way passed silently.
fn skip(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "skipping: {why}");
}
