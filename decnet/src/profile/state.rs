//! Per-IP streaming state and the profile derived from it.
//!
//! [`IpState`] is everything the profiler remembers about one source: counts, timing
//! moments, capped sets and a few flags. It is updated one row at a time, persisted as JSON
//! in `attacker_behavior`, and never holds a list of events, so memory is O(IPs).

use serde::{Deserialize, Serialize};

use super::{
    commands::{self, Command},
    sorted::{SortedMap, SortedSet},
    timing::Welford,
};
use crate::{
    ingest::bounty,
    intel::{
        os,
        tcp::{initial_ttl, stack_options, syn_template},
        tools,
    },
    row::{Facts, Fields, NewLog},
    timefmt::parse_rfc3339_ns,
};

pub(crate) const MAX_PORTS: usize = 1024;
pub(crate) const MAX_SERVICES: usize = 64;
pub(crate) const MAX_DECKIES: usize = 64;
pub(crate) const MAX_COMMANDS: usize = 32;
pub(crate) const MAX_HOST_FPS: usize = 8;
/// A silence this long followed by new activity counts as a return.
pub(crate) const RETURN_GAP_S: f64 = 3600.0;

/// The nmap OS-detection probes recognisable one packet at a time (SIGNATURES.md).
pub(crate) mod os_probe {
    pub(crate) const T2: u16 = 1;
    pub(crate) const T3: u16 = 2;
    pub(crate) const T4: u16 = 4;
    pub(crate) const T5: u16 = 8;
    pub(crate) const T6: u16 = 16;
    pub(crate) const T7: u16 = 32;
    pub(crate) const ECN: u16 = 64;
    pub(crate) const U1: u16 = 128;
}

/// Unknown or missing fields take their defaults, so states written by an older version
/// still load after an upgrade.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IpState {
    pub first_seen: String,
    pub last_seen: String,
    first_ns: i64,
    last_ns: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub events: u64,
    #[serde(skip_serializing_if = "Welford::is_empty")]
    pub iat: Welford,
    #[serde(skip_serializing_if = "SortedSet::is_empty")]
    pub ports: SortedSet<u16>,
    #[serde(skip_serializing_if = "is_zero")]
    pub ports_overflow: u64,
    #[serde(skip_serializing_if = "SortedSet::is_empty")]
    pub services: SortedSet<String>,
    /// Decoys in first-contact order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deckies: Vec<String>,
    #[serde(skip_serializing_if = "SortedSet::is_empty")]
    pub kinds: SortedSet<String>,
    #[serde(skip_serializing_if = "is_zero16")]
    pub os_probes: u16,
    /// Decoys that received an ICMP echo from this source.
    #[serde(skip_serializing_if = "SortedSet::is_empty")]
    echo_deckies: SortedSet<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_fingerprint: Option<String>,
    /// Fingerprints of SYNs that match no scanner signature, i.e. built by the source's own
    /// TCP stack, with counts (the OS guess reads these). Capped at [`MAX_HOST_FPS`].
    #[serde(skip_serializing_if = "SortedMap::is_empty")]
    pub host_fps: SortedMap<String, u64>,
    /// Hops from the last SYN whose TTL the sender did not randomise (nmap draws it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hops: Option<u8>,
    #[serde(skip_serializing_if = "is_zero")]
    pub payloads: u64,
    /// Payload artifacts extracted (bounties), credentials among them.
    #[serde(skip_serializing_if = "is_zero")]
    pub bounties: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub credentials: u64,
    /// Distinct (service, command) pairs in first-seen order, capped; `command_count`
    /// counts every one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<Command>,
    #[serde(skip_serializing_if = "is_zero")]
    pub command_count: u64,
    /// Exploitation patterns seen in commands, and how many commands carried one.
    #[serde(skip_serializing_if = "SortedSet::is_empty")]
    pub exploit_marks: SortedSet<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub exploit_payloads: u64,
    /// Gaps of at least [`RETURN_GAP_S`] between consecutive events.
    #[serde(skip_serializing_if = "is_zero")]
    pub returns: u64,
    #[serde(skip_serializing_if = "SortedMap::is_empty")]
    pub event_types: SortedMap<String, u64>,
    /// Votes per tool (see `tools`).
    #[serde(skip_serializing_if = "SortedMap::is_empty")]
    pub tool_votes: SortedMap<String, u64>,
    /// The tool fingerprint campaigns group on, fixed when first known (see `campaign`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<i64>,
    /// What the last detection said, so a change (and only a change) emits a new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported: Option<Box<Headline>>,
    /// What the kernel's flood guard withheld from this source (its `source_suppressed`
    /// summaries), None when it never went over budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood: Option<Box<Flood>>,
    /// What the decoys answered (`probe_outcome`) and the TCP flows this source held
    /// (`tcp_flow`); None before the first of either.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers: Option<Box<Answers>>,
    /// Segments that answer something no decoy sent: SYN-ACKs, RSTs, ICMP errors and echo
    /// replies. A source that sends only these is backscatter: the victim of someone
    /// else's spoofed attack, replying to the addresses it was told were the senders.
    #[serde(skip_serializing_if = "is_zero")]
    pub replies: u64,
    /// ACK and FIN+ACK segments without payload to a flow whose start no decoy saw (an
    /// ordinary client's segments, or an ACK/Maimon scan); the ports and kinds they came as.
    #[serde(skip_serializing_if = "is_zero")]
    pub strays: u64,
    #[serde(skip_serializing_if = "SortedSet::is_empty")]
    stray_ports: SortedSet<u16>,
    #[serde(skip_serializing_if = "SortedSet::is_empty")]
    stray_kinds: SortedSet<String>,
    /// TCP handshakes it completed with a decoy (flow summaries that saw one).
    #[serde(skip_serializing_if = "is_zero")]
    pub handshakes: u64,
    /// Its first SYN as a packet template (`intel::tcp::syn_template`): what sources of a
    /// spoofed storm share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

// Fields at their default are left out of the stored JSON (and read back as defaults):
// most of a state is empty for most sources, and every commit writes the states it
// changed.
fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero16(v: &u16) -> bool {
    *v == 0
}

/// The prefix of a campaign key that is a packet template (a spoofed storm's; the rest of
/// the key is `intel::tcp::syn_template`), where a tool key starts with the tools.
pub(crate) const TEMPLATE_KEY: &str = "template|";

/// Whether a campaign key is a packet template's (a spoofed storm).
pub(crate) fn is_template_key(key: &str) -> bool {
    key.starts_with(TEMPLATE_KEY)
}

/// Distinct ports of stray ACK/FIN+ACK segments that make them a probe sweep (an ACK or
/// Maimon scan) rather than the tail of a connection.
pub(crate) const STRAY_SWEEP_PORTS: usize = 3;

/// Open ports remembered per source.
pub(crate) const MAX_OPEN_PORTS: usize = 256;

/// The decoys' answers to a source's probes and the sum of its TCP flows. These rows are the
/// decoy's side of the conversation, so they stay out of the source's event timing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Answers {
    /// TCP ports a decoy answered with SYN-ACK (capped at [`MAX_OPEN_PORTS`]).
    pub open_ports: SortedSet<u16>,
    /// Probes answered closed (RST, ICMP port unreachable), unfiltered (RST to an ACK
    /// probe), filtered (ICMP administratively prohibited) or unreachable (other ICMP).
    pub closed: u64,
    pub unfiltered: u64,
    pub filtered: u64,
    pub unreachable: u64,
    /// `probe_outcome` rows folded in.
    pub outcomes: u64,
    /// Probe -> answer round trips, milliseconds.
    pub rtt_ms: Welford,
    /// TCP flows summarised, how many of them were connect-scan probes (handshake, nothing
    /// said, the source hung up), and their totals.
    pub flows: u64,
    pub connect_flows: u64,
    pub attacker_bytes: u64,
    pub decoy_bytes: u64,
    pub retransmits: u64,
}
/// The sum of a source's flood-guard summaries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Flood {
    /// Events withheld (one per packet that would have been an event).
    pub suppressed: u64,
    /// The kernel's running estimate of distinct destination ports among them.
    pub distinct_ports_est: u64,
    pub ports_saturated: bool,
    pub distinct_decoys: u64,
    /// First and last withheld event.
    pub first_ts: String,
    pub last_ts: String,
    pub summaries: u64,
}

/// The parts of a profile whose change is a detection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Headline {
    pub class: String,
    pub tools: Vec<String>,
    pub campaign_id: Option<i64>,
    pub band: String,
    /// Empty in headlines stored before classifications existed.
    pub classification: String,
}

impl IpState {
    /// Folds one row in. Rows must come in id order; timestamps may still go backwards
    /// (several writers, clock steps): such gaps are ignored by the timing statistics.
    pub fn update(&mut self, log: &NewLog) {
        self.fold(log, &bounty::facts(log));
    }

    /// [`update`](Self::update) with the row's fields already parsed (by the ingester).
    pub fn fold(&mut self, log: &NewLog, facts: &Facts) {
        let f = &facts.fields;
        if matches!(log.event_type.as_str(), "probe_outcome" | "tcp_flow") {
            self.answer(log, f);
            return;
        }
        let ts = parse_rfc3339_ns(&log.ts);
        if self.events == 0 {
            self.first_seen = log.ts.clone();
            self.last_seen = log.ts.clone();
            if let Some(t) = ts {
                self.first_ns = t;
                self.last_ns = t;
            }
        } else if let Some(t) = ts {
            let gap = (t - self.last_ns) as f64 / 1e9;
            self.iat.push(gap);
            if gap >= RETURN_GAP_S {
                self.returns += 1;
            }
            if t >= self.last_ns {
                self.last_ns = t;
                // Into the string's own buffer: no allocation per row.
                self.last_seen.clone_from(&log.ts);
            }
            if t < self.first_ns {
                self.first_ns = t;
                self.first_seen = log.ts.clone();
            }
        }
        self.events += 1;
        *self.event_types.or_default(log.event_type.as_str()) += 1;
        if !self.deckies.contains(&log.decky) && self.deckies.len() < MAX_DECKIES {
            self.deckies.push(log.decky.clone());
        }
        if log.event_type == "source_suppressed" {
            let fl = self.flood.get_or_insert_with(Box::default);
            fl.suppressed += f.suppressed.unwrap_or(0);
            // The kernel's counters are running totals: the latest summary is the widest.
            fl.distinct_ports_est = fl.distinct_ports_est.max(f.distinct_ports_est.unwrap_or(0));
            fl.ports_saturated |= f.ports_saturated.unwrap_or(false);
            fl.distinct_decoys = fl.distinct_decoys.max(f.distinct_decoys.unwrap_or(0));
            if let Some(t) = &f.first_ts
                && (fl.first_ts.is_empty() || *t < fl.first_ts)
            {
                fl.first_ts = t.clone();
            }
            if let Some(t) = &f.last_ts
                && *t > fl.last_ts
            {
                fl.last_ts = t.clone();
            }
            fl.summaries += 1;
            return;
        }
        if self.services.len() < MAX_SERVICES {
            self.services.insert_ref(log.service.as_str());
        }
        if let Some(p) = f.dst_port
            && log.event_type != "icmp_probe"
            && !self.ports.contains(&p)
        {
            if self.ports.len() < MAX_PORTS {
                self.ports.insert(p);
            } else {
                self.ports_overflow += 1;
            }
        }
        // An ICMP error's body quotes the packet it answers (headers and the first bytes):
        // nothing its sender chose to say.
        let quotes = log.event_type == "icmp_probe" && matches!(f.icmp_type, Some(1..=5 | 11 | 12));
        if f.payload_len.unwrap_or(0) > 0 && !quotes {
            self.payloads += 1;
        }
        self.scan_kind(log, f);
        let artifacts = &facts.artifacts;
        let fp = artifacts
            .iter()
            .find(|(k, _)| *k == "tcp_fingerprint")
            .map(|(_, v)| v.as_str());
        self.vote_tools(log, f, fp);
        if let Some(fp) = fp
            && self.tcp_fingerprint.as_deref() != Some(fp)
        {
            self.tcp_fingerprint = Some(fp.to_owned());
        }
        for (kind, value) in artifacts {
            self.artifact(log, kind, value);
        }
    }

    /// Folds in a decoy's answer or a flow summary.
    fn answer(&mut self, log: &NewLog, f: &Fields) {
        let a = self.answers.get_or_insert_with(Box::default);
        if log.event_type == "tcp_flow" {
            if f.handshake == Some(true) {
                self.handshakes += 1;
            }
            a.flows += 1;
            a.attacker_bytes += f.attacker_bytes.unwrap_or(0);
            a.decoy_bytes += f.decoy_bytes.unwrap_or(0);
            a.retransmits += f.retransmits.unwrap_or(0);
            if f.connect_scan == Some(true) {
                a.connect_flows += 1;
                self.kinds.insert_ref("connect");
            }
            return;
        }
        a.outcomes += 1;
        if let Some(ns) = f.rtt_ns {
            a.rtt_ms.push(ns as f64 / 1e6);
        }
        match f.outcome.as_deref() {
            Some("open") => {
                if let Some(p) = f.dst_port
                    && a.open_ports.len() < MAX_OPEN_PORTS
                {
                    a.open_ports.insert(p);
                }
            }
            Some("closed") => a.closed += 1,
            Some("unfiltered") => a.unfiltered += 1,
            Some("filtered") => a.filtered += 1,
            Some(_) => a.unreachable += 1,
            None => {}
        }
    }

    /// Folds one payload artifact (bounty) in.
    fn artifact(&mut self, log: &NewLog, kind: &str, value: &str) {
        match kind {
            "tcp_fingerprint" => return,
            "credential" => self.credentials += 1,
            "http_user_agent" => {
                if let Some(tool) = tools::user_agent_tool(value) {
                    *self.tool_votes.or_default(tool) += tools::STRONG;
                }
            }
            k if commands::is_command(k, value) => {
                self.command_count += 1;
                if let Some(mark) = commands::exploit_mark(value) {
                    self.exploit_payloads += 1;
                    self.exploit_marks.insert_ref(mark);
                }
                let known = self
                    .commands
                    .iter()
                    .any(|c| c.command == value && c.service == log.service);
                if !known && self.commands.len() < MAX_COMMANDS {
                    self.commands.push(Command {
                        service: log.service.clone(),
                        decky: log.decky.clone(),
                        command: value.to_owned(),
                        ts: log.ts.clone(),
                    });
                }
            }
            _ => {}
        }
        self.bounties += 1;
    }

    fn scan_kind(&mut self, log: &NewLog, f: &Fields) {
        use os_probe::*;
        let flags = f.flags.as_deref().unwrap_or("");
        let win = f.window.unwrap_or(0);
        let df = f.df.unwrap_or(false);
        match log.event_type.as_str() {
            "tcp_syn" => {
                if self.template.is_none() {
                    self.template = syn_template(
                        f.window,
                        f.options.as_deref().unwrap_or(""),
                        f.dst_port,
                        f.ttl,
                        f.ts_val,
                        f.ip_id,
                    );
                }
                // A SYN scan is crafted SYNs: a known scanner's traits, or options no TCP
                // stack sends (every stack since about 2000 offers SACK or window scaling or
                // timestamps). The source's own stack's SYNs open connections; what those
                // are shows in their flows (a connect scan, or a session). Records without
                // traits (other writers, older journals) count as a scan.
                let crafted = f.traits.as_ref().is_none_or(|t| !t.is_empty())
                    || !stack_options(f.options.as_deref().unwrap_or(""));
                if crafted {
                    self.kinds.insert_ref("syn");
                }
                if flags.contains('E')
                    && flags.contains('C')
                    && win == 3
                    && f.urg_ptr == Some(0xF7F5)
                {
                    self.os_probe(ECN);
                }
                if win == 31337 && !df {
                    self.os_probe(T5);
                }
            }
            "tcp_probe" => {
                let probe = f.probe.as_deref().unwrap_or("");
                let os_bit = match (flags, win, df) {
                    ("", 128, true) => T2,
                    ("FSPU", 256, false) => T3,
                    ("A", 1024, true) => T4,
                    ("A", 32768, true) => T6,
                    ("FPU", 65535, false) => T7,
                    _ => 0,
                };
                if os_bit != 0 {
                    // An OS-detection probe, not a NULL/ACK/Xmas port scan.
                    self.os_probe(os_bit);
                } else if let kind @ ("null" | "fin" | "xmas") = probe {
                    self.kinds.insert_ref(kind);
                } else if let kind @ ("ack" | "maimon") = probe {
                    self.stray(kind, f);
                } else if matches!(probe, "syn_ack" | "rst" | "rst_ack") {
                    self.replies += 1;
                }
            }
            "udp_probe" => {
                self.kinds.insert_ref("udp");
                if f.ip_id == Some(0x1042) && f.payload_len == Some(300) {
                    self.os_probe(U1);
                }
            }
            "icmp_probe" if matches!(f.icmp_type, Some(8 | 128)) => {
                self.echo_deckies.insert_ref(log.decky.as_str());
                if self.echo_deckies.len() >= 2 {
                    self.kinds.insert_ref("icmp_sweep");
                }
            }
            // Echo replies, unreachables, time exceeded, parameter problems (ICMPv4 0, 3,
            // 11, 12; ICMPv6 1, 3, 4, 129): answers to packets a decoy never sent.
            "icmp_probe" if matches!(f.icmp_type, Some(0 | 1 | 3 | 4 | 11 | 12 | 129)) => {
                self.replies += 1;
            }
            _ => {}
        }
        if self.os_probes.count_ones() >= 4 {
            self.kinds.insert_ref("os_detection");
        }
    }

    /// An ACK or FIN+ACK segment to a flow the decoy never saw start. Alone, it is the tail
    /// of someone's connection; as a sweep (several ports, no payload, from a source that is
    /// not answering anything) it is an ACK or Maimon scan.
    fn stray(&mut self, kind: &str, f: &Fields) {
        if f.payload_len.unwrap_or(0) > 0 {
            return;
        }
        self.strays += 1;
        if self.stray_ports.len() < STRAY_SWEEP_PORTS
            && let Some(p) = f.dst_port
        {
            self.stray_ports.insert(p);
        }
        self.stray_kinds.insert_ref(kind);
        if self.stray_ports.len() >= STRAY_SWEEP_PORTS && self.replies == 0 {
            self.kinds.extend(self.stray_kinds.iter().cloned());
        }
    }

    /// A member of a spoofed storm: a campaign of sources sharing one packet template.
    /// Its decoys are the storm's targets, not a path it explored.
    pub fn in_storm(&self) -> bool {
        self.campaign_id.is_some() && self.campaign_key.as_deref().is_some_and(is_template_key)
    }

    /// Moved across decoys on its own (not as one of a storm's many addresses).
    pub fn is_traversal(&self) -> bool {
        self.deckies.len() >= 2 && !self.in_storm()
    }

    /// Spoofable: it never completed a TCP handshake with a decoy, so nothing proves the
    /// source address is really its sender's (as GreyNoise's `spoofable`).
    pub fn spoofable(&self) -> bool {
        self.handshakes == 0
    }

    /// Backscatter: everything this source sent answers something no decoy sent (with at
    /// least one real answer among them: a SYN-ACK, RST or ICMP error), and no payload.
    pub fn is_backscatter(&self) -> bool {
        self.replies > 0
            && self.payloads == 0
            && self.replies
                + self.strays
                + self
                    .event_types
                    .get("source_suppressed")
                    .copied()
                    .unwrap_or(0)
                >= self.events
    }

    /// Tool votes of one TCP packet. A SYN matching no signature came from the source's own
    /// stack: its fingerprint feeds the OS guess. Hop distance is taken from every SYN but
    /// those of tools that draw their TTL at random (nmap): theirs would be a wrong number.
    fn vote_tools(&mut self, log: &NewLog, f: &Fields, fp: Option<&str>) {
        let syn = log.event_type == "tcp_syn";
        if syn || log.event_type == "tcp_probe" {
            let t = tools::Traits {
                ttl: f.ttl.unwrap_or(0),
                window: f.window.unwrap_or(0),
                options: f.options.as_deref().unwrap_or(""),
                df: f.df.unwrap_or(false),
                ip_id: f.ip_id.unwrap_or(0),
                seq: f.seq.unwrap_or(0),
                dst_port: f.dst_port.unwrap_or(0),
                dst_v4: f
                    .dst_ip
                    .as_deref()
                    .and_then(|d| d.parse::<std::net::Ipv4Addr>().ok())
                    .map(u32::from),
                syn,
            };
            let votes = tools::votes(&t);
            if syn {
                if let Some(ttl) = f.ttl
                    && tools::ttl_is_known(votes.iter().map(|(tool, _)| *tool))
                {
                    self.hops = Some(initial_ttl(ttl) - ttl);
                }
                // Only a SYN of the source's own stack says something about its OS: not a
                // tool's, nor one crafted by a tool decnet does not know.
                if let Some(fp) = fp
                    && votes.is_empty()
                    && stack_options(t.options)
                {
                    if let Some(n) = self.host_fps.get_mut(fp) {
                        *n += 1;
                    } else if self.host_fps.len() < MAX_HOST_FPS {
                        self.host_fps.insert(fp.to_owned(), 1);
                    }
                }
            }
            for (tool, w) in votes {
                *self.tool_votes.or_default(tool) += w;
            }
        }
    }

    /// The OS guess: the most frequent own-stack SYN fingerprint the table knows; failing
    /// that the initial TTL alone, unless the source's SYNs were crafted by a scanner
    /// (then its OS is unknowable from them and the guess stays empty).
    pub(super) fn os_guess(&self, tools: &[String]) -> Option<&'static str> {
        let mut fps: Vec<(&String, &u64)> = self.host_fps.iter().collect();
        fps.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        if let Some(g) = fps.iter().find_map(|(fp, _)| os::from_fingerprint(fp)) {
            return Some(g);
        }
        if tools
            .iter()
            .any(|t| tools::CRAFTS_PACKETS.contains(&t.as_str()))
        {
            return None;
        }
        let (fp, _) = fps.first()?;
        os::from_initial_ttl(fp.split(':').next()?.parse().ok()?)
    }

    /// Records one nmap OS-detection probe; the probe set is nmap's own, so each one is also
    /// a vote for nmap.
    fn os_probe(&mut self, bit: u16) {
        self.os_probes |= bit;
        *self.tool_votes.or_default("nmap") += 1;
    }

    pub fn duration_s(&self) -> f64 {
        (self.last_ns - self.first_ns).max(0) as f64 / 1e9
    }

    pub fn first_ns(&self) -> i64 {
        self.first_ns
    }

    pub fn last_ns(&self) -> i64 {
        self.last_ns
    }
}
