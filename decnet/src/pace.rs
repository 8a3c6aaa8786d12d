//! Pace: whether a stream of work is busy enough to be worth batching.
//!
//! Each stage hop (ring wake-up, journal write, ingest commit, SQLite transaction) has a
//! fixed cost of a few hundred microseconds. A few probes a second can each pay it and be
//! seen at once; a flood of thousands cannot (`cargo xtask bench capture`: 4,960 commits
//! for 14,500 events cost three times tcpdump's CPU). The ring reader and the ingester ask
//! a `Pace` whether to wait a little and take the work in batches.

use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(1);

/// The rate (items a second) from which the ring reader and the ingester batch. Below it
/// every item goes through at once (at this rate the fixed costs are a few percent of a
/// core); `cargo xtask bench stream` sends 100 probes a second and sees each within ~1 ms.
pub(crate) const BUSY_PER_SECOND: u64 = 200;

/// Counts items per one-second window against a rate.
#[derive(Debug)]
pub(crate) struct Pace {
    per_second: u64,
    window_start: Instant,
    count: u64,
    /// The last whole window reached the rate.
    busy_before: bool,
}

impl Pace {
    /// Busy from `per_second` items a second on.
    pub(crate) fn new(per_second: u64) -> Self {
        Self {
            per_second,
            window_start: Instant::now(),
            count: 0,
            busy_before: false,
        }
    }

    /// Counts `n` items done now; true while the rate is reached: in the window so far
    /// (a flood is noticed within its first second) or in the last one (and a flood that
    /// pauses briefly stays batched). A quiet spell longer than a window ends it.
    pub(crate) fn note(&mut self, n: u64) -> bool {
        self.note_at(Instant::now(), n)
    }

    fn note_at(&mut self, now: Instant, n: u64) -> bool {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            // Over the whole time since the window began: after a long silence the rate
            // is low, whatever the last window held.
            let rate = self.count as f64 / elapsed.as_secs_f64();
            self.busy_before = rate >= self.per_second as f64 && elapsed < 2 * WINDOW;
            self.window_start = now;
            self.count = 0;
        }
        self.count += n;
        self.busy_before || self.count >= self.per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickle_is_never_busy_and_a_flood_is_at_once() {
        let t0 = Instant::now();
        let mut p = Pace::new(200);
        // 100 items a second for 3 s: never busy.
        for i in 0..300u64 {
            assert!(
                !p.note_at(t0 + Duration::from_millis(i * 10), 1),
                "item {i}"
            );
        }
        // Then 1,000 a second: busy from the 200th item of the flood's first window on.
        let t1 = t0 + Duration::from_secs(3);
        let busy: Vec<bool> = (0..1000u64)
            .map(|i| p.note_at(t1 + Duration::from_millis(i), 1))
            .collect();
        let first = busy.iter().position(|b| *b).expect("busy at some point");
        assert!(
            first < 300,
            "noticed within the flood's first window: {first}"
        );
        assert!(
            busy[first..].iter().all(|b| *b),
            "stays busy during the flood"
        );
        // The next window still counts the flood's second.
        let t2 = t1 + Duration::from_millis(1000);
        assert!(p.note_at(t2, 1));
        // A long quiet spell ends it.
        assert!(!p.note_at(t2 + Duration::from_secs(5), 1));
        assert!(!p.note_at(t2 + Duration::from_secs(5) + Duration::from_millis(5), 1));
    }
}
