//! Public captures of real traffic through `decnet replay`, with the expected labels
//! computed here from header relations, not by decnet's rules.
//!
//! - Captures of real attacks that may not be redistributed (their licences are in
//!   docs/testing.md, "Public captures") are not in the repository: set `DECNET_CORPUS` to a
//!   directory that holds them (by name; each is checked against its SHA-256 before use).
//!   Without it that test says `skipping:`; a file of the list that is missing or differs is
//!   an error.
//! - A real LAN capture that Debian ships (GPL-2+) is fetched by `cargo xtask test` into
//!   `.tools/captures`, so CI replays it every run.

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
    frames(path).iter().filter_map(|f| segment(f)).collect()
}

/// Every frame of an Ethernet capture (pcap or pcapng).
fn frames(path: &Path) -> Vec<Vec<u8>> {
    let file = std::fs::File::open(path).expect("capture");
    let mut r = create_reader(1 << 20, file).expect("pcap reader");
    let mut out = Vec::new();
    loop {
        match r.next() {
            Ok((n, block)) => {
                match block {
                    PcapBlockOwned::Legacy(b) => out.push(b.data.to_vec()),
                    PcapBlockOwned::NG(Block::EnhancedPacket(p)) => {
                        out.push(p.data[..p.caplen as usize].to_vec())
                    }
                    _ => {}
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
    replay_with(path).0
}

/// `decnet replay --json` of one file: the profiles by address, and what it said on stderr.
fn replay_with(path: &Path) -> (BTreeMap<String, Value>, String) {
    let out = Command::new("timeout")
        .arg("600")
        .arg(decnet_bin())
        .args(["replay", "--json"])
        .arg(path)
        .output()
        .expect("decnet replay");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{}: {stderr}", path.display());
    assert!(out.status.success(), "replay of {} failed", path.display());
    let profiles = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a profile per line"))
        .map(|p| (p["ip"].as_str().unwrap_or_default().to_owned(), p))
        .collect();
    (profiles, stderr)
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

/// The LAN capture Debian ships in `pathspider` (see docs/testing.md, "Public captures").
const LAN_CAPTURE: &str = "pathspider-real.pcap";
const LAN_CAPTURE_SHA256: &str = "ed2946c38ad35e2cf6ecd970314c92d0893328d78de09f36d5b398019524e3cf";

/// One TCP or UDP packet of the LAN capture, or another IP packet (`proto` says which).
struct Pkt {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
    /// The TCP SYN and ACK flags (both false for UDP and others).
    syn: bool,
    ack: bool,
    payload: bool,
    /// To a broadcast or multicast Ethernet or IP address.
    group: bool,
}

fn packet(frame: &[u8]) -> Option<Pkt> {
    let p = LaxSlicedPacket::from_ethernet(frame).ok()?;
    let (src, dst, proto) = match p.net.as_ref()? {
        LaxNetSlice::Ipv4(s) => (
            IpAddr::V4(s.header().source_addr()),
            IpAddr::V4(s.header().destination_addr()),
            s.header().protocol().0,
        ),
        LaxNetSlice::Ipv6(s) => (
            IpAddr::V6(s.header().source_addr()),
            IpAddr::V6(s.header().destination_addr()),
            s.header().next_header().0,
        ),
        _ => return None,
    };
    let group_ip = match dst {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast(),
    };
    let mut k = Pkt {
        src,
        dst,
        proto,
        sport: 0,
        dport: 0,
        syn: false,
        ack: false,
        payload: false,
        group: frame[0] & 1 != 0 || group_ip,
    };
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            (k.sport, k.dport) = (t.source_port(), t.destination_port());
            (k.syn, k.ack) = (t.syn(), t.ack());
            k.payload = !t.payload().is_empty();
        }
        Some(TransportSlice::Udp(u)) => {
            (k.sport, k.dport) = (u.source_port(), u.destination_port());
            k.payload = !u.payload().is_empty();
        }
        _ => {}
    }
    Some(k)
}

/// A real LAN capture (an hour of a monitoring server polling its agents, with DNS, DHCP,
/// NetBIOS and SSDP chatter) replayed with the decoys inferred. From its headers:
/// - no broadcast or multicast address is a decoy;
/// - a decoy port a host reached only with answers to conversations that decoy opened (its
///   TCP SYN, or its first UDP datagram) is not among the host's probed ports;
/// - a host that completed a TCP handshake with a decoy is not spoofable;
/// - a host whose every TCP segment to a decoy belongs to a connection it opened with a SYN
///   in the capture, each carrying payload, has no stealth scan kind and no scanner tool.
#[test]
fn a_real_lan_capture_gets_the_verdicts_its_headers_call_for() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools/captures")
        .join(LAN_CAPTURE);
    if !path.is_file() {
        decnet_tests::skip(&format!(
            "{} is missing (`cargo xtask test` fetches it from Debian's pathspider package)",
            path.display()
        ));
        return;
    }
    if !require_root() {
        return;
    }
    assert_eq!(
        sha256(&path),
        LAN_CAPTURE_SHA256,
        "{LAN_CAPTURE} is not the file this test knows"
    );
    let pkts: Vec<Pkt> = frames(&path).iter().filter_map(|f| packet(f)).collect();
    let (got, stderr) = replay_with(&path);
    let decoys: BTreeSet<IpAddr> = stderr
        .lines()
        .find_map(|l| l.strip_prefix("decoys: "))
        .expect("replay names the decoys it found")
        .split_whitespace()
        .map(|a| a.parse().expect("a decoy address"))
        .collect();

    // Decoys are hosts: each received a unicast frame.
    for d in &decoys {
        assert!(
            pkts.iter().any(|p| p.dst == *d && !p.group),
            "{d} only ever received broadcast or multicast frames, yet it is a decoy"
        );
    }

    // Who sent the first packet of each TCP (a SYN without ACK) and UDP conversation.
    type Conv = (u8, (IpAddr, u16), (IpAddr, u16));
    let conv = |p: &Pkt| -> Conv {
        let (a, b) = ((p.src, p.sport), (p.dst, p.dport));
        (p.proto, a.min(b), a.max(b))
    };
    let mut opener: BTreeMap<Conv, Option<IpAddr>> = BTreeMap::new();
    for p in pkts.iter().filter(|p| p.proto == 6 || p.proto == 17) {
        opener
            .entry(conv(p))
            .or_insert_with(|| (p.proto == 17 || (p.syn && !p.ack)).then_some(p.src));
    }
    let mut to_decoys: BTreeMap<IpAddr, Vec<&Pkt>> = BTreeMap::new();
    for p in &pkts {
        if decoys.contains(&p.dst) && !decoys.contains(&p.src) {
            to_decoys.entry(p.src).or_default().push(p);
        }
    }
    // Per host: the decoy ports it reached only in conversations a decoy opened (a decoy's
    // ephemeral ports, where its own connections and lookups get their answers).
    let decoy_opened = |p: &Pkt| opener[&conv(p)] == Some(p.dst);
    let answer_ports: BTreeMap<IpAddr, BTreeSet<u16>> = to_decoys
        .iter()
        .map(|(ip, ps)| {
            let mine = |p: &&&Pkt| p.proto == 6 || p.proto == 17;
            let answers: BTreeSet<u16> = ps
                .iter()
                .filter(mine)
                .filter(|p| decoy_opened(p))
                .map(|p| p.dport)
                .collect();
            let probed: BTreeSet<u16> = ps
                .iter()
                .filter(mine)
                .filter(|p| !decoy_opened(p))
                .map(|p| p.dport)
                .collect();
            (*ip, answers.difference(&probed).copied().collect())
        })
        .collect();
    let answer_count: usize = answer_ports.values().map(BTreeSet::len).sum();
    // Conversations where a decoy answered with SYN-ACK, and those where a host sent payload.
    let synack: BTreeSet<(Conv, IpAddr)> = pkts
        .iter()
        .filter(|q| q.proto == 6 && q.syn && q.ack)
        .map(|q| (conv(q), q.src))
        .collect();
    let talked: BTreeSet<(Conv, IpAddr)> = pkts
        .iter()
        .filter(|q| q.payload)
        .map(|q| (conv(q), q.src))
        .collect();
    let shook_hands: BTreeSet<IpAddr> = to_decoys
        .iter()
        .filter(|(ip, ps)| {
            ps.iter().any(|p| {
                p.proto == 6
                    && p.ack
                    && !p.syn
                    && opener[&conv(p)] == Some(**ip)
                    && synack.contains(&(conv(p), p.dst))
            })
        })
        .map(|(ip, _)| *ip)
        .collect();
    let clients: BTreeSet<IpAddr> = to_decoys
        .iter()
        .filter(|(ip, ps)| {
            let tcp: Vec<&&Pkt> = ps
                .iter()
                .filter(|p| p.proto == 6 && !decoy_opened(p))
                .collect();
            !tcp.is_empty()
                && tcp.iter().all(|p| opener[&conv(p)] == Some(**ip))
                && tcp.iter().all(|p| talked.contains(&(conv(p), **ip)))
        })
        .map(|(ip, _)| *ip)
        .collect();
    eprintln!(
        "{LAN_CAPTURE}: decoys {decoys:?}; {answer_count} decoy ports reached only by answers \
         to the decoys' own traffic, {} hosts completed handshakes, {} only made connections \
         that carried payload",
        shook_hands.len(),
        clients.len()
    );
    assert!(answer_count > 0 && !shook_hands.is_empty() && !clients.is_empty());

    for (ip, answers) in &answer_ports {
        let Some(p) = got.get(&ip.to_string()) else {
            continue;
        };
        let ports = p["ports"].as_array().expect("ports");
        let wrong: Vec<&Value> = ports
            .iter()
            .filter(|port| port.as_u64().is_some_and(|n| answers.contains(&(n as u16))))
            .collect();
        assert!(
            wrong.is_empty(),
            "{ip}: ports {wrong:?} only carried answers to the decoys' own traffic: {p}"
        );
    }
    for ip in &shook_hands {
        let p = &got[&ip.to_string()];
        assert_eq!(p["spoofable"], false, "{ip} completed a handshake: {p}");
    }
    let stealth = ["ack", "fin", "null", "xmas", "maimon", "window"];
    for ip in &clients {
        let p = &got[&ip.to_string()];
        let kinds = p["scan"]["kinds"].as_array().expect("scan kinds");
        assert!(
            kinds.iter().all(|k| !stealth.iter().any(|s| k == s)),
            "{ip} only made connections: {p}"
        );
        assert_eq!(p["tools"], serde_json::json!([]), "{ip}: {p}");
    }
}
