//! Shared by the benchmarks: a fixed PRNG, a generator of realistic sensor records, and
//! percentiles.
#![allow(dead_code)]

use decnet::{collector::write_probe_record, sensor::Probe};
use decnet_common::{EventKind, FAMILY_V4, RawEvent};

pub(crate) struct Rng(pub u64);
impl Rng {
    pub(crate) fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A sensor record as the daemon writes it: mostly SYN scans, some stealth probes, UDP
/// with payloads and HTTP first payloads (which yield bounties), from up to `sources`
/// attackers; record `i` is stamped `i * step_ns` after a fixed start.
pub(crate) fn record(rng: &mut Rng, i: usize, sources: u64, step_ns: i64, out: &mut Vec<u8>) {
    record_traced(rng, i, sources, step_ns, None, out)
}

/// [`record`] with the `traceparent` the collector writes when developer tracing is on.
pub(crate) fn record_traced(
    rng: &mut Rng,
    i: usize,
    sources: u64,
    step_ns: i64,
    traceparent: Option<&str>,
    out: &mut Vec<u8>,
) {
    // SAFETY: RawEvent is plain old data.
    let mut ev: RawEvent = unsafe { std::mem::zeroed() };
    ev.family = FAMILY_V4;
    // Skewed like real scanning traffic: a few sources send most packets, a long tail of
    // others send a few.
    let spread = rng.next(sources) + 1;
    let attacker = rng.next(spread) as u32;
    ev.src_addr[10..].copy_from_slice(&[0xff, 0xff, 10, (attacker >> 8) as u8, attacker as u8, 7]);
    ev.dst_addr[10..].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 1 + rng.next(4) as u8]);
    ev.decky_id = 1;
    ev.src_port = (40000 + rng.next(20000) as u16).to_be();
    ev.dst_port = (1 + rng.next(1024) as u16).to_be();
    ev.ttl = 40 + rng.next(20) as u8;
    ev.ip_id = (rng.next(65536) as u16).to_be();
    ev.ts_ns = 1_000_000_000 + i as u64 * 1000;
    ev.ifindex = 2;
    match rng.next(10) {
        0 => {
            ev.kind = EventKind::TcpProbe as u32;
            ev.proto = 6;
            ev.tcp_flags = 0x029;
            ev.window = 1024u16.to_be();
        }
        1 => {
            ev.kind = EventKind::UdpProbe as u32;
            ev.proto = 17;
            ev.payload_len = 40;
            ev.payload_cap = 40;
            ev.payload[..40].copy_from_slice(&[0x30; 40]);
        }
        2 => {
            ev.kind = EventKind::TcpPayload as u32;
            ev.proto = 6;
            ev.tcp_flags = 0x018;
            ev.dst_port = 80u16.to_be();
            let body = b"GET /admin HTTP/1.1\r\nHost: 10.0.0.1\r\nUser-Agent: Mozilla/5.0 zgrab/0.x\r\n\r\n";
            ev.payload_len = body.len() as u32;
            ev.payload_cap = body.len() as u8;
            ev.payload[..body.len()].copy_from_slice(body);
        }
        _ => {
            ev.kind = EventKind::TcpSyn as u32;
            ev.proto = 6;
            ev.tcp_flags = 0x002;
            ev.window = 1024u16.to_be();
            ev.opt_len = 4;
            ev.options[..4].copy_from_slice(&[2, 4, 5, 180]);
        }
    }
    let p = Probe::from_raw(&ev).expect("probe");
    write_probe_record(
        out,
        &p,
        "web",
        1_795_723_674_000_000_000 + i as i64 * step_ns,
        traceparent,
    );
}

/// The release `decnet` binary beside the benchmark (benches live in target/release/deps).
pub(crate) fn decnet_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("exe");
    exe.parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("decnet"))
        .expect("bin path")
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Writes `n` generated sensor records from `sources` attackers to `dir/events.jsonl`
/// (reproducible from `seed`); returns its size in bytes.
pub(crate) fn write_journal(dir: &std::path::Path, n: usize, sources: u64, seed: u64) -> u64 {
    use std::io::Write as _;
    std::fs::create_dir_all(dir).expect("journal dir");
    let mut rng = Rng(seed);
    let mut f = std::fs::File::create(dir.join("events.jsonl")).expect("journal");
    let mut buf = Vec::with_capacity(1 << 21);
    for i in 0..n {
        record(&mut rng, i, sources, 1000, &mut buf);
        if buf.len() > 1 << 20 {
            f.write_all(&buf).expect("write");
            buf.clear();
        }
    }
    f.write_all(&buf).expect("write");
    f.metadata().map(|m| m.len()).unwrap_or(0)
}
