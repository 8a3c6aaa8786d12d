//! Builders for crafted Ethernet frames, used by the BPF test_run tests and the sensor
//! benchmark (which includes this file by path): test code, not part of the library.
//! Checksums are left zero: XDP sees the frame before any checksum validation.

use std::net::IpAddr;

/// What goes above the IP header.
#[derive(Clone, Debug)]
pub(crate) enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u16,
        seq: u32,
        ack: u32,
        window: u16,
        urg: u16,
        options: Vec<u8>,
        payload: Vec<u8>,
    },
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
    },
    Icmp {
        ty: u8,
        code: u8,
        rest: [u8; 4],
        payload: Vec<u8>,
    },
    Raw {
        proto: u8,
        payload: Vec<u8>,
    },
}

impl L4 {
    pub(crate) fn syn(sport: u16, dport: u16) -> Self {
        L4::Tcp {
            sport,
            dport,
            flags: 0x002,
            seq: 1,
            ack: 0,
            window: 1024,
            urg: 0,
            options: vec![2, 4, 5, 180],
            payload: vec![],
        }
    }

    pub(crate) fn tcp(sport: u16, dport: u16, flags: u16, payload: &[u8]) -> Self {
        L4::Tcp {
            sport,
            dport,
            flags,
            seq: 1,
            ack: 1,
            window: 502,
            urg: 0,
            options: vec![],
            payload: payload.to_vec(),
        }
    }

    fn proto(&self, v6: bool) -> u8 {
        match self {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp { .. } => {
                if v6 {
                    58
                } else {
                    1
                }
            }
            L4::Raw { proto, .. } => *proto,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            L4::Tcp {
                sport,
                dport,
                flags,
                seq,
                ack,
                window,
                urg,
                options,
                payload,
            } => {
                let mut opts = options.clone();
                while !opts.len().is_multiple_of(4) {
                    opts.push(1);
                }
                let doff = (20 + opts.len()) / 4;
                b.extend(sport.to_be_bytes());
                b.extend(dport.to_be_bytes());
                b.extend(seq.to_be_bytes());
                b.extend(ack.to_be_bytes());
                b.push(((doff as u8) << 4) | ((flags >> 8) as u8 & 1));
                b.push(*flags as u8);
                b.extend(window.to_be_bytes());
                b.extend([0, 0]);
                b.extend(urg.to_be_bytes());
                b.extend(opts);
                b.extend(payload);
            }
            L4::Udp {
                sport,
                dport,
                payload,
            } => {
                b.extend(sport.to_be_bytes());
                b.extend(dport.to_be_bytes());
                b.extend(((8 + payload.len()) as u16).to_be_bytes());
                b.extend([0, 0]);
                b.extend(payload);
            }
            L4::Icmp {
                ty,
                code,
                rest,
                payload,
            } => {
                b.extend([*ty, *code, 0, 0]);
                b.extend(rest);
                b.extend(payload);
            }
            L4::Raw { payload, .. } => b.extend(payload),
        }
        b
    }
}

/// A frame description; `build()` produces the bytes.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub vlans: Vec<(u16, u16)>,
    pub ttl: u8,
    pub tos: u8,
    pub ip_id: u16,
    pub df: bool,
    /// IPv4 option bytes (padded to 4) or, for IPv6, a list of (next-header kind) extension
    /// headers to insert before the transport header.
    pub ip_options: Vec<u8>,
    pub v6_ext: Vec<u8>,
    pub l4: L4,
}

impl Frame {
    pub(crate) fn new(src: &str, dst: &str, l4: L4) -> Self {
        Frame {
            src: src.parse().expect("src address"),
            dst: dst.parse().expect("dst address"),
            vlans: vec![],
            ttl: 64,
            tos: 0,
            ip_id: 0x1234,
            df: false,
            ip_options: vec![],
            v6_ext: vec![],
            l4,
        }
    }

    /// The frame bytes, plus the offsets where each header starts (for cut tests).
    pub(crate) fn build_with_offsets(&self) -> (Vec<u8>, Vec<usize>) {
        let mut f = Vec::new();
        let mut marks = vec![];
        f.extend([0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]);
        let v6 = self.dst.is_ipv6();
        let ethertype: u16 = if v6 { 0x86DD } else { 0x0800 };
        for (i, (tpid, vid)) in self.vlans.iter().enumerate() {
            f.extend(tpid.to_be_bytes());
            marks.push(f.len());
            let _ = i;
            f.extend(vid.to_be_bytes());
        }
        f.extend(ethertype.to_be_bytes());
        marks.push(f.len());
        let l4 = self.l4.bytes();
        let proto = self.l4.proto(v6);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut opts = self.ip_options.clone();
                while !opts.len().is_multiple_of(4) {
                    opts.push(0);
                }
                let ihl = (20 + opts.len()) / 4;
                let tot = 20 + opts.len() + l4.len();
                f.push(0x40 | ihl as u8);
                f.push(self.tos);
                f.extend((tot as u16).to_be_bytes());
                f.extend(self.ip_id.to_be_bytes());
                f.extend(if self.df { [0x40, 0] } else { [0, 0] });
                f.push(self.ttl);
                f.push(proto);
                f.extend([0, 0]);
                f.extend(s.octets());
                f.extend(d.octets());
                f.extend(opts);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let ext_len = self.v6_ext.len() * 8;
                let first = self.v6_ext.first().copied().unwrap_or(proto);
                f.extend([0x60 | (self.tos >> 4), self.tos << 4, 0, 0]);
                f.extend(((ext_len + l4.len()) as u16).to_be_bytes());
                f.push(first);
                f.push(self.ttl);
                f.extend(s.octets());
                f.extend(d.octets());
                for (i, _kind) in self.v6_ext.iter().enumerate() {
                    marks.push(f.len());
                    let next = self.v6_ext.get(i + 1).copied().unwrap_or(proto);
                    // Every extension is 8 bytes: next header, length 0 (= 8 bytes), padding.
                    f.extend([next, 0, 1, 4, 0, 0, 0, 0]);
                }
            }
            _ => panic!("src and dst must be the same family"),
        }
        marks.push(f.len());
        f.extend(l4);
        (f, marks)
    }

    pub(crate) fn build(&self) -> Vec<u8> {
        self.build_with_offsets().0
    }
}
