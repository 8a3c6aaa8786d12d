//! Tool attribution from packet traits, by vote.
//!
//! Each SYN or stealth probe votes for the tools whose signature it matches (table below,
//! from SIGNATURES.md and the captures measured there). A tool is reported when it has at
//! least [`MIN_VOTES`] votes, so one ambiguous packet never decides; "strong" tells (a
//! relation no stack produces by chance, or a User-Agent naming the tool) count [`STRONG`]
//! votes. There is deliberately no share-of-traffic rule: one source often runs several
//! tools (nmap, then masscan, then hping3), and the small ones must still show.

use super::tcp::initial_ttl;

pub(crate) const MIN_VOTES: u64 = 3;
pub(crate) const STRONG: u64 = 3;

/// Tools whose probes are crafted packets (raw sockets), not the host's own TCP stack: their
/// SYNs say nothing about the sender's OS.
pub(crate) const CRAFTS_PACKETS: &[&str] =
    &["nmap", "masscan", "zmap", "unicornscan", "hping3", "mirai"];

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

/// What a signature requires of the TTL. Only ever the initial TTL (the next of
/// 32/64/128/255 at or above the received one): the received TTL is the sender's minus the
/// hops, which a signature cannot know.
#[derive(Debug, Clone, Copy)]
pub enum Ttl {
    Any,
    /// The initial TTL.
    Initial(u8),
    /// One of these initial TTLs (nmap draws 37-59 per run, which arrives as initial 64,
    /// or 32 from more than 5 hops away).
    InitialIn(&'static [u8]),
}

/// Tools that draw their TTL at random: their packets give no hop distance.
pub(crate) const RANDOM_TTL: &[&str] = &["nmap"];

/// What a signature requires of the TCP options (the layout string, e.g. `M1460`).
#[derive(Debug, Clone, Copy)]
pub enum Options {
    Any,
    /// Exactly this layout; `""` means no options.
    Is(&'static str),
    /// This layout on SYNs, none on other probes (nmap's stealth probes carry none).
    SynElseNone(&'static str),
    /// One MSS option (any value: a router on the way may clamp it) on SYNs, none on other
    /// probes.
    MssOnlyElseNone,
    /// This layout, whatever the MSS value (`M,N,W8`: routers clamp the MSS on the way).
    LayoutAnyMss(&'static str),
}

/// An option layout with the MSS value dropped (`M1452,N,W8` -> `M,N,W8`).
fn without_mss(layout: &str) -> impl Iterator<Item = &str> {
    layout
        .split(',')
        .map(|o| if o.starts_with('M') { "M" } else { o })
}

/// A relation between header fields that no TCP stack produces by chance.
#[derive(Debug, Clone, Copy)]
pub enum Relation {
    None,
    /// masscan: IP ID == (dst IPv4 ^ dst port ^ seq) & 0xffff.
    MasscanIpId,
    /// This exact IP ID (ZMap <= 4.0 sends 54321).
    IpId(u16),
    /// Mirai: TCP seq == destination IPv4 address.
    SeqIsDstV4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Any,
    V6,
}

/// One row of the signature table (SIGNATURES.md, and the captures measured there).
#[derive(Debug, Clone, Copy)]
pub struct Signature {
    pub tool: &'static str,
    pub weight: u64,
    /// Only SYNs (not stealth probes) can match.
    pub syn_only: bool,
    pub family: Family,
    pub ttl: Ttl,
    /// Allowed windows (empty: any).
    pub windows: &'static [u16],
    pub options: Options,
    /// Required DF bit (None: either).
    pub df: Option<bool>,
    pub relation: Relation,
    /// Allowed destination ports (empty: any).
    pub ports: &'static [u16],
}

const NMAP_WINDOWS: &[u16] = &[1024, 2048, 3072, 4096];

/// The table. Tools change: add rows here, and a test pinning them.
pub const SIGNATURES: &[Signature] = &[
    // nmap raw-packet scans: TTL drawn from 37..=59 (initial 64, or 32 once more than 5
    // hops have taken it below 33), window 1024 (retries and releases before 2011: 2048,
    // 3072, 4096), SYNs carry one MSS option, stealth probes none, no DF.
    Signature {
        tool: "nmap",
        weight: 1,
        syn_only: false,
        family: Family::Any,
        ttl: Ttl::InitialIn(&[32, 64]),
        windows: NMAP_WINDOWS,
        options: Options::MssOnlyElseNone,
        df: Some(false),
        relation: Relation::None,
        ports: &[],
    },
    // nmap over IPv6 (7.93, measured here): hop limit 255, same window and options.
    Signature {
        tool: "nmap",
        weight: 1,
        syn_only: false,
        family: Family::V6,
        ttl: Ttl::Initial(255),
        windows: NMAP_WINDOWS,
        options: Options::MssOnlyElseNone,
        df: None,
        relation: Relation::None,
        ports: &[],
    },
    // masscan: TTL 255, window 1024, IP ID = (dst ^ dst_port ^ seq) & 0xffff.
    Signature {
        tool: "masscan",
        weight: STRONG,
        syn_only: true,
        family: Family::Any,
        ttl: Ttl::Initial(255),
        windows: &[1024],
        options: Options::Any,
        df: None,
        relation: Relation::MasscanIpId,
        ports: &[],
    },
    // ZMap <= 4.0: IP ID 54321, window 65535.
    Signature {
        tool: "zmap",
        weight: STRONG,
        syn_only: true,
        family: Family::Any,
        ttl: Ttl::Any,
        windows: &[65535],
        options: Options::Any,
        df: None,
        relation: Relation::IpId(54321),
        ports: &[],
    },
    // ZMap >= 4.1: TTL 64, window 65535, MSS,NOP,WS8,NOP,NOP,SACK (MSS 1460 as sent).
    Signature {
        tool: "zmap",
        weight: 1,
        syn_only: true,
        family: Family::Any,
        ttl: Ttl::Initial(64),
        windows: &[65535],
        options: Options::LayoutAnyMss("M,N,W8,N,N,S"),
        df: None,
        relation: Relation::None,
        ports: &[],
    },
    // unicornscan: TTL 255, window 4128, no DF.
    Signature {
        tool: "unicornscan",
        weight: 1,
        syn_only: true,
        family: Family::Any,
        ttl: Ttl::Initial(255),
        windows: &[4128],
        options: Options::Any,
        df: Some(false),
        relation: Relation::None,
        ports: &[],
    },
    // hping3 defaults: TTL 64, window 512, no options.
    Signature {
        tool: "hping3",
        weight: 1,
        syn_only: false,
        family: Family::Any,
        ttl: Ttl::Initial(64),
        windows: &[512],
        options: Options::Is(""),
        df: None,
        relation: Relation::None,
        ports: &[],
    },
    // Mirai family: TCP seq equals the destination IPv4 address, telnet ports.
    Signature {
        tool: "mirai",
        weight: STRONG,
        syn_only: true,
        family: Family::Any,
        ttl: Ttl::Any,
        windows: &[],
        options: Options::Any,
        df: None,
        relation: Relation::SeqIsDstV4,
        ports: &[23, 2323],
    },
];

impl Signature {
    pub fn matches(&self, t: &Traits<'_>) -> bool {
        if self.syn_only && !t.syn {
            return false;
        }
        if self.family == Family::V6 && t.dst_v4.is_some() {
            return false;
        }
        // TTL 0 never arrives from the wire: it stands for a record without one.
        let ttl_ok = match self.ttl {
            Ttl::Any => true,
            _ if t.ttl == 0 => false,
            Ttl::Initial(i) => initial_ttl(t.ttl) == i,
            Ttl::InitialIn(set) => set.contains(&initial_ttl(t.ttl)),
        };
        let opts_ok = match self.options {
            Options::Any => true,
            Options::Is(o) => t.options == o,
            Options::SynElseNone(o) => {
                if t.syn {
                    t.options == o
                } else {
                    t.options.is_empty()
                }
            }
            Options::LayoutAnyMss(want) => without_mss(t.options).eq(want.split(',')),
            Options::MssOnlyElseNone => {
                if t.syn {
                    t.options.starts_with('M') && !t.options.contains(',')
                } else {
                    t.options.is_empty()
                }
            }
        };
        let rel_ok = match self.relation {
            Relation::None => true,
            Relation::MasscanIpId => t
                .dst_v4
                .is_some_and(|dst| t.ip_id as u32 == (dst ^ t.dst_port as u32 ^ t.seq) & 0xffff),
            Relation::IpId(id) => t.ip_id == id,
            Relation::SeqIsDstV4 => t.dst_v4.is_some_and(|dst| t.seq == dst),
        };
        ttl_ok
            && opts_ok
            && rel_ok
            && (self.windows.is_empty() || self.windows.contains(&t.window))
            && self.df.is_none_or(|d| d == t.df)
            && (self.ports.is_empty() || self.ports.contains(&t.dst_port))
    }
}

/// Votes for one packet: (tool, weight), one per matching row of [`SIGNATURES`] (a tool
/// votes once even when several of its rows match).
pub(crate) fn votes(t: &Traits<'_>) -> Vec<(&'static str, u64)> {
    let mut v: Vec<(&'static str, u64)> = Vec::new();
    for s in SIGNATURES {
        if s.matches(t) && !v.iter().any(|(tool, _)| *tool == s.tool) {
            v.push((s.tool, s.weight));
        }
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

pub(crate) fn user_agent_tool(ua: &str) -> Option<&'static str> {
    let ua = ua.to_ascii_lowercase();
    USER_AGENTS
        .iter()
        .find(|(k, _)| ua.contains(k))
        .map(|(_, t)| *t)
}

/// Whether a packet whose signature matches `tools` carries its sender's initial TTL (none
/// of them draws its TTL at random), so that its hop distance can be known.
pub(crate) fn ttl_is_known<'a>(mut tools: impl Iterator<Item = &'a str>) -> bool {
    !tools.any(|t| RANDOM_TTL.contains(&t))
}

/// Tools that pass the vote, most votes first.
pub fn decide<'a>(tally: impl IntoIterator<Item = (&'a String, &'a u64)>) -> Vec<String> {
    let mut out: Vec<(&String, &u64)> = tally
        .into_iter()
        .filter(|(_, n)| **n >= MIN_VOTES)
        .collect();
    out.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    out.into_iter().map(|(t, _)| t.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_one_tool_are_adjacent() {
        // The collector skips repeated tool names by comparing with the previous row.
        let mut seen: Vec<&str> = Vec::new();
        for s in SIGNATURES {
            if seen.last() != Some(&s.tool) {
                assert!(!seen.contains(&s.tool), "{} rows are split", s.tool);
                seen.push(s.tool);
            }
        }
    }

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
        assert_eq!(
            names(&syn(240, 1024, "M1460")),
            ["nmap"],
            "IPv6, 15 hops away"
        );
        // nmap's TTL (37-59) from 24 and 16 hops away, an older release's window and an
        // MSS a router clamped: the signature never reads the received TTL itself.
        for (ttl, window, mss) in [(13, 1024, "M1460"), (28, 3072, "M1452"), (59, 4096, "M536")] {
            let t = Traits {
                dst_v4: Some(1),
                ..syn(ttl, window, mss)
            };
            assert_eq!(names(&t), ["nmap"], "ttl {ttl} window {window} {mss}");
        }
        // No TTL recorded is no TTL match; a Windows client's mid-flow ACK is not nmap's.
        assert!(
            names(&Traits {
                dst_v4: Some(1),
                ..syn(0, 1024, "M1460")
            })
            .is_empty()
        );
        let ack = Traits {
            syn: false,
            df: true,
            dst_v4: Some(1),
            ..syn(116, 1024, "")
        };
        assert!(names(&ack).is_empty());
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
        // ZMap 4.1+ from 12 hops behind a PPPoE link: TTL 52, MSS clamped to 1452.
        assert_eq!(names(&syn(52, 65535, "M1452,N,W8,N,N,S")), ["zmap"]);
        assert!(names(&syn(52, 65535, "M1452,N,W7,N,N,S")).is_empty());
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
        let mut tally = std::collections::BTreeMap::new();
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
