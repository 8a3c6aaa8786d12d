//! The lookup tables of a running daemon: known-scanner and allow lists, and GeoIP
//! databases. Installed at start (still privileged, so a file readable only by root loads),
//! read again on SIGHUP (as the daemon user). A reload that cannot read a file keeps the
//! tables in force and says why.

use tokio::sync::watch;

use super::error::DaemonError;
use crate::{
    config::RunConfig,
    intel::{geoip, scanners},
};

/// Reads and installs every table; each malformed list line is logged with its file and
/// line. At start a file that cannot be read stops the daemon.
pub(super) fn install(cfg: &RunConfig) -> Result<(), DaemonError> {
    if !cfg.allow.is_empty() {
        let (list, bad) = cfg.allow_list().map_err(DaemonError::Config)?;
        report("allow", &bad);
        tracing::info!(
            entries = list.len(),
            files = cfg.allow.len(),
            "allow lists loaded"
        );
        scanners::install_allow(list);
    }
    if !cfg.known_scanners.is_empty() {
        let (list, bad) = cfg.known_scanner_list().map_err(DaemonError::Config)?;
        report("known-scanner", &bad);
        tracing::info!(
            entries = list.len(),
            files = cfg.known_scanners.len(),
            "known-scanner lists loaded"
        );
        scanners::install(list);
    }
    if !cfg.geoip_db.is_empty() {
        let dbs = cfg.geoip_dbs().map_err(DaemonError::Config)?;
        tracing::info!(databases = ?dbs.describe(), "GeoIP databases loaded");
        geoip::install(dbs);
    }
    Ok(())
}

/// Logs each malformed line; `what`: `known-scanner` or `allow`.
fn report(what: &str, bad: &[scanners::LineError]) {
    for e in bad {
        tracing::warn!(line = %e, "{what} line skipped");
    }
}

/// Reads every configured table again; each that fails keeps the one in force.
fn reload(cfg: &RunConfig) {
    if !cfg.allow.is_empty() {
        match cfg.allow_list() {
            Ok((list, bad)) => {
                report("allow", &bad);
                tracing::info!(entries = list.len(), "SIGHUP: allow lists reloaded");
                scanners::install_allow(list);
            }
            Err(e) => tracing::error!(error = %e,
                "SIGHUP: allow lists not reloaded; the ones loaded before stay in force"),
        }
    }
    if !cfg.known_scanners.is_empty() {
        match cfg.known_scanner_list() {
            Ok((list, bad)) => {
                report("known-scanner", &bad);
                tracing::info!(entries = list.len(), "SIGHUP: known-scanner lists reloaded");
                scanners::install(list);
            }
            Err(e) => tracing::error!(error = %e,
                "SIGHUP: known-scanner lists not reloaded; the ones loaded before stay in force"),
        }
    }
    if !cfg.geoip_db.is_empty() {
        match cfg.geoip_dbs() {
            Ok(dbs) => {
                tracing::info!(databases = ?dbs.describe(), "SIGHUP: GeoIP databases reloaded");
                geoip::install(dbs);
            }
            Err(e) => tracing::error!(error = %e,
                "SIGHUP: GeoIP databases not reloaded; the ones loaded before stay in force"),
        }
    }
    if cfg.allow.is_empty() && cfg.known_scanners.is_empty() && cfg.geoip_db.is_empty() {
        tracing::info!("SIGHUP: no known-scanner list, allow list or GeoIP database configured");
    }
}

/// Reloads the tables on every SIGHUP until `shutdown`. Profiles follow at their next
/// rendering; stored detections keep what they said.
pub(super) fn spawn_reload(cfg: &RunConfig, mut shutdown: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!(
            "no SIGHUP handler: known-scanner lists and GeoIP databases load only at start"
        );
        return;
    };
    let cfg = cfg.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hup.recv() => {}
                _ = shutdown.changed() => return,
            }
            // Opening a database reads the whole file: off the async workers.
            let cfg = cfg.clone();
            let _ = tokio::task::spawn_blocking(move || reload(&cfg)).await;
        }
    });
}
