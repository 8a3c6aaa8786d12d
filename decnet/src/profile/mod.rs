//! The profile stage: logs -> per-attacker profiles, incrementally.
//!
//! - `stats`: streaming timing statistics (Welford, reservoir median).
//! - `state`: per-IP state and the profile built from it.
//! - `classify`: behavior class and scan pattern rules.
//! - `tools`: tool attribution by signature votes.
//! - `risk`: the 0-100 score and its reasons.
//! - `worker`: the cursor-driven incremental worker.
//!
//! Computed today: timing, deckies (traversal path), services, ports, scan kinds (including
//! nmap OS detection), scan pattern, behavior class, tools, hop distance and TCP fingerprint.
//! Also risk (without the credential/command/campaign parts yet).
//! Not yet: OS guess, commands, campaigns, detection events.

pub mod campaign;
pub mod classify;
pub mod commands;
pub mod os;
pub mod risk;
pub mod state;
pub mod stats;
pub mod tools;
pub mod worker;

pub use worker::Profiler;
