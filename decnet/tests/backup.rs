//! `decnet backup` of a database under load, restored: the ingester resumes from the copy's
//! cursor and takes in the journal written since exactly once.

use std::{
    io::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

const LINES: usize = 60_000;

fn decnet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_decnet"))
}

fn line(i: usize) -> String {
    format!(
        r#"{{"ts":"{}","decky":"web","service":"ssh","event_type":"tcp_syn","attacker_ip":"10.7.{}.{}","fields":{{"dst_port":22,"seq":{i}}}}}"#,
        decnet::timefmt::rfc3339_ns(1_796_000_000_000_000_000 + i as i64 * 1_000_000),
        (i % 1000) / 250,
        (i % 1000) % 250 + 1
    )
}

/// (rows, distinct seq) in `db`.
fn counts(db: &Path) -> (i64, i64) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT COUNT(*), COUNT(DISTINCT json_extract(fields, '$.seq')) FROM logs",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

fn ingest_follow(dir: &Path) -> Child {
    decnet()
        .args(["ingest", "--data-dir"])
        .arg(dir)
        .env("DECNET_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("decnet ingest")
}

#[test]
fn a_backup_under_load_restores_and_resumes_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let journal = data.join("events.jsonl");
    std::fs::File::create(&journal).unwrap();
    let mut ingester = ingest_follow(&data);

    // Another writer appends the journal while the ingester follows it.
    let (written, done) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let writer = {
        let (journal, written, done) = (journal.clone(), written.clone(), done.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&journal)
                .unwrap();
            for chunk in 0..LINES / 500 {
                let mut buf = String::new();
                for i in chunk * 500..(chunk + 1) * 500 {
                    buf.push_str(&line(i));
                    buf.push('\n');
                }
                f.write_all(buf.as_bytes()).unwrap();
                written.store((chunk + 1) * 500, Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
            done.store(true, Relaxed);
        })
    };
    // The backup, once some rows are in and while more arrive.
    let db = data.join("decnet.db");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(db.is_file() && counts(&db).0 >= 5_000) {
        assert!(Instant::now() < deadline, "ingest did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let copy = dir.path().join("copy.db");
    let out = decnet()
        .args(["backup", "--data-dir"])
        .arg(&data)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at_backup = written.load(Relaxed);
    assert!(!done.load(Relaxed), "the backup was not taken under load");
    let (rows, distinct) = counts(&copy);
    eprintln!(
        "backup: {rows} rows while {at_backup} of {LINES} lines were written; {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert_eq!(rows, distinct);
    assert!(rows > 0 && (rows as usize) < LINES);
    let c = rusqlite::Connection::open(&copy).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    drop(c);
    // Never over an existing file; never from a data dir without a database.
    let again = decnet()
        .args(["backup", "--data-dir"])
        .arg(&data)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let none = decnet()
        .args(["backup", "--data-dir"])
        .arg(dir.path())
        .arg(dir.path().join("x.db"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&none.stderr).contains("no database there"));

    writer.join().unwrap();
    let _ = ingester.kill();
    let _ = ingester.wait();

    // Restore: the copy replaces the database; the journal since is taken in once.
    for f in ["decnet.db", "decnet.db-wal", "decnet.db-shm"] {
        let _ = std::fs::remove_file(data.join(f));
    }
    std::fs::copy(&copy, &db).unwrap();
    let out = decnet()
        .args(["ingest", "--once", "--data-dir"])
        .arg(&data)
        .env("DECNET_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(counts(&db), (LINES as i64, LINES as i64));
}
