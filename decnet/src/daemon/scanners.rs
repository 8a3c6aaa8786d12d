//! The known-scanner lists of a running daemon: installed at start (still privileged, so a
//! list readable only by root loads), read again on SIGHUP (as the daemon user). A reload
//! that cannot read a file keeps the lists in force and says why.

use tokio::sync::watch;

use super::error::DaemonError;
use crate::{config::RunConfig, intel::scanners};

/// Reads and installs the lists; each malformed line is logged with its file and line.
pub(super) fn install(cfg: &RunConfig) -> Result<(), DaemonError> {
    if cfg.known_scanners.is_empty() {
        return Ok(());
    }
    let (list, bad) = cfg.known_scanner_list().map_err(DaemonError::Config)?;
    report(&bad);
    tracing::info!(
        entries = list.len(),
        files = cfg.known_scanners.len(),
        "known-scanner lists loaded"
    );
    scanners::install(list);
    Ok(())
}

fn report(bad: &[scanners::LineError]) {
    for e in bad {
        tracing::warn!(line = %e, "known-scanner line skipped");
    }
}

/// Reloads the lists on every SIGHUP until `shutdown`. Profiles follow at their next
/// rendering; stored detections keep what they said.
pub(super) fn spawn_reload(cfg: &RunConfig, mut shutdown: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handler: known-scanner lists load only at start");
        return;
    };
    let cfg = cfg.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hup.recv() => {}
                _ = shutdown.changed() => return,
            }
            if cfg.known_scanners.is_empty() {
                tracing::info!("SIGHUP: no known-scanner lists configured");
                continue;
            }
            match cfg.known_scanner_list() {
                Ok((list, bad)) => {
                    report(&bad);
                    tracing::info!(entries = list.len(), "SIGHUP: known-scanner lists reloaded");
                    scanners::install(list);
                }
                Err(e) => tracing::error!(error = %e,
                    "SIGHUP: known-scanner lists not reloaded; the ones loaded before stay in force"),
            }
        }
    });
}
