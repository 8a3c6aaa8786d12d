//! `cargo xtask bench replay` (root): frames per second through `decnet replay`, beside
//! `tcpdump -r FILE -w /dev/null` (reading and writing the capture, nothing else) and
//! `p0f -r FILE` (a passive fingerprinter reading it), on one capture in the same run.
//!
//! The capture is written here, a background-radiation mix of 260,000 frames: a spoofed
//! SYN storm (100,000 addresses, one crafted SYN each), 60,000 hosts' own-stack SYNs to
//! common ports with the decoy's RST answers, and 20 scanners sweeping 2,000 ports each
//! with nmap's SYN, with answers. Each tool runs `ROUNDS` interleaved times; the medians
//! are printed with decnet's ratio to each, and decnet's own split: the pass through the
//! kernel programs into the journal, then ingest and profiles. Two floors from the same run
//! bound what any replay like decnet's can reach: one `BPF_PROG_TEST_RUN` per frame of a
//! program that does nothing, and keeping the journal's records in SQLite bare; a third
//! bounds any replay that keeps what decnet keeps: every row of the replay's database
//! (logs, bounties, and each source's profile, state and detections) inserted bare into
//! an empty copy of its schema.

use std::{
    process::{Command, Stdio},
    time::Instant,
};

use decnet_tests::{decnet_bin, require_root, require_tool};
use pcap_parser::{Linktype, PcapHeader, ToVec, pcap::LegacyPcapBlock};

const ROUNDS: usize = 3;
const DECOY: [u8; 4] = [192, 0, 2, 10];

fn csum(data: &[u8], mut sum: u32) -> u16 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One TCP segment in an Ethernet frame, checksums valid.
#[allow(clippy::too_many_arguments)]
fn tcp(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
    window: u16,
    ttl: u8,
    ip_id: u16,
    opts: &[u8],
) -> Vec<u8> {
    let tcp_len = 20 + opts.len();
    let mut f = vec![0u8; 12];
    f.extend([0x08, 0x00]);
    let total = (20 + tcp_len) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend(total.to_be_bytes());
    ip.extend(ip_id.to_be_bytes());
    ip.extend([0, 0, ttl, 6, 0, 0]);
    ip.extend(src);
    ip.extend(dst);
    let c = csum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut t = Vec::with_capacity(tcp_len);
    t.extend(sport.to_be_bytes());
    t.extend(dport.to_be_bytes());
    t.extend((u32::from(sport) << 16 | u32::from(dport)).to_be_bytes());
    t.extend(if flags & 0x10 != 0 {
        [0, 0, 0, 1]
    } else {
        [0; 4]
    });
    t.push(((tcp_len / 4) as u8) << 4);
    t.push(flags);
    t.extend(window.to_be_bytes());
    t.extend([0, 0, 0, 0]);
    t.extend(opts);
    let mut pseudo = Vec::with_capacity(12 + tcp_len);
    pseudo.extend(src);
    pseudo.extend(dst);
    pseudo.extend([0, 6]);
    pseudo.extend((tcp_len as u16).to_be_bytes());
    pseudo.extend(&t);
    let c = csum(&pseudo, 0);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    f.extend(ip);
    f.extend(t);
    f
}

/// The benchmark's capture, as (time in µs since the first frame, frame).
fn frames() -> Vec<(u64, Vec<u8>)> {
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut out = Vec::with_capacity(300_000);
    let mut t = 0u64;
    let linux_opts = [
        2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    for i in 0..180_000u32 {
        t += 200 + next() % 400;
        match i % 9 {
            // The storm: a fresh address each time, one crafted SYN to one port.
            0..=4 => {
                let src = (next() as u32 | 0x0100_0000).to_be_bytes();
                let f = tcp(
                    src,
                    DECOY,
                    next() as u16,
                    25565,
                    0x02,
                    0,
                    243,
                    i as u16,
                    &[],
                );
                out.push((t, f));
            }
            // Hosts' own SYNs to common ports, and the decoy's RST.
            5..=7 => {
                let src = [100, 64 + (i % 60) as u8, (i >> 8) as u8, i as u8];
                let port = [22, 23, 80, 443, 445, 3389][(next() % 6) as usize];
                let sport = 32768 + (next() % 28000) as u16;
                out.push((
                    t,
                    tcp(
                        src,
                        DECOY,
                        sport,
                        port,
                        0x02,
                        64240,
                        52,
                        next() as u16,
                        &linux_opts,
                    ),
                ));
                out.push((t + 40, tcp(DECOY, src, port, sport, 0x14, 0, 64, 0, &[])));
            }
            // Twenty nmap scanners, with the answers.
            _ => {
                let n = (i / 9) % 20;
                let src = [203, 0, 113, 10 + n as u8];
                let port = 1 + ((i / 180) % 2000) as u16;
                out.push((
                    t,
                    tcp(
                        src,
                        DECOY,
                        40000 + n as u16,
                        port,
                        0x02,
                        1024,
                        47,
                        next() as u16,
                        &[2, 4, 5, 180],
                    ),
                ));
                out.push((
                    t + 30,
                    tcp(DECOY, src, port, 40000 + n as u16, 0x14, 0, 64, 0, &[]),
                ));
            }
        }
    }
    out
}

fn write_capture(path: &std::path::Path, all: &[(u64, Vec<u8>)]) -> u64 {
    let mut h = PcapHeader::new();
    h.network = Linktype::ETHERNET;
    h.snaplen = 65535;
    let mut out = h.to_vec_raw().expect("pcap header");
    let base = 1_795_723_674u64 * 1_000_000;
    for (us, f) in all {
        let ts = base + us;
        let b = LegacyPcapBlock {
            ts_sec: (ts / 1_000_000) as u32,
            ts_usec: (ts % 1_000_000) as u32,
            caplen: f.len() as u32,
            origlen: f.len() as u32,
            data: f,
        };
        out.extend(b.to_vec_raw().expect("record"));
    }
    std::fs::write(path, out).expect("writing the capture");
    all.len() as u64
}

/// The method's ceiling: frames/s of handing each frame, already in memory, to an XDP
/// program that only returns XDP_PASS, one `BPF_PROG_TEST_RUN` per frame (as `decnet
/// replay` must, so that each frame's state changes are seen by the next). Nothing is read,
/// parsed or written: no replay through the kernel programs can go faster than this.
fn test_run_floor(all: &[(u64, Vec<u8>)]) -> f64 {
    // `r0 = XDP_PASS (2); exit`, loaded by hand: the floor needs no object file.
    let insns: [u64; 2] = [0x0000_0002_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let mut attr = [0u64; 18];
    attr[0] = 6 /* BPF_PROG_TYPE_XDP */ | (2 << 32) /* insn_cnt */;
    attr[1] = insns.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    // SAFETY: a BPF_PROG_LOAD attr in a zeroed buffer of the union's size; the pointers
    // outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            5, /* BPF_PROG_LOAD */
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    assert!(
        fd >= 0,
        "loading the XDP_PASS program: {}",
        std::io::Error::last_os_error()
    );
    let start = Instant::now();
    for (_, f) in all {
        let mut t = [0u64; 10];
        t[0] = fd as u64; // prog_fd; retval
        t[1] = f.len() as u64; // data_size_in; data_size_out
        t[2] = f.as_ptr() as u64; // data_in
        t[4] = 1; // repeat
        // SAFETY: a BPF_PROG_TEST_RUN attr; data_in outlives the call, no data_out.
        let r = unsafe { libc::syscall(libc::SYS_bpf, 10, t.as_ptr(), std::mem::size_of_val(&t)) };
        assert_eq!(r, 0, "test_run: {}", std::io::Error::last_os_error());
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    // SAFETY: the fd loaded above.
    unsafe { libc::close(fd as i32) };
    rate
}

/// The store's ceiling: seconds to keep the replay's journal records (`events.jsonl`) in
/// SQLite as one row each, the line as it is, with a bare prepared insert and 10,000 rows
/// per transaction (WAL, synchronous=NORMAL, as decnet's store). Nothing is parsed and no
/// profile is written: no replay that stores its records in SQLite finishes sooner.
fn sqlite_floor(journal: &std::path::Path, db: &std::path::Path) -> f64 {
    let text = std::fs::read_to_string(journal).expect("reading the replay's journal");
    let lines: Vec<&str> = text.lines().collect();
    let mut c = rusqlite::Connection::open(db).expect("opening the floor's database");
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
         CREATE TABLE logs (id INTEGER PRIMARY KEY, line TEXT NOT NULL);",
    )
    .expect("creating the floor's table");
    let start = Instant::now();
    for chunk in lines.chunks(10_000) {
        let tx = c.transaction().expect("begin");
        {
            let mut st = tx
                .prepare_cached("INSERT INTO logs (line) VALUES (?1)")
                .expect("prepare");
            for l in chunk {
                st.execute([l]).expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    start.elapsed().as_secs_f64()
}

/// The ceiling for what decnet keeps: seconds to insert every row the replay stored (its
/// logs and bounties, and each source's profile, state and detections) into an empty copy
/// of the same schema, tables and indexes alike, with bare prepared inserts of 10,000 rows
/// per transaction, on a connection set up as decnet's writers are. The rows are read into memory first and
/// nothing is parsed, folded or serialised: no replay that keeps these rows in this schema
/// finishes sooner, however it computes them.
fn kept_floor(replayed: &std::path::Path, db: &std::path::Path) -> f64 {
    use rusqlite::types::Value;
    let src = rusqlite::Connection::open(replayed).expect("opening the replay's database");
    let mut schema: Vec<(String, String)> = src
        .prepare("SELECT type, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'")
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()
        })
        .expect("reading the replay's schema");
    // Tables before the indexes on them.
    schema.sort_by_key(|(kind, _)| kind != "table");
    let tables: Vec<String> = src
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>())
        .expect("listing the replay's tables");
    let mut kept: Vec<(String, usize, Vec<Vec<Value>>)> = Vec::new();
    for t in &tables {
        let mut st = src
            .prepare(&format!("SELECT * FROM \"{t}\""))
            .expect("select");
        let cols = st.column_count();
        let rows = st
            .query_map([], |r| (0..cols).map(|i| r.get::<_, Value>(i)).collect())
            .and_then(|rows| rows.collect::<Result<Vec<Vec<Value>>, _>>())
            .expect("reading the replay's rows");
        kept.push((t.clone(), cols, rows));
    }
    let mut c = rusqlite::Connection::open(db).expect("opening the floor's database");
    // As decnet's writers open their connections.
    c.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
         PRAGMA cache_size = -8192; PRAGMA temp_store = MEMORY;",
    )
    .expect("pragmas");
    for (_, sql) in &schema {
        c.execute_batch(sql).expect("creating the schema's copy");
    }
    let start = Instant::now();
    for (t, cols, rows) in &kept {
        let marks = vec!["?"; *cols].join(",");
        for chunk in rows.chunks(10_000) {
            let tx = c.transaction().expect("begin");
            {
                let mut st = tx
                    .prepare_cached(&format!("INSERT INTO \"{t}\" VALUES ({marks})"))
                    .expect("prepare");
                for r in chunk {
                    st.execute(rusqlite::params_from_iter(r.iter()))
                        .expect("insert");
                }
            }
            tx.commit().expect("commit");
        }
    }
    start.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `cmd` to completion; its wall time in seconds, and its stderr.
fn timed(cmd: &mut Command) -> (f64, String) {
    let start = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("starting the command");
    let secs = start.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed: {err}");
    (secs, err)
}

fn main() {
    if !require_root() {
        eprintln!("skipping: the replay benchmark needs root (CAP_BPF)");
        return;
    }
    require_tool("tcpdump");
    require_tool("p0f");
    let dir = std::env::temp_dir().join(format!("decnet-bench-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let file = dir.join("mix.pcap");
    let all = frames();
    let n = write_capture(&file, &all);
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    println!("capture: {n} frames, {} MiB", size >> 20);
    let decoy = format!("{}.{}.{}.{}=bench", DECOY[0], DECOY[1], DECOY[2], DECOY[3]);
    let (mut tcpdump, mut p0f, mut decnet, mut kernel_pass) = (vec![], vec![], vec![], vec![]);
    let (mut floor, mut analysed, mut store_floor, mut kept) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        let (t, _) = timed(
            Command::new("tcpdump")
                .args(["-r"])
                .arg(&file)
                .args(["-w", "/dev/null"]),
        );
        tcpdump.push(n as f64 / t);
        let (t, _) = timed(Command::new("p0f").arg("-r").arg(&file));
        p0f.push(n as f64 / t);
        let data = dir.join(format!("round{round}"));
        let (t, err) = timed(
            Command::new(decnet_bin())
                .args(["replay", "--decoy", &decoy, "--data-dir"])
                .arg(&data)
                .arg(&file),
        );
        decnet.push(n as f64 / t);
        // "replayed N frames (...) in S s (R frames/s)": the pass through the programs.
        let rate = err
            .lines()
            .find(|l| l.starts_with("replayed "))
            .and_then(|l| l.split(" s (").nth(1))
            .and_then(|r| r.split(' ').next())
            .and_then(|r| r.parse::<f64>().ok())
            .unwrap_or(0.0);
        kernel_pass.push(rate);
        // "ingested and profiled in S s": the rest of decnet's time, before the report.
        let secs = err
            .lines()
            .find_map(|l| l.strip_prefix("ingested and profiled in "))
            .and_then(|r| r.split(' ').next())
            .and_then(|r| r.parse::<f64>().ok())
            .unwrap_or(f64::INFINITY);
        analysed.push(n as f64 / secs);
        store_floor
            .push(n as f64 / sqlite_floor(&data.join("events.jsonl"), &dir.join("floor.db")));
        let _ = std::fs::remove_file(dir.join("floor.db"));
        kept.push(n as f64 / kept_floor(&data.join("decnet.db"), &dir.join("kept.db")));
        for f in ["kept.db", "kept.db-wal", "kept.db-shm"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        floor.push(test_run_floor(&all));
        println!(
            "round {round}: tcpdump {:.0}, p0f {:.0}, decnet replay {:.0} frames/s (kernel pass {rate:.0}, ingest and profiles {:.0}); one test_run per frame of an XDP_PASS program {:.0}; storing the journal's records bare {:.0}; storing every row decnet kept bare {:.0}",
            tcpdump[round],
            p0f[round],
            decnet[round],
            analysed[round],
            floor[round],
            store_floor[round],
            kept[round]
        );
        let _ = std::fs::remove_dir_all(&data);
    }
    let (t, p, d, k, f) = (
        median(&mut tcpdump),
        median(&mut p0f),
        median(&mut decnet),
        median(&mut kernel_pass),
        median(&mut floor),
    );
    let (a, s, kf) = (
        median(&mut analysed),
        median(&mut store_floor),
        median(&mut kept),
    );
    println!("median of {ROUNDS} rounds, frames/s:");
    println!("  tcpdump -r -w /dev/null  {t:>12.0}");
    println!("  p0f -r                   {p:>12.0}");
    println!(
        "  decnet replay            {d:>12.0}  ({:.2}x p0f, {:.2}x tcpdump, {:.2}x the kept-rows \
         floor)",
        d / p,
        d / t,
        d / kf
    );
    println!("  decnet, kernel pass only {k:>12.0}  ({:.2}x p0f)", k / p);
    println!(
        "  decnet, ingest+profiles  {a:>12.0}  ({:.2}x p0f; then the report)",
        a / p
    );
    println!(
        "  test_run floor           {f:>12.0}  ({:.2}x p0f; one BPF_PROG_TEST_RUN per frame of an \
         XDP_PASS program, frames in memory: no replay through the kernel is faster)",
        f / p
    );
    println!(
        "  SQLite floor             {s:>12.0}  ({:.2}x p0f; the replay's journal records kept \
         one row each by a bare prepared insert: no replay into SQLite is faster)",
        s / p
    );
    println!(
        "  kept-rows floor          {kf:>12.0}  ({:.2}x p0f; every row decnet kept, logs and \
         profiles, inserted bare into an empty copy of its schema: no replay that keeps them \
         is faster)",
        kf / p
    );
    let _ = std::fs::remove_dir_all(&dir);
}
