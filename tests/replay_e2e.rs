//! `decnet replay` against the live sensor: real scanners probe a decoy in a namespace
//! while tcpdump records the decoy interface; the capture is then replayed, in every link
//! type and file format it can come in, and must give what the live sensor concluded.
//!
//! The variants (raw IP, Linux cooked v1 and v2, VLAN-tagged, pcapng) are written from the
//! real capture with pcap-parser's serializer; the reader under test is decnet's.

use std::{
    borrow::Cow,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use decnet_tests::{Daemon, Lab, decnet_bin, require_root, require_tool};
use pcap_parser::{
    Linktype, PcapBlockOwned, PcapError, PcapHeader, ToVec, create_reader,
    pcap::LegacyPcapBlock,
    pcapng::{
        EnhancedPacketBlock, InterfaceDescriptionBlock, OptionCode, PcapNGOption,
        SectionHeaderBlock,
    },
};
use serde_json::Value;

/// One captured frame: time (s, µs) and bytes.
#[derive(Clone)]
struct Rec {
    sec: u32,
    usec: u32,
    data: Vec<u8>,
}

fn read_pcap(path: &Path) -> Vec<Rec> {
    let file = std::fs::File::open(path).expect("capture");
    let mut r = create_reader(1 << 20, file).expect("pcap reader");
    let mut out = Vec::new();
    loop {
        match r.next() {
            Ok((n, block)) => {
                if let PcapBlockOwned::Legacy(b) = block {
                    out.push(Rec {
                        sec: b.ts_sec,
                        usec: b.ts_usec,
                        data: b.data[..b.caplen as usize].to_vec(),
                    });
                }
                r.consume(n);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => r.refill().expect("refill"),
            Err(e) => panic!("reading {}: {e:?}", path.display()),
        }
    }
    out
}

fn write_pcap(path: &Path, link: i32, recs: &[Rec]) {
    let mut h = PcapHeader::new();
    h.network = Linktype(link);
    h.snaplen = 262_144;
    let mut out = h.to_vec_raw().expect("pcap header");
    for r in recs {
        let b = LegacyPcapBlock {
            ts_sec: r.sec,
            ts_usec: r.usec,
            caplen: r.data.len() as u32,
            origlen: r.data.len() as u32,
            data: &r.data,
        };
        out.extend(b.to_vec_raw().expect("pcap record"));
    }
    std::fs::write(path, out).expect("writing the capture");
}

/// A pcapng file with one Ethernet interface at nanosecond resolution.
fn write_pcapng(path: &Path, recs: &[Rec]) {
    let mut shb = SectionHeaderBlock {
        block_type: pcap_parser::SHB_MAGIC,
        block_len1: 0,
        bom: pcap_parser::BOM_MAGIC,
        major_version: 1,
        minor_version: 0,
        section_len: -1,
        options: vec![],
        block_len2: 0,
    };
    let mut out = shb.to_vec().expect("SHB");
    let mut idb = InterfaceDescriptionBlock {
        block_type: pcap_parser::IDB_MAGIC,
        block_len1: 0,
        linktype: Linktype::ETHERNET,
        reserved: 0,
        snaplen: 0,
        options: vec![PcapNGOption {
            code: OptionCode::IfTsresol,
            len: 1,
            value: Cow::Borrowed(&[9]),
        }],
        block_len2: 0,
        if_tsresol: 9,
        if_tsoffset: 0,
    };
    out.extend(idb.to_vec().expect("IDB"));
    for r in recs {
        let ns = u64::from(r.sec) * 1_000_000_000 + u64::from(r.usec) * 1000;
        let mut epb = EnhancedPacketBlock {
            block_type: pcap_parser::EPB_MAGIC,
            block_len1: 0,
            if_id: 0,
            ts_high: (ns >> 32) as u32,
            ts_low: ns as u32,
            caplen: r.data.len() as u32,
            origlen: r.data.len() as u32,
            data: &r.data,
            options: vec![],
            block_len2: 0,
        };
        out.extend(epb.to_vec().expect("EPB"));
    }
    std::fs::write(path, out).expect("writing the capture");
}

/// The same frames with their Ethernet header replaced by `f(ethertype)`.
fn relink(recs: &[Rec], head: impl Fn(&[u8]) -> Vec<u8>) -> Vec<Rec> {
    recs.iter()
        .filter(|r| r.data.len() > 14)
        .map(|r| Rec {
            data: [head(&r.data[12..14]), r.data[14..].to_vec()].concat(),
            ..r.clone()
        })
        .collect()
}

fn replay(args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .arg("120")
        .arg(decnet_bin())
        .arg("replay")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("decnet replay");
    eprintln!(
        "decnet replay {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn profiles(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "replay failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a profile per line"))
        .collect()
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("decnet-replay-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("test dir");
    d
}

/// tcpdump on an interface, writing every frame to a file until dropped.
struct Tcpdump(std::process::Child, PathBuf);

impl Tcpdump {
    fn start(iface: &str, file: &Path) -> Tcpdump {
        let log = file.with_extension("log");
        let mut child = Command::new("tcpdump")
            // --immediate-mode: every frame is handed over as it arrives. Without it,
            // libpcap reads the kernel's ring a block at a time, and frames of the last,
            // unfinished block were still unread at SIGINT on a loaded machine (CI: "347
            // received by filter, 336 captured": hping3's last SYNs missing from the file).
            // Its ring has a slot per frame of the snap length, so a full 256 KiB snap
            // leaves 8 slots in the 2 MiB buffer; one MTU is all a frame here needs.
            .args([
                "-i",
                iface,
                "-U",
                "--immediate-mode",
                "-s",
                "2048",
                "-B",
                "8192",
            ])
            .args(["-n", "-Z", "root", "-w"])
            .arg(file)
            .stderr(std::fs::File::create(&log).expect("tcpdump log"))
            .spawn()
            .expect("tcpdump");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening on")
        {
            assert!(Instant::now() < deadline, "tcpdump never started listening");
            assert!(child.try_wait().ok().flatten().is_none(), "tcpdump exited");
            std::thread::sleep(Duration::from_millis(50));
        }
        Tcpdump(child, log)
    }

    fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
        // Its counts: every frame received must have been captured.
        let log = std::fs::read_to_string(&self.1).unwrap_or_default();
        eprintln!("{}", log.trim());
        let count = |what: &str| {
            log.lines()
                .find(|l| l.ends_with(what))
                .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        };
        assert_eq!(
            count("packets captured"),
            count("packets received by filter"),
            "tcpdump missed frames: {log}"
        );
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The verdicts that must match between a live sensor and a replay of its capture.
fn verdict(p: &Value) -> Value {
    serde_json::json!({
        "tools": p["tools"],
        "scan_kinds": p["scan"]["kinds"],
        "event_types": p["event_types"],
        "ports": p["ports"],
        "class": p["behavior"]["class"],
        "closed": p["answers"]["closed"],
        "risk": p["risk"]["score"],
    })
}

#[test]
fn a_lab_capture_replays_to_what_the_live_sensor_saw_in_every_format() {
    if !require_root() {
        return;
    }
    for tool in ["nmap", "hping3", "tcpdump"] {
        require_tool(tool);
    }
    let lab = Lab::new(61);
    let work = dir("lab");
    let pcap = work.join("lab.pcap");
    let dump = Tcpdump::start(&lab.host_if, &pcap);
    // A known-scanner list that does not name the attacker yet.
    let scanners = work.join("scanners.txt");
    std::fs::write(
        &scanners,
        "# research scanners\n192.0.2.0/24,Elsewhere,research\n",
    )
    .unwrap();
    let mut daemon = Daemon::start_with_env(
        &lab.host_if,
        &[format!("{}=web", lab.decoy)],
        &work.join("live"),
        &[("DECNET_KNOWN_SCANNERS", scanners.to_str().unwrap())],
    );
    // A SYN scan, a FIN scan and hping3 SYNs: tools, kinds, outcomes.
    lab.exec(
        &["nmap", "-n", "-Pn", "-sS", "-p", "1-150", "-T4", &lab.decoy],
        60,
    );
    lab.exec(&["nmap", "-n", "-Pn", "-sF", "-p", "20-30", &lab.decoy], 60);
    lab.exec(
        &[
            "hping3", "-c", "5", "-S", "-p", "8080", "-i", "u20000", &lab.decoy,
        ],
        30,
    );
    daemon.settle();
    let live = daemon.attacker(&lab.attacker);
    assert_eq!(live["classification"], "suspicious", "{live}");
    assert_eq!(live["actor"], Value::Null);
    assert_eq!(live["spoofable"], true, "no handshake completed: {live}");
    // Listed, and SIGHUP: the same profile now names its actor, benign, at low risk.
    let listed = format!("{}/32,Lab Research,research", lab.attacker);
    std::fs::write(
        &scanners,
        format!("# research scanners\n{listed}\nnot-a-cidr\n"),
    )
    .unwrap();
    // SAFETY: signalling the daemon this test started.
    unsafe { libc::kill(daemon.pid(), libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let benign = loop {
        let p = daemon.attacker(&lab.attacker);
        if p["classification"] == "benign" {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the list: {p}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(benign["actor"], "Lab Research", "{benign}");
    assert_eq!(benign["actor_category"], "research", "{benign}");
    assert!(benign["risk"]["score"].as_u64().unwrap() <= 10, "{benign}");
    assert_eq!(benign["tools"], live["tools"], "the profile itself is kept");
    let log = daemon.log_text();
    assert!(
        log.contains("known-scanner line skipped") && log.contains(":3: `not-a-cidr`"),
        "{log}"
    );
    daemon.stop();
    dump.stop();
    let recs = read_pcap(&pcap);
    assert!(recs.len() > 300, "tcpdump caught {} frames", recs.len());

    // The replay concludes what the live sensor did.
    let decoy = format!("{}=web", lab.decoy);
    let data = work.join("replayed");
    let first = replay(&[
        "--decoy",
        &decoy,
        "--data-dir",
        data.to_str().unwrap(),
        "--json",
        pcap.to_str().unwrap(),
    ]);
    let first = profiles(&first);
    let replayed = first
        .iter()
        .find(|p| p["ip"] == lab.attacker.as_str())
        .expect("the attacker's profile");
    assert_eq!(
        verdict(replayed),
        verdict(&live),
        "replay: {replayed}\nlive: {live}"
    );
    assert_eq!(
        replayed["tools"],
        serde_json::json!(["nmap", "hping3"]),
        "{replayed}"
    );

    // Events carry the capture's time: the profile starts at the attacker's first frame.
    let attacker: std::net::Ipv4Addr = lab.attacker.parse().unwrap();
    let first_frame = recs
        .iter()
        .find(|r| {
            r.data.len() >= 34 && r.data[12..14] == [8, 0] && r.data[26..30] == attacker.octets()
        })
        .expect("a frame from the attacker");
    let want = format!("{}.{:06}", first_frame.sec, first_frame.usec);
    let got = replayed["first_seen"].as_str().unwrap();
    let unix = unix_of(got);
    assert_eq!(unix, want, "first_seen {got}");

    // The same file, and the same frames in every other format, give the same profiles.
    let again = profiles(&replay(&[
        "--decoy",
        &decoy,
        "--json",
        pcap.to_str().unwrap(),
    ]));
    assert_eq!(again, first, "a second replay differs");
    let ip_ethertype = |et: &[u8]| -> Vec<u8> {
        assert!(et == [8, 0] || et == [0x86, 0xdd], "non-IP frame {et:?}");
        vec![]
    };
    let ip_only: Vec<Rec> = recs
        .iter()
        .filter(|r| {
            r.data.len() > 14 && (r.data[12..14] == [8, 0] || r.data[12..14] == [0x86, 0xdd])
        })
        .cloned()
        .collect();
    let variants: Vec<(&str, i32, Vec<Rec>)> = vec![
        ("raw101", 101, relink(&ip_only, ip_ethertype)),
        ("raw12", 12, relink(&ip_only, ip_ethertype)),
        (
            "sll",
            113,
            relink(&ip_only, |et| {
                [&[0, 0, 0, 1, 0, 6][..], &[0; 8], et].concat()
            }),
        ),
        (
            "sll2",
            276,
            relink(&ip_only, |et| [et, &[0; 18][..]].concat()),
        ),
        (
            "vlan",
            1,
            relink(&recs, |et| [&[0u8; 12][..], &[0x81, 0, 0, 42], et].concat()),
        ),
        (
            "qinq",
            1,
            relink(&recs, |et| {
                [&[0u8; 12][..], &[0x88, 0xa8, 0, 7, 0x81, 0, 0, 42], et].concat()
            }),
        ),
    ];
    for (name, link, frames) in &variants {
        let file = work.join(format!("{name}.pcap"));
        write_pcap(&file, *link, frames);
        let got = profiles(&replay(&[
            "--decoy",
            &decoy,
            "--json",
            file.to_str().unwrap(),
        ]));
        assert_eq!(
            got, first,
            "{name} (link type {link}) differs from the Ethernet capture"
        );
    }
    let ng = work.join("lab.pcapng");
    write_pcapng(&ng, &recs);
    let got = profiles(&replay(&[
        "--decoy",
        &decoy,
        "--json",
        ng.to_str().unwrap(),
    ]));
    assert_eq!(got, first, "pcapng differs from pcap");

    // Without --decoy, the probed address is found, and the verdicts are the same.
    let found = replay(&["--json", pcap.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&found.stderr).into_owned();
    assert!(
        stderr.contains(&format!("decoys: {}\n", lab.decoy)),
        "{stderr}"
    );
    let found = profiles(&found);
    let p = found
        .iter()
        .find(|p| p["ip"] == lab.attacker.as_str())
        .unwrap();
    assert_eq!(verdict(p), verdict(replayed));

    // A capture cut inside a record: the frames before it are replayed and kept, and the
    // error names the file and the frame.
    let bytes = std::fs::read(&pcap).unwrap();
    let cut = work.join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3 + 7]).unwrap();
    let kept = work.join("kept");
    let out = replay(&[
        "--decoy",
        &decoy,
        "--data-dir",
        kept.to_str().unwrap(),
        cut.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a cut capture must fail");
    assert!(
        stderr.contains("cut.pcap: frame ") && stderr.contains("the file ends inside a record"),
        "{stderr}"
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&lab.attacker),
        "the frames before the cut are profiled: {table}"
    );
    let journal = std::fs::read_to_string(kept.join("events.jsonl")).unwrap();
    assert!(
        journal.lines().count() > 100,
        "{} records kept",
        journal.lines().count()
    );

    // Not a capture at all; and a link type decnet does not read (802.11).
    let junk = work.join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture, just text\n").unwrap();
    let out = replay(&[junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("junk.pcap: not a pcap or pcapng capture"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // After a good capture, a bad one: the good one is still profiled.
    let out = replay(&[
        "--decoy",
        &decoy,
        pcap.to_str().unwrap(),
        junk.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&lab.attacker),
        "the first file's attacker is reported: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let wifi = work.join("wifi.pcap");
    write_pcap(&wifi, 105, &recs);
    let out = replay(&["--decoy", &decoy, wifi.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nothing could be replayed: {stderr}");
    assert!(
        stderr.contains(&format!("skipped {} frames: link type 105", recs.len()))
            && stderr.contains("no frame could be replayed (the link types read are Ethernet"),
        "{stderr}"
    );
    // The same list given to a replay: the attacker is the known scanner there too.
    let out = replay(&[
        "--decoy",
        &decoy,
        "--known-scanners",
        scanners.to_str().unwrap(),
        "--json",
        pcap.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains(":3: `not-a-cidr`"), "{stderr}");
    let p = profiles(&out);
    let p = p.iter().find(|p| p["ip"] == lab.attacker.as_str()).unwrap();
    assert_eq!(
        (&p["classification"], &p["actor"]),
        (&"benign".into(), &"Lab Research".into())
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// `2026-12-04T18:26:25.827122000Z` as Unix `seconds.micros`.
fn unix_of(ts: &str) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", ts, "+%s.%6N"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
