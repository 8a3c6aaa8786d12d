//! The privileged part of start-up: the data dir and API token, and the programs loaded,
//! attached and taken over from a pinned predecessor. Nothing after this needs a
//! capability (see `privilege`).

use std::os::unix::fs::DirBuilderExt;

use super::error::DaemonError;
use crate::{
    api,
    config::RunConfig,
    handover, reattach,
    sensor::{self, Sensor, SensorError, loader::LoadOptions, pin::Pins},
};

/// What `decnet run` sets up while it still has its privileges: the data dir and token,
/// the loaded and attached programs and the maps the daemon keeps. Nothing after this needs
/// a capability (see `privilege`).
pub struct Prepared {
    /// The API token (roles with the API).
    pub(super) auth: Option<api::auth::Auth>,
    /// The API's TLS configuration, read while the key is still readable (it is usually
    /// root's); None: plain HTTP.
    pub(super) tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// The sensor (roles with the sensor).
    pub(super) sensor: Option<PreparedSensor>,
}

/// The sensor's part of [`Prepared`].
pub(super) struct PreparedSensor {
    pub(super) sensor: Sensor,
    pub(super) ring: aya::maps::RingBuf<aya::maps::MapData>,
    pub(super) kernel: sensor::KernelStats,
    pub(super) sources: sensor::guard::Sources,
    pub(super) flows: sensor::flows::Flows,
    pub(super) logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    pub(super) pinned: Option<Pinned>,
    pub(super) helper: Option<reattach::Helper>,
}

/// A pinned sensor's identity and what the daemon before handed over.
pub(super) struct Pinned {
    pub(super) ring_id: u32,
    pub(super) status: sensor::pin::PinStatus,
    pub(super) taken: Option<handover::Handover>,
}

/// The privileged part of start-up (synchronous: it runs before the runtime's threads
/// exist, so that dropping privileges afterwards covers every thread).
pub fn prepare(cfg: &RunConfig) -> Result<Prepared, DaemonError> {
    // Before touching the kernel: an API reachable from other hosts needs a chosen token.
    let token_set = std::env::var(api::auth::TOKEN_ENV).is_ok_and(|t| !t.trim().is_empty());
    if serves_http(cfg) && !cfg.listen.ip().to_canonical().is_loopback() && !token_set {
        return Err(DaemonError::ExposedWithoutToken(cfg.listen));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(&cfg.data_dir)
        .map_err(|e| DaemonError::DataDir(cfg.data_dir.clone(), e))?;
    tighten_data_dir(&cfg.data_dir)?;
    super::lookups::install(cfg)?;
    let auth = if serves_http(cfg) {
        let (auth, source) = api::auth::Auth::load_or_create(&cfg.data_dir)
            .map_err(|e| DaemonError::Token(cfg.data_dir.join(api::auth::TOKEN_FILE), e))?;
        match source {
            api::auth::TokenSource::Env => tracing::info!("API token from DECNET_API_TOKEN"),
            api::auth::TokenSource::File(p) => {
                tracing::info!(path = %p.display(), "API token read from file")
            }
            api::auth::TokenSource::Generated(p) => {
                tracing::info!(path = %p.display(), "API token generated (mode 0600)")
            }
        }
        Some(auth)
    } else {
        None
    };
    let sensor = if cfg.role.sensor() {
        Some(prepare_sensor(cfg)?)
    } else {
        None
    };
    let tls = match &cfg.tls {
        Some(files) if serves_http(cfg) => {
            Some(crate::tls::server_config(files).map_err(DaemonError::Tls)?)
        }
        _ => None,
    };
    Ok(Prepared { auth, tls, sensor })
}

/// Whether this process listens on `--listen`: the API, and a sensor for its own status
/// (an analyst has nothing to serve).
fn serves_http(cfg: &RunConfig) -> bool {
    cfg.role.api() || cfg.role.sensor()
}

/// Loads and attaches the programs (the sensor role).
fn prepare_sensor(cfg: &RunConfig) -> Result<PreparedSensor, DaemonError> {
    let mut load = LoadOptions {
        flood: cfg.flood,
        ..LoadOptions::default()
    };
    if cfg.pin {
        load.pins = Some(Pins::open(&cfg.pin_dir, &cfg.iface, load.ring_bytes)?);
    } else if let Some(dir) = Pins::existing(&cfg.pin_dir, &cfg.iface) {
        // An unpinned start cannot attach next to a pinned sensor; say what to do instead of
        // the kernel's "device busy".
        return Err(SensorError::PinnedElsewhere {
            iface: cfg.iface.clone(),
            dir,
        }
        .into());
    }
    let mut sensor = Sensor::load(&cfg.decoys, &load)?;
    let ring = sensor.take_ring()?;
    let kernel = sensor.take_stats()?;
    let sources = sensor.take_sources()?;
    let mut flows = sensor.take_flows()?.with_idle(cfg.flow_idle);
    let logger = sensor.take_logger();
    let pinned = match load.pins.as_ref() {
        Some(pins) => Some(take_over(cfg, pins, &mut flows)?),
        None => None,
    };
    let mode = sensor.attach(&cfg.iface, cfg.xdp_mode)?;
    tracing::info!(iface = %cfg.iface, xdp_mode = %mode,
        decoys = %cfg.decoys.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" "),
        "XDP program attached");
    // Without the egress program the sensor still sees every probe; only the decoy's
    // answers (probe outcomes, the return half of flows) are missing, and stats say so.
    match sensor.attach_egress(&cfg.iface) {
        Ok(mode) => tracing::info!(iface = %cfg.iface, mode = %mode, "TC egress program attached"),
        Err(e) => tracing::warn!(error = %e, "no probe outcomes: egress attach failed"),
    }
    if cfg.flood.rate == 0 {
        tracing::info!("flood guard off");
    } else {
        tracing::info!(
            rate = cfg.flood.rate,
            burst = cfg.flood.burst,
            "flood guard: per-source event budget"
        );
    }
    // Last, with everything loaded and attached: the helper's copy of the sensor is complete.
    let helper = if !cfg.reattach {
        tracing::info!(
            "no re-attach helper (reattach = false): a recreated interface needs a restart"
        );
        None
    } else {
        match reattach::Helper::spawn(&mut sensor, cfg) {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "no re-attach helper: a recreated interface needs a restart");
                None
            }
        }
    };
    if let Some(pins) = load.pins.as_ref() {
        for stale in pins.stale_maps() {
            tracing::warn!(path = %stale.display(),
                "removing maps pinned by a decnet with another map layout (their unread events are lost)");
            if let Err(e) = std::fs::remove_dir_all(&stale) {
                tracing::warn!(error = %e, path = %stale.display(), "removing stale pinned maps failed");
            }
        }
    }
    Ok(PreparedSensor {
        sensor,
        ring,
        kernel,
        sources,
        flows,
        logger,
        pinned,
        helper,
    })
}

/// With pins: identifies the pinned ring, takes the last daemon's handover and watches the
/// flows it was watching.
fn take_over(
    cfg: &RunConfig,
    pins: &Pins,
    flows: &mut sensor::flows::Flows,
) -> Result<Pinned, DaemonError> {
    let ring_path = pins.map(decnet_common::EVENTS_MAP);
    let ring_id = aya::maps::MapInfo::from_pin(&ring_path)
        .map_err(|e| SensorError::Pinning(ring_path.clone(), e.to_string()))?
        .id();
    let (start, taken) = if !pins.reused() {
        (sensor::pin::Start::First, None)
    } else {
        let ifindex = sensor::loader::nix_if_index(&cfg.iface).unwrap_or(0);
        let adopted = flows.adopt(
            |addr| {
                let key = sensor::decoy_key(addr);
                cfg.decoys
                    .iter()
                    .position(|d| sensor::decoy_key(d.addr) == key)
                    .map_or(0, |i| i as u32 + 1)
            },
            ifindex,
        );
        match handover::take(&cfg.data_dir, ring_id) {
            Some(h) => {
                tracing::info!(dir = %pins.dir().display(), restarts = h.restarts,
                    journal_written = h.pipeline.journal_written, open_flows = adopted,
                    "taking over the pinned sensor: same ring, counters continued");
                (sensor::pin::Start::Clean, Some(h))
            }
            None => {
                tracing::warn!(dir = %pins.dir().display(), open_flows = adopted,
                    "taking over the pinned sensor without a handover (the last daemon did not \
                     stop cleanly): userspace counters start from zero, the kernel's carry on");
                (sensor::pin::Start::Unclean, None)
            }
        }
    };
    Ok(Pinned {
        ring_id,
        status: sensor::pin::PinStatus {
            dir: pins.dir().to_owned(),
            start,
            restarts: taken.as_ref().map_or(0, |h| h.restarts),
        },
        taken,
    })
}

/// Names decnet writes into its data dir (journal and rotations, database, token).
fn ours(name: &str) -> bool {
    let rotated = |s: &str| {
        s.strip_prefix("events.jsonl.")
            .is_some_and(|n| n.parse::<u32>().is_ok())
    };
    matches!(
        name,
        "events.jsonl" | "decnet.db" | "decnet.db-wal" | "decnet.db-shm" | "decnet.db-journal"
    ) || name == api::auth::TOKEN_FILE
        || name == crate::config::SENSOR_ID_FILE
        || name == handover::FILE
        || name.strip_suffix(".tmp") == Some(handover::FILE)
        || rotated(name)
}

/// The data dir holds attacker data and the API token: nobody but the daemon's user (and
/// its group, read-only) gets in, also when the directory already existed. Because it is
/// tightened (and, when dropping from root, handed to the daemon user), it must be decnet's
/// own: a directory holding anything else (`/tmp`, `/var/lib`, a home) is refused.
fn tighten_data_dir(dir: &std::path::Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::PermissionsExt as _;
    let err = |e| DaemonError::DataDir(dir.to_owned(), e);
    for e in std::fs::read_dir(dir).map_err(err)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !ours(&name) {
            return Err(DaemonError::DataDirShared {
                dir: dir.to_owned(),
                entry: name,
            });
        }
    }
    let mode = std::fs::metadata(dir).map_err(err)?.permissions().mode() & 0o7777;
    if mode & 0o7027 != 0 {
        let safe = mode & 0o750;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(safe)).map_err(err)?;
        tracing::info!(dir = %dir.display(), from = format!("{mode:o}"), to = format!("{safe:o}"),
            "data dir permissions tightened");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_decnets_own_files_make_a_data_dir() {
        for n in [
            "events.jsonl",
            "events.jsonl.3",
            "decnet.db",
            "decnet.db-wal",
            "api-token",
        ] {
            assert!(super::ours(n), "{n}");
        }
        for n in ["events.jsonl.x", "notes.txt", ".bashrc", "decnet.db.bak"] {
            assert!(!super::ours(n), "{n}");
        }
    }
}
