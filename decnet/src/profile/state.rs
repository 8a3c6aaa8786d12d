//! Per-IP streaming state and the profile derived from it.
//!
//! [`IpState`] is everything the profiler remembers about one source: counts, timing
//! moments, capped sets and a few flags. It is updated one row at a time, persisted as JSON
//! in `attacker_behavior`, and never holds a list of events, so memory is O(IPs).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{classify, risk, stats::Welford, tools};
use crate::{ingest::bounty, store::NewLog, timefmt::parse_rfc3339_ns};

pub const MAX_PORTS: usize = 1024;
pub const MAX_SERVICES: usize = 64;
pub const MAX_DECKIES: usize = 64;

/// The nmap OS-detection probes recognisable one packet at a time (SIGNATURES.md).
pub mod os_probe {
    pub const T2: u16 = 1;
    pub const T3: u16 = 2;
    pub const T4: u16 = 4;
    pub const T5: u16 = 8;
    pub const T6: u16 = 16;
    pub const T7: u16 = 32;
    pub const ECN: u16 = 64;
    pub const U1: u16 = 128;
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
    pub events: u64,
    pub iat: Welford,
    pub ports: BTreeSet<u16>,
    pub ports_overflow: u64,
    pub services: BTreeSet<String>,
    /// Decoys in first-contact order.
    pub deckies: Vec<String>,
    pub kinds: BTreeSet<String>,
    pub os_probes: u16,
    /// Decoys that received an ICMP echo from this source.
    echo_deckies: BTreeSet<String>,
    pub tcp_fingerprint: Option<String>,
    pub last_syn_ttl: Option<u8>,
    pub payloads: u64,
    pub event_types: BTreeMap<String, u64>,
    /// Votes per tool (see `tools`).
    pub tool_votes: BTreeMap<String, u64>,
}

#[derive(Deserialize, Default)]
struct Fields {
    dst_port: Option<u16>,
    flags: Option<String>,
    probe: Option<String>,
    window: Option<u16>,
    df: Option<bool>,
    ttl: Option<u8>,
    urg_ptr: Option<u16>,
    ip_id: Option<u16>,
    payload_len: Option<u32>,
    icmp_type: Option<u8>,
    options: Option<String>,
    seq: Option<u32>,
    dst_ip: Option<String>,
}

impl IpState {
    /// Folds one row in. Rows must come in id order; timestamps may still go backwards
    /// (several writers, clock steps): such gaps are ignored by the timing statistics.
    pub fn update(&mut self, log: &NewLog) {
        let ts = parse_rfc3339_ns(&log.ts);
        if self.events == 0 {
            self.first_seen = log.ts.clone();
            self.last_seen = log.ts.clone();
            if let Some(t) = ts {
                self.first_ns = t;
                self.last_ns = t;
            }
        } else if let Some(t) = ts {
            self.iat.push((t - self.last_ns) as f64 / 1e9);
            if t >= self.last_ns {
                self.last_ns = t;
                self.last_seen = log.ts.clone();
            }
            if t < self.first_ns {
                self.first_ns = t;
                self.first_seen = log.ts.clone();
            }
        }
        self.events += 1;
        *self.event_types.entry(log.event_type.clone()).or_default() += 1;
        if !self.deckies.contains(&log.decky) && self.deckies.len() < MAX_DECKIES {
            self.deckies.push(log.decky.clone());
        }
        if self.services.len() < MAX_SERVICES {
            self.services.insert(log.service.clone());
        }
        let f: Fields = serde_json::from_str(&log.fields).unwrap_or_default();
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
        if f.payload_len.unwrap_or(0) > 0 {
            self.payloads += 1;
        }
        self.scan_kind(log, &f);
        self.vote_tools(log, &f);
        if log.event_type == "tcp_syn" {
            self.last_syn_ttl = f.ttl.or(self.last_syn_ttl);
            if let Some((_, fp)) = bounty::extract(log)
                .into_iter()
                .find(|(k, _)| *k == "tcp_fingerprint")
            {
                self.tcp_fingerprint = Some(fp);
            }
        }
    }

    fn scan_kind(&mut self, log: &NewLog, f: &Fields) {
        use os_probe::*;
        let flags = f.flags.as_deref().unwrap_or("");
        let win = f.window.unwrap_or(0);
        let df = f.df.unwrap_or(false);
        match log.event_type.as_str() {
            "tcp_syn" => {
                self.kinds.insert("syn".into());
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
                } else if let kind @ ("null" | "fin" | "xmas" | "ack" | "maimon") = probe {
                    self.kinds.insert(kind.into());
                }
            }
            // The handshake-completing ACK of a flow: a full connect().
            "tcp_segment" if flags == "A" => {
                self.kinds.insert("connect".into());
            }
            "udp_probe" => {
                self.kinds.insert("udp".into());
                if f.ip_id == Some(0x1042) && f.payload_len == Some(300) {
                    self.os_probe(U1);
                }
            }
            "icmp_probe" if matches!(f.icmp_type, Some(8 | 128)) => {
                self.echo_deckies.insert(log.decky.clone());
                if self.echo_deckies.len() >= 2 {
                    self.kinds.insert("icmp_sweep".into());
                }
            }
            _ => {}
        }
        if self.os_probes.count_ones() >= 4 {
            self.kinds.insert("os_detection".into());
        }
    }

    fn vote_tools(&mut self, log: &NewLog, f: &Fields) {
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
            for (tool, w) in tools::votes(&t) {
                *self.tool_votes.entry(tool.to_owned()).or_default() += w;
            }
        } else if log.event_type == "tcp_payload" {
            for (kind, value) in bounty::extract(log) {
                if kind == "http_user_agent"
                    && let Some(tool) = tools::user_agent_tool(&value)
                {
                    *self.tool_votes.entry(tool.to_owned()).or_default() += tools::STRONG;
                }
            }
        }
    }

    /// Records one nmap OS-detection probe; the probe set is nmap's own, so each one is also
    /// a vote for nmap.
    fn os_probe(&mut self, bit: u16) {
        self.os_probes |= bit;
        *self.tool_votes.entry("nmap".to_owned()).or_default() += 1;
    }

    pub fn duration_s(&self) -> f64 {
        (self.last_ns - self.first_ns).max(0) as f64 / 1e9
    }

    /// The public profile (DESIGN.md "Attacker profile"), as far as it is computed today.
    pub fn profile(&self, ip: &str) -> serde_json::Value {
        let class = classify::behavior_class(self);
        let hop = self.last_syn_ttl.map(|t| bounty::initial_ttl(t) - t);
        let tools = tools::decide(&self.tool_votes);
        serde_json::json!({
            "ip": ip,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "event_count": self.events,
            "deckies": self.deckies,
            "services": self.services,
            "ports": self.ports,
            "ports_overflow": self.ports_overflow,
            "is_traversal": self.deckies.len() >= 2,
            "behavior": {
                "class": class,
                "timing": {
                    "mean_iat_s": self.iat.mean,
                    "median_iat_s": self.iat.median(),
                    "stdev_iat_s": self.iat.stdev(),
                    "min_iat_s": self.iat.min,
                    "max_iat_s": self.iat.max,
                    "cv": self.iat.cv(),
                    "duration_s": self.duration_s(),
                },
            },
            "scan": { "kinds": self.kinds, "pattern": classify::scan_pattern(self) },
            "tools": tools,
            "risk": risk::assess(self, &tools),
            "hop_distance": hop,
            "tcp_fingerprint": self.tcp_fingerprint,
            "event_types": self.event_types,
        })
    }
}
