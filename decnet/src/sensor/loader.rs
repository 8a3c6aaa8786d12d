//! Loading the eBPF object, filling the decoy map, attaching XDP (ingress) and TC (egress).
//!
//! Attachment goes through bpf_links (XDP link, tcx link), so the programs are detached by
//! the kernel when the daemon exits for any reason, including SIGKILL: a crash never leaves
//! a program behind. Kernels before 6.6 have no tcx; there the egress program goes on a
//! clsact qdisc through netlink, which aya removes on exit (the qdisc itself stays).

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        SchedClassifier, TcAttachType, TestRun, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, LinkOrder, PinnedLink},
        tc::{NlOptions, SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions},
        xdp::{XdpLink, XdpLinkId},
    },
};
use decnet_common::{
    CLOCK_MAP, DECOY_FILTER_MAP, DECOY_FILTER_WORDS, DECOYS_MAP, DEFAULT_RING_BYTES, EVENTS_MAP,
    FLOWS_MAP, GUARD_MAP, GuardConfig, MAX_DECOYS, REPLAY_CLOCK_GLOBAL, SOURCES_MAP, STATS_MAP,
};

use super::{
    attach::{AttachMode, EgressMode, XdpModeChoice},
    decoy::{Decoy, decoy_key},
    error::SensorError,
    flows::Flows,
    guard::{FloodBudget, Sources},
    kernel_stats::KernelStats,
    pin::{PINNED_MAPS, Pins, unpin},
};

/// The eBPF object built by build.rs (empty when built with AYA_BUILD_SKIP=1).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/decnet-ebpf"));

/// The main XDP program.
pub const XDP_PROGRAM: &str = "decnet_xdp";
/// A program that only returns XDP_PASS: the baseline in benchmarks.
pub const XDP_PASS_PROGRAM: &str = "decnet_xdp_pass";
/// The TC egress program (the decoy's answers).
pub const TC_EGRESS_PROGRAM: &str = "decnet_tc_egress";
/// The main program's analysis on the TC ingress hook (`--xdp-mode tc`).
pub const TC_INGRESS_PROGRAM: &str = "decnet_tc_ingress";

/// Tunables for loading.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Ring size in bytes; rounded up by the kernel rules (power of two pages).
    pub ring_bytes: u32,
    /// aya-log level enabled in the kernel: 0 = off, 1 error ... 5 trace. Default 2 (warn),
    /// which keeps the per-packet debug diagnostics compiled out of the hot path at runtime.
    pub kernel_log_level: u8,
    /// The flood guard's per-source budget.
    pub flood: FloodBudget,
    /// Pin the programs, links and maps here (see `pin`), adopting what an earlier daemon
    /// pinned.
    pub pins: Option<Pins>,
    /// Run the programs on a clock userspace sets per frame ([`Sensor::set_clock`]), for
    /// `decnet replay`. Off, the programs read the kernel's clock and never the map.
    pub replay_clock: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ring_bytes: DEFAULT_RING_BYTES,
            kernel_log_level: 2,
            flood: FloodBudget::default(),
            pins: None,
            replay_clock: false,
        }
    }
}

/// A loaded (and possibly attached) decnet program set.
pub struct Sensor {
    ebpf: Ebpf,
    link: Option<XdpLinkId>,
    /// The ingress program's unpinned tcx link (`--xdp-mode tc`).
    ingress_tc: Option<SchedClassifierLinkId>,
    egress: Option<(SchedClassifierLinkId, EgressMode)>,
    attached: Option<(String, AttachMode)>,
    flood: FloodBudget,
    pins: Option<Pins>,
    /// The egress program is in a pinned tcx link (held in `held`).
    egress_pinned: Option<EgressMode>,
    /// Pinned links taken over or created by this daemon: closing these fds leaves the
    /// links (and so the programs) attached through their pins.
    held: Vec<FdLink>,
    /// The replay clock's map, taken at the first [`Sensor::set_clock`].
    clock: Option<Array<MapData, u64>>,
}

impl Sensor {
    /// Loads and verifies the programs and fills the decoy map. Nothing is attached yet.
    pub fn load(decoys: &[Decoy], opts: &LoadOptions) -> Result<Self, SensorError> {
        if EBPF_OBJECT.is_empty() {
            return Err(SensorError::NoObject);
        }
        if decoys.len() > MAX_DECOYS as usize {
            return Err(SensorError::TooManyDecoys(decoys.len(), MAX_DECOYS));
        }
        let ring_bytes = opts.ring_bytes.max(4096).next_power_of_two();
        let level = opts.kernel_log_level;
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(EVENTS_MAP, ring_bytes)
            .override_global("AYA_LOG_LEVEL", &level, false);
        if opts.replay_clock {
            loader.override_global(REPLAY_CLOCK_GLOBAL, &1u8, true);
        }
        if let Some(pins) = &opts.pins {
            // An existing pin is opened (the same ring, counters and tables as before the
            // restart); a missing one is created and pinned.
            for name in PINNED_MAPS {
                loader.map_pin_path(name, pins.map(name));
            }
        }
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        {
            // The prefilter must never hide a decoy: new decoys' bits go in before their
            // entries, and bits only go (rewritten exactly) after stale entries have.
            write_decoy_filter(&mut ebpf, decoys, true)?;
            let map = ebpf
                .map_mut(DECOYS_MAP)
                .ok_or(SensorError::MissingMap(DECOYS_MAP))?;
            let mut map: HashMap<_, decnet_common::DecoyKey, u32> =
                HashMap::try_from(map).map_err(|e| SensorError::Map(DECOYS_MAP, e))?;
            for (i, d) in decoys.iter().enumerate() {
                // Decky ids are 1-based positions in the decoy list; 0 never names a decky.
                map.insert(decoy_key(d.addr), i as u32 + 1, 0)
                    .map_err(|e| SensorError::Map(DECOYS_MAP, e))?;
            }
            // A pinned map keeps the decoys of the last configuration: drop the ones that
            // are no longer configured.
            let current: Vec<_> = decoys.iter().map(|d| decoy_key(d.addr)).collect();
            let stale: Vec<_> = map
                .keys()
                .flatten()
                .filter(|k| !current.contains(k))
                .collect();
            for k in stale {
                map.remove(&k)
                    .map_err(|e| SensorError::Map(DECOYS_MAP, e))?;
            }
            write_decoy_filter(&mut ebpf, decoys, false)?;
        }
        {
            let map = ebpf
                .map_mut(GUARD_MAP)
                .ok_or(SensorError::MissingMap(GUARD_MAP))?;
            let mut map: Array<_, GuardConfig> =
                Array::try_from(map).map_err(|e| SensorError::Map(GUARD_MAP, e))?;
            map.set(0, opts.flood.kernel(), 0)
                .map_err(|e| SensorError::Map(GUARD_MAP, e))?;
        }
        // The ingress programs are loaded when attached (`load_ingress`): verifying one costs
        // ~0.7 CPU-s, and a daemon runs only one of them.
        Self::tc(&mut ebpf, TC_EGRESS_PROGRAM)?
            .load()
            .map_err(|e| SensorError::Program(TC_EGRESS_PROGRAM, e))?;
        if let Some(pins) = &opts.pins {
            // The pinned programs are the ones now loaded (for bpftool and for `detach`).
            let tc = pins.program("tc_prog");
            unpin(&tc)?;
            Self::tc(&mut ebpf, TC_EGRESS_PROGRAM)?
                .pin(&tc)
                .map_err(|e| SensorError::Pinning(tc.clone(), chain(&e)))?;
        }
        Ok(Self {
            ebpf,
            link: None,
            ingress_tc: None,
            egress: None,
            attached: None,
            flood: opts.flood,
            pins: opts.pins.clone(),
            egress_pinned: None,
            held: Vec::new(),
            clock: None,
        })
    }

    /// Puts the freshly loaded XDP program into the pinned link at `path` (atomically: the
    /// old program runs until the new one is in).
    fn adopt_xdp(&mut self, path: &std::path::Path) -> Result<(), SensorError> {
        let err = |e: String| SensorError::Pinning(path.to_owned(), e);
        let pinned = PinnedLink::from_pin(path).map_err(|e| err(chain(&e)))?;
        let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| err(chain(&e)))?;
        let prog = Self::xdp(&mut self.ebpf, XDP_PROGRAM)?;
        let id = prog.attach_to_link(link).map_err(|e| err(chain(&e)))?;
        let link = prog.take_link(id).map_err(|e| err(chain(&e)))?;
        self.held
            .push(FdLink::try_from(link).map_err(|e| err(chain(&e)))?);
        Ok(())
    }

    /// The same for a TC program's (`name`) pinned tcx link.
    fn adopt_tc(&mut self, path: &std::path::Path, name: &'static str) -> Result<(), SensorError> {
        let err = |e: String| SensorError::Pinning(path.to_owned(), e);
        let pinned = PinnedLink::from_pin(path).map_err(|e| err(chain(&e)))?;
        let link =
            SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(|e| err(chain(&e)))?;
        let prog = Self::tc(&mut self.ebpf, name)?;
        let id = prog.attach_to_link(link).map_err(|e| err(chain(&e)))?;
        let link = prog.take_link(id).map_err(|e| err(chain(&e)))?;
        self.held
            .push(FdLink::try_from(link).map_err(|e| err(chain(&e)))?);
        Ok(())
    }

    fn xdp<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, SensorError> {
        let prog = ebpf.program_mut(name).ok_or(SensorError::Program(
            name,
            aya::programs::ProgramError::NotLoaded,
        ))?;
        prog.try_into().map_err(|e| SensorError::Program(name, e))
    }

    fn tc<'a>(
        ebpf: &'a mut Ebpf,
        name: &'static str,
    ) -> Result<&'a mut SchedClassifier, SensorError> {
        let prog = ebpf.program_mut(name).ok_or(SensorError::Program(
            name,
            aya::programs::ProgramError::NotLoaded,
        ))?;
        prog.try_into().map_err(|e| SensorError::Program(name, e))
    }

    /// Loads an ingress program (`XDP_PROGRAM`, `TC_INGRESS_PROGRAM`, `XDP_PASS_PROGRAM`)
    /// the first time it is needed, and with pins pins it (`xdp_prog`, `tc_ingress_prog`).
    pub(crate) fn load_ingress(&mut self, name: &'static str) -> Result<(), SensorError> {
        let loaded = self.ebpf.program(name).is_some_and(|p| p.fd().is_ok());
        if loaded {
            return Ok(());
        }
        let r = if name == TC_INGRESS_PROGRAM {
            Self::tc(&mut self.ebpf, name)?.load()
        } else {
            Self::xdp(&mut self.ebpf, name)?.load()
        };
        r.map_err(|e| SensorError::Program(name, e))?;
        let pin = match name {
            XDP_PROGRAM => "xdp_prog",
            TC_INGRESS_PROGRAM => "tc_ingress_prog",
            _ => return Ok(()),
        };
        if let Some(pins) = &self.pins {
            let path = pins.program(pin);
            unpin(&path)?;
            self.ebpf
                .program_mut(name)
                .ok_or(SensorError::Program(
                    name,
                    aya::programs::ProgramError::NotLoaded,
                ))?
                .pin(&path)
                .map_err(|e| SensorError::Pinning(path.clone(), chain(&e)))?;
        }
        Ok(())
    }

    /// Attaches the egress program to `iface`: a tcx link, or on kernels without tcx a
    /// clsact qdisc filter.
    pub(crate) fn attach_egress(&mut self, iface: &str) -> Result<EgressMode, SensorError> {
        if let Some(path) = self.pins.as_ref().map(Pins::tc_link)
            && path.exists()
        {
            match self.adopt_tc(&path, TC_EGRESS_PROGRAM) {
                Ok(()) => {
                    tracing::info!(iface, path = %path.display(), "took over the pinned egress link");
                    self.egress_pinned = Some(EgressMode::Tcx);
                    return Ok(EgressMode::Tcx);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the pinned egress link cannot be taken over; attaching afresh");
                    unpin(&path)?;
                }
            }
        }
        let prog = Self::tc(&mut self.ebpf, TC_EGRESS_PROGRAM)?;
        let tcx = prog.attach_with_options(
            iface,
            TcAttachType::Egress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        );
        let (link, mode) = match tcx {
            Ok(link) if self.pins.is_some() => {
                let path = self.pins.as_ref().map(Pins::tc_link).unwrap_or_default();
                let link = prog
                    .take_link(link)
                    .map_err(|e| SensorError::Pinning(path.clone(), chain(&e)))?;
                self.held.push(pin_link(link, &path)?);
                self.egress_pinned = Some(EgressMode::Tcx);
                return Ok(EgressMode::Tcx);
            }
            Ok(link) => (link, EgressMode::Tcx),
            Err(e) => {
                tracing::info!(iface, error = %e, "tcx attach failed; trying a clsact qdisc");
                // Already present is fine (another tool's, or ours from a run before).
                let _ = aya::programs::tc::qdisc_add_clsact(iface);
                let link = prog
                    .attach_with_options(
                        iface,
                        TcAttachType::Egress,
                        TcAttachOptions::Netlink(NlOptions::default()),
                    )
                    .map_err(|source| SensorError::EgressAttach {
                        iface: iface.to_owned(),
                        source,
                    })?;
                (link, EgressMode::Clsact)
            }
        };
        self.egress = Some((link, mode));
        Ok(mode)
    }

    /// How the egress program is attached, if it is.
    pub fn egress_mode(&self) -> Option<EgressMode> {
        self.egress.as_ref().map(|(_, m)| *m).or(self.egress_pinned)
    }

    /// Attaches the main program to `iface`. `Auto` tries native XDP, then the TC ingress
    /// hook, then generic XDP (on a veth: TC, generic, native).
    pub(crate) fn attach(
        &mut self,
        iface: &str,
        choice: XdpModeChoice,
    ) -> Result<AttachMode, SensorError> {
        if nix_if_index(iface).is_none() {
            return Err(SensorError::NoSuchInterface(iface.to_owned()));
        }
        if let Some((path, mode)) = self.pins.as_ref().and_then(Pins::pinned_ingress_link) {
            let wanted = match choice {
                XdpModeChoice::Auto => true,
                XdpModeChoice::Native => mode == AttachMode::Native,
                XdpModeChoice::Skb => mode == AttachMode::Skb,
                XdpModeChoice::Tc => mode == AttachMode::Tc,
            };
            let adopted = wanted.then(|| match mode {
                AttachMode::Tc => self
                    .load_ingress(TC_INGRESS_PROGRAM)
                    .and_then(|()| self.adopt_tc(&path, TC_INGRESS_PROGRAM)),
                AttachMode::Native | AttachMode::Skb => self
                    .load_ingress(XDP_PROGRAM)
                    .and_then(|()| self.adopt_xdp(&path)),
            });
            match adopted {
                Some(Ok(())) => {
                    tracing::info!(iface, path = %path.display(), "took over the pinned ingress link");
                    self.attached = Some((iface.to_owned(), mode));
                    return Ok(mode);
                }
                Some(Err(e)) => tracing::warn!(error = %e,
                    "the pinned ingress link cannot be taken over (interface recreated?); attaching afresh"),
                None => tracing::warn!(pinned = %mode, wanted = ?choice,
                    "the pinned ingress link has another mode; replacing it (probes in between are missed)"),
            }
            // Its last reference goes with the pin: the old program is detached.
            unpin(&path)?;
        }
        use AttachMode::{Native, Skb, Tc};
        let veth = driver_name(iface).as_deref() == Some("veth");
        let tries: &[AttachMode] = match choice {
            // Generic XDP re-allocates every skb with less than 256 bytes of headroom before
            // the program runs; the TC hook sees the same skb as it is. On a veth, native XDP
            // switches the pair to NAPI receive, which costs more still (measured with
            // `cargo xtask bench capture`: 1.54 vs 1.10 system CPU-s per million decoy
            // packets against generic).
            XdpModeChoice::Auto if veth => &[Tc, Skb, Native],
            XdpModeChoice::Auto => &[Native, Tc, Skb],
            XdpModeChoice::Native => &[Native],
            XdpModeChoice::Skb => &[Skb],
            XdpModeChoice::Tc => &[Tc],
        };
        let mut last = None;
        for &mode in tries {
            let r = match mode {
                Tc => self.attach_tc_ingress(iface),
                Native | Skb => self.attach_xdp(iface, mode),
            };
            match r {
                Ok(()) => {
                    self.attached = Some((iface.to_owned(), mode));
                    return Ok(mode);
                }
                Err(e) => {
                    tracing::info!(iface, %mode, error = %e, "ingress attach failed");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(SensorError::NoSuchInterface(iface.to_owned())))
    }

    /// The XDP program on `iface` in `mode` (native or generic), pinned when pinning.
    fn attach_xdp(&mut self, iface: &str, mode: AttachMode) -> Result<(), SensorError> {
        let (xdp_mode, name) = match mode {
            AttachMode::Native => (XdpMode::Driver, "native"),
            _ => (XdpMode::Skb, "skb"),
        };
        self.load_ingress(XDP_PROGRAM)?;
        let prog = Self::xdp(&mut self.ebpf, XDP_PROGRAM)?;
        let link = prog
            .attach(iface, xdp_mode)
            .map_err(|source| SensorError::Attach {
                iface: iface.to_owned(),
                mode: name,
                source,
            })?;
        match &self.pins {
            Some(pins) => {
                let path = pins.ingress_link(mode);
                let link = prog
                    .take_link(link)
                    .map_err(|e| SensorError::Pinning(path.clone(), chain(&e)))?;
                self.held.push(pin_link(link, &path)?);
            }
            None => self.link = Some(link),
        }
        Ok(())
    }

    /// The ingress program on `iface`'s TC ingress hook, as a tcx link (pinned when pinning).
    fn attach_tc_ingress(&mut self, iface: &str) -> Result<(), SensorError> {
        self.load_ingress(TC_INGRESS_PROGRAM)?;
        let prog = Self::tc(&mut self.ebpf, TC_INGRESS_PROGRAM)?;
        let link = prog
            .attach_with_options(
                iface,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|source| SensorError::Attach {
                iface: iface.to_owned(),
                mode: "tc",
                source,
            })?;
        match &self.pins {
            Some(pins) => {
                let path = pins.ingress_link(AttachMode::Tc);
                let link = prog
                    .take_link(link)
                    .map_err(|e| SensorError::Pinning(path.clone(), chain(&e)))?;
                self.held.push(pin_link(link, &path)?);
            }
            None => self.ingress_tc = Some(link),
        }
        Ok(())
    }

    /// Detaches the programs (also happens on drop).
    pub fn detach(&mut self) -> Result<(), SensorError> {
        if let Some((link, _)) = self.egress.take() {
            Self::tc(&mut self.ebpf, TC_EGRESS_PROGRAM)?
                .detach(link)
                .map_err(|e| SensorError::Program(TC_EGRESS_PROGRAM, e))?;
        }
        if let Some(link) = self.link.take() {
            Self::xdp(&mut self.ebpf, XDP_PROGRAM)?
                .detach(link)
                .map_err(|e| SensorError::Program(XDP_PROGRAM, e))?;
        }
        if let Some(link) = self.ingress_tc.take() {
            Self::tc(&mut self.ebpf, TC_INGRESS_PROGRAM)?
                .detach(link)
                .map_err(|e| SensorError::Program(TC_INGRESS_PROGRAM, e))?;
        }
        self.attached = None;
        Ok(())
    }

    pub fn attached(&self) -> Option<(&str, AttachMode)> {
        self.attached.as_ref().map(|(i, m)| (i.as_str(), *m))
    }

    /// Takes the event ring out of the object (once).
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, SensorError> {
        let map = self
            .ebpf
            .take_map(EVENTS_MAP)
            .ok_or(SensorError::MissingMap(EVENTS_MAP))?;
        RingBuf::try_from(map).map_err(|e| SensorError::Map(EVENTS_MAP, e))
    }

    /// Takes the stats array out of the object (once).
    pub fn take_stats(&mut self) -> Result<KernelStats, SensorError> {
        let map = self
            .ebpf
            .take_map(STATS_MAP)
            .ok_or(SensorError::MissingMap(STATS_MAP))?;
        let arr: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(map).map_err(|e| SensorError::Map(STATS_MAP, e))?;
        Ok(KernelStats::new(arr, self.flood))
    }

    /// Takes the flood guard's per-source map out of the object (once), for the sweeper.
    pub fn take_sources(&mut self) -> Result<Sources, SensorError> {
        let map = self
            .ebpf
            .take_map(SOURCES_MAP)
            .ok_or(SensorError::MissingMap(SOURCES_MAP))?;
        let map =
            aya::maps::HashMap::try_from(map).map_err(|e| SensorError::Map(SOURCES_MAP, e))?;
        Ok(Sources::new(map))
    }

    /// Takes the flow table out of the object (once), for the flow sweeper.
    pub fn take_flows(&mut self) -> Result<Flows, SensorError> {
        let map = self
            .ebpf
            .take_map(FLOWS_MAP)
            .ok_or(SensorError::MissingMap(FLOWS_MAP))?;
        let map = aya::maps::Array::try_from(map).map_err(|e| SensorError::Map(FLOWS_MAP, e))?;
        Ok(Flows::new(map))
    }

    /// Routes kernel aya-log records into `tracing` (through the `log` facade).
    pub(crate) fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        aya_log::EbpfLogger::init(&mut self.ebpf).ok()
    }

    /// Sets the clock the programs read when loaded with `replay_clock` (ns; replay uses the
    /// capture's Unix time, so the journal's timestamps are the capture's).
    pub fn set_clock(&mut self, ns: u64) -> Result<(), SensorError> {
        if self.clock.is_none() {
            let map = self
                .ebpf
                .take_map(CLOCK_MAP)
                .ok_or(SensorError::MissingMap(CLOCK_MAP))?;
            self.clock = Some(Array::try_from(map).map_err(|e| SensorError::Map(CLOCK_MAP, e))?);
        }
        if let Some(clock) = &mut self.clock {
            clock
                .set(0, ns, 0)
                .map_err(|e| SensorError::Map(CLOCK_MAP, e))?;
        }
        Ok(())
    }

    /// Runs a loaded program once per `repeat` on `frame` with BPF_PROG_TEST_RUN. Returns
    /// the XDP action and the kernel-measured mean duration per run.
    pub fn test_run(
        &mut self,
        program: &'static str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, std::time::Duration), SensorError> {
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat.max(1);
        let r = if program == TC_EGRESS_PROGRAM {
            Self::tc(&mut self.ebpf, TC_EGRESS_PROGRAM)?.test_run(opts)
        } else if program == TC_INGRESS_PROGRAM {
            self.load_ingress(program)?;
            Self::tc(&mut self.ebpf, program)?.test_run(opts)
        } else {
            self.load_ingress(program)?;
            Self::xdp(&mut self.ebpf, program)?.test_run(opts)
        }
        .map_err(|e| SensorError::Program(program, e))?;
        Ok((r.return_value, r.duration))
    }
}

/// Writes the decoy prefilter (`DECOY_FILTER`) for `decoys`. `keep`: OR into what is there
/// (a pinned map still serving the running program), else set it exactly.
fn write_decoy_filter(ebpf: &mut Ebpf, decoys: &[Decoy], keep: bool) -> Result<(), SensorError> {
    let map = ebpf
        .map_mut(DECOY_FILTER_MAP)
        .ok_or(SensorError::MissingMap(DECOY_FILTER_MAP))?;
    let mut map: Array<_, u64> =
        Array::try_from(map).map_err(|e| SensorError::Map(DECOY_FILTER_MAP, e))?;
    let mut words = vec![0u64; DECOY_FILTER_WORDS as usize];
    for d in decoys {
        let a = decoy_key(d.addr).addr;
        let (w, mask) = decnet_common::decoy_filter_slot(u16::from_be_bytes([a[14], a[15]]));
        words[w as usize] |= mask;
    }
    for (i, want) in words.into_iter().enumerate() {
        let i = i as u32;
        let old = map
            .get(&i, 0)
            .map_err(|e| SensorError::Map(DECOY_FILTER_MAP, e))?;
        let new = if keep { old | want } else { want };
        if new != old {
            map.set(i, new, 0)
                .map_err(|e| SensorError::Map(DECOY_FILTER_MAP, e))?;
        }
    }
    Ok(())
}

/// Pins a link just taken from its program at `path`. The returned fd may be closed: the
/// pin keeps the link, and so its program, attached.
fn pin_link<L>(link: L, path: &std::path::Path) -> Result<FdLink, SensorError>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    let err = |e: String| SensorError::Pinning(path.to_owned(), e);
    let fd = FdLink::try_from(link).map_err(|e| err(chain(&e)))?;
    Ok(fd.pin(path).map_err(|e| err(chain(&e)))?.into())
}

/// An error and its sources on one line (aya's pin and link errors keep the errno below).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// The kernel driver behind an interface (`veth`, `e1000e`, ...), by the ethtool ioctl.
pub(crate) fn driver_name(iface: &str) -> Option<String> {
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    /// struct ethtool_drvinfo (linux/ethtool.h).
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    /// struct ifreq with the ifr_data member of its union.
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut DrvInfo,
        _pad: [u8; 16],
    }
    if iface.len() >= 16 {
        return None;
    }
    // SAFETY: all-zero is a valid DrvInfo.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut req = IfReq {
        name: [0; 16],
        data: &mut info,
        _pad: [0; 16],
    };
    req.name[..iface.len()].copy_from_slice(iface.as_bytes());
    // SAFETY: a plain datagram socket, closed below; the ioctl writes only into `info`,
    // which outlives the call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let r = libc::ioctl(fd, libc::SIOCETHTOOL as _, &mut req as *mut IfReq);
        libc::close(fd);
        if r != 0 {
            return None;
        }
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// ifindex of an interface, `None` when it does not exist.
pub(crate) fn nix_if_index(iface: &str) -> Option<u32> {
    let name = std::ffi::CString::new(iface).ok()?;
    // SAFETY: NUL-terminated string; if_nametoindex only reads it.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (idx != 0).then_some(idx)
}
