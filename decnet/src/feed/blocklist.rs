//! The blocklist: one address per line, with an expiry, as plain text (firewall scripts,
//! external dynamic lists), CSV or JSON.

use serde_json::json;

use super::{Entry, Selection};

/// The formats a blocklist is served in.
pub const FORMATS: &[&str] = &["txt", "csv", "json"];

/// `# ` header lines, then `IP # expires=... risk=... class=...` per source.
pub fn txt(sel: &Selection, generated: &str, about: &str) -> String {
    let mut out = format!(
        "# decnet blocklist, generated {generated}; {about}; {} entries\n\
         # kept out: {} benign, {} spoofable, {} allow-listed\n",
        sel.entries.len(),
        sel.excluded.benign,
        sel.excluded.spoofable,
        sel.excluded.allowed
    );
    for e in &sel.entries {
        out.push_str(&format!(
            "{} # expires={} risk={} class={} classification={}\n",
            e.ip, e.expires, e.risk.score, e.class, e.classification
        ));
    }
    out
}

/// A header row, then one row per source (tools joined by `;`).
pub fn csv(sel: &Selection) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "ip",
        "expires",
        "risk",
        "band",
        "classification",
        "class",
        "tools",
        "campaign_id",
        "first_seen",
        "last_seen",
        "country",
        "asn",
        "as_org",
    ])?;
    for e in &sel.entries {
        w.write_record(row(e))?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn row(e: &Entry) -> [String; 13] {
    [
        e.ip.clone(),
        e.expires.clone(),
        e.risk.score.to_string(),
        e.risk.band.clone(),
        e.classification.clone(),
        e.class.clone(),
        e.tools.join(";"),
        e.campaign_id.map(|c| c.to_string()).unwrap_or_default(),
        e.first_seen.clone(),
        e.last_seen.clone(),
        e.country.clone().unwrap_or_default(),
        e.asn.map(|a| a.to_string()).unwrap_or_default(),
        e.as_org.clone().unwrap_or_default(),
    ]
}

/// `{generated, filter, count, excluded, entries: [...]}`.
pub fn json(sel: &Selection, generated: &str, filter: serde_json::Value) -> serde_json::Value {
    json!({
        "generated": generated,
        "filter": filter,
        "count": sel.entries.len(),
        "excluded": sel.excluded,
        "entries": sel.entries.iter().map(|e| json!({
            "ip": e.ip,
            "expires": e.expires,
            "risk": e.risk,
            "classification": e.classification,
            "class": e.class,
            "tools": e.tools,
            "campaign_id": e.campaign_id,
            "first_seen": e.first_seen,
            "last_seen": e.last_seen,
            "country": e.country,
            "asn": e.asn,
            "as_org": e.as_org,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{alert::rule::Risk, feed::Excluded};

    fn sel() -> Selection {
        Selection {
            entries: vec![Entry {
                ip: "203.0.113.7".into(),
                first_seen: "2026-12-01T00:00:00Z".into(),
                last_seen: "2026-12-02T00:00:00Z".into(),
                event_count: 10,
                class: "scanning".into(),
                classification: "suspicious".into(),
                actor: Some("Acme, Inc.".into()),
                spoofable: false,
                risk: Risk {
                    score: 55,
                    band: "high".into(),
                },
                tools: vec!["nmap".into(), "masscan".into()],
                deckies: vec!["web".into()],
                campaign_id: Some(3),
                asn: Some(64500),
                as_org: Some("Example, \"Net\"".into()),
                country: Some("NL".into()),
                expires: "2026-12-09T00:00:00Z".into(),
            }],
            excluded: Excluded {
                benign: 1,
                spoofable: 2,
                allowed: 3,
            },
        }
    }

    #[test]
    fn formats() {
        let t = txt(&sel(), "now", "min_risk 50");
        assert!(
            t.contains("# kept out: 1 benign, 2 spoofable, 3 allow-listed"),
            "{t}"
        );
        assert!(
            t.contains("\n203.0.113.7 # expires=2026-12-09T00:00:00Z risk=55 "),
            "{t}"
        );
        let c = csv(&sel()).unwrap();
        let mut r = ::csv::Reader::from_reader(c.as_bytes());
        let rec = r.records().next().unwrap().unwrap();
        assert_eq!(&rec[0], "203.0.113.7");
        assert_eq!(&rec[6], "nmap;masscan");
        assert_eq!(
            (&rec[10], &rec[11], &rec[12]),
            ("NL", "64500", "Example, \"Net\"")
        );
        let j = json(&sel(), "now", serde_json::json!({}));
        assert_eq!(j["entries"][0]["ip"], "203.0.113.7");
        assert_eq!(j["excluded"]["allowed"], 3);
        assert_eq!(j["entries"][0]["asn"], 64500);
    }
}
