//! Campaigns: sources that act together.
//!
//! Rule: two sources are related when all of these hold
//! 1. they share a campaign key, fixed when first known (so one noisy packet later cannot
//!    move it; a template key is provisional until the source joins a campaign, and gives
//!    way once the source has tools or stops looking like a storm's): either
//!    - the same attributed tools and the same SYN fingerprint; or, for a source with no
//!      attributed tool,
//!    - the same packet template: a spoofed storm's sources ([`STORM_MAX_EVENTS`] packets
//!      or fewer each, no handshake ever completed) all send one of a few fixed packets.
//!      The template (`intel::tcp::syn_template`) is the first SYN's window, option layout (with values),
//!      destination port, initial TTL, and what is constant in it: the TCP timestamp value
//!      when it carries one (a stack draws a fresh one per connection), else the IP ID for
//!      a stack's options; a crafted SYN (no options, or MSS alone) needs no constant.
//!
//!    A source with neither has no key and never joins a campaign: an OS stack's
//!    fingerprint alone is shared by millions of unrelated hosts;
//! 2. their activity lies within [`WINDOW_NS`] of each other;
//! 3. for a tool key, they touched at least one decoy in common, and
//! 4. their port ranges either overlap by at least half of the smaller one (the same
//!    targets) or meet, with at most max(16, 2 % of the larger range) ports between them or
//!    shared at the seam (one range split between workers, as distributed scanners do).
//!    A template key already holds the one port, and a storm spreads over every sensor's
//!    decoys, so neither is asked of it; instead a storm needs [`STORM_MIN_SOURCES`]
//!    sources before it is one, and then takes in every related source at once.
//!
//! A campaign is a connected group of related sources; it needs two members, so a lone
//! scanner is never one. Membership is sticky: a source in a campaign stays in it, and a
//! source related to members of two campaigns merges them into the older one.
//!
//! Matching reads only small per-source summaries kept in memory ([`Index`]): per key, by
//! last activity, newest first, stopping at the time window and after [`MAX_COMPARE`]
//! comparisons, so a batch costs at most that many comparisons per source touched.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

pub(crate) use super::state::is_template_key;
use super::state::{IpState, TEMPLATE_KEY};

/// Sources active within 30 minutes of each other can be one campaign.
pub(crate) const WINDOW_NS: i64 = 30 * 60 * 1_000_000_000;
/// Comparisons per source per batch, at most.
pub(crate) const MAX_COMPARE: usize = 512;
/// Decoys listed in a campaign summary.
const MAX_CAMPAIGN_DECKIES: usize = 64;
/// Members listed in a campaign summary (the attackers table has them all).
pub(crate) const MAX_LISTED_MEMBERS: usize = 200;

/// A source with more packets than this is no spoofed-storm member (those send one or two).
pub(crate) const STORM_MAX_EVENTS: u64 = 4;
/// Sources that must share a template before it is a storm: two scanners whose first SYN
/// happens to look alike are not one, a storm is thousands.
pub(crate) const STORM_MIN_SOURCES: usize = 8;

/// Fixes or revises `st`'s campaign key as the rule above says: a template key holds only
/// while the source still looks like a storm's and is in no campaign yet; a tool key, once
/// set, for good. False: it has none (and must not be in the index).
pub(crate) fn refresh_key(st: &mut IpState) -> bool {
    let provisional =
        st.campaign_id.is_none() && st.campaign_key.as_deref().is_some_and(is_template_key);
    if st.campaign_key.is_none() || provisional {
        st.campaign_key = key(st, &crate::intel::tools::decide(st.tool_votes.iter()));
    }
    st.campaign_key.is_some()
}

/// The campaign key of a source: its tools and fingerprint once tools are attributed, else
/// its packet template while it looks like one of a spoofed storm's addresses.
pub fn key(st: &IpState, tools: &[String]) -> Option<String> {
    if tools.is_empty() {
        let t = st.template.as_deref()?;
        let storm_like = st.spoofable() && st.events <= STORM_MAX_EVENTS;
        return storm_like.then(|| format!("{TEMPLATE_KEY}{t}"));
    }
    let mut t = tools.to_vec();
    t.sort();
    Some(format!(
        "{}|{}",
        t.join("+"),
        st.tcp_fingerprint.as_deref().unwrap_or("")
    ))
}

/// What matching needs to know about one source.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub ip: Arc<str>,
    pub first_ns: i64,
    pub last_ns: i64,
    /// Shared with every other summary naming the same decoys (see [`Index`]).
    pub deckies: Arc<[Arc<str>]>,
    pub port_min: u16,
    pub port_max: u16,
    pub campaign: Option<i64>,
}

impl Summary {
    fn span(&self) -> u32 {
        (self.port_max - self.port_min) as u32 + 1
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Evidence {
    SharedTargets,
    SplitRange,
    SharedTemplate,
}

impl Evidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::SharedTargets => "overlapping targets",
            Evidence::SplitRange => "one port range split between sources",
            Evidence::SharedTemplate => {
                "one packet template from many addresses, none completing a handshake \
                 (a spoofed storm)"
            }
        }
    }
}

/// Conditions 2 to 4 of the module rule for two sources under one key (the key is the
/// index's business; `template`: it is a packet template's).
pub(crate) fn relate(a: &Summary, b: &Summary, template: bool) -> Option<Evidence> {
    if a.first_ns - WINDOW_NS > b.last_ns || b.first_ns - WINDOW_NS > a.last_ns {
        return None;
    }
    if template {
        return Some(Evidence::SharedTemplate);
    }
    if !a.deckies.iter().any(|d| b.deckies.contains(d)) {
        return None;
    }
    let lo = a.port_min.max(b.port_min) as i64;
    let hi = a.port_max.min(b.port_max) as i64;
    // Ports between the two ranges; negative: how many they share.
    let between = lo - hi - 1;
    if between < 0 && -between * 2 >= a.span().min(b.span()) as i64 {
        return Some(Evidence::SharedTargets);
    }
    // A small gap, or a small overlap (retries at the seams), is still one split range.
    let slack = (a.span().max(b.span()) / 50).max(16) as i64;
    (between.abs() <= slack).then_some(Evidence::SplitRange)
}

/// One campaign. Members are kept in memory only: the attackers' states carry their
/// campaign id, and the index is rebuilt from them on start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Campaign {
    pub id: i64,
    pub key: String,
    pub first_ns: i64,
    pub last_ns: i64,
    pub port_min: u16,
    pub port_max: u16,
    pub deckies: BTreeSet<String>,
    pub evidence: BTreeSet<String>,
    #[serde(skip)]
    pub members: BTreeSet<String>,
}

impl Campaign {
    pub(crate) fn new(id: i64, key: &str, s: &Summary) -> Campaign {
        let mut c = Campaign {
            id,
            key: key.to_owned(),
            first_ns: s.first_ns,
            last_ns: s.last_ns,
            port_min: s.port_min,
            port_max: s.port_max,
            deckies: BTreeSet::new(),
            evidence: BTreeSet::new(),
            members: BTreeSet::new(),
        };
        c.absorb(s);
        c
    }

    /// Takes in one member's summary.
    pub(crate) fn absorb(&mut self, s: &Summary) {
        if !self.members.contains(&*s.ip) {
            self.members.insert(s.ip.to_string());
        }
        self.widen(s);
    }

    /// Widens the campaign by the summary of one of its members.
    pub(crate) fn widen(&mut self, s: &Summary) {
        self.first_ns = self.first_ns.min(s.first_ns);
        self.last_ns = self.last_ns.max(s.last_ns);
        self.port_min = self.port_min.min(s.port_min);
        self.port_max = self.port_max.max(s.port_max);
        for d in s.deckies.iter() {
            if self.deckies.len() < MAX_CAMPAIGN_DECKIES && !self.deckies.contains(&**d) {
                self.deckies.insert(d.to_string());
            }
        }
    }

    /// The JSON stored in `campaigns.summary` and served by the API: the campaign's own
    /// fields (read back on start) plus readable ones. Members are listed up to
    /// [`MAX_LISTED_MEMBERS`]; `member_count` is exact.
    pub(crate) fn summary(&self) -> serde_json::Value {
        let (tools, fingerprint, template) = match self.key.strip_prefix(TEMPLATE_KEY) {
            Some(t) => (Vec::new(), "", Some(t)),
            None => {
                let (tools, fp) = self.key.split_once('|').unwrap_or((&self.key, ""));
                (tools.split('+').collect::<Vec<_>>(), fp, None)
            }
        };
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            let extra = serde_json::json!({
                "kind": if template.is_some() { "spoofed_storm" } else { "tool" },
                "template": template,
                "tools": tools,
                "tcp_fingerprint": fingerprint,
                "members": self.members.iter().take(MAX_LISTED_MEMBERS).collect::<Vec<_>>(),
                "member_count": self.members.len(),
                "first_seen": crate::timefmt::rfc3339_ns(self.first_ns),
                "last_seen": crate::timefmt::rfc3339_ns(self.last_ns),
            });
            if let serde_json::Value::Object(e) = extra {
                o.extend(e);
            }
        }
        v
    }
}

/// The outcome of matching one source.
#[derive(Debug, Default)]
pub struct Found {
    /// The most recently active related source.
    pub newest: Option<Summary>,
    /// Campaigns the related sources belong to.
    pub campaigns: BTreeSet<i64>,
    pub evidence: BTreeSet<Evidence>,
    /// Every related source in no campaign yet (at most [`MAX_COMPARE`]).
    pub loose: Vec<Summary>,
}

/// One key's summaries by (last activity, address).
type ByLast = BTreeMap<(i64, Arc<str>), Summary>;

/// What matching reads of a source's state: when it was active, its decoys, its lowest and
/// highest port, and its campaign.
pub(crate) struct Facts<'a> {
    pub(crate) first_ns: i64,
    pub(crate) last_ns: i64,
    pub(crate) deckies: &'a [String],
    pub(crate) ports: (u16, u16),
    pub(crate) campaign: Option<i64>,
}

/// [`Facts`] as stored beside a keyed state (`attacker_behavior.match_facts`):
/// `[first_ns, last_ns, port_min, port_max, campaign_id, [decoys]]`.
type FactsRow = (i64, i64, u16, u16, Option<i64>, Vec<String>);

impl Facts<'_> {
    /// The stored form of a keyed source's facts (None: no key, or no port yet).
    pub(crate) fn encode(st: &IpState) -> Option<String> {
        st.campaign_key.as_ref()?;
        let row = (
            st.first_ns(),
            st.last_ns(),
            *st.ports.first()?,
            *st.ports.last()?,
            st.campaign_id,
            &st.deckies,
        );
        serde_json::to_string(&row).ok()
    }

    /// Reads [`encode`](Self::encode)'s text back and hands the facts to `f`.
    pub(crate) fn decode<R>(text: &str, f: impl FnOnce(&Facts<'_>) -> R) -> Option<R> {
        let (first_ns, last_ns, lo, hi, campaign, deckies): FactsRow =
            serde_json::from_str(text).ok()?;
        Some(f(&Facts {
            first_ns,
            last_ns,
            deckies: &deckies,
            ports: (lo, hi),
            campaign,
        }))
    }
}

/// Summaries of every keyed source, per key, ordered by last activity. It holds every
/// keyed source ever profiled (not only the states in memory), so its entries are kept
/// small: one allocation of each address, shared by its three places, and one of each
/// key and decoy name, shared by all the sources that carry it.
#[derive(Default)]
pub(crate) struct Index {
    by_key: HashMap<Arc<str>, ByLast>,
    /// ip -> (key, last_ns): where its summary sits.
    at: HashMap<Arc<str>, (Arc<str>, i64)>,
    /// Keys and decoy names, each held once.
    names: HashSet<Arc<str>>,
}

impl Index {
    fn intern(names: &mut HashSet<Arc<str>>, name: &str) -> Arc<str> {
        if let Some(n) = names.get(name) {
            return n.clone();
        }
        let n: Arc<str> = name.into();
        names.insert(n.clone());
        n
    }

    /// What matching needs to know of `ip` (None when it has touched no port yet: nothing to
    /// compare), with the address and decoy names this index holds already, so that
    /// [`upsert`](Self::upsert) allocates nothing for a source it knows.
    pub(crate) fn summary(&self, ip: &str, st: &IpState) -> Option<Summary> {
        Some(self.summary_of(
            ip,
            &Facts {
                first_ns: st.first_ns(),
                last_ns: st.last_ns(),
                deckies: &st.deckies,
                ports: (*st.ports.first()?, *st.ports.last()?),
                campaign: st.campaign_id,
            },
        ))
    }

    /// [`summary`](Self::summary) from the facts alone (the campaign pass reads only
    /// these of a stored state).
    pub(crate) fn summary_of(&self, ip: &str, f: &Facts<'_>) -> Summary {
        let held = self.get(ip);
        let deckies = match held {
            // Mostly the decoys it had: their list is shared as it is.
            Some(h)
                if h.deckies
                    .iter()
                    .map(|d| &**d)
                    .eq(f.deckies.iter().map(String::as_str)) =>
            {
                h.deckies.clone()
            }
            _ => f
                .deckies
                .iter()
                .map(|d| {
                    self.names
                        .get(d.as_str())
                        .cloned()
                        .unwrap_or_else(|| d.as_str().into())
                })
                .collect(),
        };
        Summary {
            ip: held.map_or_else(|| ip.into(), |h| h.ip.clone()),
            first_ns: f.first_ns,
            last_ns: f.last_ns,
            deckies,
            port_min: f.ports.0,
            port_max: f.ports.1,
            campaign: f.campaign,
        }
    }

    pub(crate) fn upsert(&mut self, key: &str, mut s: Summary) {
        let mut same_key = None;
        if let Some((ip, (old_key, old_last))) = self.at.remove_entry(&*s.ip) {
            if let Some(m) = self.by_key.get_mut(&old_key) {
                m.remove(&(old_last, ip.clone()));
            }
            s.ip = ip;
            // A source keeps its key: no need to look the name up again.
            if *old_key == *key {
                same_key = Some(old_key);
            }
        }
        let shared = s
            .deckies
            .iter()
            .all(|d| self.names.get(&**d).is_some_and(|n| Arc::ptr_eq(n, d)));
        if !shared {
            s.deckies = s
                .deckies
                .iter()
                .map(|d| Self::intern(&mut self.names, d))
                .collect();
        }
        let key = same_key.unwrap_or_else(|| Self::intern(&mut self.names, key));
        self.at.insert(s.ip.clone(), (key.clone(), s.last_ns));
        self.by_key
            .entry(key)
            .or_default()
            .insert((s.last_ns, s.ip.clone()), s);
    }

    /// Forgets a source (its key is gone).
    pub(crate) fn remove(&mut self, ip: &str) {
        if let Some((ip, (key, last))) = self.at.remove_entry(ip)
            && let Some(m) = self.by_key.get_mut(&key)
        {
            m.remove(&(last, ip));
        }
    }

    pub(crate) fn get(&self, ip: &str) -> Option<&Summary> {
        let (ip, (key, last)) = self.at.get_key_value(ip)?;
        self.by_key.get(key)?.get(&(*last, ip.clone()))
    }

    pub(crate) fn set_campaign(&mut self, ip: &str, id: i64) {
        if let Some((ip, (key, last))) = self.at.get_key_value(ip)
            && let Some(s) = self
                .by_key
                .get_mut(key)
                .and_then(|m| m.get_mut(&(*last, ip.clone())))
        {
            s.campaign = Some(id);
        }
    }

    /// What the sources related to `me` under `key` have in common with it.
    pub(crate) fn matches(&self, key: &str, me: &Summary) -> Found {
        let mut found = Found::default();
        let Some(m) = self.by_key.get(key) else {
            return found;
        };
        let template = is_template_key(key);
        for (compared, ((last, ip), other)) in m.iter().rev().enumerate() {
            if compared >= MAX_COMPARE || *last < me.first_ns - WINDOW_NS {
                break;
            }
            if *ip == me.ip {
                continue;
            }
            if let Some(e) = relate(me, other, template) {
                if found.newest.is_none() {
                    found.newest = Some(other.clone());
                }
                found.campaigns.extend(other.campaign);
                found.evidence.insert(e);
                if other.campaign.is_none() {
                    found.loose.push(other.clone());
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60 * 1_000_000_000;

    fn s(ip: &str, t: i64, deckies: &[&str], ports: (u16, u16)) -> Summary {
        Summary {
            ip: ip.into(),
            first_ns: t,
            last_ns: t + 5 * MIN,
            deckies: deckies.iter().map(|d| Arc::from(*d)).collect(),
            port_min: ports.0,
            port_max: ports.1,
            campaign: None,
        }
    }

    #[test]
    fn rule() {
        let a = s("a", 0, &["web"], (1, 1000));
        // Split range, adjacent.
        assert_eq!(
            relate(&a, &s("b", MIN, &["web"], (1001, 2000)), false),
            Some(Evidence::SplitRange)
        );
        // The same targets.
        assert_eq!(
            relate(&a, &s("b", MIN, &["web", "db"], (1, 1024)), false),
            Some(Evidence::SharedTargets)
        );
        // Too far apart in time, no shared decoy, or unrelated port ranges.
        assert_eq!(
            relate(&a, &s("b", 40 * MIN, &["web"], (1001, 2000)), false),
            None
        );
        assert_eq!(relate(&a, &s("b", MIN, &["db"], (1001, 2000)), false), None);
        assert_eq!(
            relate(&a, &s("b", MIN, &["web"], (5000, 6000)), false),
            None
        );
        // A sliver of overlap at the seam is still a split; a large partial one is neither.
        assert_eq!(
            relate(&a, &s("b", MIN, &["web"], (990, 3000)), false),
            Some(Evidence::SplitRange)
        );
        assert_eq!(relate(&a, &s("b", MIN, &["web"], (900, 3000)), false), None);
        // One template: a storm over other decoys is still one, but not hours apart.
        assert_eq!(
            relate(&a, &s("b", MIN, &["db"], (1, 1000)), true),
            Some(Evidence::SharedTemplate)
        );
        assert_eq!(
            relate(&a, &s("b", 40 * MIN, &["web"], (1, 1000)), true),
            None
        );
    }

    #[test]
    fn index_matches_newest_first_within_the_window() {
        let mut ix = Index::default();
        ix.upsert("k", s("old", 0, &["web"], (1, 100)));
        ix.upsert("k", s("new", 60 * MIN, &["web"], (1, 100)));
        ix.upsert("other", s("x", 60 * MIN, &["web"], (1, 100)));
        let me = s("me", 61 * MIN, &["web"], (50, 60));
        let m = ix.matches("k", &me);
        assert_eq!(&*m.newest.unwrap().ip, "new");
        assert_eq!(m.evidence.len(), 1);
        // Moving a summary keeps one entry per IP.
        let mut old = s("old", 62 * MIN, &["web"], (1, 100));
        old.campaign = Some(3);
        ix.upsert("k", old);
        assert_eq!(ix.at.len(), 3);
        let m = ix.matches("k", &me);
        assert_eq!(&*m.newest.unwrap().ip, "old");
        assert_eq!(m.campaigns.into_iter().collect::<Vec<_>>(), [3]);
        ix.set_campaign("old", 7);
        assert_eq!(ix.get("old").unwrap().campaign, Some(7));
    }
}
