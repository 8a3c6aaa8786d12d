//! Packet knowledge: what a probe's headers and payload say about the stack, the tool and
//! the service it aims at. Pure tables and functions over bytes and numbers, with no state:
//! the collector writes their verdicts into each record, and the ingester and the profiler
//! read rows with them. None of those owns it.
//!
//! - `services`: IANA service names by protocol and port;
//! - `tcp`: initial TTL and the p0f-style TCP fingerprint;
//! - `os`: the OS table, by fingerprint or initial TTL;
//! - `tools`: scanner signatures, tool votes and user agents;
//! - `payload`: artifacts in a first payload (HTTP, SSH, SMTP, FTP, Redis, Telnet, JA4);
//! - `scanners`: the known-scanner and allow address lists (`--known-scanners`, `--allow`);
//! - `geoip`: country and autonomous system from MaxMind-format databases (`--geoip-db`).
//!
//! The last two are the process-wide tables here, each swapped whole on reload.
//!
//! Stage 1 (intel) of the pipeline: docs/architecture.md.

pub mod geoip;
pub mod os;
pub mod payload;
pub mod scanners;
pub(crate) mod services;
pub mod tcp;
pub mod tools;
