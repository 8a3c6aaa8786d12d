//! Passive OS guess from a SYN's fingerprint, p0f in spirit.
//!
//! Input is the `ittl:window:layout:quirks` fingerprint that `ingest::bounty` extracts from
//! every SYN. Only SYNs built by an operating system's own TCP stack say anything about the
//! OS: packets that match a scanner signature (nmap, masscan, ...) are crafted, so the
//! profiler never feeds them here. The table matches on the initial TTL, the option
//! *shape* (kinds in order, values ignored: MSS and window scale vary with the link and the
//! host's memory) and DF. When nothing matches, the initial TTL alone still separates the
//! big families, and the guess says so.

/// (guess, initial TTL, option shape, DF set).
const TABLE: &[(&str, u8, &str, bool)] = &[
    // Linux 3.x+ (and Android): MSS, SACK, TS, NOP, WS; window 64240/65535/29200.
    ("Linux", 64, "M,S,T,N,W", true),
    // Linux with timestamps off (net.ipv4.tcp_timestamps=0).
    ("Linux", 64, "M,N,N,S,N,W", true),
    // macOS and iOS: the only common stack ending in two EOLs.
    ("macOS/iOS", 64, "M,N,W,N,N,T,S,E,E", true),
    ("FreeBSD", 64, "M,N,W,S,T", true),
    ("OpenBSD", 64, "M,N,N,S,N,W,N,N,T", true),
    // Windows 7 to 11 and Server 2008 to 2022.
    ("Windows", 128, "M,N,W,N,N,S", true),
    // Windows with RFC 1323 timestamps enabled.
    ("Windows", 128, "M,N,W,N,N,T,N,N,S", true),
    ("Windows XP", 128, "M,N,N,S", true),
];

/// The option shape of a layout: `M1460,S,T,N,W10` -> `M,S,T,N,W`.
fn shape(layout: &str) -> String {
    layout
        .split(',')
        .map(|o| o.trim_end_matches(|c: char| c.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The guess for one OS-stack SYN fingerprint, or None when the table does not know it.
pub(crate) fn from_fingerprint(fp: &str) -> Option<&'static str> {
    let mut parts = fp.splitn(4, ':');
    let ittl: u8 = parts.next()?.parse().ok()?;
    let _window = parts.next()?;
    let layout = shape(parts.next()?);
    let df = parts.next()?.split(',').any(|q| q == "df");
    TABLE
        .iter()
        .find(|(_, t, s, d)| *t == ittl && *s == layout && *d == df)
        .map(|(name, ..)| *name)
}

/// The coarse guess from the initial TTL alone (no table match).
pub(crate) fn from_initial_ttl(ittl: u8) -> Option<&'static str> {
    match ittl {
        64 => Some("Linux/Unix (TTL only)"),
        128 => Some("Windows (TTL only)"),
        255 => Some("network device (TTL only)"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        // Linux 6.18 connect(), measured here (SIGNATURES.md).
        assert_eq!(
            from_fingerprint("64:64240:M1460,S,T,N,W10:df"),
            Some("Linux")
        );
        assert_eq!(
            from_fingerprint("64:65535:M1460,N,W6,N,N,T,S,E,E:df"),
            Some("macOS/iOS")
        );
        assert_eq!(
            from_fingerprint("128:64240:M1460,N,W8,N,N,S:df"),
            Some("Windows")
        );
        assert_eq!(
            from_fingerprint("64:65535:M1460,N,W6,S,T:df"),
            Some("FreeBSD")
        );
        // Same shape without DF is not that stack.
        assert_eq!(from_fingerprint("64:64240:M1460,S,T,N,W10:"), None);
        // Crafted or unknown layouts, and garbage, give nothing.
        assert_eq!(from_fingerprint("64:1024:M1460:"), None);
        assert_eq!(from_fingerprint("nonsense"), None);
        assert_eq!(from_fingerprint(""), None);
        assert_eq!(from_initial_ttl(128), Some("Windows (TTL only)"));
        assert_eq!(from_initial_ttl(32), None);
    }
}
