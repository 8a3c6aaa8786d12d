//! The in-process hub: what the daemon's stages announce to live subscribers (the SSE
//! stream). A broadcast channel, so a slow subscriber lags and resumes from the database
//! instead of holding anything up; publishing with no subscriber costs one atomic load.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::store::DetectionRow;

/// Messages a subscriber may miss before it is told it lagged.
const CAPACITY: usize = 1024;

#[derive(Clone)]
pub struct Hub {
    detections: broadcast::Sender<Arc<DetectionRow>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            detections: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Hub {
    /// Announces a committed detection.
    pub fn detection(&self, d: DetectionRow) {
        if self.detections.receiver_count() > 0 {
            let _ = self.detections.send(Arc::new(d));
        }
    }

    pub fn subscribe_detections(&self) -> broadcast::Receiver<Arc<DetectionRow>> {
        self.detections.subscribe()
    }
}
