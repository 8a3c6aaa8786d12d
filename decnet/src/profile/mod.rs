//! The profile stage: logs -> per-attacker profiles, incrementally.
//!
//! - `stats`: streaming timing statistics (Welford, reservoir median).
//! - `state`: per-IP state and the profile built from it.
//! - `classify`: behavior class and scan pattern rules.
//! - `tools`: tool attribution by signature votes.
//! - `worker`: the cursor-driven incremental worker.
//!
//! Computed today: timing, deckies (traversal path), services, ports, scan kinds (including
//! nmap OS detection), scan pattern, behavior class, tools, hop distance and TCP fingerprint.
//! Not yet: OS guess, commands, campaigns, risk, detection events.

pub mod classify;
pub mod state;
pub mod stats;
pub mod tools;
pub mod worker;

pub use worker::Profiler;
