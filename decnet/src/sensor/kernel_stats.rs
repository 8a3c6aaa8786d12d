//! Kernel counters: the per-CPU STATS array summed over CPUs.

use std::sync::{Arc, Mutex};

use aya::maps::{MapData, PerCpuArray};
use decnet_common::{STAT_NAMES, Stat};
use serde::Serialize;

use super::{error::SensorError, guard::FloodBudget};
use crate::counters::{Kind, Metric};

/// Declares [`KernelCounters`] once per kernel counter: its field, the kernel's `Stat`,
/// and its Prometheus name and help.
macro_rules! kernel_counters {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident: $stat:ident, $metric:literal, $help:literal;
    )*) => {
        /// Sums of the kernel's per-CPU counters at one instant.
        #[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
        pub struct KernelCounters {
            $($(#[doc = $doc])* pub $field: u64,)*
        }

        impl KernelCounters {
            /// The Prometheus metrics, one per counter.
            pub(crate) const METRICS: &'static [Metric<KernelCounters>] = &[$(
                Metric {
                    name: $metric,
                    help: $help,
                    kind: Kind::Counter,
                    value: |k: &KernelCounters| k.$field as f64,
                },
            )*];

            fn set(&mut self, stat: Stat, v: u64) {
                match stat {
                    $(Stat::$stat => self.$field = v,)*
                }
            }
        }
    };
}

kernel_counters! {
    packets_seen: PacketsSeen, "kernel_packets_seen_total", "Frames the XDP program ran on.";
    packets_to_decoy: PacketsToDecoy, "kernel_packets_to_decoy_total",
        "IP packets addressed to a decoy.";
    events_emitted: EventsEmitted, "kernel_events_emitted_total",
        "Events submitted to the ring buffer.";
    ring_reserve_failed: RingReserveFailed, "kernel_ring_reserve_failed_total",
        "Events lost because the ring was full.";
    malformed: Malformed, "kernel_malformed_total", "Frames cut short or with impossible headers.";
    decoy_not_emitted: DecoyNotEmitted, "kernel_decoy_not_emitted_total",
        "Decoy packets not emitted (flow already reported).";
    /// Events the flood guard withheld (reported in `source_suppressed` summaries).
    suppressed: Suppressed, "kernel_suppressed_total",
        "Events the flood guard withheld from over-budget sources (counted in summaries).";
    /// `source_suppressed` summaries the kernel submitted (part of `events_emitted`).
    suppressed_summaries: SuppressedSummaries, "kernel_suppressed_summaries_total",
        "source_suppressed summaries the kernel submitted.";
    /// Packets the TC egress program ran on.
    egress_seen: EgressSeen, "kernel_egress_seen_total", "Frames the TC egress program ran on.";
    /// Packets sent by a decoy.
    egress_from_decoy: EgressFromDecoy, "kernel_egress_from_decoy_total",
        "Egress packets sent by a decoy (its answers).";
    /// `probe_outcome` events submitted (part of `events_emitted`).
    probe_outcomes: ProbeOutcomes, "kernel_probe_outcomes_total",
        "probe_outcome events submitted (decoy answered a reported probe).";
    /// Decoy answers to no probe the flow map remembers (evicted or older than the sensor).
    outcomes_unmatched: OutcomesUnmatched, "kernel_outcomes_unmatched_total",
        "Decoy answers to no probe in the flow map (evicted or older than the sensor).";
    /// Decoy answers to probes the flood guard withheld.
    outcomes_withheld: OutcomesWithheld, "kernel_outcomes_withheld_total",
        "Decoy answers to probes the flood guard withheld.";
    /// `tcp_flow` summaries the kernel submitted (part of `events_emitted`).
    flow_summaries: FlowSummaries, "kernel_flow_summaries_total",
        "tcp_flow summaries the kernel submitted.";
    /// Decoy frames on egress that could not be parsed.
    egress_malformed: EgressMalformed, "kernel_egress_malformed_total",
        "Decoy egress frames that could not be parsed.";
    /// Packets answering a conversation the decoy itself opened (not probes).
    decoy_own_traffic: DecoyOwnTraffic, "kernel_decoy_own_traffic_total",
        "Packets to a decoy answering a conversation it opened itself (not probes).";
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
            c.set(stat, Self::sum(&map, stat)?);
        }
        Ok(c)
    }
}
