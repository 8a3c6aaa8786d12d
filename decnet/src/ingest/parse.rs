//! Journal line -> row, or the reason it cannot be one.
//!
//! Any writer may append to the journal, so nothing here assumes decnet wrote the line:
//! the five top-level strings are required, `fields` must be an object when present, and
//! `traceparent`, when present and well formed, yields the trace and span ids.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::row::NewLog;

/// Raw text kept in a dead letter, at most this many bytes.
pub const DEAD_LETTER_RAW_MAX: usize = 4096;

#[derive(Deserialize)]
struct LineIn<'a> {
    #[serde(borrow)]
    ts: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    decky: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    service: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    event_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    attacker_ip: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    fields: Option<&'a RawValue>,
    #[serde(borrow, default)]
    traceparent: Option<std::borrow::Cow<'a, str>>,
}

/// Parses one journal line (without its newline).
pub fn parse_line(line: &[u8]) -> Result<NewLog, String> {
    let rec: LineIn<'_> =
        serde_json::from_slice(line).map_err(|e| format!("not a journal record: {e}"))?;
    if rec.ts.is_empty() {
        return Err("empty ts".into());
    }
    if rec.attacker_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!(
            "attacker_ip `{}` is not an IP address",
            truncate(&rec.attacker_ip, 64)
        ));
    }
    if rec.event_type.is_empty() {
        return Err("empty event_type".into());
    }
    let fields = match rec.fields {
        None => "{}".to_owned(),
        Some(raw) if raw.get().trim_start().starts_with('{') => raw.get().to_owned(),
        Some(_) => return Err("fields is not an object".into()),
    };
    let (trace_id, span_id) = rec
        .traceparent
        .as_deref()
        .and_then(split_traceparent)
        .unzip();
    Ok(NewLog {
        ts: rec.ts.into_owned(),
        decky: rec.decky.into_owned(),
        service: rec.service.into_owned(),
        event_type: rec.event_type.into_owned(),
        attacker_ip: rec.attacker_ip.into_owned(),
        fields,
        trace_id,
        span_id,
        sensor: Default::default(),
    })
}

/// W3C traceparent `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
pub(crate) fn split_traceparent(tp: &str) -> Option<(String, String)> {
    let mut it = tp.split('-');
    let (ver, trace, span, flags) = (it.next()?, it.next()?, it.next()?, it.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(ver, 2) && hex(trace, 32) && hex(span, 16) && hex(flags, 2) && it.next().is_none())
        .then(|| (trace.to_ascii_lowercase(), span.to_ascii_lowercase()))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The raw line as text for a dead letter: lossy UTF-8, capped at
/// [`DEAD_LETTER_RAW_MAX`] bytes of text (each invalid byte becomes a 3-byte U+FFFD, so the
/// text is cut again after conversion, at a character boundary).
pub fn dead_raw(line: &[u8]) -> String {
    let cut = &line[..line.len().min(DEAD_LETTER_RAW_MAX)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if text.len() > DEAD_LETTER_RAW_MAX {
        let mut end = DEAD_LETTER_RAW_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sensor_line_parses() {
        let l = br#"{"ts":"2026-11-26T20:31:34.480855087Z","decky":"web","service":"ssh","event_type":"tcp_syn","attacker_ip":"10.0.0.2","fields":{"dst_port":22,"flags":"S"},"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}"#;
        let r = parse_line(l).unwrap();
        assert_eq!(r.event_type, "tcp_syn");
        assert_eq!(r.fields, r#"{"dst_port":22,"flags":"S"}"#);
        assert_eq!(
            r.trace_id.as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(r.span_id.as_deref(), Some("b7ad6b7169203331"));
    }

    #[test]
    fn other_writers_may_omit_fields_and_traceparent() {
        let r = parse_line(br#"{"ts":"t","decky":"d","service":"http","event_type":"login","attacker_ip":"fd00::1"}"#).unwrap();
        assert_eq!(r.fields, "{}");
        assert!(r.trace_id.is_none());
    }

    #[test]
    fn bad_lines_say_why() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "not a journal record"),
            (b"{\"ts\":\"t\",\"decky\":\"d\",\"service\":\"s\",\"event_type\":\"e\"}", "attacker_ip"),
            (b"{\"ts\":\"t\",\"decky\":\"d\",\"service\":\"s\",\"event_type\":\"e\",\"attacker_ip\":\"x\"}", "not an IP"),
            (b"{\"ts\":\"t\",\"decky\":\"d\",\"service\":\"s\",\"event_type\":\"e\",\"attacker_ip\":\"1.2.3.4\",\"fields\":[1]}", "not an object"),
            (b"{\"ts\":\"\",\"decky\":\"d\",\"service\":\"s\",\"event_type\":\"e\",\"attacker_ip\":\"1.2.3.4\"}", "empty ts"),
            (b"\xff\xfe", "not a journal record"),
        ];
        for (line, why) in cases {
            let e = parse_line(line).unwrap_err();
            assert!(e.contains(why), "{e} should mention {why}");
        }
    }

    #[test]
    fn traceparent_must_be_well_formed() {
        assert!(
            split_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").is_some()
        );
        assert!(
            split_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331").is_none()
        );
        assert!(split_traceparent("00-xyz-b7ad6b7169203331-01").is_none());
    }

    #[test]
    fn dead_raw_is_capped_and_lossy() {
        let long = vec![b'a'; 10_000];
        assert_eq!(dead_raw(&long).len(), DEAD_LETTER_RAW_MAX);
        assert_eq!(dead_raw(b"\xffok"), "\u{fffd}ok");
        // Found by the journal_line fuzz target: invalid bytes triple in size as U+FFFD.
        let invalid = vec![0x99u8; 10_000];
        let raw = dead_raw(&invalid);
        assert!(raw.len() <= DEAD_LETTER_RAW_MAX && raw.len() > DEAD_LETTER_RAW_MAX - 3);
    }
}
