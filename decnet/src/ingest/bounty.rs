//! Bounties: artifacts worth keeping, extracted from journal rows: the SYN's TCP
//! fingerprint and what its first payload says (the parsers are [`crate::intel`]'s).

use base64::Engine as _;

use crate::{
    intel::{
        payload::payload_artifacts,
        tcp::{FpInput, fingerprint},
    },
    row::{Facts, Fields, NewLog},
    store::NewBounty,
};

/// A row's fields, parsed, and its artifacts.
pub fn facts(log: &NewLog) -> Facts {
    let fields = Fields::parse(&log.fields);
    let artifacts = extract_from(log, &fields);
    Facts { fields, artifacts }
}

/// Artifacts of one row: (kind, value).
pub fn extract(log: &NewLog) -> Vec<(&'static str, String)> {
    if !has_artifacts(log) {
        return Vec::new();
    }
    extract_from(log, &Fields::parse(&log.fields))
}

/// The event types whose fields may hold artifacts.
fn has_artifacts(log: &NewLog) -> bool {
    matches!(
        log.event_type.as_str(),
        "tcp_syn" | "tcp_payload" | "udp_probe"
    )
}

/// [`extract`] from the row's fields, already parsed.
pub(crate) fn extract_from(log: &NewLog, f: &Fields) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if !has_artifacts(log) {
        return out;
    }
    if log.event_type == "tcp_syn"
        && let Some(fp) = tcp_fingerprint(f)
    {
        out.push(("tcp_fingerprint", fp));
    }
    if let Some(b64) = &f.payload_b64
        && let Ok(payload) = base64::engine::general_purpose::STANDARD.decode(b64)
    {
        payload_artifacts(&payload, f.dst_port.unwrap_or(0), &mut out);
    }
    out
}

/// Turns artifacts into rows for the store.
pub fn bounties(log: &NewLog) -> Vec<NewBounty> {
    extract(log)
        .into_iter()
        .map(|(kind, value)| bounty(log, kind, value))
        .collect()
}

/// One artifact of `log` as a row for the store.
pub fn bounty(log: &NewLog, kind: &'static str, value: String) -> NewBounty {
    NewBounty {
        attacker_ip: log.attacker_ip.clone(),
        kind,
        value,
        ts: log.ts.clone(),
    }
}

/// The fingerprint of a `tcp_syn` row, from its fields ([`fingerprint`]).
fn tcp_fingerprint(f: &Fields) -> Option<String> {
    Some(fingerprint(&FpInput {
        ttl: f.ttl?,
        window: f.window?,
        layout: f.options.as_deref().unwrap_or(""),
        flags: f.flags.as_deref().unwrap_or(""),
        df: f.df == Some(true),
        ip_id: f.ip_id,
        ack: f.ack.unwrap_or(0),
        urg_ptr: f.urg_ptr.unwrap_or(0),
        // IPv6 has no IP ID; the sensor reports 0 there.
        v6: f.dst_ip.as_deref().is_some_and(|d| d.contains(':')),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_fingerprint_from_a_syn_row() {
        let log = NewLog {
            ts: "t".into(),
            decky: "d".into(),
            service: "ssh".into(),
            event_type: "tcp_syn".into(),
            attacker_ip: "10.0.0.2".into(),
            fields: r#"{"ttl":52,"window":1024,"options":"M1460","flags":"S","df":false,"ip_id":7,"ack":0,"urg_ptr":0}"#.into(),
            trace_id: None,
            span_id: None,
            sensor: Default::default(),
        };
        assert_eq!(
            extract(&log),
            vec![("tcp_fingerprint", "64:1024:M1460:".into())]
        );
        let mut l = log.clone();
        l.fields = r#"{"ttl":64,"window":64240,"options":"M1460,S,T,N,W10","flags":"SEC","df":true,"ip_id":0,"ack":5,"urg_ptr":9}"#.into();
        assert_eq!(
            extract(&l),
            vec![(
                "tcp_fingerprint",
                "64:64240:M1460,S,T,N,W10:df,id0,ack+,uptr+,ecn".into()
            )]
        );
        l.event_type = "tcp_probe".into();
        assert!(extract(&l).is_empty());
    }
}
