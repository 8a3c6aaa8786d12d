//! Capture link types as the kernel programs read them: Ethernet.
//!
//! The programs parse Ethernet (with VLAN and QinQ tags) as a NIC delivers it. A capture
//! taken on a tunnel, on `any` or on a BSD loopback has another link header; it is replaced
//! by an Ethernet header with the same protocol, so the programs see the packet they would
//! have seen on an Ethernet decoy interface.

use pcap_parser::Linktype;

/// The link types read; anything else is skipped and counted by its number.
pub const SUPPORTED: &str = "Ethernet (1), raw IP (12, 14, 101, 228, 229), BSD loopback (0, \
                             108), Linux cooked v1 (113) and v2 (276)";

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;

/// Why a frame cannot be given to the programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// A link type this reader does not know (its number).
    Unsupported(i32),
    /// Shorter than its own link header, or no IP version where IP must be.
    Garbled,
}

/// The frame as Ethernet: `data` itself when it already is, else rebuilt in `out`.
pub fn to_ethernet<'a>(
    link: Linktype,
    data: &'a [u8],
    out: &'a mut Vec<u8>,
) -> Result<&'a [u8], Skip> {
    let (ethertype, payload) = match link.0 {
        1 => {
            return if data.len() >= ETH_HLEN {
                Ok(data)
            } else {
                Err(Skip::Garbled)
            };
        }
        // DLT_RAW (12 on most systems, 14 on OpenBSD), LINKTYPE_RAW, LINKTYPE_IPV4/IPV6.
        12 | 14 | 101 | 228 | 229 => (ip_ethertype(data)?, data),
        // DLT_NULL / DLT_LOOP: a 4-byte address family (host or network order, and its
        // IPv6 value differs between BSDs), so the IP header's version decides instead.
        0 | 108 => {
            let payload = data.get(4..).ok_or(Skip::Garbled)?;
            (ip_ethertype(payload)?, payload)
        }
        // Linux cooked v1: 16 bytes, the protocol in the last two.
        113 => {
            let proto = data.get(14..16).ok_or(Skip::Garbled)?;
            (u16::from_be_bytes([proto[0], proto[1]]), &data[16..])
        }
        // Linux cooked v2: 20 bytes, the protocol in the first two.
        276 => {
            let payload = data.get(20..).ok_or(Skip::Garbled)?;
            (u16::from_be_bytes([data[0], data[1]]), payload)
        }
        other => return Err(Skip::Unsupported(other)),
    };
    out.clear();
    out.extend_from_slice(&[0; 12]);
    out.extend_from_slice(&ethertype.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// The ethertype of a bare IP packet, by its version field.
fn ip_ethertype(ip: &[u8]) -> Result<u16, Skip> {
    match ip.first().map(|b| b >> 4) {
        Some(4) => Ok(ETHERTYPE_IPV4),
        Some(6) => Ok(ETHERTYPE_IPV6),
        _ => Err(Skip::Garbled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP4: [u8; 4] = [0x45, 0, 0, 20];

    fn eth(link: i32, data: &[u8]) -> Result<Vec<u8>, Skip> {
        let mut out = Vec::new();
        to_ethernet(Linktype(link), data, &mut out).map(<[u8]>::to_vec)
    }

    #[test]
    fn ethernet_passes_through_and_raw_ip_gets_a_header() {
        let frame = [[0u8; 12].as_slice(), &[0x08, 0x00], &IP4].concat();
        assert_eq!(eth(1, &frame), Ok(frame.clone()));
        for link in [12, 14, 101, 228] {
            assert_eq!(eth(link, &IP4), Ok(frame.clone()), "link type {link}");
        }
        let v6 = [0x60, 0, 0, 0];
        assert_eq!(&eth(229, &v6).unwrap()[12..14], &[0x86, 0xDD]);
        assert_eq!(eth(101, &[0x50]), Err(Skip::Garbled));
        assert_eq!(eth(1, &[0; 13]), Err(Skip::Garbled));
    }

    #[test]
    fn cooked_and_loopback_headers_are_replaced() {
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&IP4);
        let want = [[0u8; 12].as_slice(), &[0x08, 0x00], &IP4].concat();
        assert_eq!(eth(113, &sll), Ok(want.clone()));
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0; 18]);
        sll2.extend_from_slice(&IP4);
        assert_eq!(eth(276, &sll2), Ok(want.clone()));
        // BSD loopback: the family's byte order does not matter.
        for family in [[2, 0, 0, 0], [0, 0, 0, 2]] {
            let lo = [family.as_slice(), &IP4].concat();
            assert_eq!(eth(0, &lo), Ok(want.clone()));
            assert_eq!(eth(108, &lo), Ok(want.clone()));
        }
        assert_eq!(eth(113, &[0; 15]), Err(Skip::Garbled));
        assert_eq!(eth(105, &IP4), Err(Skip::Unsupported(105)));
    }
}
