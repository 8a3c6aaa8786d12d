//! `decnet replay`: capture files through the same kernel programs, journal, ingest and
//! profiler as a live sensor.
//!
//! - `capture`: pcap and pcapng files, frame by frame, with capture times.
//! - `link`: each link type rewritten as the Ethernet the programs parse.
//! - `route`: ingress (to a decoy) or egress (from one); the decoys found when none given.
//! - `progress`: the bar on a terminal.
//!
//! Each frame runs through its program with BPF_PROG_TEST_RUN, after the programs' clock
//! (loaded in replay mode) is set to the frame's capture time: events, flows, the flood
//! guard and the sweeps all live on the capture's clock, so the same file always gives
//! the same journal and the same profiles. The ring is emptied after every frame, so it
//! never overflows however fast the file is read.
//!
//! Part of the daemon stage (10): it wires the stages as `decnet run` does.

pub mod capture;
pub mod link;
pub mod progress;
pub mod route;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

pub use capture::{CaptureError, CaptureReader};

use crate::{
    collector::{Collector, JournalConfig, JournalWriter},
    sensor::{
        self, Decoy, FloodBudget, Sensor, SensorError,
        loader::{LoadOptions, TC_EGRESS_PROGRAM, XDP_PROGRAM},
        ring::{self, Sweepers},
    },
    stats::PipelineStats,
    store::{Store, StoreError},
};

use self::{
    link::Skip,
    progress::Progress,
    route::{Decoys, Finder, Route},
};

/// How often, in capture time, the flood guard and the flow table are swept (as live)...
const SWEEP_EVERY_NS: u64 = 1_000_000_000;
/// ...but no more often than once per this many frames: a sweep copies the flood guard's
/// map (up to 65,536 entries) and looks up the watched flows, and a replay covers a capture
/// second in milliseconds. (A live sensor
/// sweeps once per real second whatever the rate.) Summaries of what went quiet then carry
/// the time of the sweep that found it, up to this many frames later in the capture.
const SWEEP_MIN_FRAMES: u64 = 16_384;
/// Frames between two hand-offs of the journal chunk to the writer.
const SHIP_EVERY: u64 = 4096;

/// What to replay and where.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub files: Vec<PathBuf>,
    /// The decoys; empty: found in the capture ([`route::Finder`]).
    pub decoys: Vec<Decoy>,
    pub data_dir: PathBuf,
    pub flood: FloodBudget,
    pub flow_idle: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Sensor(#[from] SensorError),
    #[error("{0}: {1}")]
    Journal(PathBuf, std::io::Error),
    #[error(
        "no decoys: no frame of the capture probes an address (a SYN, a UDP datagram or an \
         echo request to it); name the decoys with --decoy IP[=NAME]"
    )]
    NoDecoys,
    #[error(
        "the capture probes {0} addresses, more than the {1} decoys a sensor holds; name the \
         decoys with --decoy IP[=NAME]"
    )]
    TooManyDecoys(usize, u32),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("ingest: {0}")]
    Ingest(#[from] crate::ingest::ingester::IngestError),
    #[error("profiles: {0}")]
    Profile(String),
    #[error("sensor id: {0}")]
    SensorId(std::io::Error),
}

/// What a replay did with the capture's frames.
#[derive(Debug, Default)]
pub struct Replayed {
    pub decoys: Vec<Decoy>,
    pub frames: u64,
    pub bytes: u64,
    pub ingress: u64,
    pub egress: u64,
    /// Frames between two addresses neither of which is a decoy.
    pub neither: u64,
    /// Frames not replayed, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Frames the capture's snaplen cut short (the programs see only what was captured).
    pub cut_short: u64,
    /// Journal records written.
    pub records: u64,
    pub elapsed: Duration,
    /// How long ingest and profiles took after the capture pass, once they ran.
    pub analysed: Option<Duration>,
    /// Where the reading stopped early; everything before it was replayed and kept.
    pub error: Option<CaptureError>,
}

/// Runs every frame of `opts.files` through the kernel programs into the data dir's
/// journal. Needs CAP_BPF (root). A capture that cannot be opened or stops early ends the
/// reading; what was read is kept, and the error is in [`Replayed::error`].
pub fn capture(opts: &ReplayOptions) -> Result<Replayed, ReplayError> {
    let started = Instant::now();
    let decoys = if opts.decoys.is_empty() {
        find_decoys(&opts.files)?
    } else {
        opts.decoys.clone()
    };
    let routes = Decoys::new(decoys.iter().map(|d| d.addr));
    let mut sensor = Sensor::load(
        &decoys,
        &LoadOptions {
            flood: opts.flood,
            replay_clock: true,
            ..LoadOptions::default()
        },
    )?;
    let mut ring = sensor.take_ring()?;
    let mut sweepers = Sweepers {
        sources: Some(sensor.take_sources()?),
        flows: Some(sensor.take_flows()?.with_idle(opts.flow_idle)),
        keep_open: false,
    };
    let stats = Arc::new(PipelineStats::default());
    let path = opts.data_dir.join("events.jsonl");
    let (journal, writer) = JournalWriter::spawn(JournalConfig::new(path.clone()), stats.clone())
        .map_err(|e| ReplayError::Journal(path.clone(), e))?;
    let names: Arc<[String]> = decoys.iter().map(|d| d.name.clone()).collect();
    let collector = Collector::new(journal, names)
        .with_flood(opts.flood)
        .for_replay();
    let mut out = sensor::Output::new(collector, stats.clone());

    let total: u64 = opts
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let mut bar = Progress::new(total);
    let mut r = Replayed {
        decoys,
        ..Replayed::default()
    };
    let mut scratch = Vec::with_capacity(65536);
    let mut clock = u64::MAX;
    let mut next_sweep = 0u64;
    let mut swept_at_frame = 0u64;
    let mut last_ts = 0u64;
    'files: for file in &opts.files {
        // A file that cannot be read stops the replay as a bad frame does: the files
        // before it are kept, ingested and profiled.
        let mut cap = match CaptureReader::open(file) {
            Ok(cap) => cap,
            Err(e) => {
                r.error = Some(e);
                break;
            }
        };
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        loop {
            let f = match cap.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    r.error = Some(e);
                    break 'files;
                }
            };
            r.frames += 1;
            r.bytes += f.data.len() as u64;
            if (f.data.len() as u64) < u64::from(f.wire_len) {
                r.cut_short += 1;
            }
            let eth = match link::to_ethernet(f.link, f.data, &mut scratch) {
                Ok(eth) => eth,
                Err(skip) => {
                    let why = match skip {
                        Skip::Unsupported(l) => format!("link type {l} (not read)"),
                        Skip::Garbled => "shorter than its link header".to_owned(),
                    };
                    *r.skipped.entry(why).or_default() += 1;
                    continue;
                }
            };
            let programs: &[&str] = match routes.route(route::seen(eth).as_ref()) {
                Route::Ingress => {
                    r.ingress += 1;
                    &[XDP_PROGRAM]
                }
                Route::Egress => {
                    r.egress += 1;
                    &[TC_EGRESS_PROGRAM]
                }
                // Leaves one decoy, then reaches the other (as on a decoy network that a
                // sensor sees both sides of).
                Route::Both => {
                    r.egress += 1;
                    r.ingress += 1;
                    &[TC_EGRESS_PROGRAM, XDP_PROGRAM]
                }
                Route::Neither => {
                    r.neither += 1;
                    continue;
                }
            };
            if f.ts_ns != clock {
                sensor.set_clock(f.ts_ns)?;
                clock = f.ts_ns;
            }
            last_ts = last_ts.max(f.ts_ns);
            if f.ts_ns >= next_sweep && r.frames - swept_at_frame >= SWEEP_MIN_FRAMES {
                sweepers.sweep(f.ts_ns, false, &mut out);
                next_sweep = f.ts_ns.saturating_add(SWEEP_EVERY_NS);
                swept_at_frame = r.frames;
            }
            for program in programs {
                sensor.test_run(program, eth, 1)?;
                while !ring::take(&mut ring, &mut out, sweepers.flows.as_mut(), &stats, 4096).2 {}
            }
            if r.frames.is_multiple_of(SHIP_EVERY) {
                out.ship();
            }
            bar.frame(&name, r.frames, cap.position());
        }
        bar.file_done(cap.size());
    }
    // As a live sensor stops: every open flow and quiet source is summarised, at the time
    // of the capture's last frame.
    while !ring::take(&mut ring, &mut out, sweepers.flows.as_mut(), &stats, 4096).2 {}
    sweepers.sweep(last_ts, true, &mut out);
    drop(out);
    writer.join();
    r.records = stats.snapshot().journal_written;
    r.elapsed = started.elapsed();
    bar.finish("capture replayed; ingesting and profiling");
    Ok(r)
}

/// The first pass when no decoy is given: reads every file for its inbound probes.
fn find_decoys(files: &[PathBuf]) -> Result<Vec<Decoy>, ReplayError> {
    let mut finder = Finder::default();
    let mut scratch = Vec::with_capacity(65536);
    for file in files {
        let mut cap = CaptureReader::open(file)?;
        // A file that stops early is reported by the replay pass, with what it kept.
        while let Ok(Some(f)) = cap.next_frame() {
            if let Ok(eth) = link::to_ethernet(f.link, f.data, &mut scratch)
                && let Some(s) = route::seen(eth)
            {
                finder.note(&s);
            }
        }
    }
    let found = finder.decoys();
    if found.is_empty() {
        return Err(ReplayError::NoDecoys);
    }
    let max = decnet_common::MAX_DECOYS;
    if found.len() > max as usize {
        return Err(ReplayError::TooManyDecoys(found.len(), max));
    }
    Ok(found.into_iter().map(decoy_of).collect())
}

/// A decoy found in the capture, named by its address (as `--decoy IP` names it).
fn decoy_of(addr: IpAddr) -> Decoy {
    Decoy {
        addr,
        name: addr.to_string(),
    }
}

/// Ingests the data dir's journal and profiles it: what `decnet run` does as the events
/// arrive, done once to the end. As in `decnet run`, the profiler folds each ingest commit
/// as the ingester announces it, so the two overlap and the rows are not read back.
pub async fn analyse(data_dir: &Path) -> Result<Store, ReplayError> {
    let url = format!("sqlite://{}", data_dir.join("decnet.db").display());
    let store = Store::connect(&url).await?;
    let mut cfg = crate::ingest::IngestConfig::new(data_dir.to_owned());
    cfg.sensor = crate::config::resolve_sensor_id(data_dir, None)
        .map_err(ReplayError::SensorId)?
        .into();
    let hub = crate::hub::Hub::default();
    let ingester =
        crate::ingest::Ingester::new(store.clone(), cfg, Arc::new(tokio::sync::Notify::new()))
            .with_hub(hub.clone());
    let committed = ingester.subscribe();
    let profiler = crate::profile::Profiler::new(store.clone()).with_feed(&hub);
    let (stop_profiles, profiles_rx) = tokio::sync::watch::channel(false);
    let profiling = tokio::spawn(profiler.run(committed, profiles_rx));
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let ingested = ingester.run(rx, true).await;
    // Told to stop, the profiler takes in everything committed, then returns.
    let _ = stop_profiles.send(true);
    let profiled = profiling.await;
    ingested?;
    profiled.map_err(|e| ReplayError::Profile(e.to_string()))??;
    Ok(store)
}

/// Attackers read per page by [`report`]: a capture of a spoofed storm profiles hundreds of
/// thousands of sources, and the report never holds more than a page of them.
const REPORT_PAGE: i64 = 10_000;

/// Every profiled attacker, riskiest first: the attackers table, or with `json` one full
/// profile per line. Pages follow on from the last row of the one before, and carry the
/// states the profiles are rendered from: no row is read twice, none on its own.
pub async fn report(store: &Store, json: bool) -> Result<String, ReplayError> {
    report_paged(store, json, REPORT_PAGE).await
}

async fn report_paged(store: &Store, json: bool, page: i64) -> Result<String, ReplayError> {
    let total = store.count_attackers().await?;
    let mut out = if json {
        String::new()
    } else {
        crate::client::attackers_header()
    };
    let mut shown = 0;
    let mut after: Option<(i64, String)> = None;
    loop {
        let rows = store
            .attackers_by_risk(
                after.as_ref().map(|(risk, ip)| (*risk, ip.as_str())),
                page,
                json,
            )
            .await?;
        let Some((risk, last)) = rows.last() else {
            break;
        };
        after = Some((*risk, last.ip.clone()));
        for (_, r) in &rows {
            if json {
                if let Some(p) = r
                    .state
                    .as_deref()
                    .and_then(|s| crate::profile::render(&r.ip, s))
                {
                    out.push_str(&p.to_string());
                    out.push('\n');
                }
            } else if let Some(row) = crate::profile::list_row(r)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&row)
            {
                out.push_str(&crate::client::attackers_line(&v));
                shown += 1;
            }
        }
    }
    if !json {
        out.push_str(&crate::client::attackers_footer(shown, total as u64));
    }
    Ok(out)
}

impl Replayed {
    /// The replay's account on one line per fact, for stderr.
    pub fn describe(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-6);
        let mut out = format!(
            "replayed {} frames ({} bytes) in {:.2} s ({:.0} frames/s): {} to decoys, {} from \
             decoys, {} between other addresses; {} journal records\n",
            self.frames,
            self.bytes,
            secs,
            self.frames as f64 / secs,
            self.ingress,
            self.egress,
            self.neither,
            self.records,
        );
        out.push_str(&format!(
            "decoys: {}\n",
            self.decoys
                .iter()
                .map(|d| d.addr.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ));
        if let Some(t) = self.analysed {
            out.push_str(&format!(
                "ingested and profiled in {:.2} s\n",
                t.as_secs_f64()
            ));
        }
        if self.cut_short > 0 {
            out.push_str(&format!(
                "{} frames were cut short by the capture's snaplen: only their captured bytes \
                 were seen\n",
                self.cut_short
            ));
        }
        for (why, n) in &self.skipped {
            out.push_str(&format!("skipped {n} frames: {why}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ProfileCommit, ProfileRow};

    /// Pages that follow on from the last row give the whole table, in risk order with
    /// ties by address, whatever the page size, in both output forms.
    #[tokio::test]
    async fn the_report_reads_every_attacker_once_in_risk_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("decnet.db")).await.unwrap();
        let risks = [10, 50, 0, 30, 50, 10, 30, 50, 10, 10, 70];
        let rows: Vec<ProfileRow> = risks
            .iter()
            .enumerate()
            .map(|(i, risk)| {
                let ip = format!("10.0.0.{}", 20 - i);
                ProfileRow {
                    summary: serde_json::json!({"ip": ip, "risk": {"score": risk}}).to_string(),
                    state: r#"{"events":1}"#.to_owned(),
                    first_seen: "2026-12-01T00:00:00Z".into(),
                    last_seen: "2026-12-01T00:00:00Z".into(),
                    event_count: 1,
                    class: "unknown".into(),
                    risk_score: *risk,
                    campaign_id: None,
                    campaign_key: None,
                    match_facts: None,
                    ip,
                }
            })
            .collect();
        store
            .commit_profiles(&mut ProfileCommit::default(), &mut rows.into_iter())
            .await
            .unwrap();
        let table = report_paged(&store, false, 3).await.unwrap();
        assert_eq!(table, report_paged(&store, false, 1000).await.unwrap());
        let order: Vec<(i64, &str)> = table
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let ip = f.next()?;
                Some((f.next()?.parse().ok()?, ip))
            })
            .collect();
        let mut want = order.clone();
        want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        assert_eq!(order.len(), risks.len(), "every attacker once: {table}");
        assert_eq!(order, want);
        assert!(table.ends_with("11 of 11 attackers\n"), "{table}");
        let json = report_paged(&store, true, 3).await.unwrap();
        assert_eq!(json, report_paged(&store, true, 1000).await.unwrap());
        let ips: Vec<String> = json
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["ip"].to_string())
            .collect();
        let table_ips: Vec<String> = order.iter().map(|(_, ip)| format!("\"{ip}\"")).collect();
        assert_eq!(ips, table_ips, "the same attackers in the same order");
    }
}
