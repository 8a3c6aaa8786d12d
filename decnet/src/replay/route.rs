//! Which program a replayed frame goes to, and which addresses are the decoys when the
//! command line names none.
//!
//! Live, the XDP program sees what arrives at the decoy interface and the TC egress
//! program what leaves it. A capture holds both directions in one stream, so each frame is
//! routed by its addresses: to a decoy -> ingress; from a decoy -> egress; from one decoy
//! to another -> both, egress first; neither -> not replayed (a live sensor would pass it
//! after one lookup), only counted.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
};

use etherparse::{Icmpv4Type, Icmpv6Type, LaxNetSlice, LaxSlicedPacket, TransportSlice};

/// The addresses of a frame, and whether it opens a conversation.
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub kind: Kind,
    /// Sent to one host: not to a multicast or broadcast Ethernet or IP address (LAN
    /// chatter such as NetBIOS, SSDP or DHCP, which probes no decoy).
    pub unicast: bool,
}

/// What a frame's transport header says about who started the conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A TCP SYN without ACK, or an ICMP echo request: always the asking side.
    Opens,
    /// A UDP datagram: a probe unless it answers one going the other way.
    Udp {
        sport: u16,
        dport: u16,
    },
    Other,
}

/// The addresses and kind of an Ethernet frame; None for frames without an IP header
/// (ARP, or garbled: the kernel program decides what those count as).
pub fn seen(eth: &[u8]) -> Option<Seen> {
    let p = LaxSlicedPacket::from_ethernet(eth).ok()?;
    let (src, dst) = match p.net.as_ref()? {
        LaxNetSlice::Ipv4(s) => (
            IpAddr::V4(s.header().source_addr()),
            IpAddr::V4(s.header().destination_addr()),
        ),
        LaxNetSlice::Ipv6(s) => (
            IpAddr::V6(s.header().source_addr()),
            IpAddr::V6(s.header().destination_addr()),
        ),
        LaxNetSlice::Arp(_) => return None,
    };
    let kind = match &p.transport {
        Some(TransportSlice::Tcp(t)) if t.syn() && !t.ack() => Kind::Opens,
        Some(TransportSlice::Udp(u)) => Kind::Udp {
            sport: u.source_port(),
            dport: u.destination_port(),
        },
        Some(TransportSlice::Icmpv4(i)) if matches!(i.icmp_type(), Icmpv4Type::EchoRequest(_)) => {
            Kind::Opens
        }
        Some(TransportSlice::Icmpv6(i)) if matches!(i.icmp_type(), Icmpv6Type::EchoRequest(_)) => {
            Kind::Opens
        }
        _ => Kind::Other,
    };
    // The group bit of the destination MAC: broadcast and multicast frames (a subnet's
    // broadcast address is only known as such by its MAC).
    let group_mac = eth.first().is_some_and(|b| b & 1 != 0);
    let dst = dst.to_canonical();
    let group_ip = match dst {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast(),
    };
    Some(Seen {
        src: src.to_canonical(),
        dst,
        kind,
        unicast: !group_mac && !group_ip,
    })
}

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Ingress,
    Egress,
    /// From one decoy to another: the egress program for the sender, then the ingress
    /// program for the receiver (so an answer to a decoy's own lookup is known as one).
    Both,
    /// Neither end is a decoy.
    Neither,
}

/// The decoy addresses of a replay.
pub struct Decoys {
    set: HashSet<IpAddr>,
}

impl Decoys {
    pub fn new(addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        Self {
            set: addrs.into_iter().map(|a| a.to_canonical()).collect(),
        }
    }

    pub fn route(&self, seen: Option<&Seen>) -> Route {
        let Some(s) = seen else {
            return Route::Ingress;
        };
        match (self.set.contains(&s.src), self.set.contains(&s.dst)) {
            (true, true) => Route::Both,
            (false, true) => Route::Ingress,
            (true, false) => Route::Egress,
            (false, false) => Route::Neither,
        }
    }
}

/// UDP conversations remembered to tell an answer from a probe; past this many, new ones
/// are not remembered (a datagram then counts as a probe), which bounds the memory of the
/// first pass over a huge capture.
const MAX_UDP_PAIRS: usize = 4 << 20;

/// Distinct senders remembered per probed address: enough to tell a decoy probed from
/// many places from a host that only decoys reached out to.
const PROBERS_KEPT: usize = 16;

/// Finds the decoys of a capture in a first pass: every unicast destination of an inbound
/// probe (a SYN without ACK, an ICMP echo request, a UDP datagram that answers nothing) that
/// received more such probes than it sent, unless all of them came from decoys. A scanner
/// that is itself scanned stays a source; a decoy that makes a few connections of its own
/// stays a decoy, and the hosts it reached are not made decoys by it.
#[derive(Default)]
pub struct Finder {
    /// Probes received and sent, per address.
    probes: HashMap<IpAddr, (u64, u64)>,
    /// Who probed each address (the first [`PROBERS_KEPT`] distinct senders).
    probers: HashMap<IpAddr, Vec<IpAddr>>,
    /// UDP datagrams seen, as (src, sport, dst, dport).
    udp: HashSet<(IpAddr, u16, IpAddr, u16)>,
}

impl Finder {
    pub fn note(&mut self, s: &Seen) {
        if !s.unicast {
            return;
        }
        let probe = match s.kind {
            Kind::Opens => true,
            Kind::Udp { sport, dport } => {
                let answers = self.udp.contains(&(s.dst, dport, s.src, sport));
                if !answers && self.udp.len() < MAX_UDP_PAIRS {
                    self.udp.insert((s.src, sport, s.dst, dport));
                }
                !answers
            }
            Kind::Other => false,
        };
        if probe {
            self.probes.entry(s.dst).or_default().0 += 1;
            self.probes.entry(s.src).or_default().1 += 1;
            let by = self.probers.entry(s.dst).or_default();
            if by.len() < PROBERS_KEPT && !by.contains(&s.src) {
                by.push(s.src);
            }
        }
    }

    /// The decoys found, in address order (which makes the decky ids deterministic).
    pub fn decoys(&self) -> Vec<IpAddr> {
        let probed: BTreeSet<IpAddr> = self
            .probes
            .iter()
            .filter(|(_, (received, sent))| received > sent)
            .map(|(a, _)| *a)
            .collect();
        let reached_only_by_decoys = |a: &IpAddr| {
            let by = &self.probers[a];
            by.len() < PROBERS_KEPT && by.iter().all(|p| probed.contains(p))
        };
        probed
            .iter()
            .filter(|a| !reached_only_by_decoys(a))
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(src: &str, dst: &str, kind: Kind) -> Seen {
        Seen {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            kind,
            unicast: true,
        }
    }

    #[test]
    fn decoys_are_what_is_probed_more_than_it_probes() {
        let mut f = Finder::default();
        // A scanner probes two decoys; one decoy makes a connection of its own.
        for d in ["10.0.0.1", "10.0.0.2", "10.0.0.1"] {
            f.note(&s("203.0.113.9", d, Kind::Opens));
        }
        f.note(&s("10.0.0.1", "198.51.100.1", Kind::Opens));
        f.note(&s("10.0.0.2", "203.0.113.9", Kind::Other));
        // A DNS query to a decoy and its answer: the answer is no probe of the asker.
        let q = Kind::Udp {
            sport: 40000,
            dport: 53,
        };
        let a = Kind::Udp {
            sport: 53,
            dport: 40000,
        };
        f.note(&s("192.0.2.7", "10.0.0.3", q));
        f.note(&s("10.0.0.3", "192.0.2.7", a));
        let want: Vec<IpAddr> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(f.decoys(), want);
        let d = Decoys::new(want);
        assert_eq!(
            d.route(Some(&s("192.0.2.7", "10.0.0.3", q))),
            Route::Ingress
        );
        assert_eq!(d.route(Some(&s("10.0.0.3", "192.0.2.7", a))), Route::Egress);
        assert_eq!(
            d.route(Some(&s("192.0.2.7", "192.0.2.8", q))),
            Route::Neither
        );
        assert_eq!(d.route(None), Route::Ingress);
        assert_eq!(d.route(Some(&s("10.0.0.1", "10.0.0.3", q))), Route::Both);
    }

    #[test]
    fn broadcast_and_multicast_destinations_are_no_decoys() {
        // A frame from 10.0.0.9 to `dst`, Ethernet destination `mac`, UDP to port 137.
        let frame = |mac: [u8; 6], dst: [u8; 4]| {
            let mut f = mac.to_vec();
            f.extend([2, 0, 0, 0, 0, 1, 0x08, 0x00]);
            let mut ip = vec![0x45, 0, 0, 36, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 9];
            ip.extend(dst);
            f.extend(ip);
            f.extend([0x00, 0x89, 0x00, 0x89, 0, 16, 0, 0]);
            f.extend([0u8; 8]);
            f
        };
        let unicast_mac = [2, 0, 0, 0, 0, 2];
        let cases = [
            (unicast_mac, [10, 0, 0, 1], true),
            // A subnet broadcast: only its MAC says so.
            ([0xff; 6], [10, 0, 0, 255], false),
            ([1, 0, 0x5e, 0x7f, 0xff, 0xfa], [239, 255, 255, 250], false),
            (unicast_mac, [239, 255, 255, 250], false),
            (unicast_mac, [255, 255, 255, 255], false),
        ];
        let mut f = Finder::default();
        for (mac, dst, unicast) in cases {
            let seen = seen(&frame(mac, dst)).expect("an IPv4 frame");
            assert_eq!(seen.unicast, unicast, "{dst:?}");
            for _ in 0..3 {
                f.note(&seen);
            }
        }
        assert_eq!(f.decoys(), vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
    }
}
