//! Campaign matching over the index of keyed sources ([`campaign`]'s rules), apart from
//! where the sources' states live: the one profiler of a process holds them in memory and
//! sets a matched source's campaign in its state at once; a fleet's campaign pass
//! (`coordinator`) sees states its shard analysts own, and hands them each assignment.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    campaign::{self, Campaign, Index, Summary},
    state::IpState,
};
use crate::store::{Store, StoreError};

/// The next campaign id; kept in `state` so ids are never reused after a merge.
pub(crate) const CAMPAIGN_ID_KEY: &str = "campaign_next_id";

/// The index, the campaigns and what changed among them since the last commit.
#[derive(Default)]
pub(super) struct Matcher {
    pub(super) index: Index,
    pub(super) campaigns: BTreeMap<i64, Campaign>,
    pub(super) next_campaign: i64,
    /// Campaigns whose summary the next commit writes.
    pub(super) changed: BTreeSet<i64>,
    /// Campaigns merged into others: the next commit deletes them.
    pub(super) dropped: Vec<i64>,
}

impl Matcher {
    /// The index and campaigns as the database has them: every keyed source's summary,
    /// and each campaign with the members its states name.
    pub(super) async fn load(store: &Store) -> Result<Matcher, StoreError> {
        let mut index = Index::default();
        let mut members: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
        for (ip, state) in store.keyed_behaviors().await? {
            let Ok(st) = serde_json::from_str::<IpState>(&state) else {
                continue;
            };
            if let (Some(key), Some(sum)) = (&st.campaign_key, index.summary(&ip, &st)) {
                index.upsert(key, sum);
            }
            if let Some(id) = st.campaign_id {
                members.entry(id).or_default().insert(ip);
            }
        }
        let mut campaigns = BTreeMap::new();
        for (id, summary) in store.campaigns().await? {
            if let Ok(mut c) = serde_json::from_str::<Campaign>(&summary) {
                c.members = members.remove(&id).unwrap_or_default();
                campaigns.insert(id, c);
            }
        }
        let stored_next = store
            .get_state(CAMPAIGN_ID_KEY)
            .await?
            .and_then(|v| v.parse().ok());
        let next_campaign =
            stored_next.unwrap_or_else(|| campaigns.keys().next_back().map_or(1, |id| id + 1));
        Ok(Matcher {
            index,
            campaigns,
            next_campaign,
            ..Matcher::default()
        })
    }

    /// Puts `ip` in campaign `id` as a move not applied yet says (sharded analysts): the
    /// index and the campaign's members follow it; nothing is to be written.
    pub(super) fn replay_move(&mut self, ip: &str, id: i64) {
        self.index.set_campaign(ip, id);
        if let Some(c) = self.campaigns.get_mut(&id) {
            c.members.insert(ip.to_owned());
        }
    }

    /// Puts `ip` in campaign `id`; `assign` sets it where its state lives.
    fn join(&mut self, ip: &str, id: i64, assign: &mut dyn FnMut(&str, i64)) {
        self.index.set_campaign(ip, id);
        assign(ip, id);
        if let Some(c) = self.campaigns.get_mut(&id) {
            c.members.insert(ip.to_owned());
        }
        self.changed.insert(id);
    }

    /// Matches one keyed source, `me` (its summary as of now, with the campaign it is in),
    /// under `key`, and files its summary in the index. `assign(ip, id)` is called for every
    /// source this puts in a campaign, `me`'s own included.
    pub(super) fn place(&mut self, key: &str, mut me: Summary, assign: &mut dyn FnMut(&str, i64)) {
        if me.campaign.is_none() {
            let found = self.index.matches(key, &me);
            let ids = &found.campaigns;
            let storm = campaign::is_template_key(key);
            let enough = !storm || found.loose.len() + 1 >= campaign::STORM_MIN_SOURCES;
            let target = match (ids.first(), &found.newest) {
                (Some(id), _) => Some(*id),
                (None, Some(partner)) if enough => {
                    let id = self.next_campaign;
                    self.next_campaign += 1;
                    let mut c = Campaign::new(id, key, partner);
                    c.absorb(&me);
                    self.campaigns.insert(id, c);
                    self.join(&partner.ip, id, assign);
                    // A storm's sources send one or two packets and are not seen again:
                    // those already waiting join now.
                    if storm {
                        for s in &found.loose {
                            self.join(&s.ip, id, assign);
                            if let Some(c) = self.campaigns.get_mut(&id) {
                                c.absorb(s);
                            }
                        }
                    }
                    Some(id)
                }
                (None, _) => None,
            };
            if let Some(target) = target {
                self.join(&me.ip, target, assign);
                me.campaign = Some(target);
                // Related to members of several campaigns: they were one all along.
                for other in ids.iter().filter(|id| **id != target) {
                    let Some(gone) = self.campaigns.remove(other) else {
                        continue;
                    };
                    for m in &gone.members {
                        self.join(m, target, assign);
                        if let Some(s) = self.index.get(m).cloned()
                            && let Some(c) = self.campaigns.get_mut(&target)
                        {
                            c.absorb(&s);
                        }
                    }
                    if let Some(c) = self.campaigns.get_mut(&target) {
                        c.evidence.insert(format!("merged campaign {other}"));
                    }
                    self.dropped.push(*other);
                    self.changed.remove(other);
                }
                if let Some(c) = self.campaigns.get_mut(&target) {
                    for e in &found.evidence {
                        c.evidence.insert(e.as_str().to_owned());
                    }
                }
            }
        }
        if let Some(id) = me.campaign
            && let Some(c) = self.campaigns.get_mut(&id)
        {
            // A member already (`join` put it there, or an earlier batch).
            c.widen(&me);
            self.changed.insert(id);
        }
        self.index.upsert(key, me);
    }
}
