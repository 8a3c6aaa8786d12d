//! The journal record: one JSON object per line.
//!
//! `ts` (RFC 3339, ns), `decky`, `service`, `event_type`, `attacker_ip`, `fields`, and
//! `traceparent` when tracing is on. Writing goes straight from a [`Probe`] into a byte
//! buffer through borrowed serde structs, with no intermediate `serde_json::Value`, because
//! it runs for every event. [`JournalRecord`] is the owned form for readers of the journal.

use std::net::IpAddr;

use base64::Engine as _;
use serde::{Deserialize, Serialize, Serializer};

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

struct Ts(i128);

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = Vec::with_capacity(30);
        write_rfc3339_ns(&mut buf, self.0);
        s.serialize_str(std::str::from_utf8(&buf).unwrap_or(""))
    }
}

struct B64<'a>(&'a [u8]);

impl Serialize for B64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 200];
        let n = base64::engine::general_purpose::STANDARD
            .encode_slice(self.0, &mut buf)
            .unwrap_or(0);
        s.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or(""))
    }
}

struct Hex<'a>(&'a [u8]);

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 80];
        let n = self.0.len().min(40);
        for (i, b) in self.0[..n].iter().enumerate() {
            buf[2 * i] = DIGITS[(b >> 4) as usize];
            buf[2 * i + 1] = DIGITS[(b & 15) as usize];
        }
        s.serialize_str(std::str::from_utf8(&buf[..2 * n]).unwrap_or(""))
    }
}

#[derive(Serialize)]
struct RecordOut<'a> {
    ts: Ts,
    decky: &'a str,
    service: &'a str,
    event_type: &'static str,
    attacker_ip: IpAddr,
    fields: Fields<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
}

/// `fields` of a sensor record. Field names are part of the journal contract.
#[derive(Serialize)]
struct Fields<'a> {
    proto: &'static str,
    src_port: u16,
    dst_ip: IpAddr,
    dst_port: u16,
    ttl: u8,
    tos: u8,
    df: bool,
    ip_id: u16,
    ip_len: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    flags: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp_flags: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probe: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ack: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    urg_ptr: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    options_hex: Option<Hex<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mss: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wscale: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sack_ok: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts_val: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts_ecr: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    options_malformed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_code: Option<u8>,
    payload_len: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_b64: Option<B64<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vlan_id: Option<u16>,
    ifindex: u32,
    mono_ns: u64,
}

/// Appends one journal line (with its trailing newline) for `probe` to `out`.
pub fn write_probe_record(
    out: &mut Vec<u8>,
    probe: &Probe,
    decky: &str,
    unix_ns: i128,
    traceparent: Option<&str>,
) {
    let service_owned;
    let service = match probe.proto {
        6 | 17 => match services::service_name(probe.proto, probe.dst_port) {
            Some(s) => s,
            None => {
                service_owned = probe.service();
                service_owned.as_str()
            }
        },
        p => services::proto_name(p),
    };
    let tcp = probe.tcp.as_ref();
    let opts = tcp.map(|t| &t.options);
    let rec = RecordOut {
        ts: Ts(unix_ns),
        decky,
        service,
        event_type: probe.event_type(),
        attacker_ip: probe.src,
        fields: Fields {
            proto: services::proto_name(probe.proto),
            src_port: probe.src_port,
            dst_ip: probe.dst,
            dst_port: probe.dst_port,
            ttl: probe.ttl,
            tos: probe.tos,
            df: probe.df,
            ip_id: probe.ip_id,
            ip_len: probe.ip_len,
            flags: tcp.map(|t| decode::flag_string(t.flags)),
            tcp_flags: tcp.map(|t| t.flags),
            probe: (probe.kind == decnet_common::EventKind::TcpProbe)
                .then(|| tcp.map(|t| decode::probe_name(t.flags)))
                .flatten(),
            window: tcp.map(|t| t.window),
            seq: tcp.map(|t| t.seq),
            ack: tcp.map(|t| t.ack),
            urg_ptr: tcp.map(|t| t.urg_ptr),
            options: opts.map(|o| o.layout.as_str()),
            options_hex: tcp
                .filter(|t| !t.options_raw.is_empty())
                .map(|t| Hex(&t.options_raw)),
            mss: opts.and_then(|o| o.mss),
            wscale: opts.and_then(|o| o.wscale),
            sack_ok: opts.map(|o| o.sack_ok),
            ts_val: opts.and_then(|o| o.ts_val),
            ts_ecr: opts.and_then(|o| o.ts_ecr),
            options_malformed: opts.is_some_and(|o| o.malformed),
            icmp_type: probe.icmp.map(|(t, _)| t),
            icmp_code: probe.icmp.map(|(_, c)| c),
            payload_len: probe.payload_len,
            payload_b64: (!probe.payload.is_empty()).then(|| B64(&probe.payload)),
            vlan_id: probe.vlan_id,
            ifindex: probe.ifindex,
            mono_ns: probe.mono_ns,
        },
        traceparent,
    };
    // Serializing plain structs into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &rec);
    out.push(b'\n');
}

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
