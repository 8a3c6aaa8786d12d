//! The journal record: one JSON object per line.
//!
//! `ts` (RFC 3339, ns), `decky`, `service`, `event_type`, `attacker_ip`, `fields`, and
//! `traceparent` when tracing is on. Writing goes straight from a [`Probe`] into a byte
//! buffer by a small hand-written JSON writer, with no intermediate `serde_json::Value`,
//! because it runs for every event. [`JournalRecord`] is the owned form for readers of the journal.

use std::{io::Write as _, net::IpAddr};

use base64::Engine as _;
use decnet_common::EventKind;
use serde::{Deserialize, Serialize};

use crate::{
    intel::{
        os, services,
        tcp::{self, FpInput, initial_ttl, write_fingerprint},
        tools,
    },
    sensor::{Probe, decode},
    timefmt::write_rfc3339_ns,
};

/// A journal line as read back (ingester, tests). `fields` stays free-form: other writers
/// put whatever their event needs there.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JournalRecord {
    pub ts: String,
    pub decky: String,
    pub service: String,
    pub event_type: String,
    pub attacker_ip: String,
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Appends JSON pieces to a buffer. Keys and punctuation are written as one literal per
/// field (`,"src_port":`), values with itoa; only free text (decky names, trace context) goes
/// through serde_json's escaper. This runs for every event, and is several times faster than
/// derive(Serialize), which scans every key for characters to escape.
struct JsonLine<'a>(&'a mut Vec<u8>);

impl JsonLine<'_> {
    #[inline]
    fn lit(&mut self, s: &'static str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    #[inline]
    fn num(&mut self, v: impl itoa::Integer) {
        self.0
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    /// A string known to hold no `"`, `\\` or control characters, without quotes.
    #[inline]
    fn raw(&mut self, v: &str) {
        self.0.extend_from_slice(v.as_bytes());
    }

    /// Any string, quoted and escaped.
    fn text(&mut self, v: &str) {
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *self.0, v);
    }

    fn bool(&mut self, v: bool) {
        self.lit(if v { "true" } else { "false" });
    }

    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                self.num(o[0]);
                for b in &o[1..] {
                    self.0.push(b'.');
                    self.num(*b);
                }
            }
            // Rare enough that the formatter is fine; Display never fails into a Vec.
            IpAddr::V6(v6) => {
                let _ = write!(self.0, "{v6}");
            }
        }
    }
}

/// Appends one journal line (with its trailing newline) for `probe` to `out`. Field names
/// are part of the journal contract (docs/journal.md).
pub fn write_probe_record(
    out: &mut Vec<u8>,
    probe: &Probe,
    decky: &str,
    unix_ns: i64,
    traceparent: Option<&str>,
) {
    // One reservation per record; the appends below then never reallocate.
    out.reserve(640);
    let mut w = JsonLine(out);
    write_head(&mut w, probe, decky, unix_ns, traceparent);
    w.lit(",\"ttl\":");
    w.num(probe.ttl);
    w.lit(",\"tos\":");
    w.num(probe.tos);
    w.lit(",\"df\":");
    w.bool(probe.df);
    w.lit(",\"ip_id\":");
    w.num(probe.ip_id);
    w.lit(",\"ip_len\":");
    w.num(probe.ip_len);
    if let Some(t) = &probe.tcp {
        w.lit(",\"flags\":\"");
        w.raw(decode::flag_letters(t.flags, &mut [0; 9]));
        w.lit("\"");
        if probe.kind == EventKind::TcpProbe {
            w.lit(",\"probe\":\"");
            w.raw(decode::probe_name(t.flags));
            w.lit("\"");
        }
        w.lit(",\"window\":");
        w.num(t.window);
        w.lit(",\"seq\":");
        w.num(t.seq);
        w.lit(",\"ack\":");
        w.num(t.ack);
        w.lit(",\"urg_ptr\":");
        w.num(t.urg_ptr);
        let opts = &t.options;
        w.lit(",\"options\":\"");
        w.raw(&opts.layout);
        w.lit("\"");
        let raw = t.options_bytes();
        if !raw.is_empty() {
            w.lit(",\"options_hex\":\"");
            for b in raw {
                w.0.extend_from_slice(&[HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
            w.lit("\"");
        }
        if let Some(mss) = opts.mss {
            w.lit(",\"mss\":");
            w.num(mss);
        }
        if let Some(ws) = opts.wscale {
            w.lit(",\"wscale\":");
            w.num(ws);
        }
        w.lit(",\"sack_ok\":");
        w.bool(opts.sack_ok);
        if let Some(tv) = opts.ts_val {
            w.lit(",\"ts_val\":");
            w.num(tv);
        }
        if let Some(te) = opts.ts_ecr {
            w.lit(",\"ts_ecr\":");
            w.num(te);
        }
        if opts.malformed {
            w.lit(",\"options_malformed\":true");
        }
        if matches!(probe.kind, EventKind::TcpSyn | EventKind::TcpProbe) {
            write_passive_fingerprint(&mut w, probe, t);
        }
    }
    if let Some((ty, code)) = probe.icmp {
        w.lit(",\"icmp_type\":");
        w.num(ty);
        w.lit(",\"icmp_code\":");
        w.num(code);
    }
    w.lit(",\"payload_len\":");
    w.num(probe.payload_len);
    if !probe.payload.is_empty() {
        w.lit(",\"payload_b64\":\"");
        let mut buf = [0u8; 176];
        let n = base64::engine::general_purpose::STANDARD
            .encode_slice(&probe.payload, &mut buf)
            .unwrap_or(0);
        w.0.extend_from_slice(&buf[..n]);
        w.lit("\"");
    }
    if let Some(vid) = probe.vlan_id {
        w.lit(",\"vlan_id\":");
        w.num(vid);
    }
    w.lit(",\"ifindex\":");
    w.num(probe.ifindex);
    w.lit("}}\n");
}

/// The envelope of a sensor record up to and including the flow's addresses in `fields`:
/// `{"ts":..,"decky":..,"service":..,"event_type":..,"attacker_ip":..[,"traceparent":..],
/// "fields":{"proto":..,"src_port":..,"dst_ip":..,"dst_port":..` (the caller closes it).
fn write_head(
    w: &mut JsonLine<'_>,
    probe: &Probe,
    decky: &str,
    unix_ns: i64,
    traceparent: Option<&str>,
) {
    w.lit("{\"ts\":\"");
    write_rfc3339_ns(w.0, unix_ns);
    w.lit("\",\"decky\":");
    w.text(decky);
    w.lit(",\"service\":\"");
    match probe.proto {
        6 | 17 => match services::service_name(probe.proto, probe.dst_port) {
            Some(s) => w.raw(s),
            None => w.raw(&probe.service()),
        },
        p => w.raw(services::proto_name(p)),
    }
    w.lit("\",\"event_type\":\"");
    w.raw(probe.event_type());
    w.lit("\",\"attacker_ip\":\"");
    w.ip(probe.src);
    w.lit("\"");
    if let Some(tp) = traceparent {
        w.lit(",\"traceparent\":");
        w.text(tp);
    }
    w.lit(",\"fields\":{\"proto\":\"");
    w.raw(services::proto_name(probe.proto));
    w.lit("\",\"src_port\":");
    w.num(probe.src_port);
    w.lit(",\"dst_ip\":\"");
    w.ip(probe.dst);
    w.lit("\",\"dst_port\":");
    w.num(probe.dst_port);
}

/// Appends a `probe_outcome` line: the decoy's answer to the probe `probe` names (same
/// addresses and ports), the verdict on the port, and the round trip. `probe_unix_ns` is the
/// answered probe's time through the same clock as its own record's `ts`.
pub fn write_outcome_record(
    out: &mut Vec<u8>,
    probe: &Probe,
    o: &decode::Outcome,
    decky: &str,
    unix_ns: i64,
    probe_unix_ns: i64,
    traceparent: Option<&str>,
) {
    out.reserve(512);
    let mut w = JsonLine(out);
    write_head(&mut w, probe, decky, unix_ns, traceparent);
    let (verdict, reply) = o.verdict(probe.src.is_ipv6());
    w.lit(",\"outcome\":\"");
    w.raw(verdict);
    w.lit("\",\"reply\":\"");
    w.raw(reply);
    w.lit("\",\"probe\":\"");
    w.raw(match probe.proto {
        6 if o.info.probe_flags == decnet_common::tcp_flags::SYN => "syn",
        6 => decode::probe_name(o.info.probe_flags),
        17 => "udp",
        _ => "other",
    });
    w.lit("\"");
    if probe.proto == 6 {
        w.lit(",\"probe_flags\":\"");
        w.raw(decode::flag_letters(o.info.probe_flags, &mut [0; 9]));
        w.lit("\"");
    }
    match o.reply_icmp {
        Some((ty, code)) => {
            w.lit(",\"icmp_type\":");
            w.num(ty);
            w.lit(",\"icmp_code\":");
            w.num(code);
        }
        None => {
            w.lit(",\"reply_flags\":\"");
            w.raw(decode::flag_letters(o.reply_flags, &mut [0; 9]));
            w.lit("\",\"reply_window\":");
            w.num(o.reply_window);
        }
    }
    w.lit(",\"probe_ts\":\"");
    write_rfc3339_ns(w.0, probe_unix_ns);
    w.lit("\",\"rtt_ns\":");
    w.num(o.rtt_ns(probe.mono_ns));
    w.lit(",\"ifindex\":");
    w.num(probe.ifindex);
    w.lit("}}\n");
}

/// Wall-clock times of a flow summary (Unix ns).
#[derive(Clone, Copy, Debug)]
pub struct FlowTimes {
    /// When the summary was made (the record's `ts`).
    pub at: i64,
    pub first: i64,
    pub last: i64,
}

/// Appends a `tcp_flow` line: one TCP flow, both directions, from its final state.
pub fn write_flow_record(
    out: &mut Vec<u8>,
    probe: &Probe,
    f: &decnet_common::FlowState,
    decky: &str,
    times: FlowTimes,
    traceparent: Option<&str>,
) {
    use decnet_common::{
        FLOW_CLIENT_CLOSED, FLOW_FIN_FWD, FLOW_FIN_REV, FLOW_HANDSHAKE, FLOW_SYNACK,
    };
    out.reserve(768);
    let mut w = JsonLine(out);
    write_head(&mut w, probe, decky, times.at, traceparent);
    w.lit(",\"end\":\"");
    w.raw(decode::flow_end_name(f.end));
    w.lit("\",\"first_ts\":\"");
    write_rfc3339_ns(w.0, times.first);
    w.lit("\",\"last_ts\":\"");
    write_rfc3339_ns(w.0, times.last);
    w.lit("\",\"duration_ns\":");
    w.num(f.last_ns.saturating_sub(f.first_ns));
    w.lit(",\"attacker_packets\":");
    w.num(f.pkts_fwd);
    w.lit(",\"decoy_packets\":");
    w.num(f.pkts_rev);
    w.lit(",\"attacker_bytes\":");
    w.num(f.bytes_fwd);
    w.lit(",\"decoy_bytes\":");
    w.num(f.bytes_rev);
    w.lit(",\"attacker_payload_bytes\":");
    w.num(f.payload_fwd);
    w.lit(",\"decoy_payload_bytes\":");
    w.num(f.payload_rev);
    w.lit(",\"retransmits\":");
    w.num(f.retransmits);
    w.lit(",\"attacker_flags\":\"");
    w.raw(decode::flag_letters(f.flags_fwd, &mut [0; 9]));
    w.lit("\",\"decoy_flags\":\"");
    w.raw(decode::flag_letters(f.flags_rev, &mut [0; 9]));
    w.lit("\"");
    let handshake = f.seen & FLOW_HANDSHAKE != 0;
    w.lit(",\"handshake\":");
    w.bool(handshake);
    if f.seen & FLOW_SYNACK != 0 && f.reply_ns >= f.probe_ns {
        w.lit(",\"handshake_rtt_ns\":");
        w.num(f.reply_ns - f.probe_ns);
    }
    let client_closed = f.seen & FLOW_CLIENT_CLOSED != 0;
    let closed = f.seen & (FLOW_FIN_FWD | FLOW_FIN_REV) != 0
        || f.flags_fwd & decnet_common::tcp_flags::RST != 0
        || f.flags_rev & decnet_common::tcp_flags::RST != 0;
    w.lit(",\"closed_by\":");
    match (closed, client_closed) {
        (false, _) => w.lit("null"),
        (true, true) => w.lit("\"attacker\""),
        (true, false) => w.lit("\"decoy\""),
    }
    // nmap -sT and every connect() scanner: the handshake completes, nothing is said, and
    // the scanner hangs up first.
    w.lit(",\"connect_scan\":");
    w.bool(handshake && f.payload_fwd == 0 && client_closed);
    w.lit(",\"ifindex\":");
    w.num(probe.ifindex);
    w.lit("}}\n");
}

/// Passive fingerprint of a SYN or stealth probe: the p0f-style `fingerprint`, the scanner
/// `traits` whose signature the packet matches (intel/tools.rs, a table), and for packets
/// of the sender's own stack (no trait) the `os_guess`; `hops` unless the TTL is one the
/// tool drew at random (`tools::RANDOM_TTL`).
fn write_passive_fingerprint(w: &mut JsonLine<'_>, probe: &Probe, t: &decode::TcpFields) {
    let syn = probe.kind == EventKind::TcpSyn;
    let mut letters = [0u8; 9];
    let flags = decode::flag_letters(t.flags, &mut letters);
    let v6 = probe.dst.is_ipv6();
    let fp = FpInput {
        ttl: probe.ttl,
        window: t.window,
        layout: &t.options.layout,
        flags,
        df: probe.df,
        ip_id: Some(probe.ip_id),
        ack: t.ack,
        urg_ptr: t.urg_ptr,
        v6,
    };
    let dst_v4 = match probe.dst {
        IpAddr::V4(a) => Some(u32::from(a)),
        IpAddr::V6(_) => None,
    };
    let traits = tools::Traits {
        ttl: probe.ttl,
        window: t.window,
        options: &t.options.layout,
        df: probe.df,
        ip_id: probe.ip_id,
        seq: t.seq,
        dst_port: probe.dst_port,
        dst_v4,
        syn,
    };
    // The fingerprint is plain ASCII (digits, option letters, `:,+?`): written unescaped.
    w.lit(",\"fingerprint\":\"");
    let start = w.0.len();
    write_fingerprint(w.0, &fp);
    let end = w.0.len();
    w.lit("\",\"traits\":[");
    let (mut any, mut random_ttl) = (false, false);
    let mut last: &str = "";
    for s in tools::SIGNATURES.iter().filter(|s| s.matches(&traits)) {
        // Rows of one tool are adjacent in the table: skip repeats.
        if s.tool == last {
            continue;
        }
        if any {
            w.lit(",");
        }
        w.lit("\"");
        w.raw(s.tool);
        w.lit("\"");
        let random = !tools::ttl_is_known(std::iter::once(s.tool));
        (any, random_ttl, last) = (true, random_ttl || random, s.tool);
    }
    w.lit("]");
    let ittl = initial_ttl(probe.ttl);
    // Only the sender's own stack tells its OS: not a tool's SYN, nor a crafted one.
    if syn && !any && tcp::stack_options(&t.options.layout) {
        let fp_text = std::str::from_utf8(&w.0[start..end]).unwrap_or("");
        if let Some(guess) = os_guess_cached(fp_text).or_else(|| os::from_initial_ttl(ittl)) {
            w.lit(",\"os_guess\":");
            w.text(guess);
        }
    }
    if !random_ttl {
        w.lit(",\"hops\":");
        w.num(ittl - probe.ttl);
    }
}

/// The OS table's guess for a fingerprint, remembered per thread: a sender's own stack
/// repeats one fingerprint for all its SYNs, and the table lookup parses the string.
fn os_guess_cached(fp: &str) -> Option<&'static str> {
    use std::{cell::RefCell, collections::HashMap};
    thread_local! {
        static CACHE: RefCell<HashMap<String, Option<&'static str>>> = RefCell::new(HashMap::new());
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(g) = c.get(fp) {
            return *g;
        }
        let g = os::from_fingerprint(fp);
        if c.len() >= 4096 {
            c.clear();
        }
        c.insert(fp.to_owned(), g);
        g
    })
}

/// Wall-clock times of a flood-guard summary (Unix ns).
#[derive(Clone, Copy, Debug)]
pub struct SummaryTimes {
    /// When the summary was taken (the record's `ts`).
    pub at: i64,
    /// First and last withheld event of the source.
    pub first: i64,
    pub last: i64,
}

/// Appends a `source_suppressed` line: what the flood guard withheld from `probe.src` since
/// the previous summary (`suppressed`), with the source's running totals.
#[allow(clippy::too_many_arguments)]
pub fn write_suppressed_record(
    out: &mut Vec<u8>,
    probe: &Probe,
    s: &crate::sensor::Suppressed,
    suppressed: u64,
    decky: &str,
    times: SummaryTimes,
    budget: crate::sensor::FloodBudget,
    traceparent: Option<&str>,
) {
    out.reserve(512);
    let mut w = JsonLine(out);
    w.lit("{\"ts\":\"");
    write_rfc3339_ns(w.0, times.at);
    w.lit("\",\"decky\":");
    w.text(decky);
    w.lit(",\"service\":\"flood_guard\",\"event_type\":\"source_suppressed\",\"attacker_ip\":\"");
    w.ip(probe.src);
    w.lit("\"");
    if let Some(tp) = traceparent {
        w.lit(",\"traceparent\":");
        w.text(tp);
    }
    let (ports, saturated) = s.distinct_ports();
    w.lit(",\"fields\":{\"suppressed\":");
    w.num(suppressed);
    w.lit(",\"suppressed_total\":");
    w.num(s.summary.suppressed);
    w.lit(",\"distinct_ports_est\":");
    w.num(ports);
    w.lit(",\"ports_saturated\":");
    w.bool(saturated);
    w.lit(",\"distinct_decoys\":");
    w.num(s.summary.decoys.count_ones());
    w.lit(",\"first_ts\":\"");
    write_rfc3339_ns(w.0, times.first);
    w.lit("\",\"last_ts\":\"");
    write_rfc3339_ns(w.0, times.last);
    w.lit("\",\"budget_rate\":");
    w.num(budget.rate);
    w.lit(",\"budget_burst\":");
    w.num(budget.burst);
    w.lit("}}\n");
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;
    use decnet_common::{EventKind, FAMILY_V4, RAW_EVENT_SIZE, RawEvent};

    fn syn_event() -> RawEvent {
        // SAFETY: RawEvent is plain old data.
        let mut ev: RawEvent = unsafe { std::mem::zeroed() };
        ev.kind = EventKind::TcpSyn as u32;
        ev.family = FAMILY_V4;
        ev.proto = 6;
        ev.src_addr[10..].copy_from_slice(&[0xff, 0xff, 10, 9, 0, 2]);
        ev.dst_addr[10..].copy_from_slice(&[0xff, 0xff, 10, 9, 0, 1]);
        ev.src_port = 40000u16.to_be();
        ev.dst_port = 22u16.to_be();
        ev.window = 1024u16.to_be();
        ev.tcp_flags = 0x002;
        ev.ttl = 42;
        ev.opt_len = 4;
        ev.options[..4].copy_from_slice(&[2, 4, 5, 180]);
        ev.ip_len = 44;
        ev.ts_ns = 5;
        let _ = RAW_EVENT_SIZE;
        ev
    }

    #[test]
    fn syn_record_round_trips() {
        let p = Probe::from_raw(&syn_event()).unwrap();
        let mut out = Vec::new();
        write_probe_record(&mut out, &p, "web\"1", 1_795_723_674_000_000_000, None);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let rec: JournalRecord = serde_json::from_slice(&out).unwrap();
        assert_eq!(rec.ts, "2026-11-26T20:07:54.000000000Z");
        assert_eq!(rec.decky, "web\"1");
        assert_eq!(rec.service, "ssh");
        assert_eq!(rec.event_type, "tcp_syn");
        assert_eq!(rec.attacker_ip, "10.9.0.2");
        assert_eq!(rec.fields["window"], 1024);
        assert_eq!(rec.fields["options"], "M1460");
        assert_eq!(rec.fields["options_hex"], "020405b4");
        assert_eq!(rec.fields["mss"], 1460);
        assert_eq!(rec.fields["flags"], "S");
        assert_eq!(rec.fields["dst_ip"], "10.9.0.1");
        assert_eq!(rec.fields["ttl"], 42);
        assert!(rec.fields.get("probe").is_none());
        assert!(rec.traceparent.is_none());
        // TTL 42, window 1024, MSS 1460 only, no DF: nmap's SYN; IP ID 0 is a quirk.
        assert_eq!(rec.fields["fingerprint"], "64:1024:M1460:id0");
        assert_eq!(rec.fields["traits"], serde_json::json!(["nmap"]));
        assert!(rec.fields.get("os_guess").is_none() && rec.fields.get("hops").is_none());
    }

    #[test]
    fn own_stack_syn_gets_an_os_guess_and_hops() {
        // Linux connect(): TTL 64 minus 3 hops, DF, window 64240, MSS,SACK,TS,NOP,WS7.
        let mut ev = syn_event();
        ev.ttl = 61;
        ev.df = 1;
        ev.ip_id = 4321u16.to_be();
        ev.window = 64240u16.to_be();
        let opts = [
            2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        ev.opt_len = opts.len() as u8;
        ev.options[..opts.len()].copy_from_slice(&opts);
        let p = Probe::from_raw(&ev).unwrap();
        let mut out = Vec::new();
        write_probe_record(&mut out, &p, "web", 1_795_723_674_000_000_000, None);
        let rec: JournalRecord = serde_json::from_slice(&out).unwrap();
        assert_eq!(rec.fields["fingerprint"], "64:64240:M1460,S,T,N,W7:df");
        assert_eq!(rec.fields["traits"], serde_json::json!([]));
        assert_eq!(rec.fields["hops"], 3);
        let os = rec.fields["os_guess"].as_str().unwrap_or("");
        assert!(os.starts_with("Linux"), "{os}");
    }

    #[test]
    fn payload_is_base64() {
        let mut ev = syn_event();
        ev.kind = EventKind::TcpPayload as u32;
        ev.tcp_flags = 0x018;
        ev.payload_len = 300;
        ev.payload_cap = 4;
        ev.payload[..4].copy_from_slice(b"GET ");
        let p = Probe::from_raw(&ev).unwrap();
        let mut out = Vec::new();
        write_probe_record(&mut out, &p, "d", 0, Some("00-0123-01"));
        let rec: JournalRecord = serde_json::from_slice(&out).unwrap();
        assert_eq!(rec.event_type, "tcp_payload");
        assert_eq!(rec.fields["payload_b64"], "R0VUIA==");
        assert_eq!(rec.fields["payload_len"], 300);
        assert_eq!(rec.traceparent.as_deref(), Some("00-0123-01"));
    }

    #[test]
    fn every_optional_branch_is_valid_json() {
        // TCP probe with payload, VLAN, every option and a malformed tail.
        let mut ev = syn_event();
        ev.kind = EventKind::TcpProbe as u32;
        ev.tcp_flags = 0x029; // FIN PSH URG
        ev.vlan_depth = 2;
        ev.vlan_id = 7;
        let opts = [
            2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 3, 3, 7, 9,
        ];
        ev.opt_len = opts.len() as u8;
        ev.options[..opts.len()].copy_from_slice(&opts);
        ev.payload_len = 2;
        ev.payload_cap = 2;
        ev.payload[..2].copy_from_slice(b"\x00\xff");
        let p = Probe::from_raw(&ev).unwrap();
        let mut out = Vec::new();
        write_probe_record(&mut out, &p, "d\\x", 0, Some("00-a-b-01"));
        let rec: JournalRecord = serde_json::from_slice(&out).unwrap();
        assert_eq!(rec.decky, "d\\x");
        assert_eq!(rec.fields["probe"], "xmas");
        assert_eq!(rec.fields["flags"], "FPU");
        assert_eq!(rec.fields["options"], "M1460,S,T,W7");
        assert_eq!(rec.fields["options_malformed"], true);
        assert_eq!(rec.fields["ts_val"], 1);
        assert_eq!(rec.fields["ts_ecr"], 2);
        assert_eq!(rec.fields["vlan_id"], 7);
        assert_eq!(rec.fields["payload_b64"], "AP8=");

        // ICMPv6 echo: no TCP fields at all.
        // SAFETY: RawEvent is plain old data.
        let mut ev: RawEvent = unsafe { std::mem::zeroed() };
        ev.kind = EventKind::IcmpEcho as u32;
        ev.family = decnet_common::FAMILY_V6;
        ev.proto = 58;
        ev.icmp_type = 128;
        ev.src_addr = "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
        ev.dst_addr = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let p = Probe::from_raw(&ev).unwrap();
        let mut out = Vec::new();
        write_probe_record(&mut out, &p, "v6", 0, None);
        let rec: JournalRecord = serde_json::from_slice(&out).unwrap();
        assert_eq!(rec.event_type, "icmp_probe");
        assert_eq!(rec.service, "icmpv6");
        assert_eq!(rec.attacker_ip, "fd00::2");
        assert_eq!(rec.fields["dst_ip"], "fd00::1");
        assert_eq!(rec.fields["icmp_type"], 128);
        assert!(rec.fields.get("flags").is_none());
    }
}
