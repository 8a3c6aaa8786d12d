//! The sensor stage: load the kernel programs, fill the decoy map, attach to the decoy
//! interface, and read the ring buffer into typed [`Probe`]s, which it hands to a
//! [`ProbeSink`] (the collector). It knows nothing of what comes after.
//!
//! - `loader`: object loading, decoy map, attach (XDP native/generic or TC) and test runs.
//! - `attach`: the `--xdp-mode` choice and the modes an attachment ends up in.
//! - `decoy`: decoys, and addresses as the kernel maps key them.
//! - `ring`: the AsyncFd ring reader, batching decoded probes to the sink.
//! - `decode`: raw kernel event -> [`Probe`].
//! - `sink`: where probes go, behind the flood guard's ledger of what was written.
//! - `guard`: the flood guard's userspace half (its budget, sweeping quiet sources).
//! - `ledger`: what was written of each flooding source, so no withheld event counts twice.
//! - `flows`: the flow table's userspace half (idle and evicted flows).
//! - `batch`: reading a whole map in a few syscalls, for the sweeps.
//! - `kernel_stats`: the per-CPU counters, summed.
//! - `iface`: whether the decoy interface is there and the programs on it.
//! - `pin`: the bpffs pins that let a restarted daemon take over the same programs and ring,
//!   and how this daemon's counters started.
//! - `error`: what can go wrong at the kernel boundary.
//!
//! Stage 2 (sensor) of the pipeline: docs/architecture.md.

pub(crate) mod attach;
pub(crate) mod batch;
pub mod decode;
pub mod decoy;
pub mod error;
pub mod flows;
pub mod guard;
pub mod iface;
pub mod kernel_stats;
pub mod ledger;
pub mod loader;
pub mod pin;
pub mod ring;
pub mod sink;

pub use attach::{AttachMode, EgressMode, XdpModeChoice};
pub use decode::{Probe, Suppressed, TcpOptions};
pub use decoy::{Decoy, decoy_key, key_addr};
pub use error::SensorError;
pub use guard::FloodBudget;
pub use kernel_stats::KernelStats;
pub use loader::Sensor;
pub use sink::{Output, ProbeSink};
