//! Known scanners: address lists of sources whose scanning is known, such as research
//! projects and search engines, whose SYNs can look exactly like nmap's. Headers cannot
//! tell them apart from an attacker; their published address lists can.
//!
//! The format, one entry per line (`--known-scanners FILE`, repeatable):
//! `CIDR[,name[,category]]`, `#` starting a comment. A bare address is a /32 or /128. The
//! category is free text (`research`, `search-engine`, ...); `malicious` marks a list of
//! known-bad infrastructure instead of benign scanners. A malformed line is reported with
//! its file and line number and skipped; the rest of the file still loads.
//!
//! The lists in force are process-wide ([`install`], [`lookup`]): every rendering of a
//! profile (the API, the stream, the profiler's detections) asks them, so a reload on
//! SIGHUP changes every verdict at once without touching the stored states.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use ipnet::IpNet;

/// Who a listed address belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// The name the list gives (null in profiles when the line has none).
    pub name: Option<String>,
    pub category: Option<String>,
}

impl Actor {
    /// A list of known-bad infrastructure rather than of benign scanners.
    pub fn is_malicious(&self) -> bool {
        self.category
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("malicious"))
    }
}

/// A line that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {why}")]
pub struct LineError {
    pub file: String,
    pub line: usize,
    pub why: String,
}

/// Every entry of the loaded lists, by prefix length for longest-prefix lookup.
#[derive(Default, Debug)]
pub struct ScannerList {
    /// For each prefix length present (longest first): masked network -> actor index.
    v4: Vec<(u8, HashMap<u32, usize>)>,
    v6: Vec<(u8, HashMap<u128, usize>)>,
    actors: Vec<Arc<Actor>>,
    entries: usize,
}

impl ScannerList {
    /// Reads every file; a file that cannot be read is an error, a bad line only a report.
    pub fn load(files: &[PathBuf]) -> std::io::Result<(Self, Vec<LineError>)> {
        let mut list = Self::default();
        let mut errors = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(f)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", f.display())))?;
            list.add(&text, &display(f), &mut errors);
        }
        list.sort();
        Ok((list, errors))
    }

    /// Parses one list's text into this one.
    pub fn add(&mut self, text: &str, file: &str, errors: &mut Vec<LineError>) {
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.splitn(3, ',').map(str::trim);
            let cidr = parts.next().unwrap_or("");
            let field = |p: Option<&str>| p.filter(|s| !s.is_empty()).map(str::to_owned);
            let name = field(parts.next());
            let category = field(parts.next());
            let net = match parse_net(cidr) {
                Ok(n) => n,
                Err(why) => {
                    errors.push(LineError {
                        file: file.to_owned(),
                        line: i + 1,
                        why,
                    });
                    continue;
                }
            };
            let actor = Actor { name, category };
            let idx = match self.actors.iter().position(|a| **a == actor) {
                Some(i) => i,
                None => {
                    self.actors.push(Arc::new(actor));
                    self.actors.len() - 1
                }
            };
            self.insert(net, idx);
            self.entries += 1;
        }
        self.sort();
    }

    fn insert(&mut self, net: IpNet, idx: usize) {
        match net {
            IpNet::V4(n) => {
                let len = n.prefix_len();
                let key = u32::from(n.network());
                table(&mut self.v4, len).entry(key).or_insert(idx);
            }
            IpNet::V6(n) => {
                let len = n.prefix_len();
                let key = u128::from(n.network());
                table(&mut self.v6, len).entry(key).or_insert(idx);
            }
        }
    }

    fn sort(&mut self) {
        self.v4.sort_by_key(|t| std::cmp::Reverse(t.0));
        self.v6.sort_by_key(|t| std::cmp::Reverse(t.0));
    }

    /// Lines loaded.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The most specific entry holding `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<Arc<Actor>> {
        let idx = match ip.to_canonical() {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .iter()
                    .find_map(|(len, t)| t.get(&(a & mask32(*len))).copied())
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6
                    .iter()
                    .find_map(|(len, t)| t.get(&(a & mask128(*len))).copied())
            }
        }?;
        self.actors.get(idx).cloned()
    }
}

fn table<K>(tables: &mut Vec<(u8, HashMap<K, usize>)>, len: u8) -> &mut HashMap<K, usize> {
    let at = match tables.iter().position(|(l, _)| *l == len) {
        Some(i) => i,
        None => {
            tables.push((len, HashMap::new()));
            tables.len() - 1
        }
    };
    &mut tables[at].1
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a bare address. Host bits are cleared (a list that
/// writes `192.0.2.7/24` means the /24).
fn parse_net(s: &str) -> Result<IpNet, String> {
    if s.contains('/') {
        return s
            .parse::<IpNet>()
            .map(|n| n.trunc())
            .map_err(|_| format!("`{s}` is not a CIDR (expected CIDR[,name[,category]])"));
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{s}` is not an address or CIDR (expected CIDR[,name[,category]])"))
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// The lists in force (none until [`install`]).
static CURRENT: RwLock<Option<Arc<ScannerList>>> = RwLock::new(None);

/// Makes `list` the one every verdict reads.
pub fn install(list: ScannerList) {
    let mut cur = CURRENT.write().unwrap_or_else(|e| e.into_inner());
    *cur = Some(Arc::new(list));
}

/// The actor of `ip` in the lists in force.
pub fn lookup(ip: &str) -> Option<Arc<Actor>> {
    let ip: IpAddr = ip.parse().ok()?;
    let cur = CURRENT.read().unwrap_or_else(|e| e.into_inner());
    cur.as_ref()?.lookup(ip)
}

/// The allow lists in force (`--allow`, same format): addresses the blocklist and STIX
/// feeds never name, whatever their profile says (a partner's scanner, one's own
/// vulnerability scanner).
static ALLOW: RwLock<Option<Arc<ScannerList>>> = RwLock::new(None);

/// Makes `list` the allow list the feeds read.
pub fn install_allow(list: ScannerList) {
    let mut cur = ALLOW.write().unwrap_or_else(|e| e.into_inner());
    *cur = Some(Arc::new(list));
}

/// Whether `ip` is on the allow lists in force.
pub fn allowed(ip: &str) -> bool {
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    let cur = ALLOW.read().unwrap_or_else(|e| e.into_inner());
    cur.as_ref().is_some_and(|l| l.lookup(ip).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_load_and_the_most_specific_entry_wins() {
        let text = "# research scanners\n\
                    192.0.2.0/24,ExampleScan,research\n\
                    192.0.2.128/25,ExampleScan West,research  # a comment\n\
                    198.51.100.7\n\
                    2001:db8::/32,Six,search-engine\n\
                    203.0.113.0/24,,malicious\n\
                    not-an-address,Bad\n\
                    10.0.0.0/33,Bad\n";
        let mut list = ScannerList::default();
        let mut errors = Vec::new();
        list.add(text, "scanners.txt", &mut errors);
        assert_eq!(list.len(), 5);
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [7, 8]);
        assert!(
            errors[0]
                .to_string()
                .starts_with("scanners.txt:7: `not-an-address`")
        );
        let name = |ip: &str| {
            list.lookup(ip.parse().unwrap())
                .map(|a| (a.name.clone(), a.category.clone()))
        };
        assert_eq!(
            name("192.0.2.9"),
            Some((Some("ExampleScan".into()), Some("research".into())))
        );
        assert_eq!(
            name("192.0.2.200").unwrap().0.as_deref(),
            Some("ExampleScan West")
        );
        assert_eq!(name("198.51.100.7"), Some((None, None)));
        assert_eq!(name("198.51.100.8"), None);
        assert_eq!(
            name("::ffff:192.0.2.1").unwrap().0.as_deref(),
            Some("ExampleScan")
        );
        assert_eq!(
            name("2001:db8:1::5").unwrap().1.as_deref(),
            Some("search-engine")
        );
        assert!(
            list.lookup("203.0.113.5".parse().unwrap())
                .unwrap()
                .is_malicious()
        );
    }
}
