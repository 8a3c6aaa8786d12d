//! What the profiler holds between commits: the campaign index and campaigns, the states
//! it profiled lately, and the changes not committed yet; and campaign matching over them.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use super::{campaign, matcher::Matcher, state::IpState, verdict::Verdict};
use crate::store::{DetectionRow, Shard, Store, StoreError};

/// What the profiler keeps between batches. While it profiles it is the only writer of
/// the states (one process, or the analyst holding the lock; the cursor's compare-and-set
/// refuses a commit otherwise), so what it holds is what the database holds plus the
/// changes not committed yet.
pub(super) struct Memory {
    pub(super) matcher: Matcher,
    pub(super) next_detection: i64,
    /// A shard analyst's last campaign move applied (see `Profiler::apply_moves`).
    pub(super) moves_seq: i64,
    /// Streaming states, so a source's next rows need no load and no JSON decode.
    pub(super) hot: HashMap<String, Box<Hot>>,
    /// Commits so far; a state touched since the last one is kept when the rest goes.
    pub(super) generation: u64,
    pub(super) pending: Pending,
}

/// A source's state as the profiler holds it.
pub(super) struct Hot {
    pub(super) st: IpState,
    /// The [`Memory::generation`] that last folded a row into it.
    pub(super) used: u64,
    /// Its verdict after the last batch that changed it, until the commit renders it.
    pub(super) verdict: Option<Box<Verdict>>,
}

/// What has changed since the last commit: the next commit writes exactly these, with the
/// cursor after the last row folded. A source's rows between two commits cost one write.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) sources: BTreeSet<String>,
    /// Detections of the batches folded, announced once committed.
    pub(super) detections: Vec<DetectionRow>,
    /// The last log id folded.
    pub(super) last_id: Option<i64>,
    /// When the first uncommitted row was folded.
    pub(super) since: Option<Instant>,
    /// Campaign moves were applied (a shard analyst's).
    pub(super) moves: bool,
}

/// Changes are committed at the end of every catch-up (when the backlog is drained: live
/// rows reach their profile within one pass) and, while a backlog lasts, every
/// [`COMMIT_EVERY`] or once [`MAX_PENDING`] sources have changed: a restart replays at
/// most that much, and memory stays bounded.
pub(super) const COMMIT_EVERY: Duration = Duration::from_secs(1);
pub(super) const MAX_PENDING: usize = 10_000;
/// States held at most after a commit; past this, only those touched since the previous
/// commit stay (then none), and the others are read back when their source returns.
const MAX_HOT: usize = MAX_PENDING;

impl Pending {
    /// Marks `ip` changed (looked up before made owned: a busy source changes with every
    /// batch between two commits).
    pub(super) fn source(&mut self, ip: &str) {
        if !self.sources.contains(ip) {
            self.sources.insert(ip.to_owned());
        }
    }

    pub(super) fn due(&self) -> bool {
        self.sources.len() >= MAX_PENDING || self.since.is_some_and(|t| t.elapsed() >= COMMIT_EVERY)
    }
}

impl Memory {
    /// What the profiler of `shard` (None: of every source) starts from: a shard's keeps
    /// no campaigns (the campaign pass does), only how far it applied the pass's moves.
    pub(super) async fn load(store: &Store, shard: Option<Shard>) -> Result<Memory, StoreError> {
        if let Some(shard) = shard {
            return Ok(Memory {
                matcher: Matcher::default(),
                next_detection: store.last_detection_id().await? + 1,
                moves_seq: store
                    .get_state_json::<i64>(&shard.moves_key())
                    .await?
                    .unwrap_or(0),
                hot: HashMap::new(),
                generation: 0,
                pending: Pending::default(),
            });
        }
        Ok(Memory {
            matcher: Matcher::load(store).await?,
            next_detection: store.last_detection_id().await? + 1,
            moves_seq: 0,
            hot: HashMap::new(),
            generation: 0,
            pending: Pending::default(),
        })
    }

    /// Reads the states of `ips` that are not held yet (a source never seen starts empty).
    pub(super) async fn hold(&mut self, store: &Store, ips: &[&str]) -> Result<(), StoreError> {
        let missing: Vec<&str> = ips
            .iter()
            .filter(|ip| !self.hot.contains_key(**ip))
            .copied()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let saved = store.load_behaviors(&missing).await?;
        for ip in missing {
            let st = saved
                .get(ip)
                .and_then(|j| serde_json::from_str(j).ok())
                .unwrap_or_default();
            self.hot.insert(
                ip.to_owned(),
                Box::new(Hot {
                    st,
                    used: self.generation,
                    verdict: None,
                }),
            );
        }
        Ok(())
    }

    /// After a commit lands: past [`MAX_HOT`] states, keep those touched since the commit
    /// before it, and if that is still too many, only those with changes the next commit
    /// has yet to write (it renders them from here; the database has the rest).
    pub(super) fn evict(&mut self) {
        if self.hot.len() <= MAX_HOT {
            return;
        }
        let recent = self.generation.saturating_sub(1);
        let pending = &self.pending.sources;
        self.hot
            .retain(|ip, h| h.used >= recent || pending.contains(ip));
        if self.hot.len() > MAX_HOT {
            self.hot.retain(|ip, _| pending.contains(ip));
        }
    }
}

/// One batch's campaign matching: sources whose campaign it changed, and those of them
/// whose state is not held yet.
#[derive(Default)]
pub(super) struct Work {
    pub(super) touched: BTreeSet<String>,
    pub(super) moved: BTreeMap<String, i64>,
}

impl Work {
    /// Campaign matching for one source the batch touched (rules in `campaign`).
    pub(super) fn match_campaign(&mut self, mem: &mut Memory, ip: &str) {
        let Some(h) = mem.hot.get_mut(ip) else {
            return;
        };
        let st = &mut h.st;
        if !campaign::refresh_key(st) {
            mem.matcher.index.remove(ip);
        }
        let Some(key) = st.campaign_key.clone() else {
            return;
        };
        let Some(me) = mem.matcher.index.summary(ip, st) else {
            return;
        };
        let (hot, pending) = (&mut mem.hot, &mut mem.pending);
        mem.matcher.place(&key, me, &mut |ip, id| {
            self.touched.insert(ip.to_owned());
            match hot.get_mut(ip) {
                Some(h) => {
                    h.st.campaign_id = Some(id);
                    pending.source(ip);
                }
                None => {
                    self.moved.insert(ip.to_owned(), id);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(generation: u64) -> Memory {
        Memory {
            matcher: Matcher {
                next_campaign: 1,
                ..Matcher::default()
            },
            next_detection: 1,
            moves_seq: 0,
            hot: HashMap::new(),
            generation,
            pending: Pending::default(),
        }
    }

    fn hot(used: u64) -> Box<Hot> {
        Box::new(Hot {
            st: IpState::default(),
            used,
            verdict: None,
        })
    }

    /// `n` states last folded in generation `used`.
    fn crowd(m: &mut Memory, n: usize, used: u64) {
        for i in 0..n {
            m.hot
                .insert(format!("10.{used}.{}.{}", i / 256, i % 256), hot(used));
        }
    }

    fn left(m: &Memory) -> Vec<&str> {
        let mut left: Vec<&str> = m.hot.keys().map(String::as_str).collect();
        left.sort_unstable();
        left
    }

    /// A commit lands while the next one's changes wait in memory (the profiler writes one
    /// commit while it folds the next batches): eviction must not drop a state whose change
    /// only memory holds, such as a storm member that a campaign took in without a new row.
    #[test]
    fn eviction_keeps_every_state_the_next_commit_must_write() {
        // Past MAX_HOT: the states of the last two generations stay, and the one whose
        // campaign was set since the last commit although it was long untouched.
        let mut m = memory(10);
        crowd(&mut m, MAX_HOT + 500, 5);
        crowd(&mut m, 2, 9);
        m.hot.insert("192.0.2.1".into(), hot(1));
        m.pending.sources.insert("192.0.2.1".into());
        m.evict();
        assert_eq!(left(&m), ["10.9.0.0", "10.9.0.1", "192.0.2.1"]);
        // Too many touched lately: only what the next commit writes stays.
        let mut m = memory(10);
        crowd(&mut m, MAX_HOT + 500, 10);
        m.hot.insert("192.0.2.1".into(), hot(1));
        m.pending.sources.insert("192.0.2.1".into());
        m.pending.sources.insert("10.10.0.7".into());
        m.evict();
        assert_eq!(left(&m), ["10.10.0.7", "192.0.2.1"]);
    }
}
