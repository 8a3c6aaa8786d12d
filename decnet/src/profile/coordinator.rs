//! The campaign pass of sharded analysts (PostgreSQL, `analyst_shards` above 1).
//!
//! Each shard's analyst folds its own sources' rows and fixes their campaign keys, but a
//! campaign spans shards, so matching needs every keyed source: this pass does it, in the
//! one process holding the analyst lock. It follows the logs behind the slowest shard:
//! once every shard's cursor has passed a row, that row's source is folded in its state,
//! and the pass reads the states of the sources of the rows since its own cursor, matches
//! them (`matcher`, the rules of `campaign`) and writes, in one transaction, the campaigns,
//! its cursor and a move for every source it put in a campaign. Each shard applies its
//! sources' moves to the states it owns (`Profiler::apply_moves`), which gives their
//! verdicts and detections as a matching profiler would have, a pass later.
//!
//! In memory it keeps the index and campaigns, rebuilt from the database on start and
//! after a failed commit, with the moves no shard has applied yet replayed on top.

use std::time::Duration;

use tokio::sync::watch;

use super::{
    PROFILE_CURSOR_KEY,
    campaign::Facts,
    matcher::{CAMPAIGN_ID_KEY, Matcher},
};
use crate::store::{CursorUpdate, ProfileCommit, Shard, Store, StoreError};

/// The `state` key saying how many shards the profiles are laid out in (absent: 1).
pub(crate) const LAYOUT_KEY: &str = "analyst_shards";
/// The pass's cursor: every source of the logs up to it has been matched.
pub(crate) const CAMPAIGN_CURSOR_KEY: &str = "campaign_cursor";
/// Log ids whose sources are read at once.
const SPAN: i64 = 20_000;

pub(crate) struct Coordinator {
    store: Store,
    shards: u32,
    matcher: Option<Matcher>,
    /// The moves every shard had applied at the last commit, which deleted them.
    pruned: i64,
}

/// A cursor's value, or where a new one starts: the unsharded profiler's cursor (a fleet
/// that profiled unsharded until now), or 0.
async fn cursor_or_start(store: &Store, key: &str) -> Result<(Option<String>, i64), StoreError> {
    let prev = store.get_state(key).await?;
    let at = match &prev {
        Some(v) => v.parse().unwrap_or(0),
        None => store
            .get_state_json::<i64>(PROFILE_CURSOR_KEY)
            .await?
            .unwrap_or(0),
    };
    Ok((prev, at))
}

/// How far the profiles go, as laid out now: the log id through which every shard has
/// folded its rows and the campaign pass has matched their sources (the one profiler's
/// cursor, unsharded). Retention prunes no further.
pub(crate) async fn profiled_through(store: &Store) -> Result<i64, StoreError> {
    let shards = store.get_state_json::<u32>(LAYOUT_KEY).await?.unwrap_or(1);
    if shards <= 1 {
        return Ok(store
            .get_state_json::<i64>(PROFILE_CURSOR_KEY)
            .await?
            .unwrap_or(0));
    }
    Ok(cursor_or_start(store, CAMPAIGN_CURSOR_KEY).await?.1)
}

impl Coordinator {
    pub(crate) fn new(store: Store, shards: u32) -> Self {
        Self {
            store,
            shards,
            matcher: None,
            pruned: 0,
        }
    }

    fn shards(&self) -> impl Iterator<Item = Shard> {
        let count = self.shards;
        (0..count).map(move |index| Shard { index, count })
    }

    /// Matches the sources of every row all shards have folded since the last pass, and
    /// commits; returns how many sources it looked at.
    pub(crate) async fn pass(&mut self) -> Result<usize, StoreError> {
        let (prev, mut cursor) = cursor_or_start(&self.store, CAMPAIGN_CURSOR_KEY).await?;
        let (mut through, mut applied) = (i64::MAX, i64::MAX);
        for shard in self.shards() {
            through = through.min(cursor_or_start(&self.store, &shard.cursor_key()).await?.1);
            applied = applied.min(
                self.store
                    .get_state_json::<i64>(&shard.moves_key())
                    .await?
                    .unwrap_or(0),
            );
        }
        if through <= cursor {
            // Nothing to match, but the shards may have applied the last pass's moves.
            if applied > self.pruned {
                let mut commit = ProfileCommit {
                    moves_applied: Some(applied),
                    ..ProfileCommit::default()
                };
                self.store
                    .commit_profiles(&mut commit, &mut std::iter::empty())
                    .await?;
                self.pruned = applied;
            }
            return Ok(0);
        }
        let mut m = match self.matcher.take() {
            Some(m) => m,
            None => {
                let mut m = Matcher::load(&self.store).await?;
                // Moves written but not applied by every shard: the states do not say them yet.
                let mut after = applied;
                loop {
                    let moves = self
                        .store
                        .campaign_moves(None, after, i64::MAX, 10_000)
                        .await?;
                    let Some((last, _, _)) = moves.last() else {
                        break;
                    };
                    after = *last;
                    for (_, ip, id) in &moves {
                        m.replay_move(ip, *id);
                    }
                }
                m
            }
        };
        let mut moves: Vec<(String, i64)> = Vec::new();
        let mut seen = 0;
        while cursor < through {
            let to = through.min(cursor.saturating_add(SPAN));
            for (ip, keyed) in self.store.sources_between(cursor, to).await? {
                seen += 1;
                let Some((key, facts)) = keyed else {
                    m.index.remove(&ip);
                    continue;
                };
                let Some(mut me) = Facts::decode(&facts, |f| m.index.summary_of(&ip, f)) else {
                    continue;
                };
                // The index knows moves the state may not have taken yet.
                me.campaign = m.index.get(&ip).and_then(|s| s.campaign).or(me.campaign);
                m.place(&key, me, &mut |ip, id| moves.push((ip.to_owned(), id)));
            }
            cursor = to;
            tokio::task::yield_now().await;
        }
        let mut commit = ProfileCommit {
            cursor: Some(CursorUpdate {
                key: CAMPAIGN_CURSOR_KEY.into(),
                prev,
                value: cursor.to_string(),
            }),
            moves,
            moves_applied: (applied > 0).then_some(applied),
            ..ProfileCommit::default()
        };
        for id in std::mem::take(&mut m.changed) {
            if let Some(c) = m.campaigns.get(&id) {
                commit.campaigns.push((id, c.summary().to_string()));
            }
        }
        commit.dropped_campaigns = std::mem::take(&mut m.dropped);
        commit
            .state
            .push((CAMPAIGN_ID_KEY.into(), m.next_campaign.to_string()));
        // On an error the matcher is dropped with what it did not commit, and rebuilt.
        self.store
            .commit_profiles(&mut commit, &mut std::iter::empty())
            .await?;
        self.pruned = self.pruned.max(applied);
        self.matcher = Some(m);
        Ok(seen)
    }

    /// Passes after every wake-up until `shutdown`, retrying a failed one with backoff.
    pub(crate) async fn run(
        mut self,
        mut woken: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.pass().await {
                Ok(_) => backoff = Duration::from_millis(50),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                        "campaign pass failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
            let stop = tokio::select! {
                r = woken.changed() => r.is_err(),
                _ = tokio::time::sleep(backoff), if backoff > Duration::from_millis(50) => false,
                _ = shutdown.wait_for(|v| *v) => true,
            };
            if stop {
                return Ok(());
            }
        }
    }
}
