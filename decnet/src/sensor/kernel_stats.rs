//! Kernel counters: the per-CPU STATS array summed over CPUs.

use std::sync::{Arc, Mutex};

use aya::maps::{MapData, PerCpuArray};
use decnet_common::{STAT_NAMES, Stat};
use serde::Serialize;

use super::SensorError;

/// Sums of the kernel's per-CPU counters at one instant.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct KernelCounters {
    pub packets_seen: u64,
    pub packets_to_decoy: u64,
    pub events_emitted: u64,
    pub ring_reserve_failed: u64,
    pub malformed: u64,
    pub decoy_not_emitted: u64,
}

/// Shared handle to the STATS map; cheap to clone into API state.
#[derive(Clone)]
pub struct KernelStats {
    map: Arc<Mutex<PerCpuArray<MapData, u64>>>,
}

impl KernelStats {
    pub(crate) fn new(map: PerCpuArray<MapData, u64>) -> Self {
        Self {
            map: Arc::new(Mutex::new(map)),
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
            }
        }
        Ok(c)
    }
}
