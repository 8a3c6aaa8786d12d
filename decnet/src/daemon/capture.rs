//! The sensor stage of a running daemon: the ring reader feeding the journal writer, the
//! ingester behind it, and the interface watch; and their stop, in the order that keeps
//! "kernel emitted == journal written + counted drops" true at exit.

use std::sync::Arc;

use tokio::{
    io::unix::AsyncFd,
    sync::{Notify, watch},
};

use super::{
    error::DaemonError,
    prepare::{Pinned, PreparedSensor},
    stop::{Progress, Stage},
};
use crate::{
    collector::{Collector, JournalConfig, JournalWriter},
    config::RunConfig,
    handover,
    hub::Hub,
    ingest::{IngestConfig, Ingester},
    reattach,
    sensor::{self, Sensor, SensorError, ledger::Reported},
    stats::PipelineStats,
    store::Store,
};

/// The running sensor (role `sensor`/`all`): capture, journal and ingest, with what its
/// orderly stop needs.
pub(super) struct Capture {
    pub(super) sensor: Sensor,
    pub(super) kernel: sensor::KernelStats,
    pub(super) pinned: Option<Pinned>,
    iface_watch: tokio::task::JoinHandle<Option<reattach::Helper>>,
    stop_reader: watch::Sender<bool>,
    pub(super) iface_status: Arc<sensor::iface::IfaceStatus>,
    reader: tokio::task::JoinHandle<
        Result<Vec<(std::net::IpAddr, crate::sensor::ledger::Reported)>, SensorError>,
    >,
    /// Taken when it is joined.
    writer: Option<JournalWriter>,
    stop_ingest: watch::Sender<bool>,
    ingest_task: tokio::task::JoinHandle<Result<(), crate::ingest::ingester::IngestError>>,
    pub(super) ingest_stats: Arc<crate::ingest::IngestStats>,
    /// Wakes on every ingest commit (the analyst of a one-process SQLite decnet).
    pub(super) committed: watch::Receiver<u64>,
}

impl Capture {
    /// Starts capture, journal and ingest over the prepared sensor.
    pub(super) fn spawn(
        cfg: &RunConfig,
        prepared: PreparedSensor,
        store: &Store,
        hub: Option<Hub>,
        pipeline: &Arc<PipelineStats>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Self, DaemonError> {
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
        // The ingester publishes what it has committed; the journal writer deletes a rotated
        // file only after that, holding up to `journal_keep` more files for a stalled one.
        let read_position = Arc::new(crate::collector::rotation::ReadPosition::default());
        let mut ingest_cfg = IngestConfig::new(cfg.data_dir.clone());
        ingest_cfg.keep = ingest_cfg.keep.max(2 * cfg.journal_keep + 1);
        ingest_cfg.published = Some(read_position.clone());
        ingest_cfg.sensor = cfg.sensor_id().map_err(DaemonError::SensorId)?.into();
        tracing::info!(sensor_id = %ingest_cfg.sensor, "ingesting as this sensor");
        let mut ingester = Ingester::new(store.clone(), ingest_cfg, wake.clone());
        if let Some(hub) = hub {
            ingester = ingester.with_hub(hub);
        }
        if let Some(h) = &taken {
            ingester =
                ingester.with_stats(Arc::new(crate::ingest::IngestStats::restore(&h.ingest)));
        }
        let committed = ingester.subscribe();
        let ingest_stats = ingester.stats();
        let (stop_ingest, ingest_rx) = watch::channel(false);
        let ingest_task = tokio::spawn(ingester.run(ingest_rx, false));

        let mut journal_cfg = JournalConfig::new(journal_path.clone());
        journal_cfg.wake = Some(wake);
        journal_cfg.max_bytes = cfg.journal_max_bytes;
        journal_cfg.keep = cfg.journal_keep;
        journal_cfg.reader = Some(read_position);
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
        Ok(Capture {
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

    /// The sensor's part of the stop: detach (unless pinned), drain the ring, flush the journal,
    /// commit the last ingest batch; then, for a pinned sensor, write the handover. Its totals
    /// are final at that point; it is written before the profiler's last update, which can
    /// outlast the shutdown timeout after a flood and which the counters do not depend on.
    pub(super) async fn stop(
        &mut self,
        cfg: &RunConfig,
        pipeline: &PipelineStats,
        progress: &Progress,
    ) {
        if let Some(reported) = self.drain(progress).await {
            self.write_handover(cfg, pipeline, reported);
        }
    }

    /// Detaches, drains and commits; returns the flood-guard totals the reader reported (None:
    /// the reader failed), for the handover.
    async fn drain(&mut self, progress: &Progress) -> Option<Vec<(std::net::IpAddr, Reported)>> {
        if let Some(p) = &self.pinned {
            // The programs keep capturing into the pinned ring; the next start reads on from
            // where this one stops.
            tracing::info!(dir = %p.status.dir.display(),
            "shutting down: programs stay attached (pinned), draining the ring, flushing the journal");
        } else {
            tracing::info!("shutting down: detaching, draining the ring, flushing the journal");
            if let Err(e) = self.sensor.detach() {
                tracing::warn!(error = %e, "detach failed; the link goes away with the process");
            }
        }
        // The helper's links (after a re-attach) go too, before the last drain; pinned ones stay.
        let helper = (&mut self.iface_watch).await.ok().flatten();
        match (helper, &self.pinned) {
            (Some(mut h), None) => {
                let _ = tokio::task::spawn_blocking(move || {
                    h.detach();
                    h
                })
                .await;
            }
            (h, _) => drop(h),
        }
        tracing::debug!(ms = progress.elapsed_ms(), "shutdown: helper done");
        progress.set(Stage::DrainingRing);
        let _ = self.stop_reader.send(true);
        let reported = match (&mut self.reader).await {
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
        tracing::debug!(ms = progress.elapsed_ms(), "shutdown: ring drained");
        progress.set(Stage::FlushingJournal);
        if let Some(writer) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
        // The journal is complete on disk; the ingester takes in the rest and commits.
        tracing::debug!(ms = progress.elapsed_ms(), "shutdown: journal flushed");
        progress.set(Stage::CommittingIngest);
        let _ = self.stop_ingest.send(true);
        match (&mut self.ingest_task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "ingester failed"),
            Err(e) => tracing::error!(error = %e, "ingester task panicked"),
        }
        tracing::debug!(ms = progress.elapsed_ms(), "shutdown: ingest committed");
        reported
    }

    /// Writes the handover of a pinned sensor that stopped cleanly.
    fn write_handover(
        &self,
        cfg: &RunConfig,
        pipeline: &PipelineStats,
        reported: Vec<(std::net::IpAddr, Reported)>,
    ) {
        let Some(p) = &self.pinned else { return };
        let h = handover::Handover {
            ring_id: p.ring_id,
            restarts: p.status.restarts + 1,
            pipeline: pipeline.snapshot(),
            ingest: self.ingest_stats.snapshot(),
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

    /// The final counters, logged once everything has stopped.
    pub(super) fn log_stopped(
        &self,
        pipeline: &PipelineStats,
        progress: &Progress,
    ) -> Result<(), DaemonError> {
        let k = self.kernel.read()?;
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
            ingested_rows = self.ingest_stats.snapshot().rows,
            dead_letters = self.ingest_stats.snapshot().dead_letters,
            shutdown_ms = progress.elapsed_ms(),
            "stopped"
        );
        Ok(())
    }
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
