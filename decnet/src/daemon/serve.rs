//! The serving stage of a running daemon: the HTTP API and stream, and in a fleet the relay
//! that announces other processes' commits on the local hub.

use std::{sync::Arc, time::Instant};

use tokio::{sync::watch, task::JoinHandle};

use super::{
    capture::Capture,
    error::DaemonError,
    stop::{Progress, Stage},
};
use crate::{
    api::{self, AppState},
    config::RunConfig,
    hub::Hub,
    profile::ProfileStats,
    relay,
    stats::PipelineStats,
    store::Store,
};

/// The running server and relay (each may be absent, by role).
pub(super) struct Serving {
    hub: Hub,
    stop_relay: watch::Sender<bool>,
    relay: Option<JoinHandle<()>>,
    server: Option<JoinHandle<()>>,
}

/// What the API shows besides the store: the other stages' counters and status.
pub(super) struct Shown<'a> {
    pub(super) capture: Option<&'a Capture>,
    pub(super) pipeline: &'a Arc<PipelineStats>,
    pub(super) profile_stats: &'a Arc<ProfileStats>,
    pub(super) alert_stats: &'a Arc<crate::alert::AlertStats>,
    pub(super) retain_stats: &'a Arc<crate::retain::RetainStats>,
}

impl Serving {
    /// Starts the relay (a fleet's API instances) and the server (when this process has a
    /// token: roles that serve HTTP). The server ends with `shutdown` once its streams have.
    pub(super) async fn spawn(
        cfg: &RunConfig,
        auth: Option<api::auth::Auth>,
        store: &Store,
        hub: &Hub,
        fleet: bool,
        shown: Shown<'_>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Self, DaemonError> {
        let Shown {
            capture,
            pipeline,
            profile_stats,
            alert_stats,
            retain_stats,
        } = shown;
        let (stop_relay, relay_rx) = watch::channel(false);
        let relay = (fleet && cfg.role.api())
            .then(|| tokio::spawn(relay::run(store.clone(), hub.clone(), relay_rx)));
        let server = match auth {
            Some(auth) => {
                let listener = tokio::net::TcpListener::bind(cfg.listen)
                    .await
                    .map_err(|e| DaemonError::Listen(cfg.listen, e))?;
                let local = listener
                    .local_addr()
                    .map_err(|e| DaemonError::Listen(cfg.listen, e))?;
                tracing::info!(addr = %local, "API listening");
                let state = AppState {
                    started: Instant::now(),
                    kernel: capture.map(|s| s.kernel.clone()),
                    pipeline: pipeline.clone(),
                    attached: capture
                        .and_then(|s| s.sensor.attached().map(|(i, m)| (i.to_owned(), m))),
                    egress: capture.and_then(|s| s.sensor.egress_mode()),
                    pin: capture.and_then(|s| s.pinned.as_ref().map(|p| p.status.clone())),
                    iface_status: capture.map(|s| s.iface_status.clone()),
                    ingest: capture.map(|s| s.ingest_stats.clone()),
                    // A sensor serves its status (health, stats, metrics); data comes from the
                    // API instances.
                    store: cfg.role.api().then(|| store.clone()),
                    hub: hub.clone(),
                    auth: Arc::new(auth),
                    profile: cfg.role.analyst().then(|| profile_stats.clone()),
                    alerts: (cfg.role.analyst() && !alert_stats.sinks.is_empty())
                        .then(|| alert_stats.clone()),
                    retain: (cfg.role.analyst() && !cfg.retention.is_off())
                        .then(|| retain_stats.clone()),
                    http: Default::default(),
                    role: cfg.role,
                };
                let mut api_shutdown = shutdown.clone();
                Some(tokio::spawn(async move {
                    let r = axum::serve(
                        listener,
                        api::app(state)
                            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
                    )
                    .with_graceful_shutdown(async move {
                        let _ = api_shutdown.wait_for(|v| *v).await;
                    })
                    .await;
                    if let Err(e) = r {
                        tracing::error!(error = %e, "API server failed");
                    }
                }))
            }
            None => None,
        };
        Ok(Self {
            hub: hub.clone(),
            stop_relay,
            relay,
            server,
        })
    }

    /// Everything committed has been announced: the streams get their last event and end,
    /// which lets the server's graceful shutdown finish.
    pub(super) async fn stop(self, progress: &Progress) {
        progress.set(Stage::ClosingStreams);
        let _ = self.stop_relay.send(true);
        if let Some(r) = self.relay {
            let _ = r.await;
        }
        self.hub.shutdown();
        if let Some(server) = self.server {
            let _ = server.await;
        }
    }
}
