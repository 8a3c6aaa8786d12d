//! decnet: an eBPF-accelerated sensor and analyst for deception networks.
//!
//! The daemon is a pipeline of stages, each a module that uses only the stages before it
//! (docs/architecture.md has the table, and one probe followed through every file;
//! `cargo xtask layers` checks the direction):
//! base ([`row`], [`timefmt`], `textsafe`, `pace`, [`counters`], [`stats`],
//! [`telemetry`], [`privilege`]) -> [`intel`] (packet knowledge) -> [`sensor`] (kernel
//! programs, ring, decoding) -> [`collector`] (journal) -> [`store`] (every query) ->
//! [`hub`] and `relay` (live announcements) -> [`ingest`] (journal -> database) ->
//! [`profile`] (profiles, campaigns, detections) -> [`config`] -> [`api`] and [`client`]
//! -> [`daemon`], which wires them, and [`replay`], which wires them for capture files.

pub mod alert;
pub mod api;
pub mod client;
pub mod collector;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod feed;
pub mod handover;
pub mod hub;
pub mod ingest;
pub mod intel;
pub(crate) mod pace;
pub mod privilege;
pub mod profile;
pub mod reattach;
pub(crate) mod relay;
pub mod replay;
pub mod retain;
pub mod row;
pub mod sensor;
pub mod stats;
pub mod store;
pub mod telemetry;
pub(crate) mod textsafe;
pub mod timefmt;
pub mod tls;
