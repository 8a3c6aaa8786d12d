//! What a profile concludes from its state (class, scan pattern, tools, OS guess, risk), and
//! the two ways it is shown: the attackers-list row and the full public profile.
//!
//! These are methods of [`IpState`] kept apart from the folding in `state`, so that the
//! state does not import the rules (`classify`, `risk`) that read it.

use super::{
    classify,
    risk::{self, Risk},
    state::{Headline, IpState},
};
use crate::intel::tools;

/// What a profile concludes, computed once per render.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub class: &'static str,
    pub pattern: &'static str,
    pub tools: Vec<String>,
    pub os_guess: Option<&'static str>,
    pub risk: Risk,
}

impl Verdict {
    pub(crate) fn headline(&self, campaign_id: Option<i64>) -> Headline {
        Headline {
            class: self.class.to_owned(),
            tools: self.tools.clone(),
            campaign_id,
            band: self.risk.band.to_owned(),
        }
    }
}

impl IpState {
    /// Class, pattern, tools, OS guess and risk.
    pub fn verdict(&self) -> Verdict {
        let tools = tools::decide(&self.tool_votes);
        Verdict {
            class: classify::behavior_class(self),
            pattern: classify::scan_pattern(self),
            os_guess: self.os_guess(&tools),
            risk: risk::assess(self, &tools),
            tools,
        }
    }

    /// The row of an attackers list: what a person scans a table for.
    pub fn summary(&self, ip: &str, v: &Verdict) -> serde_json::Value {
        serde_json::json!({
            "ip": ip,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "event_count": self.events,
            "class": v.class,
            "risk": { "score": v.risk.score, "band": v.risk.band },
            "tools": v.tools,
            "scan_kinds": self.kinds,
            "scan_pattern": v.pattern,
            "os_guess": v.os_guess,
            "deckies": self.deckies,
            "is_traversal": self.deckies.len() >= 2,
            "campaign_id": self.campaign_id,
            "command_count": self.command_count,
            "credential_count": self.credentials,
        })
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
            "is_traversal": self.deckies.len() >= 2,
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
            "answers": self.answers.as_ref().map(|a| serde_json::json!({
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
            })),
        })
    }
}
