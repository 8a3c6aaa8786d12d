//! Where the sensor's probes go.
//!
//! The sensor ends in a [`ProbeSink`], which the collector implements by writing journal
//! lines. In front of it, [`Output`] keeps the flood guard's [`Ledger`]: a source's
//! summaries come both from the kernel (through the ring) and from the sweep of quiet
//! sources, with cumulative counts, so only the withheld events not written before go on,
//! and a summary of an already reported total goes nowhere. It also counts what the sweeps
//! add, for "kernel emitted + swept == written + counted drops".

use std::{net::IpAddr, sync::Arc};

use super::{
    decode::{Probe, Suppressed},
    ledger::{Ledger, Reported},
};
use crate::stats::PipelineStats;

/// The stage after the sensor.
pub trait ProbeSink {
    /// A drain of the ring begins: a sink that turns kernel time into wall-clock time
    /// samples the offset here, once per batch rather than once per probe.
    fn tick(&mut self);
    /// A probe, a probe outcome or a flow summary.
    fn probe(&mut self, p: &Probe);
    /// A flood-guard summary of `p.src`, of which `delta` withheld events were not written
    /// before (always more than zero).
    fn summary(&mut self, p: &Probe, s: &Suppressed, delta: u64);
    /// The end of a batch: pass on whatever is buffered.
    fn ship(&mut self);
}

/// A [`ProbeSink`] behind the flood guard's ledger.
pub struct Output<S: ProbeSink> {
    sink: S,
    ledger: Ledger,
    stats: Arc<PipelineStats>,
}

impl<S: ProbeSink> Output<S> {
    pub fn new(sink: S, stats: Arc<PipelineStats>) -> Self {
        Self {
            sink,
            ledger: Ledger::default(),
            stats,
        }
    }

    /// The withheld totals a previous daemon wrote (handed over across a pinned restart,
    /// where the kernel's per-source counts carry on).
    pub fn with_reported(mut self, reported: &[(IpAddr, Reported)]) -> Self {
        self.ledger.extend(reported);
        self
    }

    /// The withheld totals written per source, for the next daemon.
    pub fn reported(&self) -> Vec<(IpAddr, Reported)> {
        self.ledger.entries()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn tick(&mut self) {
        self.sink.tick();
    }

    /// A probe read from the ring. A kernel summary that adds nothing to what was written
    /// is counted as merged.
    pub fn push(&mut self, p: &Probe) {
        match &p.suppressed {
            Some(s) => {
                if !self.summary(p, s) {
                    PipelineStats::add(&self.stats.summaries_merged, 1);
                }
            }
            None => self.sink.probe(p),
        }
    }

    /// A summary the flood-guard sweep built from the kernel map.
    pub(crate) fn push_swept(&mut self, p: &Probe) {
        if let Some(s) = &p.suppressed
            && self.summary(p, s)
        {
            PipelineStats::add(&self.stats.summaries_swept, 1);
        }
    }

    /// A flow summary the flow sweep built from the kernel map.
    pub(crate) fn push_swept_flow(&mut self, p: &Probe) {
        if p.flow.is_some() {
            self.sink.probe(p);
            PipelineStats::add(&self.stats.flows_swept, 1);
        }
    }

    /// Forgets sources the kernel evicted (see [`Ledger::forget_except`]).
    pub(crate) fn forget_except(&mut self, live: &[IpAddr]) {
        self.ledger.forget_except(live);
    }

    pub(crate) fn ship(&mut self) {
        self.sink.ship();
    }

    /// Passes on what the source withheld since its last summary; false (nothing passed on)
    /// when that is zero.
    fn summary(&mut self, p: &Probe, s: &Suppressed) -> bool {
        let now = Reported {
            first_ns: s.summary.first_ns,
            total: s.summary.suppressed,
        };
        let delta = self.ledger.take(p.src, now);
        if delta == 0 {
            return false;
        }
        PipelineStats::add(&self.stats.suppressed_reported, delta);
        self.sink.summary(p, s, delta);
        true
    }
}
