//! A row's `fields` object, parsed once.
//!
//! The ingester parses each row's fields to find its bounties. In one process it hands
//! the result, with the committed rows, to the profiler over the hub; the profiler used to
//! parse the same text twice more (its own view, then the bounties again), which was a
//! tenth of the daemon's CPU under a flood. Rows the profiler reads back from the database
//! are parsed here too, so both paths fold the same values.

use serde::Deserialize;

use crate::{ingest::bounty, store::NewLog};

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
    pub traits: Option<Vec<String>>,
    pub payload_len: Option<u32>,
    pub payload_b64: Option<String>,
    pub icmp_type: Option<u8>,
    // probe_outcome
    pub outcome: Option<String>,
    pub rtt_ns: Option<u64>,
    // tcp_flow
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
    /// (kind, value), as [`bounty::extract`] gives them.
    pub artifacts: Vec<(&'static str, String)>,
}

impl Facts {
    pub fn of(log: &NewLog) -> Self {
        let fields = Fields::parse(&log.fields);
        let artifacts = bounty::extract_from(log, &fields);
        Facts { fields, artifacts }
    }
}
