//! Classification rules over an [`IpState`]. Thresholds start from the seed profiler's
//! (SIGNATURES.md) and are kept here, in one place, with the order they are tried in.

use super::{risk::Risk, state::IpState};
use crate::intel::scanners::Actor;

/// `behavior.class`. Rules, first match wins:
/// 0. `backscatter`: it only answers what no decoy sent ([`IpState::is_backscatter`]).
/// 1. `unknown` below 3 events: too little to say anything.
/// 2. `slow_scan`: >= 2 services, mean gap >= 10 s, >= 4 events.
/// 3. `scanning`: >= 3 services.
/// 4. `brute_force`: 1 service, >= 8 events, mean gap < 5 s, CV < 0.6 (hammering one port
///    at a steady pace: a password guesser, or a bounded single-port flood).
/// 5. `scanning`: mean gap < 2 s with >= 3 events over at least 2 ports or 2 decoys (the
///    few packets of one connection to one port are not a scan).
/// 6. `beaconing`: CV < 0.35, mean gap >= 5 s, >= 4 events.
/// 7. `interactive`: CV >= 0.5, mean gap < 5 s, >= 6 events.
/// 8. otherwise `unknown`.
pub(crate) fn behavior_class(s: &IpState) -> &'static str {
    let n = s.events;
    let services = s.services.len();
    let mean = s.iat.mean;
    let cv = s.iat.cv();
    if s.is_backscatter() {
        "backscatter"
    } else if n < 3 {
        "unknown"
    } else if services >= 2 && mean >= 10.0 && n >= 4 {
        "slow_scan"
    } else if services >= 3 {
        "scanning"
    } else if services == 1 && n >= 8 && mean < 5.0 && cv < 0.6 {
        "brute_force"
    } else if mean < 2.0 && (s.ports.len() >= 2 || s.deckies.len() >= 2) {
        "scanning"
    } else if cv < 0.35 && mean >= 5.0 && n >= 4 {
        "beaconing"
    } else if cv >= 0.5 && mean < 5.0 && n >= 6 {
        "interactive"
    } else {
        "unknown"
    }
}

/// Every value [`classification`] gives (what API filters and alert rules accept).
pub const CLASSIFICATIONS: &[&str] = &["benign", "malicious", "suspicious", "unknown"];

/// `classification`, what a security team acts on (as GreyNoise's). Rules, first match wins:
/// 1. on a known-scanner list: `malicious` when the list says so, else `benign`;
/// 2. `malicious`: it sent exploit-looking payloads, credentials or commands, or an
///    attributed offensive tool reached a high risk;
/// 3. `unknown` for backscatter (a victim's replies say nothing of intent);
/// 4. `suspicious`: it scanned (any scan kind or tool, or a scanning class);
/// 5. otherwise `unknown`.
pub(crate) fn classification(
    s: &IpState,
    class: &str,
    tools: &[String],
    risk: &Risk,
    actor: Option<&Actor>,
) -> &'static str {
    if let Some(a) = actor {
        return if a.is_malicious() {
            "malicious"
        } else {
            "benign"
        };
    }
    let high = matches!(risk.band, "high" | "critical");
    if s.exploit_payloads > 0
        || s.credentials > 0
        || s.command_count > 0
        || (high && !tools.is_empty())
    {
        "malicious"
    } else if class == "backscatter" {
        "unknown"
    } else if !s.kinds.is_empty()
        || !tools.is_empty()
        || matches!(class, "scanning" | "slow_scan" | "brute_force")
    {
        "suspicious"
    } else {
        "unknown"
    }
}

/// `scan.pattern`: `port_scan` (>= 5 ports, one decoy), `address_scan` (>= 3 decoys, at most
/// 3 ports), `mixed` (>= 5 ports and >= 3 decoys), else `none`.
pub(crate) fn scan_pattern(s: &IpState) -> &'static str {
    let ports = s.ports.len() + s.ports_overflow as usize;
    let deckies = s.deckies.len();
    match (ports, deckies) {
        (p, 1) if p >= 5 => "port_scan",
        (p, d) if d >= 3 && p <= 3 => "address_scan",
        (p, d) if d >= 3 && p >= 5 => "mixed",
        (p, 2) if p >= 5 => "mixed",
        _ => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::NewLog;

    fn feed(rows: &[(&str, &str, u16, f64)]) -> IpState {
        // (decky, service, port, seconds)
        let mut s = IpState::default();
        for (decky, service, port, t) in rows {
            let ns = (1_795_723_674.0 + t) * 1e9;
            s.update(&NewLog {
                ts: crate::timefmt::rfc3339_ns(ns as i64),
                decky: (*decky).into(),
                service: (*service).into(),
                event_type: "tcp_syn".into(),
                attacker_ip: "10.0.0.2".into(),
                fields: format!(r#"{{"dst_port":{port},"flags":"S","window":1024,"ttl":50}}"#),
                trace_id: None,
                span_id: None,
                sensor: Default::default(),
            });
        }
        s
    }

    #[test]
    fn one_row_per_class() {
        let scan: Vec<_> = (0..20)
            .map(|i| ("web", "tcp/x", 1000 + i as u16, i as f64 * 0.01))
            .collect();
        let services = ["ssh", "http", "smb", "rdp"];
        let scan: Vec<_> = scan
            .iter()
            .enumerate()
            .map(|(i, r)| (r.0, services[i % 4], r.2, r.3))
            .collect();
        assert_eq!(behavior_class(&feed(&scan)), "scanning");
        let slow: Vec<_> = (0..6)
            .map(|i| ("web", services[i % 2], 22 + i as u16, i as f64 * 60.0))
            .collect();
        assert_eq!(behavior_class(&feed(&slow)), "slow_scan");
        let brute: Vec<_> = (0..40)
            .map(|i| ("web", "ssh", 22, i as f64 * 0.1))
            .collect();
        assert_eq!(behavior_class(&feed(&brute)), "brute_force");
        let beacon: Vec<_> = (0..10)
            .map(|i| ("web", "http", 80, i as f64 * 60.0))
            .collect();
        assert_eq!(behavior_class(&feed(&beacon)), "beaconing");
        let gaps = [0.1, 3.0, 0.2, 4.5, 0.1, 2.5, 0.3, 4.0];
        let mut t = 0.0;
        let inter: Vec<_> = gaps
            .iter()
            .map(|g| {
                t += g;
                ("web", "ssh", 22, t)
            })
            .collect();
        assert_eq!(behavior_class(&feed(&inter)), "interactive");
        assert_eq!(behavior_class(&feed(&[("web", "ssh", 22, 0.0)])), "unknown");
        // One connection's SYN, ACK and payload to one port: not a scan.
        let one = [
            ("web", "http", 8080, 0.0),
            ("web", "http", 8080, 0.001),
            ("web", "http", 8080, 0.002),
        ];
        assert_eq!(behavior_class(&feed(&one)), "unknown");
    }

    #[test]
    fn patterns() {
        let ports: Vec<_> = (0..10)
            .map(|i| ("web", "tcp/x", 100 + i as u16, i as f64))
            .collect();
        assert_eq!(scan_pattern(&feed(&ports)), "port_scan");
        let sweep: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|d| (*d, "ssh", 22, 0.0))
            .collect();
        let s = feed(&sweep);
        assert_eq!(scan_pattern(&s), "address_scan");
        assert_eq!(s.deckies, ["a", "b", "c", "d"], "first-contact order");
        assert_eq!(scan_pattern(&feed(&[("web", "ssh", 22, 0.0)])), "none");
    }
}
