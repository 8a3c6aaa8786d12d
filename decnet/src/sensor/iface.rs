//! Where the decoy interface stands: attached, gone, or back but not attached. The daemon's
//! interface watch sets it; health and stats show it.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use serde::Serialize;

/// Where the decoy interface stands, for `/api/v1/health` and `/api/v1/stats`.
#[derive(Debug, Default)]
pub struct IfaceStatus {
    state: Mutex<IfaceState>,
    /// Times the programs were attached again to a recreated interface.
    pub reattached: AtomicU64,
    /// Times the interface disappeared.
    pub lost: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IfaceState {
    /// The programs are attached to the interface.
    #[default]
    Attached,
    /// The interface is gone; waiting for it to come back.
    Gone,
    /// It came back, but attaching failed (retried every second).
    Detached,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct IfaceSnapshot {
    pub state: IfaceState,
    pub lost: u64,
    pub reattached: u64,
}

impl IfaceStatus {
    pub fn snapshot(&self) -> IfaceSnapshot {
        IfaceSnapshot {
            state: *self.state.lock().unwrap_or_else(|p| p.into_inner()),
            lost: self.lost.load(Relaxed),
            reattached: self.reattached.load(Relaxed),
        }
    }

    pub fn set(&self, s: IfaceState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }
}
