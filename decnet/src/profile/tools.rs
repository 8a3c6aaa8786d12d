//! Tool attribution from packet traits, by vote.
//!
//! Each SYN or stealth probe votes for the tools whose signature it matches (table below,
//! from SIGNATURES.md and the captures measured there). A tool is reported when it has at
//! least [`MIN_VOTES`] votes, so one ambiguous packet never decides; "strong" tells (a
//! relation no stack produces by chance, or a User-Agent naming the tool) count [`STRONG`]
//! votes. There is deliberately no share-of-traffic rule: one source often runs several
//! tools (nmap, then masscan, then hping3), and the small ones must still show.

use std::collections::BTreeMap;

use crate::ingest::bounty::initial_ttl;

pub const MIN_VOTES: u64 = 3;
pub const STRONG: u64 = 3;

/// Tools whose probes are crafted packets (raw sockets), not the host's own TCP stack: their
/// SYNs say nothing about the sender's OS.
pub const CRAFTS_PACKETS: &[&str] = &["nmap", "masscan", "zmap", "unicornscan", "hping3", "mirai"];

/// The traits of one TCP packet the signatures look at.
#[derive(Debug, Default, Clone)]
pub struct Traits<'a> {
    pub ttl: u8,
    pub window: u16,
    pub options: &'a str,
    pub df: bool,
    pub ip_id: u16,
    pub seq: u32,
    pub dst_port: u16,
    /// Destination IPv4 address as a number (None for IPv6).
    pub dst_v4: Option<u32>,
    pub syn: bool,
}

/// Votes for one packet: (tool, weight).
pub fn votes(t: &Traits<'_>) -> Vec<(&'static str, u64)> {
    let mut v = Vec::new();
    let ittl = initial_ttl(t.ttl);
    // nmap raw-packet scans: TTL drawn from 37..=59, window 1024 (retries 2048-4096),
    // SYNs carry exactly MSS 1460, stealth probes no options.
    let nmap_window = matches!(t.window, 1024 | 2048 | 3072 | 4096);
    let nmap_opts = if t.syn {
        t.options == "M1460"
    } else {
        t.options.is_empty()
    };
    if nmap_window && nmap_opts && (37..=59).contains(&t.ttl) && !t.df {
        v.push(("nmap", 1));
    }
    // nmap over IPv6 (7.93, measured here): hop limit 255, same window and options.
    if t.dst_v4.is_none() && t.ttl == 255 && nmap_window && nmap_opts {
        v.push(("nmap", 1));
    }
    // masscan: TTL 255, window 1024, IP ID = (dst ^ dst_port ^ seq) & 0xffff.
    if let Some(dst) = t.dst_v4
        && t.syn
        && ittl == 255
        && t.window == 1024
        && t.ip_id as u32 == (dst ^ t.dst_port as u32 ^ t.seq) & 0xffff
    {
        v.push(("masscan", STRONG));
    }
    // ZMap <= 4.0: IP ID 54321; >= 4.1: TTL 64, window 65535, MSS,NOP,WS8,NOP,NOP,SACK.
    if t.syn && t.ip_id == 54321 && t.window == 65535 {
        v.push(("zmap", STRONG));
    } else if t.syn && ittl == 64 && t.window == 65535 && t.options == "M1460,N,W8,N,N,S" {
        v.push(("zmap", 1));
    }
    // unicornscan: TTL 255, window 4128, no DF.
    if t.syn && ittl == 255 && t.window == 4128 && !t.df {
        v.push(("unicornscan", 1));
    }
    // hping3 defaults: TTL 64, window 512, no options.
    if ittl == 64 && t.window == 512 && t.options.is_empty() {
        v.push(("hping3", 1));
    }
    // Mirai family: TCP seq equals the destination IPv4 address, telnet ports.
    if let Some(dst) = t.dst_v4
        && t.syn
        && t.seq == dst
        && matches!(t.dst_port, 23 | 2323)
    {
        v.push(("mirai", STRONG));
    }
    v
}

/// Tools named by a User-Agent (lowercase substring -> tool).
const USER_AGENTS: &[(&str, &str)] = &[
    ("nmap scripting engine", "nmap"),
    ("masscan", "masscan"),
    ("zgrab", "zgrab"),
    ("nikto", "nikto"),
    ("sqlmap", "sqlmap"),
    ("gobuster", "gobuster"),
    ("nuclei", "nuclei"),
    ("wpscan", "wpscan"),
    ("dirbuster", "dirbuster"),
    ("zmap", "zmap"),
];

pub fn user_agent_tool(ua: &str) -> Option<&'static str> {
    let ua = ua.to_ascii_lowercase();
    USER_AGENTS
        .iter()
        .find(|(k, _)| ua.contains(k))
        .map(|(_, t)| *t)
}

/// Tools that pass the vote, most votes first.
pub fn decide(tally: &BTreeMap<String, u64>) -> Vec<String> {
    let mut out: Vec<(&String, &u64)> = tally.iter().filter(|(_, n)| **n >= MIN_VOTES).collect();
    out.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    out.into_iter().map(|(t, _)| t.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn<'a>(ttl: u8, window: u16, options: &'a str) -> Traits<'a> {
        Traits {
            ttl,
            window,
            options,
            syn: true,
            dst_port: 80,
            ..Traits::default()
        }
    }

    /// One row per tool, with the values measured in SIGNATURES.md.
    #[test]
    fn signature_table() {
        let names = |t: &Traits<'_>| votes(t).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(
            names(&Traits {
                dst_v4: Some(1),
                ..syn(42, 1024, "M1460")
            }),
            ["nmap"]
        );
        assert_eq!(names(&syn(255, 1024, "M1460")), ["nmap"], "IPv6");
        let dst = u32::from(std::net::Ipv4Addr::new(10, 0, 0, 1));
        let seq = 0x1234_5678;
        let m = Traits {
            ip_id: ((dst ^ 80 ^ seq) & 0xffff) as u16,
            seq,
            dst_v4: Some(dst),
            ..syn(255, 1024, "")
        };
        assert_eq!(names(&m), ["masscan"]);
        assert_eq!(
            names(&Traits {
                ip_id: 54321,
                ..syn(255, 65535, "")
            }),
            ["zmap"]
        );
        assert_eq!(names(&syn(64, 65535, "M1460,N,W8,N,N,S")), ["zmap"]);
        assert_eq!(names(&syn(255, 4128, "M1460")), ["unicornscan"]);
        assert_eq!(names(&syn(64, 512, "")), ["hping3"]);
        let mirai = Traits {
            seq: dst,
            dst_v4: Some(dst),
            dst_port: 23,
            ..syn(64, 14600, "")
        };
        assert_eq!(names(&mirai), ["mirai"]);
        // A Linux connect() matches nothing.
        assert!(
            names(&Traits {
                df: true,
                ..syn(64, 64240, "M1460,S,T,N,W10")
            })
            .is_empty()
        );
    }

    #[test]
    fn one_ambiguous_packet_does_not_decide() {
        let mut tally = BTreeMap::new();
        tally.insert("hping3".to_owned(), 2);
        assert!(decide(&tally).is_empty());
        tally.insert("hping3".to_owned(), 5);
        tally.insert("nmap".to_owned(), 200);
        assert_eq!(decide(&tally), ["nmap", "hping3"]);
    }

    #[test]
    fn user_agents() {
        assert_eq!(
            user_agent_tool(
                "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)"
            ),
            Some("nmap")
        );
        assert_eq!(user_agent_tool("Mozilla/5.0 zgrab/0.x"), Some("zgrab"));
        assert_eq!(user_agent_tool("curl/8.0"), None);
    }
}
