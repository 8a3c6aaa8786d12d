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
    sensor::{Probe, decode},
    services,
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

/// A JSON object written field by field. Keys are `&'static str` from this file (known to
/// need no escaping); only free text (decky names, unknown service names) goes through
/// serde_json's escaper. This is ~5x faster than derive(Serialize) with its per-key escape
/// scan, and the journal writer runs it for every event.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &'static str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    fn num(&mut self, k: &'static str, v: impl itoa::Integer) {
        let mut b = itoa::Buffer::new();
        let s = b.format(v);
        self.key(k).extend_from_slice(s.as_bytes());
    }

    fn bool(&mut self, k: &'static str, v: bool) {
        self.key(k)
            .extend_from_slice(if v { b"true" } else { b"false" });
    }

    /// A string known to hold no `"`, `\\` or control characters.
    fn plain(&mut self, k: &'static str, v: &str) {
        let out = self.key(k);
        out.push(b'"');
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
    }

    /// Any string, escaped.
    fn text(&mut self, k: &'static str, v: &str) {
        let out = self.key(k);
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, v);
    }

    fn ip(&mut self, k: &'static str, v: IpAddr) {
        let out = self.key(k);
        out.push(b'"');
        write_ip(out, v);
        out.push(b'"');
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = itoa::Buffer::new();
            for (i, o) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(b.format(*o).as_bytes());
            }
        }
        // Rare enough that the formatter is fine; Display never fails into a Vec.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends one journal line (with its trailing newline) for `probe` to `out`. Field names
/// are part of the journal contract (README, "Journal record").
pub fn write_probe_record(
    out: &mut Vec<u8>,
    probe: &Probe,
    decky: &str,
    unix_ns: i64,
    traceparent: Option<&str>,
) {
    // One reservation per record; the pushes below then never reallocate.
    out.reserve(640);
    let mut o = Obj::open(out);
    {
        let v = o.key("ts");
        v.push(b'"');
        write_rfc3339_ns(v, unix_ns);
        v.push(b'"');
    }
    o.text("decky", decky);
    match probe.proto {
        6 | 17 => match services::service_name(probe.proto, probe.dst_port) {
            Some(s) => o.plain("service", s),
            None => o.plain("service", &probe.service()),
        },
        p => o.plain("service", services::proto_name(p)),
    }
    o.plain("event_type", probe.event_type());
    o.ip("attacker_ip", probe.src);
    if let Some(tp) = traceparent {
        o.text("traceparent", tp);
    }
    o.key("fields");
    let mut f = Obj::open(o.out);
    f.plain("proto", services::proto_name(probe.proto));
    f.num("src_port", probe.src_port);
    f.ip("dst_ip", probe.dst);
    f.num("dst_port", probe.dst_port);
    f.num("ttl", probe.ttl);
    f.num("tos", probe.tos);
    f.bool("df", probe.df);
    f.num("ip_id", probe.ip_id);
    f.num("ip_len", probe.ip_len);
    if let Some(t) = &probe.tcp {
        f.plain("flags", decode::flag_letters(t.flags, &mut [0; 9]));
        if probe.kind == EventKind::TcpProbe {
            f.plain("probe", decode::probe_name(t.flags));
        }
        f.num("window", t.window);
        f.num("seq", t.seq);
        f.num("ack", t.ack);
        f.num("urg_ptr", t.urg_ptr);
        let opts = &t.options;
        f.plain("options", &opts.layout);
        let raw = t.options_bytes();
        if !raw.is_empty() {
            let v = f.key("options_hex");
            v.push(b'"');
            for b in raw {
                v.push(HEX[(b >> 4) as usize]);
                v.push(HEX[(b & 15) as usize]);
            }
            v.push(b'"');
        }
        if let Some(mss) = opts.mss {
            f.num("mss", mss);
        }
        if let Some(ws) = opts.wscale {
            f.num("wscale", ws);
        }
        f.bool("sack_ok", opts.sack_ok);
        if let Some(tv) = opts.ts_val {
            f.num("ts_val", tv);
        }
        if let Some(te) = opts.ts_ecr {
            f.num("ts_ecr", te);
        }
        if opts.malformed {
            f.bool("options_malformed", true);
        }
    }
    if let Some((ty, code)) = probe.icmp {
        f.num("icmp_type", ty);
        f.num("icmp_code", code);
    }
    f.num("payload_len", probe.payload_len);
    if !probe.payload.is_empty() {
        let v = f.key("payload_b64");
        v.push(b'"');
        let mut buf = [0u8; 176];
        let n = base64::engine::general_purpose::STANDARD
            .encode_slice(&probe.payload, &mut buf)
            .unwrap_or(0);
        v.extend_from_slice(&buf[..n]);
        v.push(b'"');
    }
    if let Some(vid) = probe.vlan_id {
        f.num("vlan_id", vid);
    }
    f.num("ifindex", probe.ifindex);
    f.close();
    o.close();
    out.push(b'\n');
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
}
