//! What one pinned daemon hands the next across a clean restart.
//!
//! With `--pin` the kernel's counters and tables outlive the daemon, so its userspace
//! counters must too, or "kernel emitted == written + counted drops" would break at every
//! restart. A daemon that stops cleanly (ring drained, journal flushed, last batch
//! committed) writes its totals to `handover.json` in the data dir; the next one takes them
//! over, but only if they belong to the same pinned ring (its kernel map id, unique per
//! boot). After a crash there is no handover: the kernel's counters then still cover the
//! pinned programs' whole life while the userspace ones start from zero, and
//! `sensor.handover` in the stats says so.

use std::{
    io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{ingest::ingester::IngestSnapshot, sensor::ledger::Reported, stats::PipelineSnapshot};

/// File name in the data dir.
pub(crate) const FILE: &str = "handover.json";

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Handover {
    /// Kernel id of the pinned event ring the counters belong to.
    pub ring_id: u32,
    /// Clean restarts so far in this pinned life.
    pub restarts: u64,
    pub pipeline: PipelineSnapshot,
    pub ingest: IngestSnapshot,
    /// Flood-guard totals already written per source, as an older decnet wrote them
    /// (without naming the kernel entry); read, no longer written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reported: Vec<(IpAddr, u64)>,
    /// What was written of each source's flood-guard entry.
    #[serde(default)]
    pub flood_reported: Vec<(IpAddr, Reported)>,
}

impl Handover {
    /// The flood-guard totals to carry on from. An older handover's totals do not name
    /// their kernel entry (`first_ns` 0): they are taken as the oldest entry, so a summary
    /// of the same or a later entry counts on from them.
    pub(crate) fn flood_reported(&self) -> Vec<(IpAddr, Reported)> {
        let legacy = self.reported.iter().map(|(ip, total)| {
            (
                *ip,
                Reported {
                    first_ns: 0,
                    total: *total,
                },
            )
        });
        self.flood_reported.iter().copied().chain(legacy).collect()
    }
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Takes (reads and removes) the handover in `dir` if it belongs to `ring_id`.
pub fn take(dir: &Path, ring_id: u32) -> Option<Handover> {
    let p = path(dir);
    let text = std::fs::read(&p).ok()?;
    let _ = std::fs::remove_file(&p);
    match serde_json::from_slice::<Handover>(&text) {
        Ok(h) if h.ring_id == ring_id => Some(h),
        Ok(h) => {
            tracing::warn!(
                theirs = h.ring_id,
                ours = ring_id,
                "a handover for another pinned ring; counters start from zero"
            );
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "unreadable handover; counters start from zero");
            None
        }
    }
}

/// Writes the handover atomically (a new file renamed over the name) and durably.
pub fn write(dir: &Path, h: &Handover) -> io::Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(h).map_err(io::Error::other)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handover_is_taken_once_and_only_by_its_ring() {
        let dir = std::env::temp_dir().join(format!("decnet-handover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut h = Handover {
            ring_id: 7,
            restarts: 2,
            flood_reported: vec![(
                "10.0.0.1".parse().unwrap(),
                Reported {
                    first_ns: 5,
                    total: 40,
                },
            )],
            ..Handover::default()
        };
        h.pipeline.journal_written = 123;
        h.ingest.rows = 120;
        write(&dir, &h).unwrap();
        assert_eq!(take(&dir, 7), Some(h.clone()));
        assert_eq!(take(&dir, 7), None, "taken once");
        write(&dir, &h).unwrap();
        assert_eq!(take(&dir, 8), None, "another ring's totals are not taken");
        assert!(!path(&dir).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_older_handovers_totals_carry_on() {
        let h: Handover = serde_json::from_str(
            r#"{"ring_id":7,"restarts":1,"pipeline":{},"ingest":{},"reported":[["10.0.0.1",40]]}"#,
        )
        .unwrap();
        assert_eq!(
            h.flood_reported(),
            vec![(
                "10.0.0.1".parse().unwrap(),
                Reported {
                    first_ns: 0,
                    total: 40
                }
            )]
        );
    }
}
