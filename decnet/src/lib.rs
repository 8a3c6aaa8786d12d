//! decnet: an eBPF-accelerated sensor and analyst for deception networks.
//!
//! Stages, one module each: [`sensor`] (kernel program, ring reader, decoding),
//! [`collector`] (journal), [`ingest`] (journal -> SQLite), [`profile`] (attacker profiles,
//! campaigns, detections), [`api`] (HTTP), with [`store`] (every query), [`hub`] (live
//! announcements), [`config`] and the [`daemon`] that wires them. See DESIGN.md for the architecture and the public contracts.

pub mod api;
pub mod client;
pub mod collector;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod handover;
pub mod hub;
pub mod ingest;
pub mod intel;
pub(crate) mod pace;
pub mod privilege;
pub mod profile;
pub mod reattach;
pub(crate) mod relay;
pub mod row;
pub mod sensor;
pub mod stats;
pub mod store;
pub mod telemetry;
pub(crate) mod textsafe;
pub mod timefmt;
