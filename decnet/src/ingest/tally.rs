//! Bounty counts kept between tallies.
//!
//! Most rows carry an artifact already stored (a scanner's TCP fingerprint on each of its
//! SYNs). Upserting its count in every batch was one statement row per artifact per batch:
//! under a backlog of many sources about as many upserts as log rows, a fifth of ingest's
//! time (`cargo xtask bench ingest`). So the ingester counts artifacts here and adds the
//! counts to the store at most once per `every` (a tally), or when it is idle or stops.
//!
//! An artifact this ingester has not seen yet still reaches the store in its own batch, as
//! a row with a count of 0, so new artifacts show at once; only counts wait for the tally.
//!
//! Exactly once: a tally commits with its cursor, the id of the last log it counted, in
//! the batch's transaction. The stored counts are therefore those of every log up to the
//! cursor, and a restart counts again the logs after it ([`Tally::recount`]).

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher},
    time::{Duration, Instant},
};

use super::bounty;
use crate::{
    row::NewLog,
    store::{self, BountyCount, Store, StoreError},
};

/// `state` key of a sensor's tally cursor.
const TALLY_KEY: &str = "bounty_tally";

/// The artifacts this ingester knows to be stored are remembered by hash; past this many
/// the set starts again (an artifact it forgets is only inserted again, as a no-op).
const KNOWN_MAX: usize = 1 << 18;
/// Past this many distinct artifacts counted, a tally is due whatever the time.
const COUNTS_MAX: usize = 50_000;

type Hasher = BuildHasherDefault<DefaultHasher>;

/// What an artifact is, for the store: (attacker, kind, value).
type Key = (String, &'static str, String);

pub(super) struct Tally {
    key: String,
    every: Duration,
    /// When the last tally was taken; None: none yet, so the first batch takes one (and
    /// with it the cursor exists from the start).
    last: Option<Instant>,
    /// Counts since the last tally, by the artifact's hash: (order first seen, artifact,
    /// count).
    counts: HashMap<u64, (usize, Key, BountyCount), Hasher>,
    known: HashSet<u64, Hasher>,
    /// The highest log id counted by [`Tally::recount`]: the cursor of a tally taken in a
    /// batch with no logs before this process committed any.
    recounted_through: i64,
}

/// What [`Tally::note`] did with an artifact.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Noted {
    /// Counted for the next tally; the store has its row already.
    Counted,
    /// Counted for the next tally; the batch must make sure its row exists.
    New,
    /// Another artifact has the same hash in this window: count it in the batch itself.
    Collided,
}

impl Tally {
    pub(super) fn new(sensor: &str, every: Duration) -> Self {
        Self {
            key: if sensor.is_empty() {
                TALLY_KEY.to_owned()
            } else {
                format!("{TALLY_KEY}:{sensor}")
            },
            every,
            last: None,
            counts: HashMap::default(),
            known: HashSet::default(),
            recounted_through: 0,
        }
    }

    fn hash(ip: &str, kind: &str, value: &str) -> u64 {
        Hasher::default().hash_one((ip, kind, value))
    }

    /// Counts one artifact of a log at `ts`.
    pub(super) fn note(&mut self, ip: &str, kind: &'static str, value: &str, ts: &str) -> Noted {
        let h = Self::hash(ip, kind, value);
        let next = self.counts.len();
        let (_, key, c) = self.counts.entry(h).or_insert_with(|| {
            (
                next,
                (ip.to_owned(), kind, value.to_owned()),
                BountyCount {
                    first_seen: ts.to_owned(),
                    last_seen: String::new(),
                    count: 0,
                },
            )
        });
        if key.0 != ip || key.1 != kind || key.2 != value {
            return Noted::Collided;
        }
        c.last_seen.clear();
        c.last_seen.push_str(ts);
        c.count += 1;
        if self.known.len() >= KNOWN_MAX {
            self.known.clear();
        }
        if self.known.insert(h) {
            Noted::New
        } else {
            Noted::Counted
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Whether a tally is due: asked for (`now`), `every` has passed, too many artifacts
    /// wait, or none was taken yet; and there is something to take.
    pub(super) fn due(&self, now: bool) -> bool {
        let Some(last) = self.last else {
            return true;
        };
        !self.counts.is_empty()
            && (now || self.counts.len() >= COUNTS_MAX || last.elapsed() >= self.every)
    }

    /// The counts since the last tally, when one is [due](Self::due): they go with the
    /// batch being sealed, which holds every log counted so far.
    pub(super) fn take(&mut self, now: bool) -> Option<store::Tally> {
        if !self.due(now) {
            return None;
        }
        self.last = Some(Instant::now());
        let mut counts: Vec<_> = self.counts.drain().map(|(_, v)| v).collect();
        counts.sort_unstable_by_key(|(seq, ..)| *seq);
        Some(store::Tally {
            key: self.key.clone(),
            through: None,
            counts: counts.into_iter().map(|(_, k, c)| (k, c)).collect(),
        })
    }

    /// The cursor for a tally in a batch without logs: the last log this ingester
    /// committed (`committed`, 0 for none yet in this process), or the last it recounted.
    pub(super) fn through(&self, committed: i64) -> i64 {
        committed.max(self.recounted_through)
    }

    /// At start: counts again the artifacts of this sensor's logs stored after the last
    /// tally's cursor (those a stop or crash left uncounted). None stored: every log so far
    /// was counted in its own batch (before tallies), and there is nothing to recount.
    pub(super) async fn recount(&mut self, store: &Store, sensor: &str) -> Result<(), StoreError> {
        let Some(mut after) = store.get_state_json::<i64>(&self.key).await? else {
            return Ok(());
        };
        let mut recounted = 0u64;
        loop {
            let rows = store.sensor_logs_after(sensor, after, 10_000).await?;
            let Some((last, _)) = rows.last() else { break };
            after = *last;
            for (_, log) in &rows {
                self.count_log(log);
                recounted += 1;
            }
        }
        self.recounted_through = after;
        if recounted > 0 {
            tracing::info!(
                logs = recounted,
                through = after,
                "bounty counts after the last tally recounted"
            );
        }
        Ok(())
    }

    fn count_log(&mut self, log: &NewLog) {
        for (kind, value) in bounty::extract(log) {
            if self.note(&log.attacker_ip, kind, &value, &log.ts) == Noted::Collided {
                // Rows a recount finds are stored, and so are their artifacts (inserted with
                // their batch): a colliding one waits for the next window.
                tracing::warn!(
                    kind,
                    "bounty hash collision while recounting; count deferred"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_wait_for_the_tally_and_only_new_artifacts_go_at_once() {
        let mut t = Tally::new("s1", Duration::from_secs(3600));
        assert_eq!(t.note("10.0.0.1", "tcp_fingerprint", "a", "t1"), Noted::New);
        assert_eq!(
            t.note("10.0.0.1", "tcp_fingerprint", "a", "t2"),
            Noted::Counted
        );
        assert_eq!(t.note("10.0.0.2", "tcp_fingerprint", "a", "t3"), Noted::New);
        // The first batch always takes a tally: the cursor exists from the start.
        let first = t.take(false).expect("the first tally");
        assert_eq!(first.key, "bounty_tally:s1");
        assert_eq!(
            first.counts,
            vec![
                (
                    ("10.0.0.1".to_owned(), "tcp_fingerprint", "a".to_owned()),
                    BountyCount {
                        first_seen: "t1".into(),
                        last_seen: "t2".into(),
                        count: 2
                    }
                ),
                (
                    ("10.0.0.2".to_owned(), "tcp_fingerprint", "a".to_owned()),
                    BountyCount {
                        first_seen: "t3".into(),
                        last_seen: "t3".into(),
                        count: 1
                    }
                ),
            ]
        );
        // Known now: counted, not new; and not due before `every` unless asked.
        assert_eq!(
            t.note("10.0.0.1", "tcp_fingerprint", "a", "t4"),
            Noted::Counted
        );
        assert!(t.take(false).is_none());
        let now = t.take(true).expect("a tally when asked");
        assert_eq!(now.counts.len(), 1);
        assert_eq!(now.counts[0].1.count, 1);
        assert!(t.is_empty());
        assert!(t.take(true).is_none(), "nothing to tally");
    }
}
