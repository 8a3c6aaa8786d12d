//! The incremental profiler: reads `logs` after its cursor in batches of 500, folds each
//! row into its IP's streaming state, and upserts only the IPs the batch touched, with the
//! cursor, in one transaction. Woken by the ingester after each commit (50 ms debounce);
//! there is no timer and no separate cold-start path: an empty cursor is id 0.

use std::{collections::HashMap, time::Duration};

use tokio::sync::watch;

use super::state::IpState;
use crate::store::{CursorUpdate, ProfileRow, Store, StoreError};

pub const CURSOR_KEY: &str = "attacker_worker_cursor";
pub const BATCH: i64 = 500;
const DEBOUNCE: Duration = Duration::from_millis(50);

pub struct Profiler {
    store: Store,
}

impl Profiler {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Profiles everything after the cursor; returns the rows absorbed.
    pub async fn catch_up(&self) -> Result<u64, StoreError> {
        self.step(usize::MAX).await
    }

    /// Profiles at most `max_batches` batches after the cursor (each committed on its own,
    /// as a crash between batches would leave it).
    pub async fn step(&self, max_batches: usize) -> Result<u64, StoreError> {
        let mut prev = self.store.get_state(CURSOR_KEY).await?;
        let mut cursor: i64 = prev.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut absorbed = 0;
        for _ in 0..max_batches {
            let rows = self.store.logs_after(cursor, BATCH).await?;
            let Some((last_id, _)) = rows.last() else {
                break;
            };
            let last_id = *last_id;
            let mut ips: Vec<&str> = rows.iter().map(|(_, l)| l.attacker_ip.as_str()).collect();
            ips.sort_unstable();
            ips.dedup();
            let saved = self.store.load_behaviors(&ips).await?;
            let mut states: HashMap<&str, IpState> = ips
                .iter()
                .map(|ip| {
                    let st = saved
                        .get(*ip)
                        .and_then(|j| serde_json::from_str(j).ok())
                        .unwrap_or_default();
                    (*ip, st)
                })
                .collect();
            for (_, log) in &rows {
                if let Some(st) = states.get_mut(log.attacker_ip.as_str()) {
                    st.update(log);
                }
            }
            let updates: Vec<ProfileRow> = states
                .iter()
                .map(|(ip, st)| {
                    let profile = st.profile(ip);
                    ProfileRow {
                        ip: (*ip).to_owned(),
                        first_seen: st.first_seen.clone(),
                        last_seen: st.last_seen.clone(),
                        event_count: st.events as i64,
                        class: profile["behavior"]["class"]
                            .as_str()
                            .unwrap_or("unknown")
                            .to_owned(),
                        risk_score: profile["risk"]["score"].as_i64().unwrap_or(0),
                        profile: profile.to_string(),
                        state: serde_json::to_string(st).unwrap_or_default(),
                    }
                })
                .collect();
            let next = last_id.to_string();
            self.store
                .commit_profiles(
                    &updates,
                    &CursorUpdate {
                        key: CURSOR_KEY.into(),
                        prev: prev.replace(next.clone()),
                        value: next,
                    },
                )
                .await?;
            absorbed += rows.len() as u64;
            cursor = last_id;
            // Never stall the runtime, whatever the backlog.
            tokio::task::yield_now().await;
        }
        Ok(absorbed)
    }

    /// Catches up, then again after every ingester commit, until `shutdown`.
    pub async fn run(
        self,
        mut ingested: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        loop {
            self.catch_up().await?;
            let stop = tokio::select! {
                r = ingested.changed() => r.is_err(),
                _ = shutdown.wait_for(|v| *v) => true,
            };
            if stop {
                // Shut down, or the ingester is gone: absorb what it committed and stop.
                self.catch_up().await?;
                return Ok(());
            }
            tokio::time::sleep(DEBOUNCE).await;
        }
    }
}
