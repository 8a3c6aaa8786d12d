//! Detections: what a change in a source's headline (class, classification, tools,
//! campaign, risk band) announces to the stream, the API and the alert sinks.

use super::{
    state::{Headline, IpState},
    verdict::Verdict,
};

/// The detection for a change from `before` to `now`, or None when a new source has nothing
/// worth announcing yet (unknown class, no tools, no campaign, low risk).
pub(crate) fn detection(
    ip: &str,
    st: &IpState,
    before: Option<&Headline>,
    now: &Headline,
    v: &Verdict,
) -> Option<serde_json::Value> {
    let quiet = Headline {
        class: "unknown".into(),
        tools: Vec::new(),
        campaign_id: None,
        band: "low".into(),
        classification: "unknown".into(),
    };
    let base = before.unwrap_or(&quiet);
    let mut changes = Vec::new();
    if base.class != now.class {
        changes.push("class");
    }
    if base.tools != now.tools {
        changes.push("tools");
    }
    if base.campaign_id != now.campaign_id {
        changes.push("campaign");
    }
    if base.band != now.band {
        changes.push("risk_band");
    }
    // A headline stored before classifications existed has none: not a change.
    if base.classification != now.classification && !base.classification.is_empty() {
        changes.push("classification");
    }
    if changes.is_empty() {
        return None;
    }
    Some(serde_json::json!({
        "ip": ip,
        "changes": changes,
        // The first announcement of this source (it may have been quiet before).
        "new_source": before.is_none_or(|b| *b == quiet),
        "class": now.class,
        "classification": now.classification,
        "actor": v.actor_name(),
        "asn": v.geo.asn,
        "as_org": v.geo.as_org,
        "country": v.geo.country,
        "tools": now.tools,
        "campaign_id": now.campaign_id,
        "risk": { "score": v.risk.score, "band": v.risk.band },
        "previous": before,
        // Which decoys it touched (alert rules can pick detections by decky).
        "deckies": st.deckies,
        "event_count": st.events,
        "last_seen": st.last_seen,
    }))
}
