//! Decoys and addresses as the kernel maps key them (IPv4 mapped into IPv6).

use std::{fmt, net::IpAddr, str::FromStr};

/// A decoy address and the decky name it reports as (`--decoy IP[=NAME]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoy {
    pub addr: IpAddr,
    pub name: String,
}

impl FromStr for Decoy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, name) = match s.split_once('=') {
            Some((ip, name)) => (ip.trim(), Some(name.trim())),
            None => (s.trim(), None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("`{ip}` is not an IPv4 or IPv6 address (expected IP[=NAME])"))?;
        let name = match name {
            Some("") => return Err(format!("empty decky name in `{s}`")),
            Some(n) => n.to_owned(),
            None => addr.to_string(),
        };
        Ok(Decoy { addr, name })
    }
}

impl fmt::Display for Decoy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.addr, self.name)
    }
}

/// A kernel map key's address (IPv4 is stored mapped into IPv6) as an address.
pub fn key_addr(raw: &[u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(*raw);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Decoy address as the kernel keys it: IPv4 mapped into IPv6.
pub fn decoy_key(addr: IpAddr) -> decnet_common::DecoyKey {
    let v6 = match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    decnet_common::DecoyKey { addr: v6.octets() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoy_parsing() {
        let d: Decoy = "10.0.0.1=web".parse().unwrap();
        assert_eq!(d.name, "web");
        let d: Decoy = "fd00::1".parse().unwrap();
        assert_eq!(d.name, "fd00::1");
        assert!("10.0.0.300".parse::<Decoy>().is_err());
        assert!("10.0.0.1=".parse::<Decoy>().is_err());
    }

    #[test]
    fn v4_keys_are_mapped() {
        let k = decoy_key("10.1.2.3".parse().unwrap());
        assert_eq!(&k.addr[10..], &[0xff, 0xff, 10, 1, 2, 3]);
    }
}
