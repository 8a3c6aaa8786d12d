//! `decnet run`: wires the stages together and owns the shutdown order.
//!
//! Start: data dir -> load + fill decoys -> attach -> store + ingester + profiler -> journal writer ->
//! ring reader -> API.
//! Stop: detach (no new events) -> reader drains the ring -> writer flushes and fsyncs ->
//! ingester commits the rest -> profiler absorbs it -> final counters logged. That order is what makes "kernel emitted == journal written +
//! counted drops" hold at exit.

use std::{
    os::unix::fs::DirBuilderExt,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::unix::AsyncFd,
    sync::{Notify, watch},
};

use crate::{
    api::{self, AppState},
    collector::{Collector, JournalConfig, JournalWriter},
    config::RunConfig,
    handover,
    hub::Hub,
    ingest::{IngestConfig, Ingester},
    profile::Profiler,
    profile::analyst,
    reattach, relay,
    sensor::{self, Sensor, SensorError, loader::LoadOptions, pin::Pins},
    stats::PipelineStats,
    store::{Backend, Store},
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Sensor(#[from] SensorError),
    #[error("data dir {0}: {1}")]
    DataDir(std::path::PathBuf, #[source] std::io::Error),
    #[error("journal {0}: {1}")]
    Journal(std::path::PathBuf, #[source] std::io::Error),
    #[error("database {0}: {1}")]
    Store(String, #[source] crate::store::StoreError),
    #[error("sensor id: {0}")]
    SensorId(#[source] std::io::Error),
    #[error("listening on {0}: {1}")]
    Listen(std::net::SocketAddr, #[source] std::io::Error),
    #[error(
        "refusing to listen on {0} without an API token: set DECNET_API_TOKEN (a long random \
         string) to expose the API beyond loopback, or use --listen 127.0.0.1:PORT"
    )]
    ExposedWithoutToken(std::net::SocketAddr),
    #[error(
        "data dir {dir} is not decnet's own: it holds `{entry}`; give decnet a directory of its \
         own (it tightens the directory to 0750 and hands it to the daemon user)"
    )]
    DataDirShared {
        dir: std::path::PathBuf,
        entry: String,
    },
    #[error("API token {0}: {1}")]
    Token(std::path::PathBuf, #[source] std::io::Error),
}

/// What `decnet run` sets up while it still has its privileges: the data dir and token,
/// the loaded and attached programs and the maps the daemon keeps. Nothing after this needs
/// a capability (see `privilege`).
pub struct Prepared {
    /// The API token (roles with the API).
    auth: Option<api::auth::Auth>,
    /// The sensor (roles with the sensor).
    sensor: Option<PreparedSensor>,
}

/// The sensor's part of [`Prepared`].
struct PreparedSensor {
    sensor: Sensor,
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    kernel: sensor::KernelStats,
    sources: sensor::guard::Sources,
    flows: sensor::flows::Flows,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    pinned: Option<Pinned>,
    helper: Option<reattach::Helper>,
}

/// A pinned sensor's identity and what the daemon before handed over.
struct Pinned {
    ring_id: u32,
    status: sensor::pin::PinStatus,
    taken: Option<handover::Handover>,
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
    Ok(Prepared { auth, sensor })
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

/// The running sensor (role `sensor`/`all`): capture, journal and ingest, with what its
/// orderly stop needs.
struct SensorRun {
    sensor: Sensor,
    kernel: sensor::KernelStats,
    pinned: Option<Pinned>,
    iface_watch: tokio::task::JoinHandle<Option<reattach::Helper>>,
    stop_reader: watch::Sender<bool>,
    iface_status: Arc<sensor::iface::IfaceStatus>,
    reader: tokio::task::JoinHandle<
        Result<Vec<(std::net::IpAddr, crate::sensor::ledger::Reported)>, SensorError>,
    >,
    /// Taken when it is joined.
    writer: Option<JournalWriter>,
    stop_ingest: watch::Sender<bool>,
    ingest_task: tokio::task::JoinHandle<Result<(), crate::ingest::ingester::IngestError>>,
    ingest_stats: Arc<crate::ingest::IngestStats>,
    /// Wakes on every ingest commit (the analyst of a one-process SQLite decnet).
    committed: watch::Receiver<u64>,
}

/// Starts capture, journal and ingest over the prepared sensor.
fn start_sensor(
    cfg: &RunConfig,
    prepared: PreparedSensor,
    store: &Store,
    hub: Option<Hub>,
    pipeline: &Arc<PipelineStats>,
    shutdown: &watch::Receiver<bool>,
) -> Result<SensorRun, DaemonError> {
    let PreparedSensor {
        sensor,
        ring,
        kernel,
        sources,
        flows,
        logger,
        pinned,
        helper,
    } = prepared;
    let iface_status = Arc::new(sensor::iface::IfaceStatus::default());
    let iface_watch = tokio::spawn(reattach::watch(
        cfg.iface.clone(),
        helper,
        iface_status.clone(),
        shutdown.clone(),
    ));
    if let Some(logger) = logger {
        spawn_kernel_log_pump(logger);
    }
    let taken = pinned.as_ref().and_then(|p| p.taken.clone());
    let journal_path = cfg.journal_path();
    let deckies: Arc<[String]> = cfg.decoys.iter().map(|d| d.name.clone()).collect();
    let wake = Arc::new(Notify::new());
    let mut ingest_cfg = IngestConfig::new(cfg.data_dir.clone());
    ingest_cfg.keep = ingest_cfg.keep.max(cfg.journal_keep);
    ingest_cfg.sensor = cfg.sensor_id().map_err(DaemonError::SensorId)?.into();
    tracing::info!(sensor_id = %ingest_cfg.sensor, "ingesting as this sensor");
    let mut ingester = Ingester::new(store.clone(), ingest_cfg, wake.clone());
    if let Some(hub) = hub {
        ingester = ingester.with_hub(hub);
    }
    if let Some(h) = &taken {
        ingester = ingester.with_stats(Arc::new(crate::ingest::IngestStats::restore(&h.ingest)));
    }
    let committed = ingester.subscribe();
    let ingest_stats = ingester.stats();
    let (stop_ingest, ingest_rx) = watch::channel(false);
    let ingest_task = tokio::spawn(ingester.run(ingest_rx, false));

    let mut journal_cfg = JournalConfig::new(journal_path.clone());
    journal_cfg.wake = Some(wake);
    journal_cfg.max_bytes = cfg.journal_max_bytes;
    journal_cfg.keep = cfg.journal_keep;
    journal_cfg.fsync = cfg.journal_fsync;
    let (journal, writer) = JournalWriter::spawn(journal_cfg, pipeline.clone())
        .map_err(|e| DaemonError::Journal(journal_path.clone(), e))?;
    let collector = Collector::new(journal, deckies).with_flood(cfg.flood);
    let out = sensor::Output::new(collector, pipeline.clone()).with_reported(
        &taken
            .as_ref()
            .map(|h| h.flood_reported())
            .unwrap_or_default(),
    );
    tracing::info!(path = %journal_path.display(), "journal open");

    let (stop_reader, reader_rx) = watch::channel(false);
    let reader = tokio::spawn(sensor::ring::run_reader(
        ring,
        out,
        sensor::ring::Sweepers {
            sources: Some(sources),
            flows: Some(flows),
            keep_open: pinned.is_some(),
        },
        pipeline.clone(),
        reader_rx,
    ));
    Ok(SensorRun {
        sensor,
        kernel,
        pinned,
        iface_watch,
        iface_status,
        stop_reader,
        reader,
        writer: Some(writer),
        stop_ingest,
        ingest_task,
        ingest_stats,
        committed,
    })
}

/// Runs until `shutdown` becomes true: the parts of decnet `cfg.role` names, over the
/// store `cfg.store`.
pub async fn run(
    cfg: RunConfig,
    prepared: Prepared,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    let Prepared { auth, sensor } = prepared;
    let store = Store::connect(&cfg.store)
        .await
        .map_err(|e| DaemonError::Store(cfg.store_display(), e))?;
    // In a fleet, other processes commit too: streams and the analyst learn of new rows
    // from the database (relay, LISTEN), not from this process's ingester.
    let fleet = store.backend() == Backend::Postgres;
    tracing::info!(role = %cfg.role, store = %cfg.store_display(), "store open");
    let checkpoints = tokio::spawn(store.clone().checkpoint_loop(Duration::from_millis(500)));
    let hub = Hub::default();
    let taken = sensor
        .as_ref()
        .and_then(|s| s.pinned.as_ref())
        .and_then(|p| p.taken.clone());
    let pipeline = Arc::new(
        taken
            .as_ref()
            .map(|h| PipelineStats::restore(&h.pipeline))
            .unwrap_or_default(),
    );
    let mut sensor = match sensor {
        Some(p) => Some(start_sensor(
            &cfg,
            p,
            &store,
            (!fleet).then(|| hub.clone()),
            &pipeline,
            &shutdown,
        )?),
        None => None,
    };

    let profile_stats = Arc::new(crate::profile::ProfileStats::default());
    let (stop_profile, profile_rx) = watch::channel(false);
    let profile_task = if !cfg.role.analyst() {
        None
    } else if fleet {
        // Detections reach the streams through the database (relay), like rows.
        Some(tokio::spawn(analyst::run(
            store.clone(),
            Hub::default(),
            profile_stats.clone(),
            profile_rx,
        )))
    } else {
        profile_stats
            .active
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // One process does everything (SQLite: `--role all`): the ingester's commits wake it.
        let wake = sensor
            .as_ref()
            .map_or_else(|| watch::channel(0u64).1, |s| s.committed.clone());
        let profiler = Profiler::with_hub(store.clone(), hub.clone())
            .with_stats(profile_stats.clone())
            .with_feed(&hub);
        Some(tokio::spawn(async move {
            if let Err(e) = profiler.run(wake, profile_rx).await {
                tracing::error!(error = %e, "profiler failed");
            }
        }))
    };

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
                kernel: sensor.as_ref().map(|s| s.kernel.clone()),
                pipeline: pipeline.clone(),
                attached: sensor
                    .as_ref()
                    .and_then(|s| s.sensor.attached().map(|(i, m)| (i.to_owned(), m))),
                egress: sensor.as_ref().and_then(|s| s.sensor.egress_mode()),
                pin: sensor
                    .as_ref()
                    .and_then(|s| s.pinned.as_ref().map(|p| p.status.clone())),
                iface_status: sensor.as_ref().map(|s| s.iface_status.clone()),
                ingest: sensor.as_ref().map(|s| s.ingest_stats.clone()),
                // A sensor serves its status (health, stats, metrics); data comes from the
                // API instances.
                store: cfg.role.api().then(|| store.clone()),
                hub: hub.clone(),
                auth: Arc::new(auth),
                profile: cfg.role.analyst().then(|| profile_stats.clone()),
                http: Default::default(),
                role: cfg.role,
            };
            let mut api_shutdown = shutdown.clone();
            Some(tokio::spawn(async move {
                let r = axum::serve(
                    listener,
                    api::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
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

    let _ = shutdown.wait_for(|v| *v).await;
    let stopping = Instant::now();
    let stage = std::sync::Mutex::new("draining the ring");
    let set_stage = |s: &'static str| *stage.lock().unwrap_or_else(|p| p.into_inner()) = s;
    let graceful = async {
        if let Some(s) = sensor.as_mut() {
            // A clean stop of a pinned sensor: the next daemon continues these totals. Written
            // as soon as they are final, before the profiler's last update: that update can
            // outlast the shutdown timeout after a flood, and the counters do not depend on it.
            if let Some(reported) = stop_sensor(s, &stopping, &set_stage).await {
                write_handover(&cfg, s, &pipeline, reported);
            }
        }
        // Profiles take in the last committed rows.
        set_stage("updating the last profiles");
        let _ = stop_profile.send(true);
        if let Some(t) = profile_task
            && let Err(e) = t.await
        {
            tracing::error!(error = %e, "profiler task panicked");
        }
        // Everything committed has been announced: the streams get their last event and end,
        // which lets the server's graceful shutdown finish.
        set_stage("closing the streams");
        let _ = stop_relay.send(true);
        if let Some(r) = relay {
            let _ = r.await;
        }
        hub.shutdown();
        if let Some(server) = server {
            let _ = server.await;
        }
    };
    if tokio::time::timeout(cfg.shutdown_timeout, graceful)
        .await
        .is_err()
    {
        // Nothing is lost by stopping here: the journal is append-only and the ingester and
        // profiler resume from cursors committed with their rows.
        tracing::warn!(
            timeout_s = cfg.shutdown_timeout.as_secs(),
            stage = *stage.lock().unwrap_or_else(|p| p.into_inner()),
            "shutdown took too long; exiting (the next start resumes from the cursors)"
        );
    }
    checkpoints.abort();
    if let Some(s) = sensor {
        let k = s.kernel.read()?;
        let p = pipeline.snapshot();
        tracing::info!(
            kernel_events_emitted = k.events_emitted,
            ring_reserve_failed = k.ring_reserve_failed,
            malformed = k.malformed,
            ring_read = p.ring_read,
            journal_written = p.journal_written,
            channel_full_dropped = p.channel_full_dropped,
            journal_write_failed = p.journal_write_failed,
            decode_errors = p.decode_errors,
            ingested_rows = s.ingest_stats.snapshot().rows,
            dead_letters = s.ingest_stats.snapshot().dead_letters,
            shutdown_ms = stopping.elapsed().as_millis() as u64,
            "stopped"
        );
        drop(s);
    } else {
        tracing::info!(
            shutdown_ms = stopping.elapsed().as_millis() as u64,
            "stopped"
        );
    }
    Ok(())
}

/// The sensor's part of the stop: detach (unless pinned), drain the ring, flush the journal,
/// commit the last ingest batch. Returns the flood-guard totals the reader reported (None:
/// the reader failed), for the handover.
async fn stop_sensor(
    s: &mut SensorRun,
    stopping: &Instant,
    set_stage: &impl Fn(&'static str),
) -> Option<Vec<(std::net::IpAddr, crate::sensor::ledger::Reported)>> {
    if let Some(p) = &s.pinned {
        // The programs keep capturing into the pinned ring; the next start reads on from
        // where this one stops.
        tracing::info!(dir = %p.status.dir.display(),
            "shutting down: programs stay attached (pinned), draining the ring, flushing the journal");
    } else {
        tracing::info!("shutting down: detaching, draining the ring, flushing the journal");
        if let Err(e) = s.sensor.detach() {
            tracing::warn!(error = %e, "detach failed; the link goes away with the process");
        }
    }
    // The helper's links (after a re-attach) go too, before the last drain; pinned ones stay.
    let helper = (&mut s.iface_watch).await.ok().flatten();
    match (helper, &s.pinned) {
        (Some(mut h), None) => {
            let _ = tokio::task::spawn_blocking(move || {
                h.detach();
                h
            })
            .await;
        }
        (h, _) => drop(h),
    }
    tracing::debug!(
        ms = stopping.elapsed().as_millis() as u64,
        "shutdown: helper done"
    );
    set_stage("draining the ring");
    let _ = s.stop_reader.send(true);
    let reported = match (&mut s.reader).await {
        Ok(Ok(r)) => Some(r),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "ring reader failed");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "ring reader task panicked");
            None
        }
    };
    // The reader owned the collector and with it the only JournalHandle; with it gone the
    // writer drains, fsyncs and exits.
    tracing::debug!(
        ms = stopping.elapsed().as_millis() as u64,
        "shutdown: ring drained"
    );
    set_stage("flushing the journal");
    if let Some(writer) = s.writer.take() {
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    }
    // The journal is complete on disk; the ingester takes in the rest and commits.
    tracing::debug!(
        ms = stopping.elapsed().as_millis() as u64,
        "shutdown: journal flushed"
    );
    set_stage("committing the last ingest batch");
    let _ = s.stop_ingest.send(true);
    match (&mut s.ingest_task).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "ingester failed"),
        Err(e) => tracing::error!(error = %e, "ingester task panicked"),
    }
    tracing::debug!(
        ms = stopping.elapsed().as_millis() as u64,
        "shutdown: ingest committed"
    );
    reported
}

/// Writes the handover of a pinned sensor that stopped cleanly.
fn write_handover(
    cfg: &RunConfig,
    s: &SensorRun,
    pipeline: &PipelineStats,
    reported: Vec<(std::net::IpAddr, crate::sensor::ledger::Reported)>,
) {
    let Some(p) = &s.pinned else { return };
    let h = handover::Handover {
        ring_id: p.ring_id,
        restarts: p.status.restarts + 1,
        pipeline: pipeline.snapshot(),
        ingest: s.ingest_stats.snapshot(),
        reported: Vec::new(),
        flood_reported: reported,
    };
    match handover::write(&cfg.data_dir, &h) {
        Ok(()) => tracing::info!(
            journal_written = h.pipeline.journal_written,
            "handover written for the next start"
        ),
        Err(e) => tracing::warn!(error = %e,
            "no handover written: the next start's counters begin from zero"),
    }
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

/// Forwards kernel aya-log records (rare: diagnostics only) into `tracing`.
fn spawn_kernel_log_pump(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring fd for its whole life, which is the AsyncFd's.
    match unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) } {
        Ok(mut fd) => {
            tokio::spawn(async move {
                while let Ok(mut guard) = fd.readable_mut().await {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "kernel log pump unavailable"),
    }
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
