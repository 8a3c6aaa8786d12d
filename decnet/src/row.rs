//! The row every stage passes on: a journal record as the ingester commits it
//! ([`NewLog`]), its `fields` object parsed once ([`Fields`]), and what was found in it
//! ([`Facts`]).
//!
//! The ingester parses each row's fields to find its bounties. In one process it hands
//! the result, with the committed rows, to the profiler over the hub; the profiler used to
//! parse the same text twice more (its own view, then the bounties again), which was a
//! tenth of the daemon's CPU under a flood. Rows the profiler reads back from the database
//! are parsed the same way, so both paths fold the same values.
//!
//! This module depends on nothing else of decnet: every stage may use it.
//!
//! Stage 0 (base) of the pipeline: docs/architecture.md.

use serde::Deserialize;

/// A journal record ready to insert.
#[derive(Clone, Debug, PartialEq)]
pub struct NewLog {
    pub ts: String,
    pub decky: String,
    pub service: String,
    pub event_type: String,
    pub attacker_ip: String,
    /// The `fields` object as JSON text.
    pub fields: String,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    /// The sensor that saw it (`--sensor-id`; set by the ingester, '' for rows from before
    /// fleet mode). Shared by every row of one ingester.
    pub sensor: std::sync::Arc<str>,
}

/// The fields the ingester and the profiler look at; anything else in the object is
/// ignored. The object is read as a whole: a field of the wrong type (another writer's
/// record) leaves every field unset, as a record without fields.
#[derive(Deserialize, Default, Debug, Clone, PartialEq)]
#[serde(default)]
pub struct Fields {
    pub dst_port: Option<u16>,
    pub dst_ip: Option<String>,
    pub flags: Option<String>,
    pub probe: Option<String>,
    pub window: Option<u16>,
    pub df: Option<bool>,
    pub ttl: Option<u8>,
    pub urg_ptr: Option<u16>,
    pub ip_id: Option<u16>,
    pub ack: Option<u32>,
    pub seq: Option<u32>,
    pub options: Option<String>,
    pub ts_val: Option<u32>,
    pub traits: Option<Vec<String>>,
    pub payload_len: Option<u32>,
    pub payload_b64: Option<String>,
    pub icmp_type: Option<u8>,
    // probe_outcome
    pub outcome: Option<String>,
    pub rtt_ns: Option<u64>,
    // tcp_flow
    pub handshake: Option<bool>,
    pub connect_scan: Option<bool>,
    pub attacker_bytes: Option<u64>,
    pub decoy_bytes: Option<u64>,
    pub retransmits: Option<u64>,
    // source_suppressed
    pub suppressed: Option<u64>,
    pub distinct_ports_est: Option<u64>,
    pub ports_saturated: Option<bool>,
    pub distinct_decoys: Option<u64>,
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
}

impl Fields {
    /// Parses a row's `fields` text; anything unreadable gives the empty set.
    pub fn parse(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_default()
    }
}

/// A row's parsed fields and the artifacts (bounties) found in the row.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Facts {
    pub fields: Fields,
    /// (kind, value), as the ingester's bounty extraction gives them.
    pub artifacts: Vec<(&'static str, String)>,
}
