//! The flood guard's ledger: what was written of each source's kernel entry.
//!
//! The kernel's per-source counts of withheld events are cumulative and reach userspace by
//! two paths (kernel summaries through the ring, the sweep of quiet sources), so each
//! summary carries only what was not written before.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

/// How much of one source's flood-guard entry has been written: the entry's first withheld
/// event (kernel monotonic ns, set once per entry: it tells a re-created entry from the
/// same one) and its cumulative withheld count at the last summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reported {
    pub first_ns: u64,
    pub total: u64,
}

/// The withheld events in `now` not yet written, given what was written (`prev`).
///
/// A source's summaries come by two paths that can overtake each other: the kernel's, once
/// a second through the ring, and the map sweep's for sources gone quiet. When the ring
/// reader lags, a kernel summary can arrive after the sweep wrote a later total of the same
/// entry; it then adds nothing. Only a later entry (evicted and re-created: a later
/// `first_ns`) starts again from zero. An older entry's summary, late behind its
/// replacement's, is dropped: what it had not reported is no longer known exactly.
/// `first_ns` 0 (an older handover's total) stands for whichever entry comes.
pub(crate) fn unreported_delta(prev: Option<Reported>, now: Reported) -> u64 {
    match prev {
        None => now.total,
        Some(p) if p.first_ns == now.first_ns || p.first_ns == 0 => {
            now.total.saturating_sub(p.total)
        }
        Some(p) if now.first_ns > p.first_ns => now.total,
        Some(_) => 0,
    }
}

/// What was written of each source's kernel entry. It outlives a pinned restart through
/// the handover, because the kernel's per-source counts carry on.
#[derive(Default)]
pub struct Ledger {
    reported: HashMap<IpAddr, Reported>,
}

impl Ledger {
    pub fn entries(&self) -> Vec<(IpAddr, Reported)> {
        self.reported.iter().map(|(ip, r)| (*ip, *r)).collect()
    }

    pub fn extend(&mut self, reported: &[(IpAddr, Reported)]) {
        self.reported.extend(reported.iter().copied());
    }

    /// True when the kernel entry `now` of `src` holds withheld events not written yet.
    pub(crate) fn unreported(&self, src: IpAddr, now: Reported) -> bool {
        unreported_delta(self.reported.get(&src).copied(), now) > 0
    }

    /// The withheld events of `now` not written yet, recorded as written when there are any.
    pub fn take(&mut self, src: IpAddr, now: Reported) -> u64 {
        let delta = unreported_delta(self.reported.get(&src).copied(), now);
        if delta > 0 {
            self.reported.insert(src, now);
        }
        delta
    }

    /// Forgets sources not in `live` (evicted from the kernel map: if they come back, their
    /// counters start from zero).
    pub(crate) fn forget_except(&mut self, live: &[IpAddr]) {
        if self.reported.len() > live.len() {
            let live: HashSet<&IpAddr> = live.iter().collect();
            self.reported.retain(|ip, _| live.contains(ip));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Reported, unreported_delta};

    #[test]
    fn a_late_summary_of_the_same_entry_adds_nothing() {
        let r = |first_ns, total| Reported { first_ns, total };
        assert_eq!(unreported_delta(None, r(5, 40)), 40);
        assert_eq!(unreported_delta(Some(r(5, 40)), r(5, 100)), 60);
        // The ring's summary of 13,140 after the sweep wrote 16,044 (seen in the soak).
        assert_eq!(unreported_delta(Some(r(5, 16_044)), r(5, 13_140)), 0);
        assert_eq!(unreported_delta(Some(r(5, 40)), r(5, 40)), 0);
        // Evicted and re-created: counts start again.
        assert_eq!(unreported_delta(Some(r(5, 40)), r(9, 3)), 3);
        // The old entry's summary behind its replacement's.
        assert_eq!(unreported_delta(Some(r(9, 3)), r(5, 41)), 0);
        // Taken over from an older handover, which did not name the entry.
        assert_eq!(unreported_delta(Some(r(0, 40)), r(5, 45)), 5);
    }
}
