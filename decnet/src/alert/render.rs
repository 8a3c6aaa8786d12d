//! Alerts and digests as the messages sinks send: decnet's JSON, a Slack payload, an
//! Elastic Common Schema document, and an RFC 5424 syslog line.

use serde_json::{Value, json};

use super::rule::{Alert, Detection, Digest};

/// The ECS version the documents follow.
pub const ECS_VERSION: &str = "8.17.0";

/// RFC 5424 SD-ID of decnet's structured data. 32473 is the private enterprise number
/// RFC 5612 reserves for documentation and examples; decnet has none of its own.
pub const SD_ID: &str = "decnet@32473";

/// One message for a sink.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Alert(Box<Alert>),
    Digest(Digest),
}

impl Message {
    pub fn idempotency_key(&self) -> String {
        match self {
            Message::Alert(a) => a.idempotency_key.clone(),
            Message::Digest(d) => d.idempotency_key(),
        }
    }

    /// The message's time, RFC 3339: the detection's, or the digest window's end.
    pub fn ts(&self) -> String {
        match self {
            Message::Alert(a) => a.detection.ts.clone(),
            Message::Digest(d) => crate::timefmt::rfc3339_ns(d.end_ns),
        }
    }

    /// One line a person reads (Slack's text, syslog's summary).
    pub fn summary(&self) -> String {
        match self {
            Message::Alert(a) => {
                let d = &a.detection;
                let mut s = format!("decnet alert `{}`: {}", a.rule, describe(d));
                if !d.changes.is_empty() {
                    s.push_str(&format!("; changed: {}", d.changes.join(", ")));
                }
                if let Some(f) = &a.folded {
                    s.push_str(&format!("; {} earlier change(s) folded in", f.count));
                }
                s
            }
            Message::Digest(g) => {
                let top: Vec<String> = g.sources.iter().take(10).map(describe).collect();
                format!(
                    "decnet digest `{}`: {} alert(s) from {} source(s) between {} and {}: {}{}",
                    g.rule,
                    g.count,
                    g.sources.len(),
                    crate::timefmt::rfc3339_ns(g.start_ns),
                    crate::timefmt::rfc3339_ns(g.end_ns),
                    top.join("; "),
                    if g.sources.len() > 10 { "; ..." } else { "" }
                )
            }
        }
    }

    /// [`json`](Self::json) as text. An alert is written straight from its structs, with
    /// no `Value` built on the way: one per message per sink, that tree and its copies of
    /// every string were a quarter of a sink's CPU (bench alerts). serde_json keeps a
    /// map's keys in insertion order here, so the keys below are in `json`'s order and the
    /// bytes are the same (a test holds them to it).
    pub fn json_string(&self) -> String {
        match self {
            Message::Alert(a) => {
                #[derive(serde::Serialize)]
                struct AlertJson<'a> {
                    #[serde(rename = "type")]
                    kind: &'static str,
                    idempotency_key: &'a str,
                    rule: &'a str,
                    ts: &'a str,
                    ip: &'a str,
                    risk: &'a super::rule::Risk,
                    detection: &'a Detection,
                    folded: &'a Option<super::rule::Folded>,
                }
                let d = &a.detection;
                serde_json::to_string(&AlertJson {
                    kind: "alert",
                    idempotency_key: &a.idempotency_key,
                    rule: &a.rule,
                    ts: &d.ts,
                    ip: &d.ip,
                    risk: &d.risk,
                    detection: d,
                    folded: &a.folded,
                })
                .expect("an alert serializes")
            }
            Message::Digest(_) => self.json().to_string(),
        }
    }

    /// decnet's own JSON.
    pub fn json(&self) -> Value {
        match self {
            Message::Alert(a) => json!({
                "type": "alert",
                "idempotency_key": a.idempotency_key,
                "rule": a.rule,
                "ts": a.detection.ts,
                "ip": a.detection.ip,
                "risk": a.detection.risk,
                "detection": a.detection,
                "folded": a.folded,
            }),
            Message::Digest(g) => json!({
                "type": "digest",
                "idempotency_key": g.idempotency_key(),
                "rule": g.rule,
                "window": {
                    "start": crate::timefmt::rfc3339_ns(g.start_ns),
                    "end": crate::timefmt::rfc3339_ns(g.end_ns),
                },
                "count": g.count,
                "sources": g.sources,
                "unlisted_alerts": g.count.saturating_sub(g.sources.len() as u64),
            }),
        }
    }

    /// A Slack-compatible incoming-webhook payload.
    pub fn slack(&self) -> Value {
        json!({ "text": self.summary() })
    }

    /// An Elastic Common Schema document.
    pub fn ecs(&self) -> Value {
        let common = |kind_reason: String, ips: Vec<&str>| {
            json!({
                "@timestamp": self.ts(),
                "ecs": { "version": ECS_VERSION },
                "event": {
                    "kind": "alert",
                    "category": ["intrusion_detection", "network"],
                    "type": ["info"],
                    "id": self.idempotency_key(),
                    "module": "decnet",
                    "dataset": "decnet.alert",
                    "provider": "decnet",
                    "reason": kind_reason,
                },
                "observer": { "vendor": "decnet", "product": "decnet", "type": "honeypot" },
                "related": { "ip": ips },
            })
        };
        match self {
            Message::Alert(a) => {
                let mut doc = detection_ecs(
                    &a.detection,
                    &self.idempotency_key(),
                    "decnet.alert",
                    self.summary(),
                );
                doc["rule"] = json!({ "name": a.rule });
                doc["decnet"]["folded"] = json!(a.folded);
                doc
            }
            Message::Digest(g) => {
                let ips: Vec<&str> = g.sources.iter().map(|d| d.ip.as_str()).collect();
                let mut doc = common(self.summary(), ips);
                doc["rule"] = json!({ "name": g.rule });
                doc["event"]["start"] = json!(crate::timefmt::rfc3339_ns(g.start_ns));
                doc["event"]["end"] = json!(crate::timefmt::rfc3339_ns(g.end_ns));
                doc["decnet"] = json!({ "digest": self.json() });
                doc
            }
        }
    }

    /// An RFC 5424 message (without transport framing): the summary's facts as structured
    /// data, the JSON as the message.
    pub fn syslog(&self, facility: u8, hostname: &str, pid: u32) -> String {
        let (severity, msgid, params) = match self {
            Message::Alert(a) => {
                let d = &a.detection;
                (
                    severity(&d.risk.band),
                    "alert",
                    vec![
                        ("key", a.idempotency_key.clone()),
                        ("rule", a.rule.clone()),
                        ("ip", d.ip.clone()),
                        ("risk", d.risk.score.to_string()),
                        ("band", d.risk.band.clone()),
                        ("class", d.class.clone()),
                        ("classification", d.classification.clone()),
                        ("tools", d.tools.join(",")),
                    ],
                )
            }
            Message::Digest(g) => (
                5,
                "digest",
                vec![
                    ("key", g.idempotency_key()),
                    ("rule", g.rule.clone()),
                    ("count", g.count.to_string()),
                ],
            ),
        };
        let mut sd = format!("[{SD_ID}");
        for (k, v) in params {
            sd.push_str(&format!(" {k}=\"{}\"", sd_escape(&v)));
        }
        sd.push(']');
        format!(
            "<{}>1 {} {} decnet {pid} {msgid} {sd} {}",
            facility as u32 * 8 + severity as u32,
            syslog_time(&self.ts()),
            header_field(hostname),
            self.json_string()
        )
    }
}

/// The ECS document of one detection: `event.kind` alert, the source as `source.ip`,
/// `related.ip` and `threat.indicator`, the verdict as labels and tags. `id`: `event.id`;
/// `dataset`: `decnet.alert` (an alert sink) or `decnet.detection` (an export).
pub fn detection_ecs(d: &Detection, id: &str, dataset: &str, reason: String) -> Value {
    json!({
        "@timestamp": d.ts,
        "ecs": { "version": ECS_VERSION },
        "event": {
            "kind": "alert",
            "category": ["intrusion_detection", "network"],
            "type": ["info"],
            "id": id,
            "module": "decnet",
            "dataset": dataset,
            "provider": "decnet",
            "reason": reason,
            "risk_score": d.risk.score as f64,
            "severity": d.risk.score,
        },
        "observer": { "vendor": "decnet", "product": "decnet", "type": "honeypot" },
        "source": source(d),
        "related": { "ip": [d.ip] },
        "threat": { "indicator": indicator(d) },
        "labels": {
            "class": d.class,
            "classification": d.classification,
            "risk_band": d.risk.band,
        },
        "tags": d.tools,
        "decnet": { "detection": d },
    })
}

/// One line about a detection (an export's `event.reason`).
pub fn describe_detection(d: &Detection) -> String {
    describe(d)
}

/// "10.0.0.2 scanning (suspicious), tools nmap, risk 55 (high)".
fn describe(d: &Detection) -> String {
    let mut s = format!("{} {}", d.ip, d.class);
    if !d.classification.is_empty() {
        s.push_str(&format!(" ({})", d.classification));
    }
    if let Some(a) = &d.actor {
        s.push_str(&format!(", actor {a}"));
    }
    match (d.asn, &d.country) {
        (Some(n), Some(c)) => s.push_str(&format!(", AS{n} {c}")),
        (Some(n), None) => s.push_str(&format!(", AS{n}")),
        (None, Some(c)) => s.push_str(&format!(", {c}")),
        (None, None) => {}
    }
    if !d.tools.is_empty() {
        s.push_str(&format!(", tools {}", d.tools.join(",")));
    }
    if let Some(c) = d.campaign_id {
        s.push_str(&format!(", campaign {c}"));
    }
    s.push_str(&format!(", risk {} ({})", d.risk.score, d.risk.band));
    s
}

/// ECS `source` of a detection: its address, and its AS and country when known (the
/// fields are left out rather than null, as Elastic's own integrations do).
fn source(d: &Detection) -> Value {
    let mut s = json!({ "ip": d.ip });
    geo_fields(&mut s, d);
    s
}

/// ECS `as.*` and `geo.country_iso_code` under `v`, for what is known.
fn geo_fields(v: &mut Value, d: &Detection) {
    if let Some(n) = d.asn {
        v["as"] = json!({ "number": n });
        if let Some(org) = &d.as_org {
            v["as"]["organization"] = json!({ "name": org });
        }
    }
    if let Some(c) = &d.country {
        v["geo"] = json!({ "country_iso_code": c });
    }
}

/// ECS `threat.indicator` of a detection's source.
fn indicator(d: &Detection) -> Value {
    let v6 = d.ip.contains(':');
    let mut i = json!({
        "type": if v6 { "ipv6-addr" } else { "ipv4-addr" },
        "ip": d.ip,
        "confidence": confidence(&d.risk.band),
        "last_seen": d.last_seen,
        "provider": "decnet",
        "description": describe(d),
    });
    geo_fields(&mut i, d);
    i
}

/// ECS's indicator confidence words from a risk band.
pub fn confidence(band: &str) -> &'static str {
    match band {
        "critical" | "high" => "High",
        "medium" => "Medium",
        _ => "Low",
    }
}

/// Syslog severity of a risk band: critical 2, high 4 (warning), medium 5 (notice), low 6.
fn severity(band: &str) -> u8 {
    match band {
        "critical" => 2,
        "high" => 4,
        "medium" => 5,
        _ => 6,
    }
}

/// RFC 5424 allows at most six fraction digits; decnet's times have nine.
fn syslog_time(ts: &str) -> String {
    match crate::timefmt::parse_rfc3339_ns(ts) {
        Some(ns) => {
            let full = crate::timefmt::rfc3339_ns(ns);
            // YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ -> .uuuuuuZ
            match full.find('.') {
                Some(dot) if full.len() >= dot + 7 => format!("{}Z", &full[..dot + 7]),
                _ => full,
            }
        }
        None => "-".into(),
    }
}

/// A header field: printable US-ASCII without spaces, at most 255; "-" when empty.
fn header_field(s: &str) -> String {
    let v: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if v.is_empty() { "-".into() } else { v }
}

/// PARAM-VALUE escaping: `"`, `\` and `]` take a backslash.
fn sd_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::rule::{Folded, Risk};

    fn alert() -> Alert {
        Alert {
            idempotency_key: "decnet:r:7".into(),
            rule: "r".into(),
            detection: Detection {
                id: 7,
                ts: "2026-12-04T21:00:00.123456789Z".into(),
                ip: "10.0.0.2".into(),
                changes: vec!["tools".into()],
                class: "scanning".into(),
                classification: "suspicious".into(),
                tools: vec!["nmap".into()],
                risk: Risk {
                    score: 55,
                    band: "high".into(),
                },
                ..Detection::default()
            },
            folded: Some(Folded {
                count: 2,
                changes: ["class".to_string()].into(),
            }),
        }
    }

    #[test]
    fn syslog_is_rfc5424() {
        let m = Message::Alert(Box::new(alert())).syslog(16, "decoy 1", 42);
        assert!(
            m.starts_with(
                "<132>1 2026-12-04T21:00:00.123456Z decoy1 decnet 42 alert [decnet@32473 key=\"decnet:r:7\" rule=\"r\" ip=\"10.0.0.2\" risk=\"55\" band=\"high\" class=\"scanning\" classification=\"suspicious\" tools=\"nmap\"] {"
            ),
            "{m}"
        );
        assert_eq!(sd_escape(r#"a"b\c]"#), r#"a\"b\\c\]"#);
    }

    #[test]
    fn ecs_fields() {
        let doc = Message::Alert(Box::new(alert())).ecs();
        assert_eq!(doc["event"]["kind"], "alert");
        assert_eq!(doc["source"]["ip"], "10.0.0.2");
        assert_eq!(doc["related"]["ip"][0], "10.0.0.2");
        assert_eq!(doc["threat"]["indicator"]["type"], "ipv4-addr");
        assert_eq!(doc["threat"]["indicator"]["confidence"], "High");
        assert_eq!(doc["event"]["id"], "decnet:r:7");
        assert_eq!(doc["@timestamp"], "2026-12-04T21:00:00.123456789Z");
        assert!(
            doc["source"].get("as").is_none(),
            "no AS without GeoIP: {doc}"
        );
        let mut a = alert();
        a.detection.asn = Some(64500);
        a.detection.as_org = Some("Example Net".into());
        a.detection.country = Some("NL".into());
        let doc = Message::Alert(Box::new(a)).ecs();
        assert_eq!(doc["source"]["as"]["number"], 64500);
        assert_eq!(doc["source"]["as"]["organization"]["name"], "Example Net");
        assert_eq!(doc["source"]["geo"]["country_iso_code"], "NL");
        assert_eq!(doc["threat"]["indicator"]["as"]["number"], 64500);
        assert_eq!(doc["threat"]["indicator"]["geo"]["country_iso_code"], "NL");
    }

    /// The text written straight from the structs is byte for byte the `Value`'s, every
    /// optional field set or not (a key added to one of the two and not the other, or in
    /// another place, breaks this).
    #[test]
    fn json_string_is_the_values_text() {
        let mut full = alert();
        let d = &mut full.detection;
        d.actor = Some("censys".into());
        d.asn = Some(64500);
        d.as_org = Some("Example \"Net\"".into());
        d.country = Some("NL".into());
        d.campaign_id = Some(3);
        d.deckies = vec!["web-1".into(), "db".into()];
        d.event_count = 12;
        d.last_seen = Some("2026-12-04T21:00:01Z".into());
        d.new_source = true;
        let mut bare = alert();
        bare.folded = None;
        bare.detection = Detection {
            id: 1,
            ..Detection::default()
        };
        for a in [alert(), full, bare] {
            let m = Message::Alert(Box::new(a));
            assert_eq!(m.json_string(), m.json().to_string());
        }
    }

    #[test]
    fn slack_text() {
        let s = Message::Alert(Box::new(alert())).slack();
        assert_eq!(
            s["text"],
            "decnet alert `r`: 10.0.0.2 scanning (suspicious), tools nmap, risk 55 (high); \
             changed: tools; 2 earlier change(s) folded in"
        );
    }
}
