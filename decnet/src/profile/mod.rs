//! The profile stage: logs -> per-attacker profiles, incrementally.
//!
//! - `timing`: streaming timing statistics (Welford, reservoir median).
//! - `state`: per-IP state and the profile built from it.
//! - `sorted`: the vector-backed sets and maps a state is made of.
//! - `classify`: behavior class and scan pattern rules.
//! - `risk`: the 0-100 score and its reasons.
//! - `verdict`: what a state concludes, and the profile and list row shown from it.
//! - `worker`: the cursor-driven incremental worker (batches, verdicts, commits).
//! - `intake`: where its rows come from: the ingester's announcements or the database.
//! - `memory`: what the worker holds between commits.
//! - `matcher`: campaign matching over the index of keyed sources.
//! - `detection`: what a change in a source's headline announces.
//! - `analyst`: one profiler per fleet, or one per shard, by the store's locks, with standbys.
//! - `coordinator`: sharded analysts' campaign pass.
//! - `commands`: commands in payloads, and exploitation patterns.
//! - `campaign`: coordinated sources.
//!
//! Tool signatures and the OS table are packet knowledge, shared with the collector:
//! [`crate::intel`].
//!
//! The database keeps each IP's streaming state; the public profile is rendered from it
//! when read ([`render`]), so it always follows the current rules.
//!
//! Stage 7 (profile) of the pipeline: docs/architecture.md.

pub mod analyst;
pub mod campaign;
pub mod classify;
pub mod commands;
pub(crate) mod coordinator;
pub(crate) mod detection;
mod intake;
mod matcher;
mod memory;
pub mod risk;
pub mod sorted;
pub mod state;
pub mod timing;
pub mod verdict;
pub(crate) mod worker;

pub(crate) use worker::PROFILE_CURSOR_KEY;
pub use worker::{ProfileStats, Profiler};

use crate::store::{Store, StoreError};

/// The public profile of `ip` from its stored state (None when the state does not parse).
pub(crate) fn render(ip: &str, state: &str) -> Option<serde_json::Value> {
    let st: state::IpState = serde_json::from_str(state).ok()?;
    Some(st.profile(ip, &st.verdict(ip)))
}

/// The attackers-list row of `ip` from its stored state.
fn render_summary(ip: &str, state: &str) -> Option<serde_json::Value> {
    let st: state::IpState = serde_json::from_str(state).ok()?;
    Some(st.summary(ip, &st.verdict(ip)))
}

/// An attackers-list row as JSON text: the stored summary as it is, or, for rows from before
/// the summary column, rendered from the stored state.
pub(crate) fn list_row(r: &crate::store::AttackerRow) -> Option<String> {
    match (&r.summary, &r.state) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(state)) => render_summary(&r.ip, state).map(|v| v.to_string()),
        (None, None) => None,
    }
}

/// The public profile of `ip`, or None when it was never profiled.
pub async fn load(store: &Store, ip: &str) -> Result<Option<serde_json::Value>, StoreError> {
    Ok(store.attacker_state(ip).await?.and_then(|s| render(ip, &s)))
}
