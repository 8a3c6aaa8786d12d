//! Kernel counters: the per-CPU STATS array summed over CPUs.

use std::sync::{Arc, Mutex};

use aya::maps::{MapData, PerCpuArray};
use decnet_common::{STAT_NAMES, Stat};
use serde::Serialize;

use super::{error::SensorError, guard::FloodBudget};

/// Sums of the kernel's per-CPU counters at one instant.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct KernelCounters {
    pub packets_seen: u64,
    pub packets_to_decoy: u64,
    pub events_emitted: u64,
    pub ring_reserve_failed: u64,
    pub malformed: u64,
    pub decoy_not_emitted: u64,
    /// Events the flood guard withheld (reported in `source_suppressed` summaries).
    pub suppressed: u64,
    /// `source_suppressed` summaries the kernel submitted (part of `events_emitted`).
    pub suppressed_summaries: u64,
    /// Packets the TC egress program ran on, and those sent by a decoy.
    pub egress_seen: u64,
    pub egress_from_decoy: u64,
    /// `probe_outcome` events submitted (part of `events_emitted`).
    pub probe_outcomes: u64,
    /// Decoy answers to no probe the flow map remembers (evicted or older than the sensor).
    pub outcomes_unmatched: u64,
    /// Decoy answers to probes the flood guard withheld.
    pub outcomes_withheld: u64,
    /// `tcp_flow` summaries the kernel submitted (part of `events_emitted`).
    pub flow_summaries: u64,
    /// Decoy frames on egress that could not be parsed.
    pub egress_malformed: u64,
}

/// Shared handle to the STATS map; cheap to clone into API state.
#[derive(Clone)]
pub struct KernelStats {
    map: Arc<Mutex<PerCpuArray<MapData, u64>>>,
    /// The flood guard's budget as loaded into the kernel.
    pub flood: FloodBudget,
}

impl KernelStats {
    pub(crate) fn new(map: PerCpuArray<MapData, u64>, flood: FloodBudget) -> Self {
        Self {
            map: Arc::new(Mutex::new(map)),
            flood,
        }
    }

    fn sum(map: &PerCpuArray<MapData, u64>, stat: Stat) -> Result<u64, SensorError> {
        let values = map
            .get(&(stat as u32), 0)
            .map_err(|e| SensorError::Map("STATS", e))?;
        Ok(values.iter().sum())
    }

    pub fn read(&self) -> Result<KernelCounters, SensorError> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut c = KernelCounters::default();
        for (stat, _) in STAT_NAMES {
            let v = Self::sum(&map, stat)?;
            match stat {
                Stat::PacketsSeen => c.packets_seen = v,
                Stat::PacketsToDecoy => c.packets_to_decoy = v,
                Stat::EventsEmitted => c.events_emitted = v,
                Stat::RingReserveFailed => c.ring_reserve_failed = v,
                Stat::Malformed => c.malformed = v,
                Stat::DecoyNotEmitted => c.decoy_not_emitted = v,
                Stat::Suppressed => c.suppressed = v,
                Stat::SuppressedSummaries => c.suppressed_summaries = v,
                Stat::EgressSeen => c.egress_seen = v,
                Stat::EgressFromDecoy => c.egress_from_decoy = v,
                Stat::ProbeOutcomes => c.probe_outcomes = v,
                Stat::OutcomesUnmatched => c.outcomes_unmatched = v,
                Stat::OutcomesWithheld => c.outcomes_withheld = v,
                Stat::FlowSummaries => c.flow_summaries = v,
                Stat::EgressMalformed => c.egress_malformed = v,
            }
        }
        Ok(c)
    }
}
