//! What a profile concludes from its state (class, scan pattern, tools, OS guess, risk), and
//! the two ways it is shown: the attackers-list row and the full public profile.
//!
//! These are methods of [`IpState`] kept apart from the folding in `state`, so that the
//! state does not import the rules (`classify`, `risk`) that read it.

use std::sync::Arc;

use super::{
    classify,
    risk::{self, Risk},
    state::{Headline, IpState},
};
use crate::intel::{
    geoip::{self, Geo},
    scanners::{self, Actor},
    tools,
};

/// An attackers-list row. Its fields are in name order, as a JSON object's keys come out of
/// `serde_json::Value`, so the text is the same whichever way a row is written.
#[derive(serde::Serialize)]
struct SummaryRow<'a> {
    actor: Option<&'a str>,
    as_org: Option<&'a str>,
    asn: Option<u32>,
    campaign_id: Option<i64>,
    class: &'a str,
    classification: &'a str,
    command_count: u64,
    country: Option<&'a str>,
    credential_count: u64,
    deckies: &'a [String],
    event_count: u64,
    first_seen: &'a str,
    ip: &'a str,
    is_traversal: bool,
    last_seen: &'a str,
    os_guess: Option<&'a str>,
    risk: RiskBrief,
    scan_kinds: &'a super::sorted::SortedSet<String>,
    scan_pattern: &'a str,
    spoofable: bool,
    tools: &'a [String],
}

#[derive(serde::Serialize)]
struct RiskBrief {
    band: &'static str,
    score: u32,
}

/// What a profile concludes, computed once per render.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub class: &'static str,
    pub pattern: &'static str,
    pub tools: Vec<String>,
    pub os_guess: Option<&'static str>,
    pub risk: Risk,
    /// The known-scanner list entry of the address, if any.
    pub actor: Option<Arc<Actor>>,
    /// `benign`, `malicious`, `suspicious` or `unknown` ([`classify::classification`]).
    pub classification: &'static str,
    /// Country and autonomous system from the GeoIP databases in force (null without).
    pub geo: Geo,
}

impl Verdict {
    pub(crate) fn headline(&self, campaign_id: Option<i64>) -> Headline {
        Headline {
            class: self.class.to_owned(),
            tools: self.tools.clone(),
            campaign_id,
            band: self.risk.band.to_owned(),
            classification: self.classification.to_owned(),
        }
    }

    /// Whether `h` is this verdict's headline already (compared without making one: the
    /// profiler asks after every batch, and the answer is mostly yes).
    pub(crate) fn is_headline(&self, h: &Headline, campaign_id: Option<i64>) -> bool {
        h.class == self.class
            && h.tools == self.tools
            && h.campaign_id == campaign_id
            && h.band == self.risk.band
            && h.classification == self.classification
    }

    /// The actor's name, as profiles show it (null when unlisted or unnamed).
    pub fn actor_name(&self) -> Option<&str> {
        self.actor.as_ref().and_then(|a| a.name.as_deref())
    }
}

impl IpState {
    /// Class, pattern, tools, OS guess, risk and classification of the source `ip` (its
    /// address is looked up in the known-scanner lists in force).
    pub fn verdict(&self, ip: &str) -> Verdict {
        self.judge(ip, true)
    }

    /// [`verdict`](Self::verdict) without the risk's reasons (text, written out only for
    /// the profile that shows them): what the profiler needs after every batch.
    pub(crate) fn verdict_unexplained(&self, ip: &str) -> Verdict {
        self.judge(ip, false)
    }

    fn judge(&self, ip: &str, explain: bool) -> Verdict {
        let tools = tools::decide(self.tool_votes.iter());
        let actor = scanners::lookup(ip);
        let class = classify::behavior_class(self);
        let risk = risk::assess(self, &tools, actor.as_deref(), explain);
        let classification = classify::classification(self, class, &tools, &risk, actor.as_deref());
        Verdict {
            class,
            pattern: classify::scan_pattern(self),
            os_guess: self.os_guess(&tools),
            risk,
            tools,
            actor,
            classification,
            geo: geoip::lookup(ip),
        }
    }

    /// The row of an attackers list: what a person scans a table for.
    pub fn summary(&self, ip: &str, v: &Verdict) -> serde_json::Value {
        serde_json::to_value(self.summary_row(ip, v)).unwrap_or_default()
    }

    /// [`summary`](Self::summary) as JSON text, written straight from the state (the
    /// profiler writes one per changed source per commit).
    pub(crate) fn summary_text(&self, ip: &str, v: &Verdict) -> String {
        serde_json::to_string(&self.summary_row(ip, v)).unwrap_or_default()
    }

    fn summary_row<'a>(&'a self, ip: &'a str, v: &'a Verdict) -> SummaryRow<'a> {
        SummaryRow {
            actor: v.actor_name(),
            as_org: v.geo.as_org.as_deref(),
            asn: v.geo.asn,
            campaign_id: self.campaign_id,
            class: v.class,
            classification: v.classification,
            command_count: self.command_count,
            country: v.geo.country.as_deref(),
            credential_count: self.credentials,
            deckies: &self.deckies,
            event_count: self.events,
            first_seen: &self.first_seen,
            ip,
            is_traversal: self.is_traversal(),
            last_seen: &self.last_seen,
            os_guess: v.os_guess,
            risk: RiskBrief {
                band: v.risk.band,
                score: v.risk.score,
            },
            scan_kinds: &self.kinds,
            scan_pattern: v.pattern,
            spoofable: self.spoofable(),
            tools: &v.tools,
        }
    }

    /// The public profile (docs/api.md, "Attacker profile").
    pub fn profile(&self, ip: &str, v: &Verdict) -> serde_json::Value {
        serde_json::json!({
            "ip": ip,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "event_count": self.events,
            "deckies": self.deckies,
            "services": self.services,
            "ports": self.ports,
            "ports_overflow": self.ports_overflow,
            "is_traversal": self.is_traversal(),
            "classification": v.classification,
            "actor": v.actor_name(),
            "actor_category": v.actor.as_ref().and_then(|a| a.category.as_deref()),
            "spoofable": self.spoofable(),
            "asn": v.geo.asn,
            "as_org": v.geo.as_org,
            "country": v.geo.country,
            "behavior": {
                "class": v.class,
                "timing": {
                    "mean_iat_s": self.iat.mean,
                    "median_iat_s": self.iat.median(),
                    "stdev_iat_s": self.iat.stdev(),
                    "min_iat_s": self.iat.min,
                    "max_iat_s": self.iat.max,
                    "cv": self.iat.cv(),
                    "duration_s": self.duration_s(),
                },
            },
            "scan": { "kinds": self.kinds, "pattern": v.pattern },
            "tools": v.tools,
            "os_guess": v.os_guess,
            "hop_distance": self.hops,
            "tcp_fingerprint": self.tcp_fingerprint,
            "commands": self.commands,
            "command_count": self.command_count,
            "bounty_count": self.bounties,
            "credential_count": self.credentials,
            "campaign_id": self.campaign_id,
            "risk": v.risk,
            "event_types": self.event_types,
            "flood": self.flood,
            "answers": self.answers.as_deref().map(answers_json),
        })
    }
}

/// The decoys' answers to a source, as its profile shows them (docs/api.md).
fn answers_json(a: &super::state::Answers) -> serde_json::Value {
    serde_json::json!({
        "outcomes": a.outcomes,
        "open_ports": a.open_ports,
        "open_port_count": a.open_ports.len(),
        "closed": a.closed,
        "unfiltered": a.unfiltered,
        "filtered": a.filtered,
        "unreachable": a.unreachable,
        "rtt_ms": {
            "n": a.rtt_ms.n,
            "mean": a.rtt_ms.mean,
            "median": a.rtt_ms.median(),
            "min": a.rtt_ms.min,
            "max": a.rtt_ms.max,
        },
        "flows": a.flows,
        "connect_flows": a.connect_flows,
        "attacker_bytes": a.attacker_bytes,
        "decoy_bytes": a.decoy_bytes,
        "retransmits": a.retransmits,
    })
}

#[cfg(test)]
mod tests {
    //! The verdicts real internet traffic asked for (issue "Real-world fidelity"), one
    //! source at a time, from the journal fields the sensor writes.

    use base64::Engine as _;

    use super::*;
    use crate::row::NewLog;

    fn row(event_type: &str, t: f64, fields: serde_json::Value) -> NewLog {
        NewLog {
            ts: crate::timefmt::rfc3339_ns((1_795_723_674.0e9 + t * 1e9) as i64),
            decky: "web".into(),
            service: format!("tcp/{}", fields["dst_port"]),
            event_type: event_type.into(),
            attacker_ip: "198.51.100.7".into(),
            fields: fields.to_string(),
            trace_id: None,
            span_id: None,
            sensor: Default::default(),
        }
    }

    fn fold(rows: &[NewLog]) -> (IpState, Verdict) {
        let mut s = IpState::default();
        for r in rows {
            s.update(r);
        }
        let v = s.verdict("198.51.100.7");
        (s, v)
    }

    /// The profiler writes list rows as text straight from the state; the API renders
    /// them as JSON values for rows stored before the summary column. Both must be one row.
    #[test]
    fn a_list_row_is_the_same_text_either_way() {
        let rows: Vec<_> = (0..30)
            .map(|i| {
                let mut r = row(
                    "tcp_syn",
                    i as f64 * 0.01,
                    serde_json::json!({
                        "dst_port": 20 + i, "flags": "S", "window": 1024, "ttl": 48,
                        "options": "M1460", "df": false, "traits": ["nmap"],
                    }),
                );
                if i % 2 == 1 {
                    r.decky = "db".into();
                }
                r
            })
            .collect();
        let (mut s, v) = fold(&rows);
        s.campaign_id = Some(4);
        let ip = "198.51.100.7";
        assert_eq!(s.summary_text(ip, &v), s.summary(ip, &v).to_string());
        let row: serde_json::Value = serde_json::from_str(&s.summary_text(ip, &v)).unwrap();
        assert_eq!(row["tools"], serde_json::json!(["nmap"]));
        assert_eq!(row["deckies"], serde_json::json!(["web", "db"]));
        assert_eq!(row["risk"]["band"], v.risk.band);
        assert_eq!(row["campaign_id"], 4);
    }

    #[test]
    fn nmap_from_far_away_is_still_nmap_and_has_no_hop_distance() {
        // nmap's TTL (37-59 per run) after 24 and 16 hops; window 1024 or an older
        // release's 1024*k; MSS as sent or clamped by a router on the way.
        for (ttl, window, mss) in [
            (13u8, 1024u16, "M1460"),
            (28, 3072, "M1452"),
            (59, 2048, "M1400"),
        ] {
            let rows: Vec<_> = (0..50)
                .map(|i| {
                    row(
                        "tcp_syn",
                        i as f64 * 0.001,
                        serde_json::json!({
                            "dst_port": 1 + i, "flags": "S", "window": window, "ttl": ttl,
                            "options": mss, "df": false, "traits": ["nmap"],
                        }),
                    )
                })
                .collect();
            let (s, v) = fold(&rows);
            assert_eq!(v.tools, ["nmap"], "ttl {ttl}");
            assert!(s.kinds.contains("syn"), "ttl {ttl}");
            assert_eq!(s.hops, None, "a randomised TTL gives no hop distance");
        }
        // A fixed-TTL tool still gives one: hping3 (64) from 9 hops.
        let rows: Vec<_> = (0..5)
            .map(|i| {
                row(
                    "tcp_syn",
                    i as f64,
                    serde_json::json!({
                        "dst_port": 80, "flags": "S", "window": 512, "ttl": 55, "options": "",
                        "df": false, "traits": ["hping3"],
                    }),
                )
            })
            .collect();
        assert_eq!(fold(&rows).0.hops, Some(9));
    }

    #[test]
    fn a_syn_scan_by_an_unknown_tool_is_a_syn_scan() {
        let crafted = |opts: &str| -> Vec<NewLog> {
            (0..20)
                .map(|i| {
                    row(
                        "tcp_syn",
                        i as f64 * 0.01,
                        serde_json::json!({
                            "dst_port": 1000 + i, "flags": "S", "window": 29200, "ttl": 50,
                            "options": opts, "df": true, "traits": [],
                        }),
                    )
                })
                .collect()
        };
        for opts in ["", "M1380"] {
            let (s, v) = fold(&crafted(opts));
            assert!(v.tools.is_empty());
            assert!(s.kinds.contains("syn"), "options `{opts}`");
        }
        // A TCP stack's SYNs are connections; what they are shows in their flows.
        let (s, _) = fold(&crafted("M1460,S,T,N,W7"));
        assert!(!s.kinds.contains("syn"));
    }

    #[test]
    fn backscatter_is_its_own_class_at_low_risk() {
        // A CDN answering SYNs someone sent with the decoy's address: SYN-ACKs and RSTs
        // to random high ports, and an ICMP unreachable.
        let mut rows: Vec<_> = (0..40)
            .map(|i| {
                let (probe, flags) = if i % 3 == 0 {
                    ("rst", "R")
                } else {
                    ("syn_ack", "SA")
                };
                row(
                    "tcp_probe",
                    i as f64 * 0.5,
                    serde_json::json!({
                        "dst_port": 30000 + i * 7, "flags": flags, "probe": probe, "window": 65535,
                        "ttl": 52, "options": "", "df": true, "traits": [],
                    }),
                )
            })
            .collect();
        rows.push(row(
            "icmp_probe",
            21.0,
            // Port unreachable, quoting the UDP datagram it answers (measured live).
            serde_json::json!({"icmp_type": 3, "icmp_code": 3, "payload_len": 28}),
        ));
        let (s, v) = fold(&rows);
        assert_eq!(v.class, "backscatter");
        assert!(s.kinds.is_empty(), "{:?}", s.kinds);
        assert!(v.risk.score <= risk::BACKSCATTER_CAP, "{:?}", v.risk);
        assert_eq!(v.risk.band, "low");
        assert!(
            v.risk.reasons[0].contains("backscatter"),
            "{:?}",
            v.risk.reasons
        );
    }

    #[test]
    fn mid_flow_segments_are_no_stealth_scan_but_a_sweep_is() {
        // A Windows client's ACK and FIN+ACK to one port, its connection's start unseen.
        let client = |probe: &str, flags: &str, t: f64| {
            row(
                "tcp_probe",
                t,
                serde_json::json!({
                    "dst_port": 443, "flags": flags, "probe": probe, "window": 1026, "ttl": 116,
                    "options": "", "df": true, "traits": [],
                }),
            )
        };
        let (s, v) = fold(&[
            client("ack", "A", 0.0),
            client("maimon", "FA", 0.2),
            client("ack", "A", 0.3),
        ]);
        assert!(v.tools.is_empty(), "{:?}", v.tools);
        assert!(s.kinds.is_empty(), "{:?}", s.kinds);
        // nmap -sA: bare ACKs to many ports.
        let sweep: Vec<_> = (0..10)
            .map(|i| {
                row(
                    "tcp_probe",
                    i as f64 * 0.01,
                    serde_json::json!({
                        "dst_port": 20 + i, "flags": "A", "probe": "ack", "window": 1024,
                        "ttl": 47, "options": "", "df": false, "traits": ["nmap"],
                    }),
                )
            })
            .collect();
        let (s, v) = fold(&sweep);
        assert!(s.kinds.contains("ack"));
        assert_eq!(v.tools, ["nmap"]);
    }

    #[test]
    fn fetching_the_home_page_is_no_command_and_low_risk() {
        let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
        let linux_syn = serde_json::json!({
            "dst_port": 80, "flags": "S", "window": 64240, "ttl": 52,
            "options": "M1460,S,T,N,W7", "df": true, "traits": [],
        });
        let get = "GET / HTTP/1.1\r\nHost: decoy\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";
        let rows = [
            row("tcp_syn", 0.0, linux_syn),
            row(
                "tcp_payload",
                0.01,
                serde_json::json!({
                    "dst_port": 80, "flags": "PA", "payload_len": get.len(), "payload_b64": b64(get),
                }),
            ),
        ];
        let (s, v) = fold(&rows);
        assert_eq!(s.command_count, 0);
        assert_eq!(v.risk.band, "low", "{:?}", v.risk);
        // A request for something else is still a command.
        let probe = "GET /.env HTTP/1.1\r\nHost: decoy\r\n\r\n";
        let rows = [row(
            "tcp_payload",
            0.0,
            serde_json::json!({
                "dst_port": 80, "flags": "PA", "payload_len": probe.len(), "payload_b64": b64(probe),
            }),
        )];
        assert_eq!(fold(&rows).0.command_count, 1);
    }
}
