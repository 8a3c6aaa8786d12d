//! Feeds for blocking and sharing: the sources worth acting on, as a blocklist (text, CSV,
//! JSON) and as a STIX 2.1 bundle.
//!
//! - `blocklist`: one address per line (or row, or object), each with an expiry;
//! - `stix`: indicators, observations, sightings and campaigns;
//! - `export`: logs and detections as NDJSON (decnet's JSON or ECS), for backfills.
//!
//! A feed never names a source that is `benign` (a known scanner), `spoofable` (it never
//! completed a handshake, so its address may be forged: blocking it could block an
//! innocent), or on an allow list (`--allow`). Each profile is rendered from its stored
//! state, so the feeds follow the current known-scanner and allow lists.
//!
//! Stage 9 (feed) of the pipeline: docs/architecture.md.

pub mod blocklist;
pub mod export;
pub mod stix;

use serde::{Deserialize, Serialize};

use crate::{
    profile::state::IpState,
    store::{Store, StoreError},
};

/// `2026-12-01T00:00:00Z`, or an age before `now`: `90m`, `24h`, `30d`.
pub fn parse_since(s: &str, now: i64) -> Option<i64> {
    if let Some(ns) = crate::timefmt::parse_rfc3339_ns(s) {
        return Some(ns);
    }
    // The unit is one ASCII letter; anything else (a multi-byte last character) is no age.
    let cut = s.len().checked_sub(1).filter(|c| s.is_char_boundary(*c))?;
    let (n, unit) = s.split_at(cut);
    let n: i64 = n
        .parse()
        .ok()
        .filter(|n| *n >= 0 && *n <= 36_500 * 24 * 60)?;
    let unit_ns = match unit {
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return None,
    };
    Some(now - n * unit_ns)
}

/// [`parse_since`] from the present.
pub fn since(s: &str) -> Option<i64> {
    parse_since(s, crate::timefmt::unix_now_ns())
}

/// What a feed asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub min_risk: i64,
    /// Only sources seen at or after this Unix time (ns).
    pub since_ns: i64,
    /// An entry expires this long after the source was last seen.
    pub ttl_ns: i64,
    pub limit: i64,
}

/// One source in a feed: the verdict fields of its profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub ip: String,
    pub first_seen: String,
    pub last_seen: String,
    pub event_count: u64,
    pub class: String,
    pub classification: String,
    pub actor: Option<String>,
    pub spoofable: bool,
    pub risk: crate::alert::rule::Risk,
    pub tools: Vec<String>,
    pub deckies: Vec<String>,
    pub campaign_id: Option<i64>,
    /// From the GeoIP databases in force (`--geoip-db`); null without.
    #[serde(default)]
    pub asn: Option<u32>,
    #[serde(default)]
    pub as_org: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    /// `last_seen` plus the feed's time to live.
    #[serde(default)]
    pub expires: String,
}

/// How many candidates each rule kept out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Excluded {
    pub benign: u64,
    pub spoofable: u64,
    pub allowed: u64,
}

/// A feed's entries, riskiest first, and what was kept out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    pub entries: Vec<Entry>,
    pub excluded: Excluded,
}

/// The sources `f` selects, rendered from their stored states.
pub async fn select(store: &Store, f: &Filter) -> Result<Selection, StoreError> {
    let since = crate::timefmt::rfc3339_ns(f.since_ns);
    let rows = store.feed_candidates(f.min_risk, &since, f.limit).await?;
    let mut out = Selection::default();
    for (ip, state) in rows {
        let Ok(st) = serde_json::from_str::<IpState>(&state) else {
            continue;
        };
        let v = st.verdict(&ip);
        let Ok(mut e) = serde_json::from_value::<Entry>(st.summary(&ip, &v)) else {
            continue;
        };
        // The stored score is the last profiler's; the lists in force may have lowered it.
        if e.risk.score < f.min_risk {
            continue;
        }
        let last = crate::timefmt::parse_rfc3339_ns(&e.last_seen).unwrap_or(0);
        if last < f.since_ns {
            continue;
        }
        if e.classification == "benign" {
            out.excluded.benign += 1;
            continue;
        }
        if e.spoofable {
            out.excluded.spoofable += 1;
            continue;
        }
        if crate::intel::scanners::allowed(&ip) {
            out.excluded.allowed += 1;
            continue;
        }
        e.expires = crate::timefmt::rfc3339_ns(last.saturating_add(f.ttl_ns));
        out.entries.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    const DAY_NS: i64 = 86_400_000_000_000;

    #[test]
    fn since() {
        let now = 10 * DAY_NS;
        assert_eq!(parse_since("1d", now), Some(9 * DAY_NS));
        assert_eq!(parse_since("90m", now), Some(now - 90 * 60_000_000_000));
        assert_eq!(parse_since("1970-01-02T00:00:00Z", now), Some(DAY_NS));
        for bad in [
            "",
            "d",
            "-1d",
            "5w",
            "1.5h",
            "yesterday",
            "\u{80}",
            "1\u{e9}",
        ] {
            assert_eq!(parse_since(bad, now), None, "{bad}");
        }
    }
}
