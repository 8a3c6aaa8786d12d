//! What every handler shares.

use std::{sync::Arc, time::Instant};

use super::{auth, http_metrics};
use crate::{
    ingest::IngestStats,
    sensor::{AttachMode, KernelStats},
    stats::PipelineStats,
    store::Store,
};

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    pub started: Instant,
    pub kernel: Option<KernelStats>,
    pub pipeline: Arc<PipelineStats>,
    pub attached: Option<(String, AttachMode)>,
    /// How the TC egress program is attached (None: not attached, no probe outcomes).
    pub egress: Option<crate::sensor::EgressMode>,
    /// Pinning (`--pin`): where, and how this daemon's counters started.
    pub pin: Option<crate::sensor::pin::PinStatus>,
    /// The decoy interface: attached, gone, re-attached.
    pub iface_status: Option<Arc<crate::sensor::iface::IfaceStatus>>,
    pub ingest: Option<Arc<IngestStats>>,
    pub store: Option<Store>,
    /// Live announcements (logs, detections) for the stream.
    pub hub: crate::hub::Hub,
    pub auth: Arc<auth::Auth>,
    pub profile: Option<Arc<crate::profile::ProfileStats>>,
    /// The alert sinks' health (processes with the analyst role and some sink).
    pub alerts: Option<Arc<crate::alert::AlertStats>>,
    /// Retention's counters (the analyst, when retention is on).
    pub retain: Option<Arc<crate::retain::RetainStats>>,
    pub http: Arc<http_metrics::HttpMetrics>,
    /// `--role` of this process.
    pub role: crate::config::Role,
}
