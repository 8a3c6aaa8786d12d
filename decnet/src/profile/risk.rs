//! Risk score (0-100) with reasons a person can act on.
//!
//! The score is a sum of capped parts, each with its reason:
//! - breadth: 4 points per doubling of distinct ports (cap 24), 8 per extra decoy (cap 16),
//!   10 when a decoy answered one of its probes open (it found something to attack);
//! - depth: 10 when the source sent payloads (it talked to a service, not just knocked),
//!   15 when it tried credentials, 10 when it sent commands;
//! - intent: 15 for OS detection, 10 for stealth scans (FIN/NULL/Xmas/Maimon/ACK), 15 for
//!   moving between decoys (traversal), 5 for each attributed offensive tool (cap 10),
//!   20 for exploit-looking payloads;
//! - persistence: 10 when active for over an hour, 10 when it came back after an hour or
//!   more of silence;
//! - campaign: 10 when it is one of several coordinated sources.
//!
//! Backscatter (a victim's replies) is capped at 5 with that one reason, a known benign
//! scanner (`--known-scanners`) at 10 with its name as the first reason. The sum is capped
//! at 100. The bands used for detection events are 0-24 low, 25-49
//! medium, 50-74 high, 75-100 critical.

use serde::Serialize;

use super::state::IpState;
use crate::intel::scanners::Actor;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Risk {
    pub score: u32,
    pub band: &'static str,
    pub reasons: Vec<String>,
}

/// The most a backscatter source scores.
pub(crate) const BACKSCATTER_CAP: u32 = 5;
/// The most a known benign scanner scores: its profile is kept, its alarm is not.
pub(crate) const BENIGN_CAP: u32 = 10;

pub fn band(score: u32) -> &'static str {
    match score {
        0..=24 => "low",
        25..=49 => "medium",
        50..=74 => "high",
        _ => "critical",
    }
}

/// The reasons of a score as they are found, written out only when `explain`: a profile
/// shows them, while the profiler, which judges every source it folds after every batch,
/// needs only the score.
struct Reasons {
    explain: bool,
    list: Vec<String>,
}

impl Reasons {
    fn push(&mut self, reason: impl FnOnce() -> String) {
        if self.explain {
            self.list.push(reason());
        }
    }

    /// This reason alone.
    fn only(&mut self, reason: impl FnOnce() -> String) {
        self.list.clear();
        self.push(reason);
    }

    /// This reason before the others.
    fn lead(&mut self, reason: impl FnOnce() -> String) {
        if self.explain {
            self.list.insert(0, reason());
        }
    }
}

/// The score of `s`, whose tools passed the vote, and which a known-scanner list may name;
/// its reasons are left empty unless `explain`.
pub(crate) fn assess(s: &IpState, tools: &[String], actor: Option<&Actor>, explain: bool) -> Risk {
    let mut score = 0u32;
    let mut reasons = Reasons {
        explain,
        list: Vec::new(),
    };
    let ports = s.ports.len() as u64 + s.ports_overflow;
    if ports >= 2 {
        let p = (4 * (64 - ports.leading_zeros() - 1)).min(24);
        score += p;
        reasons.push(|| {
            format!("Probed {ports} distinct ports: it is mapping what the decoy exposes.")
        });
    }
    if s.is_traversal() {
        score += (8 * (s.deckies.len() as u32 - 1)).min(16);
        score += 15;
        reasons.push(|| {
            format!(
                "Moved across {} decoys ({}): it is exploring the network, not one host.",
                s.deckies.len(),
                s.deckies.join(" -> ")
            )
        });
    }
    if let Some(a) = &s.answers
        && !a.open_ports.is_empty()
    {
        score += 10;
        reasons.push(|| {
            let list: Vec<String> = a.open_ports.iter().take(8).map(|p| p.to_string()).collect();
            let more = if a.open_ports.len() > 8 { ", ..." } else { "" };
            format!(
                "Found {} open port{} ({}{more}): it now knows what to attack.",
                a.open_ports.len(),
                if a.open_ports.len() == 1 { "" } else { "s" },
                list.join(", ")
            )
        });
    }
    if s.payloads > 0 {
        score += 10;
        reasons.push(|| {
            format!(
                "Sent payloads {} times: it talks to services, check what it sent.",
                s.payloads
            )
        });
    }
    if s.credentials > 0 {
        score += 15;
        reasons.push(|| format!(
            "Tried {} credentials: it is trying to log in; make sure no real system accepts them.",
            s.credentials
        ));
    }
    if s.command_count > 0 {
        score += 10;
        reasons.push(|| {
            format!(
                "Sent {} commands: read them in the profile to see what it wanted.",
                s.command_count
            )
        });
    }
    if s.exploit_payloads > 0 {
        score += 20;
        reasons.push(|| {
            let marks: Vec<&str> = s.exploit_marks.iter().map(String::as_str).collect();
            format!(
                "Sent {} exploit-looking payloads ({}): check real hosts for the same requests.",
                s.exploit_payloads,
                marks.join(", ")
            )
        });
    }
    if s.kinds.contains("os_detection") {
        score += 15;
        reasons.push(|| {
            "Ran OS detection (nmap -O probe set): it is fingerprinting targets for follow-up."
                .into()
        });
    }
    let stealth = || {
        ["fin", "null", "xmas", "maimon", "ack"]
            .into_iter()
            .filter(|k| s.kinds.contains(*k))
    };
    if stealth().next().is_some() {
        score += 10;
        reasons.push(|| {
            format!(
                "Used stealth scans ({}): it tries to evade logging and firewalls.",
                stealth().collect::<Vec<_>>().join(", ")
            )
        });
    }
    if !tools.is_empty() {
        score += (5 * tools.len() as u32).min(10);
        reasons.push(|| format!("Uses offensive tooling: {}.", tools.join(", ")));
    }
    if s.duration_s() > 3600.0 {
        score += 10;
        reasons.push(|| {
            format!(
                "Active for {:.1} hours: a persistent source.",
                s.duration_s() / 3600.0
            )
        });
    }
    if s.returns > 0 {
        score += 10;
        reasons.push(|| {
            format!(
                "Came back {} times after an hour or more of silence: it keeps returning.",
                s.returns
            )
        });
    }
    if let Some(id) = s.campaign_id {
        score += 10;
        if s.in_storm() {
            reasons.push(|| {
                format!(
                    "One of campaign {id}'s addresses: a storm of sources sending one packet \
                 template, most likely spoofed; the campaign is the actor, not this address."
                )
            });
        } else {
            reasons.push(|| {
                format!(
                    "Part of campaign {id}, sources sharing one tool fingerprint and splitting or \
                 sharing targets: block the group, not one address."
                )
            });
        }
    }
    if s.is_backscatter() {
        // Its ports and decoys are the addresses someone else forged, not its choice.
        score = score.min(BACKSCATTER_CAP);
        reasons.only(|| {
            format!(
                "Sent only answers to packets no decoy sent ({} SYN-ACKs, RSTs or ICMP \
                 errors): backscatter, the victim of someone else's spoofed attack, not a \
                 scanner.",
                s.replies
            )
        });
    }
    if let Some(a) = actor
        && !a.is_malicious()
    {
        score = score.min(BENIGN_CAP);
        reasons.lead(|| {
            let who = match (&a.name, &a.category) {
                (Some(n), Some(c)) => format!("{n} ({c})"),
                (Some(n), None) => n.clone(),
                (None, Some(c)) => format!("an unnamed {c} scanner"),
                (None, None) => "an unnamed entry".to_owned(),
            };
            format!(
                "Listed as a known scanner: {who}; its risk is capped at {BENIGN_CAP} (a known \
                 scanner's probes are not an attack on you, though what they find is public)."
            )
        });
    }
    let score = score.min(100);
    Risk {
        score,
        band: band(score),
        reasons: reasons.list,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_source_is_low_and_says_nothing_alarming() {
        let s = IpState::default();
        let r = assess(&s, &[], None, true);
        assert_eq!((r.score, r.band), (0, "low"));
        assert!(r.reasons.is_empty());
    }

    #[test]
    fn broad_stealthy_traversing_scanner_is_high() {
        let mut s = IpState::default();
        s.ports = (1..=200).collect();
        s.deckies = vec!["web".into(), "db".into()];
        s.kinds = ["syn", "xmas", "os_detection"]
            .iter()
            .map(|k| k.to_string())
            .collect();
        let r = assess(&s, &["nmap".into()], None, true);
        // ports 200 -> 4*7=24 (cap), decoys 8 + traversal 15, OS 15, stealth 10, tool 5.
        assert_eq!(r.score, 24 + 8 + 15 + 15 + 10 + 5);
        assert_eq!(r.band, "critical");
        assert_eq!(r.reasons.len(), 5);
        assert!(r.reasons[1].contains("web -> db"));
        // Unexplained (as the profiler judges): the same score, no text.
        let quiet = assess(&s, &["nmap".into()], None, false);
        assert_eq!((quiet.score, quiet.band), (r.score, r.band));
        assert!(quiet.reasons.is_empty());
    }
}
