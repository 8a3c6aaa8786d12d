//! Public captures of real internet traffic through `decnet replay`, with the expected
//! labels computed here from header relations, not by decnet's rules.
//!
//! The captures may not be redistributed (their licences are in docs/testing.md, "Public
//! captures"), so they are not in the repository: set `DECNET_CORPUS` to a directory that
//! holds them (by name; each is checked against its SHA-256 before use). Without it the
//! test says `skipping:`; a file of the list that is missing or differs is an error.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use decnet_tests::{decnet_bin, require_root};
use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use pcap_parser::{PcapBlockOwned, PcapError, create_reader, pcapng::Block};
use serde_json::Value;

/// What the capture is, and so what must be concluded from it.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A spoofed SYN storm (with, for DOMINATE, the backscatter of other victims).
    Storm,
    /// SYN-ACK reflection: the decoy is the victim receiving other servers' answers.
    Reflection,
    /// One masscan run over the internet.
    Masscan,
}

struct Capture {
    file: &'static str,
    sha256: &'static str,
    kind: Kind,
}

const CORPUS: &[Capture] = &[
    Capture {
        file: "pkt.TCP.synflood.spoofed.pcap",
        sha256: "3c5fc7467a0205fd083115926416064d6f256af7705131adeb909f94ef66e7fa",
        kind: Kind::Storm,
    },
    Capture {
        file: "pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng",
        sha256: "28fdcec8473ec418fb4440db514470107b0792733b9fce55d8d47d588a3ae526",
        kind: Kind::Storm,
    },
    Capture {
        file: "amp.TCP.reflection.SYNACK.pcap",
        sha256: "9339d7bc9d78e04a189b027890355d0b3c2687a720c32606acfa31d5325cd87e",
        kind: Kind::Reflection,
    },
    Capture {
        file: "tcp_0_1000_20190821.pcap",
        sha256: "f4419262ec11c0d044b227bdbf1d6e3cc443c6076fc7be36ff954a2150c44f57",
        kind: Kind::Masscan,
    },
];

/// One TCP segment as the test reads it.
struct Seg {
    src: IpAddr,
    dst: IpAddr,
    syn: bool,
    ack: bool,
    rst: bool,
    window: u16,
    options: Vec<u8>,
    dport: u16,
    seq: u32,
    ip_id: u16,
}

/// Every TCP segment of an Ethernet capture (pcap or pcapng).
fn segments(path: &Path) -> Vec<Seg> {
    let file = std::fs::File::open(path).expect("capture");
    let mut r = create_reader(1 << 20, file).expect("pcap reader");
    let mut out = Vec::new();
    loop {
        match r.next() {
            Ok((n, block)) => {
                let data = match block {
                    PcapBlockOwned::Legacy(b) => Some(b.data.to_vec()),
                    PcapBlockOwned::NG(Block::EnhancedPacket(p)) => {
                        Some(p.data[..p.caplen as usize].to_vec())
                    }
                    _ => None,
                };
                if let Some(d) = data
                    && let Some(s) = segment(&d)
                {
                    out.push(s);
                }
                r.consume(n);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => r.refill().expect("refill"),
            Err(e) => panic!("{}: {e:?}", path.display()),
        }
    }
    out
}

fn segment(frame: &[u8]) -> Option<Seg> {
    let p = LaxSlicedPacket::from_ethernet(frame).ok()?;
    let (src, dst, ip_id) = match p.net.as_ref()? {
        LaxNetSlice::Ipv4(s) => (
            IpAddr::V4(s.header().source_addr()),
            IpAddr::V4(s.header().destination_addr()),
            s.header().identification(),
        ),
        _ => return None,
    };
    let Some(TransportSlice::Tcp(t)) = &p.transport else {
        return None;
    };
    Some(Seg {
        src,
        dst,
        syn: t.syn(),
        ack: t.ack(),
        rst: t.rst(),
        window: t.window_size(),
        options: t.options().to_vec(),
        dport: t.destination_port(),
        seq: t.sequence_number(),
        ip_id,
    })
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// `decnet replay --json` of one file: the profiles by address.
fn replay(path: &Path) -> BTreeMap<String, Value> {
    let out = Command::new("timeout")
        .arg("600")
        .arg(decnet_bin())
        .args(["replay", "--json"])
        .arg(path)
        .output()
        .expect("decnet replay");
    eprintln!(
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "replay of {} failed", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a profile per line"))
        .map(|p| (p["ip"].as_str().unwrap_or_default().to_owned(), p))
        .collect()
}

/// The share of `labelled` sources whose profile satisfies `ok`.
fn share(
    labelled: &BTreeSet<IpAddr>,
    got: &BTreeMap<String, Value>,
    ok: impl Fn(&Value) -> bool,
) -> f64 {
    let hits = labelled
        .iter()
        .filter(|ip| got.get(&ip.to_string()).is_some_and(&ok))
        .count();
    hits as f64 / labelled.len().max(1) as f64
}

#[test]
fn public_captures_get_the_verdicts_their_headers_call_for() {
    let Some(dir) = std::env::var_os("DECNET_CORPUS").map(PathBuf::from) else {
        decnet_tests::skip(
            "DECNET_CORPUS is not set (public captures that may not be \
             redistributed; docs/testing.md, \"Public captures\")",
        );
        return;
    };
    if !require_root() {
        return;
    }
    for c in CORPUS {
        let path = dir.join(c.file);
        assert!(
            path.is_file(),
            "{} is missing from {}",
            c.file,
            dir.display()
        );
        assert_eq!(
            sha256(&path),
            c.sha256,
            "{} is not the file this test knows",
            c.file
        );
        let segs = segments(&path);
        let got = replay(&path);
        // Per source: its segments.
        let mut by_src: BTreeMap<IpAddr, Vec<&Seg>> = BTreeMap::new();
        for s in &segs {
            by_src.entry(s.src).or_default().push(s);
        }
        match c.kind {
            Kind::Storm => {
                // Storm members: at most two SYNs (no ACK), all to one port, with the same
                // window and options as at least 8 other such sources.
                let mut shape: BTreeMap<(u16, Vec<u8>, u16), BTreeSet<IpAddr>> = BTreeMap::new();
                for (ip, ss) in &by_src {
                    if ss.len() <= 2 && ss.iter().all(|s| s.syn && !s.ack) {
                        let s = ss[0];
                        shape
                            .entry((s.window, s.options.clone(), s.dport))
                            .or_default()
                            .insert(*ip);
                    }
                }
                let members: BTreeSet<IpAddr> = shape
                    .values()
                    .filter(|m| m.len() >= 9)
                    .flatten()
                    .copied()
                    .collect();
                assert!(
                    members.len() > 1000,
                    "{}: {} storm sources",
                    c.file,
                    members.len()
                );
                let campaigns: BTreeSet<String> = members
                    .iter()
                    .filter_map(|ip| got.get(&ip.to_string()))
                    .filter(|p| p["campaign_id"].is_i64())
                    .map(|p| p["campaign_id"].to_string())
                    .collect();
                eprintln!(
                    "{}: {} storm sources in campaigns {campaigns:?}",
                    c.file,
                    members.len()
                );
                let in_one = share(&members, &got, |p| p["campaign_id"].is_i64());
                assert!(
                    in_one >= 0.99,
                    "{}: {in_one} of storm sources in a campaign",
                    c.file
                );
                assert!(
                    campaigns.len() <= shape.len(),
                    "{}: one campaign per template at most",
                    c.file
                );
                let low = share(&members, &got, |p| {
                    p["risk"]["band"] == "low"
                        && p["is_traversal"] == false
                        && p["spoofable"] == true
                });
                assert!(
                    low >= 0.99,
                    "{}: {low} of storm sources low, spoofable, no traversal",
                    c.file
                );
                // Backscatter mixed in (RSTs and SYN-ACKs answering someone else's SYNs).
                check_backscatter(c.file, &by_src, &got, 0);
            }
            Kind::Reflection => check_backscatter(c.file, &by_src, &got, 1000),
            Kind::Masscan => {
                // masscan: IP ID = (dst ^ dst port ^ seq) & 0xffff on its SYNs.
                for (ip, ss) in &by_src {
                    let syns: Vec<&&Seg> = ss.iter().filter(|s| s.syn && !s.ack).collect();
                    let related = syns
                        .iter()
                        .filter(|s| match s.dst {
                            IpAddr::V4(d) => {
                                u32::from(s.ip_id)
                                    == (u32::from(d) ^ u32::from(s.dport) ^ s.seq) & 0xffff
                            }
                            IpAddr::V6(_) => false,
                        })
                        .count();
                    if syns.len() >= 10 && related * 10 >= syns.len() * 9 {
                        let p = &got[&ip.to_string()];
                        assert!(
                            p["tools"]
                                .as_array()
                                .is_some_and(|t| t.iter().any(|t| t == "masscan")),
                            "{}: {ip} is masscan by its headers: {p}",
                            c.file
                        );
                        assert!(
                            p["scan"]["kinds"]
                                .as_array()
                                .is_some_and(|k| k.iter().any(|k| k == "syn"))
                        );
                    }
                }
            }
        }
    }
}

/// Sources that send only SYN-ACKs and RSTs (answers to SYNs the decoy never sent) are
/// backscatter at low risk; at least `min` of them when the capture is all reflection.
fn check_backscatter(
    file: &str,
    by_src: &BTreeMap<IpAddr, Vec<&Seg>>,
    got: &BTreeMap<String, Value>,
    min: usize,
) {
    let answers: BTreeSet<IpAddr> = by_src
        .iter()
        .filter(|(_, ss)| ss.iter().all(|s| (s.syn && s.ack) || s.rst))
        .map(|(ip, _)| *ip)
        .collect();
    eprintln!(
        "{file}: {} sources send only SYN-ACKs and RSTs",
        answers.len()
    );
    assert!(
        answers.len() >= min,
        "{file}: {} answering sources",
        answers.len()
    );
    if answers.is_empty() {
        return;
    }
    let ok = share(&answers, got, |p| {
        p["behavior"]["class"] == "backscatter"
            && p["risk"]["band"] == "low"
            && p["scan"]["kinds"] == serde_json::json!([])
    });
    assert!(
        ok >= 0.99,
        "{file}: {ok} of answering sources are low-risk backscatter"
    );
}
