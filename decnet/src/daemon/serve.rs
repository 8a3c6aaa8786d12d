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

/// What the server needs from start-up: the token, and the TLS configuration if any.
pub(super) struct Front {
    pub(super) auth: api::auth::Auth,
    pub(super) tls: Option<Arc<rustls::ServerConfig>>,
}

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
        front: Option<Front>,
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
        let server = match front {
            Some(Front { auth, tls }) => {
                let listener = tokio::net::TcpListener::bind(cfg.listen)
                    .await
                    .map_err(|e| DaemonError::Listen(cfg.listen, e))?;
                let local = listener
                    .local_addr()
                    .map_err(|e| DaemonError::Listen(cfg.listen, e))?;
                tracing::info!(addr = %local, tls = tls.is_some(), "API listening");
                if tls.is_none() && !local.ip().to_canonical().is_loopback() {
                    tracing::warn!(addr = %local, "API on plain HTTP beyond loopback (--insecure-http): \
                        the token crosses the network in clear unless a TLS proxy is in front");
                }
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
                let app =
                    api::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
                let mut api_shutdown = shutdown.clone();
                Some(match tls {
                    None => tokio::spawn(async move {
                        let r = axum::serve(listener, app)
                            .with_graceful_shutdown(async move {
                                let _ = api_shutdown.wait_for(|v| *v).await;
                            })
                            .await;
                        if let Err(e) = r {
                            tracing::error!(error = %e, "API server failed");
                        }
                    }),
                    Some(tls) => {
                        let tls = axum_server::tls_rustls::RustlsConfig::from_config(tls);
                        spawn_tls_reload(cfg, tls.clone(), shutdown.clone());
                        let std_listener = listener
                            .into_std()
                            .map_err(|e| DaemonError::Listen(cfg.listen, e))?;
                        let server = axum_server::from_tcp_rustls(std_listener, tls)
                            .map_err(|e| DaemonError::Listen(cfg.listen, e))?;
                        let handle = axum_server::Handle::new();
                        let h = handle.clone();
                        tokio::spawn(async move {
                            let _ = api_shutdown.wait_for(|v| *v).await;
                            // The streams end themselves (their last events); then it returns.
                            h.graceful_shutdown(None);
                        });
                        tokio::spawn(async move {
                            if let Err(e) = server.handle(handle).serve(app).await {
                                tracing::error!(error = %e, "API server failed");
                            }
                        })
                    }
                })
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

/// Reads the certificate and key again on every SIGHUP (as the daemon's user) and swaps them
/// in for new connections; open ones keep theirs. A pair that does not load keeps the one
/// in force, and says why.
fn spawn_tls_reload(
    cfg: &RunConfig,
    tls: axum_server::tls_rustls::RustlsConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Some(files) = cfg.tls.clone() else {
        return;
    };
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handler: the TLS certificate loads only at start");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hup.recv() => {}
                _ = shutdown.wait_for(|v| *v) => return,
            }
            let f = files.clone();
            match tokio::task::spawn_blocking(move || crate::tls::server_config(&f)).await {
                Ok(Ok(config)) => {
                    tls.reload_from_config(config);
                    tracing::info!(cert = %files.cert.display(), "SIGHUP: TLS certificate reloaded");
                }
                Ok(Err(e)) => tracing::error!(error = %e,
                    "SIGHUP: TLS certificate not reloaded; the one loaded before stays in force"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: TLS reload failed"),
            }
        }
    });
}
