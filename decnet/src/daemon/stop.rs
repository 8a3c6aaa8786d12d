//! Where an orderly stop has got to: the stages it passes in order, so that a stop cut
//! short by the timeout can say which one it was in.

use std::{sync::Mutex, time::Instant};

/// The steps of an orderly stop, in the order they are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    DrainingRing,
    FlushingJournal,
    CommittingIngest,
    UpdatingProfiles,
    DeliveringAlerts,
    ClosingStreams,
}

impl Stage {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::DrainingRing => "draining the ring",
            Self::FlushingJournal => "flushing the journal",
            Self::CommittingIngest => "committing the last ingest batch",
            Self::UpdatingProfiles => "updating the last profiles",
            Self::DeliveringAlerts => "delivering the last alerts",
            Self::ClosingStreams => "closing the streams",
        }
    }
}

/// The stop in progress: when it began and the stage it is in.
pub(super) struct Progress {
    began: Instant,
    stage: Mutex<Stage>,
}

impl Progress {
    pub(super) fn begin() -> Self {
        Self {
            began: Instant::now(),
            stage: Mutex::new(Stage::DrainingRing),
        }
    }

    pub(super) fn set(&self, s: Stage) {
        *self.stage.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    pub(super) fn stage(&self) -> Stage {
        *self.stage.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn elapsed_ms(&self) -> u64 {
        self.began.elapsed().as_millis() as u64
    }
}
