//! Raw kernel events -> typed [`Probe`]s.
//!
//! The kernel copies header bytes verbatim; here they become host-order numbers, addresses,
//! a parsed TCP option list and a service name. Decoding is pure and cheap (no syscalls, one
//! allocation only when there is payload), because it runs for every event.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use decnet_common::{EventKind, FAMILY_V4, RawEvent, tcp_flags};

use crate::intel::services;

/// Why an event could not be decoded (counted, never fatal).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring entry of {0} bytes is shorter than an event")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("flood-guard summary without its counters")]
    BadSummary,
    #[error("probe outcome without the probe it answers")]
    BadOutcome,
    #[error("flow summary without its state")]
    BadFlow,
}

/// Parsed TCP options of one segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpOptions {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_ok: bool,
    pub ts_val: Option<u32>,
    pub ts_ecr: Option<u32>,
    /// Option kinds in wire order, in p0f-like notation: `M1460,S,T,N,W7`.
    pub layout: String,
    /// True when an option ran past the end of the block (itself a fingerprint quirk).
    pub malformed: bool,
}

/// Parses a TCP option block. Unknown kinds are kept in the layout as `?<kind>`.
pub(crate) fn parse_tcp_options(raw: &[u8]) -> TcpOptions {
    let mut o = TcpOptions::default();
    let mut i = 0;
    let push = |o: &mut TcpOptions, s: &str| {
        if !o.layout.is_empty() {
            o.layout.push(',');
        }
        o.layout.push_str(s);
    };
    while i < raw.len() {
        let kind = raw[i];
        match kind {
            0 => {
                push(&mut o, "E");
                break;
            }
            1 => {
                push(&mut o, "N");
                i += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = raw.get(i + 1) else {
            o.malformed = true;
            break;
        };
        let len = len as usize;
        if len < 2 || i + len > raw.len() {
            o.malformed = true;
            break;
        }
        let body = &raw[i + 2..i + len];
        match (kind, body.len()) {
            (2, 2) => {
                let mss = u16::from_be_bytes([body[0], body[1]]);
                o.mss = Some(mss);
                push(&mut o, "M");
                o.layout.push_str(itoa::Buffer::new().format(mss));
            }
            (3, 1) => {
                o.wscale = Some(body[0]);
                push(&mut o, "W");
                o.layout.push_str(itoa::Buffer::new().format(body[0]));
            }
            (4, 0) => {
                o.sack_ok = true;
                push(&mut o, "S");
            }
            (5, _) => push(&mut o, "K"),
            (8, 8) => {
                o.ts_val = Some(u32::from_be_bytes([body[0], body[1], body[2], body[3]]));
                o.ts_ecr = Some(u32::from_be_bytes([body[4], body[5], body[6], body[7]]));
                push(&mut o, "T");
            }
            _ => {
                push(&mut o, "?");
                o.layout.push_str(itoa::Buffer::new().format(kind));
            }
        }
        i += len;
    }
    o
}

/// TCP flags as letters in the fixed order `F S R P A U E C N`, so equal sets always print
/// the same. Writes into `buf` and returns the used part (no allocation: runs per event).
pub(crate) fn flag_letters(flags: u16, buf: &mut [u8; 9]) -> &str {
    use tcp_flags::*;
    let mut n = 0;
    for (bit, c) in [
        (FIN, b'F'),
        (SYN, b'S'),
        (RST, b'R'),
        (PSH, b'P'),
        (ACK, b'A'),
        (URG, b'U'),
        (ECE, b'E'),
        (CWR, b'C'),
        (NS, b'N'),
    ] {
        if flags & bit != 0 {
            buf[n] = c;
            n += 1;
        }
    }
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}

#[cfg(test)]
fn flag_string(flags: u16) -> String {
    flag_letters(flags, &mut [0; 9]).to_owned()
}

/// Scan technique implied by a probe's flags (names follow nmap's -s letters).
pub fn probe_name(flags: u16) -> &'static str {
    use tcp_flags::*;
    let f = flags & (FIN | SYN | RST | PSH | ACK | URG);
    match f {
        0 => "null",
        x if x == FIN => "fin",
        x if x == FIN | PSH | URG => "xmas",
        x if x == ACK => "ack",
        x if x == FIN | ACK => "maimon",
        x if x & (SYN | FIN) == SYN | FIN => "syn_fin",
        x if x == RST => "rst",
        x if x == RST | ACK => "rst_ack",
        x if x & SYN != 0 && x & ACK != 0 => "syn_ack",
        x if x & ACK != 0 => "ack_other",
        _ => "odd_flags",
    }
}

/// Journal event type for a kernel event kind.
pub fn event_type(kind: EventKind) -> &'static str {
    match kind {
        EventKind::TcpSyn => "tcp_syn",
        EventKind::TcpProbe => "tcp_probe",
        EventKind::TcpPayload => "tcp_payload",
        EventKind::TcpSegment => "tcp_segment",
        EventKind::UdpProbe => "udp_probe",
        EventKind::IcmpEcho | EventKind::IcmpOther => "icmp_probe",
        EventKind::IpOther => "ip_probe",
        EventKind::SourceSuppressed => "source_suppressed",
        EventKind::ProbeOutcome => "probe_outcome",
        EventKind::TcpFlow => "tcp_flow",
    }
}

/// A decoy's answer to a probe (`probe_outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The answered probe's timestamp (CLOCK_MONOTONIC ns) and TCP flags.
    pub info: decnet_common::OutcomeInfo,
    /// The answer: TCP flags, or ICMP type and code.
    pub reply_flags: u16,
    pub reply_icmp: Option<(u8, u8)>,
    pub reply_window: u16,
}

impl Outcome {
    /// Round trip from the probe to the answer (ns).
    pub fn rtt_ns(&self, answer_ns: u64) -> u64 {
        answer_ns.saturating_sub(self.info.probe_ns)
    }

    /// What the answer says about the port (`open`, `closed`, `unfiltered`, `filtered`,
    /// `unreachable`) and what the answer was, in nmap's terms.
    pub fn verdict(&self, v6: bool) -> (&'static str, &'static str) {
        use tcp_flags::*;
        match self.reply_icmp {
            None if self.reply_flags & (SYN | ACK) == SYN | ACK => ("open", "syn_ack"),
            // A RST to an ACK probe says only that no firewall dropped it.
            None if self.info.probe_flags & (ACK | SYN) == ACK => ("unfiltered", "rst"),
            None => ("closed", "rst"),
            Some((3, 3)) if !v6 => ("closed", "icmp_port_unreachable"),
            Some((1, 4)) if v6 => ("closed", "icmp_port_unreachable"),
            Some((3, 9 | 10 | 13)) if !v6 => ("filtered", "icmp_admin_prohibited"),
            Some((1, 1)) if v6 => ("filtered", "icmp_admin_prohibited"),
            Some((3, 0)) if !v6 => ("unreachable", "icmp_net_unreachable"),
            Some((3, 1)) if !v6 => ("unreachable", "icmp_host_unreachable"),
            Some((1, 3)) if v6 => ("unreachable", "icmp_address_unreachable"),
            Some(_) => ("unreachable", "icmp_unreachable"),
        }
    }
}

/// Why a flow ended, as the journal names it.
pub(crate) fn flow_end_name(end: u8) -> &'static str {
    use decnet_common::flow_end::*;
    match end {
        FIN => "fin",
        CLIENT_RST => "client_rst",
        DECOY_RST => "decoy_rst",
        IDLE => "idle",
        EVICTED => "evicted",
        SHUTDOWN => "shutdown",
        _ => "open",
    }
}

/// A flood-guard summary: the source's cumulative counters (see
/// `decnet_common::SourceState`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suppressed {
    pub summary: decnet_common::SuppressedSummary,
    /// The distinct-port sketch (see `decnet_common::SourceState::ports`).
    pub ports: [u64; decnet_common::PORT_BITS / 64],
}

impl Suppressed {
    /// Distinct destination ports, by linear counting over the hashed bitmap (a few percent
    /// off up to ~2,000 ports); `(estimate, saturated)`, saturated meaning "at least".
    pub(crate) fn distinct_ports(&self) -> (u64, bool) {
        let m = decnet_common::PORT_BITS as f64;
        let ones: u32 = self.ports.iter().map(|w| w.count_ones()).sum();
        let zeros = m - ones as f64;
        if zeros == 0.0 {
            return (decnet_common::PORT_BITS as u64, true);
        }
        ((m * (m / zeros).ln()).round() as u64, false)
    }

    /// Decoys (by decky id modulo 64) the withheld events went to.
    pub(crate) fn decoy_ids(&self) -> impl Iterator<Item = u32> + '_ {
        (0..64u32).filter(|b| self.summary.decoys & (1 << b) != 0)
    }
}

/// One observed packet to a decoy, decoded.
#[derive(Clone, Debug)]
pub struct Probe {
    pub kind: EventKind,
    /// CLOCK_MONOTONIC ns from the kernel.
    pub mono_ns: u64,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub decky_id: u32,
    pub ifindex: u32,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub ttl: u8,
    pub tos: u8,
    pub df: bool,
    pub ip_id: u16,
    pub ip_len: u32,
    pub vlan_id: Option<u16>,
    pub tcp: Option<TcpFields>,
    pub icmp: Option<(u8, u8)>,
    /// L4 payload length from the headers.
    pub payload_len: u32,
    /// The first bytes of the payload (at most 128).
    pub payload: Bytes,
    /// `source_suppressed` only: the flood guard's counters.
    pub suppressed: Option<Box<Suppressed>>,
    /// `probe_outcome` only: the decoy's answer.
    pub outcome: Option<Outcome>,
    /// `tcp_flow` only: the flow's final state.
    pub flow: Option<Box<decnet_common::FlowState>>,
}

#[derive(Clone, Debug)]
pub struct TcpFields {
    pub flags: u16,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub urg_ptr: u16,
    /// Raw option bytes; inline because they are at most 40 and present on most segments.
    pub options_raw: [u8; 40],
    pub options_len: u8,
    pub options: TcpOptions,
}

impl TcpFields {
    pub fn options_bytes(&self) -> &[u8] {
        &self.options_raw[..(self.options_len as usize).min(40)]
    }
}

fn addr(family: u8, raw: &[u8; 16]) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(raw[12], raw[13], raw[14], raw[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*raw))
    }
}

impl Probe {
    /// Decodes one ring entry.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let ev = RawEvent::from_bytes(buf).ok_or(DecodeError::Short(buf.len()))?;
        Self::from_raw(&ev)
    }

    pub fn from_raw(ev: &RawEvent) -> Result<Self, DecodeError> {
        let kind = EventKind::from_u32(ev.kind).ok_or(DecodeError::UnknownKind(ev.kind))?;
        let is_tcp = ev.proto == 6
            && matches!(
                kind,
                EventKind::TcpSyn
                    | EventKind::TcpProbe
                    | EventKind::TcpPayload
                    | EventKind::TcpSegment
            );
        let tcp = is_tcp.then(|| {
            let n = (ev.opt_len as usize).min(ev.options.len());
            let raw = &ev.options[..n];
            let mut options_raw = [0u8; 40];
            options_raw[..n].copy_from_slice(raw);
            TcpFields {
                flags: ev.tcp_flags,
                seq: u32::from_be(ev.seq),
                ack: u32::from_be(ev.ack),
                window: u16::from_be(ev.window),
                urg_ptr: u16::from_be(ev.urg_ptr),
                options: parse_tcp_options(raw),
                options_raw,
                options_len: n as u8,
            }
        });
        let icmp = matches!(kind, EventKind::IcmpEcho | EventKind::IcmpOther)
            .then_some((ev.icmp_type, ev.icmp_code));
        let suppressed = (kind == EventKind::SourceSuppressed)
            .then(|| {
                let n = (ev.opt_len as usize).min(ev.options.len());
                let summary = decnet_common::SuppressedSummary::from_options(&ev.options[..n])?;
                let mut ports = [0u64; decnet_common::PORT_BITS / 64];
                for (i, w) in ports.iter_mut().enumerate() {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&ev.payload[i * 8..i * 8 + 8]);
                    *w = u64::from_le_bytes(b);
                }
                Some(Box::new(Suppressed { summary, ports }))
            })
            .map(|s| s.ok_or(DecodeError::BadSummary))
            .transpose()?;
        let outcome = (kind == EventKind::ProbeOutcome)
            .then(|| {
                let n = (ev.opt_len as usize).min(ev.options.len());
                let info = decnet_common::OutcomeInfo::from_options(&ev.options[..n])?;
                Some(Outcome {
                    info,
                    reply_flags: ev.tcp_flags,
                    // The kernel sets the ICMP type only for ICMP answers, and
                    // destination-unreachable is never type 0.
                    reply_icmp: (ev.icmp_type != 0).then_some((ev.icmp_type, ev.icmp_code)),
                    reply_window: u16::from_be(ev.window),
                })
            })
            .map(|o| o.ok_or(DecodeError::BadOutcome))
            .transpose()?;
        let flow = (kind == EventKind::TcpFlow)
            .then(|| {
                let n = (ev.payload_cap as usize).min(ev.payload.len());
                decnet_common::FlowState::from_payload(&ev.payload[..n]).map(Box::new)
            })
            .map(|f| f.ok_or(DecodeError::BadFlow))
            .transpose()?;
        let cap = if suppressed.is_some() || flow.is_some() {
            0
        } else {
            (ev.payload_cap as usize).min(ev.payload.len())
        };
        Ok(Probe {
            kind,
            mono_ns: ev.ts_ns,
            src: addr(ev.family, &ev.src_addr),
            dst: addr(ev.family, &ev.dst_addr),
            decky_id: ev.decky_id,
            ifindex: ev.ifindex,
            proto: ev.proto,
            src_port: u16::from_be(ev.src_port),
            dst_port: u16::from_be(ev.dst_port),
            ttl: ev.ttl,
            tos: ev.tos,
            df: ev.df != 0,
            ip_id: u16::from_be(ev.ip_id),
            ip_len: ev.ip_len,
            vlan_id: (ev.vlan_depth > 0).then_some(ev.vlan_id),
            tcp,
            icmp,
            payload_len: ev.payload_len,
            payload: if cap == 0 {
                Bytes::new()
            } else {
                Bytes::copy_from_slice(&ev.payload[..cap])
            },
            suppressed,
            outcome,
            flow,
        })
    }

    pub fn event_type(&self) -> &'static str {
        event_type(self.kind)
    }

    /// A probe with no packet behind it: the summaries userspace builds from a kernel map
    /// (flood guard, flows). The caller sets what the summary carries.
    pub fn summary(kind: EventKind, mono_ns: u64, src: IpAddr, dst: IpAddr, decky_id: u32) -> Self {
        Probe {
            kind,
            mono_ns,
            src,
            dst,
            decky_id,
            ifindex: 0,
            proto: 0,
            src_port: 0,
            dst_port: 0,
            ttl: 0,
            tos: 0,
            df: false,
            ip_id: 0,
            ip_len: 0,
            vlan_id: None,
            tcp: None,
            icmp: None,
            payload_len: 0,
            payload: Bytes::new(),
            suppressed: None,
            outcome: None,
            flow: None,
        }
    }

    /// `ssh`, `http`, ... or `tcp/4444` when the port is not in the table; ICMP gives `icmp`.
    pub fn service(&self) -> String {
        match self.proto {
            6 | 17 => services::service_name(self.proto, self.dst_port)
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    format!("{}/{}", services::proto_name(self.proto), self.dst_port)
                }),
            p => services::proto_name(p).to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_syn_options() {
        // MSS 1460, SACK-permitted, TS, NOP, WS 7 (Linux connect()).
        let raw = [
            2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let o = parse_tcp_options(&raw);
        assert_eq!(o.mss, Some(1460));
        assert_eq!(o.wscale, Some(7));
        assert!(o.sack_ok);
        assert_eq!(o.ts_val, Some(1));
        assert_eq!(o.ts_ecr, Some(0));
        assert_eq!(o.layout, "M1460,S,T,N,W7");
        assert!(!o.malformed);
    }

    #[test]
    fn truncated_option_is_flagged_not_read_past() {
        let o = parse_tcp_options(&[2, 4, 5]);
        assert!(o.malformed);
        assert_eq!(o.mss, None);
        let o = parse_tcp_options(&[1, 1, 8]);
        assert!(o.malformed);
        assert_eq!(o.layout, "N,N");
        let o = parse_tcp_options(&[3, 0, 1]);
        assert!(o.malformed);
    }

    #[test]
    fn flag_names() {
        use tcp_flags::*;
        assert_eq!(probe_name(0), "null");
        assert_eq!(probe_name(FIN), "fin");
        assert_eq!(probe_name(FIN | PSH | URG), "xmas");
        assert_eq!(probe_name(ACK), "ack");
        assert_eq!(probe_name(FIN | ACK), "maimon");
        assert_eq!(probe_name(SYN | FIN), "syn_fin");
        assert_eq!(probe_name(SYN | FIN | PSH | URG), "syn_fin");
        assert_eq!(flag_string(SYN | ECE | CWR), "SEC");
        assert_eq!(flag_string(0x1ff), "FSRPAUECN");
    }

    #[test]
    fn decode_rejects_short_and_unknown() {
        assert_eq!(
            Probe::decode(&[0u8; 10]).unwrap_err(),
            DecodeError::Short(10)
        );
        let mut buf = [0u8; decnet_common::RAW_EVENT_SIZE];
        buf[40] = 99; // kind
        assert_eq!(
            Probe::decode(&buf).unwrap_err(),
            DecodeError::UnknownKind(99)
        );
    }
}
