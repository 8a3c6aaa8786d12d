//! Any bytes as a journal line (any process may append to the journal): parsing never
//! panics, a line is either a row or a dead letter with a reason, and an accepted row is
//! what the store and the profiler expect.
#![no_main]

use decnet::ingest::{bounty, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse::parse_line(data) {
        Ok(row) => {
            let fields: serde_json::Value =
                serde_json::from_str(&row.fields).expect("accepted fields are JSON");
            assert!(fields.is_object(), "accepted fields are an object");
            assert!(row.attacker_ip.parse::<std::net::IpAddr>().is_ok());
            assert!(!row.ts.is_empty() && !row.event_type.is_empty());
            for b in bounty::bounties(&row) {
                assert!(!b.kind.is_empty());
            }
        }
        Err(reason) => {
            assert!(!reason.is_empty(), "a dead letter says why");
            let raw = parse::dead_raw(data);
            assert!(
                raw.len() <= parse::DEAD_LETTER_RAW_MAX,
                "{} bytes",
                raw.len()
            );
        }
    }
});
