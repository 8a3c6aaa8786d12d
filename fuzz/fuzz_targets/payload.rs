//! A probe's first payload (attacker bytes, up to 128 in the journal but any length here)
//! with its destination port: the artifact extractors (TLS ClientHello -> JA4, SSH banner,
//! HTTP request, Redis, credentials, commands) never panic and keep values bounded.
#![no_main]

use decnet::intel::payload::{VALUE_MAX, ja4, payload_artifacts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((port, payload)) = data.split_first_chunk::<2>() else {
        return;
    };
    let port = u16::from_be_bytes(*port);
    let mut out = Vec::new();
    payload_artifacts(payload, port, &mut out);
    for (kind, value) in &out {
        assert!(!kind.is_empty());
        assert!(
            value.chars().count() <= VALUE_MAX,
            "{kind}: {} chars",
            value.chars().count()
        );
    }
    if let Some(ja4) = ja4(payload) {
        assert!(ja4.is_ascii(), "{ja4:?}");
    }
});
