//! Which stored detections become alerts: a rule's conditions, its re-arm window (one alert
//! per source per rule per window, later changes counted and folded into the next alert)
//! and its digest window (one message per window instead of one per source).
//!
//! Everything here is a pure function of the detections in id order and the state saved
//! with a sink's cursor, so a sink that restarts from its cursor decides exactly as it
//! would have: the same alerts, with the same idempotency keys.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::spec::Rule;
use crate::store::DetectionRow;

/// A stored detection, as rules read it (the body the profiler wrote).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Detection {
    pub id: i64,
    pub ts: String,
    pub ip: String,
    pub changes: Vec<String>,
    pub new_source: bool,
    pub class: String,
    pub classification: String,
    pub actor: Option<String>,
    /// Where the source is (GeoIP at detection time; null without a database).
    pub asn: Option<u32>,
    pub as_org: Option<String>,
    pub country: Option<String>,
    pub tools: Vec<String>,
    pub campaign_id: Option<i64>,
    pub risk: Risk,
    pub deckies: Vec<String>,
    pub event_count: u64,
    pub last_seen: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Risk {
    pub score: i64,
    pub band: String,
}

impl Detection {
    /// The row's body; the row's own id, time and address win over the body's.
    pub fn from_row(row: &DetectionRow) -> Result<Self, serde_json::Error> {
        let mut d: Detection = serde_json::from_str(&row.body)?;
        d.id = row.id;
        d.ts.clone_from(&row.ts);
        d.ip.clone_from(&row.ip);
        Ok(d)
    }

    /// The detection's time in Unix nanoseconds (0 when unreadable: it then never falls
    /// inside a window that started later).
    pub fn ts_ns(&self) -> i64 {
        crate::timefmt::parse_rfc3339_ns(&self.ts).unwrap_or(0)
    }
}

/// Whether `d` satisfies every condition `r` sets.
pub fn matches(r: &Rule, d: &Detection) -> bool {
    if r.min_risk.is_some_and(|m| d.risk.score < m) {
        return false;
    }
    if !r.on.is_empty()
        && !r
            .on
            .iter()
            .any(|o| (o == "new_source" && d.new_source) || d.changes.iter().any(|c| c == o))
    {
        return false;
    }
    if !r.classification.is_empty() && !r.classification.contains(&d.classification) {
        return false;
    }
    if !r.tools.is_empty() && !d.tools.iter().any(|t| r.tools.contains(t)) {
        return false;
    }
    if !r.deckies.is_empty() && !d.deckies.iter().any(|t| r.deckies.contains(t)) {
        return false;
    }
    true
}

/// One (rule, source)'s window: when it last alerted and what it has folded since.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rearm {
    pub last_alert_ns: i64,
    pub folded: u64,
    pub folded_changes: BTreeSet<String>,
}

/// What was folded into an alert: detections held back by the re-arm window since the
/// source's previous alert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Folded {
    pub count: u64,
    pub changes: BTreeSet<String>,
}

/// An alert one rule raised for one detection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// The same for every retry and restart: `decnet:RULE:DETECTION_ID`.
    pub idempotency_key: String,
    pub rule: String,
    pub detection: Detection,
    pub folded: Option<Folded>,
}

impl Alert {
    fn new(r: &Rule, d: &Detection, folded: Option<Folded>) -> Self {
        Alert {
            idempotency_key: format!("decnet:{}:{}", r.name, d.id),
            rule: r.name.clone(),
            detection: d.clone(),
            folded,
        }
    }
}

/// Re-arm windows of every (rule, source) of one sink; `dirty` lists those changed since
/// the last commit.
#[derive(Debug, Default)]
pub struct Windows {
    pub map: HashMap<(String, String), Rearm>,
    pub dirty: BTreeSet<(String, String)>,
}

impl Windows {
    /// Decides rule `r` on `d`: an alert, or None when `d` does not match or is folded into
    /// the source's open window.
    pub fn decide(&mut self, r: &Rule, d: &Detection) -> Option<Alert> {
        if !matches(r, d) {
            return None;
        }
        let key = (r.name.clone(), d.ip.clone());
        let ts = d.ts_ns();
        // Without a re-arm window every match alerts, so there is nothing to remember (nor
        // to write with each commit: one row per alert, for every sink). A window left from
        // an earlier setting still hands over what it folded.
        if r.rearm_ns == 0 && !self.map.contains_key(&key) {
            return Some(Alert::new(r, d, None));
        }
        let w = self.map.entry(key.clone()).or_default();
        self.dirty.insert(key);
        let open = w.last_alert_ns != 0 && r.rearm_ns > 0 && ts < w.last_alert_ns + r.rearm_ns;
        if open {
            w.folded += 1;
            w.folded_changes.extend(d.changes.iter().cloned());
            return None;
        }
        let folded = (w.folded > 0).then(|| Folded {
            count: w.folded,
            changes: std::mem::take(&mut w.folded_changes),
        });
        *w = Rearm {
            last_alert_ns: ts.max(1),
            folded: 0,
            folded_changes: BTreeSet::new(),
        };
        Some(Alert::new(r, d, folded))
    }

    /// The changed windows, to commit with the cursor.
    pub fn take_dirty(&mut self) -> Vec<(String, String, Rearm)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|k| {
                let w = self.map.get(&k)?.clone();
                Some((k.0, k.1, w))
            })
            .collect()
    }
}

/// The most sources one digest lists by address (the rest are counted).
pub const DIGEST_LIST_MAX: usize = 500;

/// A rule's open digest: the alerts of one window, sent as one message when it closes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    pub rule: String,
    /// The window, Unix nanoseconds: `[start, start + digest_ns)`.
    pub start_ns: i64,
    pub end_ns: i64,
    /// Alerts in the window (also those beyond the listed ones).
    pub count: u64,
    /// The first [`DIGEST_LIST_MAX`] alerts' detections, one per source (the latest).
    pub sources: Vec<Detection>,
}

impl Digest {
    /// The same for every retry and restart: `decnet:RULE:digest:START_NS`.
    pub fn idempotency_key(&self) -> String {
        format!("decnet:{}:digest:{}", self.rule, self.start_ns)
    }

    fn add(&mut self, a: Alert) {
        self.count += 1;
        if let Some(s) = self.sources.iter_mut().find(|s| s.ip == a.detection.ip) {
            *s = a.detection;
        } else if self.sources.len() < DIGEST_LIST_MAX {
            self.sources.push(a.detection);
        }
    }
}

/// Puts `a` into rule `r`'s digest; returns the digest it closes when `a` belongs to a later
/// window.
pub fn into_digest(open: &mut Option<Digest>, r: &Rule, a: Alert) -> Option<Digest> {
    let ts = a.detection.ts_ns();
    let start = ts - ts.rem_euclid(r.digest_ns.max(1));
    let closed = match open {
        Some(d) if d.start_ns == start => None,
        Some(_) => open.take(),
        None => None,
    };
    open.get_or_insert_with(|| Digest {
        rule: r.name.clone(),
        start_ns: start,
        end_ns: start + r.digest_ns,
        count: 0,
        sources: Vec::new(),
    })
    .add(a);
    closed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(min_risk: Option<i64>, on: &[&str], rearm_min: i64) -> Rule {
        Rule {
            name: "r".into(),
            min_risk,
            on: on.iter().map(|s| s.to_string()).collect(),
            classification: Vec::new(),
            tools: Vec::new(),
            deckies: Vec::new(),
            sinks: vec!["s".into()],
            rearm_ns: rearm_min * 60_000_000_000,
            digest_ns: 0,
        }
    }

    fn det(id: i64, ip: &str, secs: i64, score: i64, changes: &[&str]) -> Detection {
        Detection {
            id,
            ts: crate::timefmt::rfc3339_ns(secs * 1_000_000_000),
            ip: ip.into(),
            changes: changes.iter().map(|s| s.to_string()).collect(),
            risk: Risk {
                score,
                band: "medium".into(),
            },
            ..Detection::default()
        }
    }

    #[test]
    fn conditions() {
        let mut d = det(1, "10.0.0.1", 100, 30, &["tools"]);
        d.tools = vec!["nmap".into()];
        d.classification = "suspicious".into();
        d.deckies = vec!["web".into()];
        assert!(matches(&rule(Some(25), &[], 60), &d));
        assert!(!matches(&rule(Some(31), &[], 60), &d));
        assert!(matches(&rule(None, &["class", "tools"], 60), &d));
        assert!(!matches(&rule(None, &["campaign"], 60), &d));
        assert!(!matches(&rule(None, &["new_source"], 60), &d));
        d.new_source = true;
        assert!(matches(&rule(None, &["new_source"], 60), &d));
        let mut r = rule(None, &[], 60);
        r.classification = vec!["malicious".into()];
        assert!(!matches(&r, &d));
        r.classification.push("suspicious".into());
        r.tools = vec!["masscan".into()];
        assert!(!matches(&r, &d));
        r.tools.push("nmap".into());
        r.deckies = vec!["db".into()];
        assert!(!matches(&r, &d));
        r.deckies.push("web".into());
        assert!(matches(&r, &d));
    }

    #[test]
    fn one_alert_per_window_and_the_rest_folded_into_the_next() {
        let r = rule(Some(25), &[], 60);
        let mut w = Windows::default();
        let a = w
            .decide(&r, &det(1, "10.0.0.1", 1000, 30, &["class"]))
            .unwrap();
        assert_eq!(a.idempotency_key, "decnet:r:1");
        assert_eq!(a.folded, None);
        // Below the threshold: not an alert, not folded either.
        assert!(
            w.decide(&r, &det(2, "10.0.0.1", 1010, 10, &["risk_band"]))
                .is_none()
        );
        // Inside the hour: folded.
        assert!(
            w.decide(&r, &det(3, "10.0.0.1", 1100, 40, &["tools"]))
                .is_none()
        );
        assert!(
            w.decide(&r, &det(4, "10.0.0.1", 1200, 55, &["risk_band"]))
                .is_none()
        );
        // Another source has its own window.
        assert!(
            w.decide(&r, &det(5, "10.0.0.2", 1200, 55, &["class"]))
                .is_some()
        );
        let next = w
            .decide(&r, &det(6, "10.0.0.1", 1000 + 3600, 60, &["class"]))
            .unwrap();
        let folded = next.folded.unwrap();
        assert_eq!(folded.count, 2);
        assert_eq!(
            folded.changes.into_iter().collect::<Vec<_>>(),
            vec!["risk_band".to_string(), "tools".to_string()]
        );
        assert_eq!(w.take_dirty().len(), 2);
        assert!(w.take_dirty().is_empty());
        // rearm 0: every matching detection alerts.
        let every = rule(None, &[], 0);
        let mut w = Windows::default();
        assert!(w.decide(&every, &det(1, "a", 1, 0, &["class"])).is_some());
        assert!(w.decide(&every, &det(2, "a", 1, 0, &["tools"])).is_some());
        assert!(w.take_dirty().is_empty(), "no window to write");
        // A window folded under an earlier re-arm setting is handed over once.
        w.map.insert(
            ("r".into(), "b".into()),
            Rearm {
                last_alert_ns: 1,
                folded: 2,
                folded_changes: BTreeSet::from(["tools".to_string()]),
            },
        );
        let a = w.decide(&every, &det(3, "b", 5, 0, &["class"])).unwrap();
        assert_eq!(a.folded.map(|f| f.count), Some(2));
        assert_eq!(w.take_dirty().len(), 1);
    }

    #[test]
    fn digests_close_when_a_later_window_starts() {
        let mut r = rule(None, &[], 0);
        r.digest_ns = 60_000_000_000;
        let mut w = Windows::default();
        let mut open = None;
        for (id, ip, secs) in [(1, "a", 60), (2, "b", 70), (3, "a", 110)] {
            let a = w.decide(&r, &det(id, ip, secs, 0, &["class"])).unwrap();
            assert!(into_digest(&mut open, &r, a).is_none());
        }
        let a = w.decide(&r, &det(4, "c", 125, 0, &["class"])).unwrap();
        let closed = into_digest(&mut open, &r, a).unwrap();
        assert_eq!(
            (closed.start_ns, closed.end_ns),
            (60_000_000_000, 120_000_000_000)
        );
        assert_eq!(closed.count, 3);
        assert_eq!(closed.sources.len(), 2);
        assert_eq!(closed.sources[0].id, 3, "the source's latest detection");
        assert_eq!(closed.idempotency_key(), "decnet:r:digest:60000000000");
        assert_eq!(open.unwrap().count, 1);
    }
}
