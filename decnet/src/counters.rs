//! Counter sets declared once.
//!
//! A stage's counters are atomics it bumps, a snapshot the API and the handover serialise,
//! a restore that continues a pinned sensor's totals, and the Prometheus name and help of
//! each. [`counters!`](crate::counters!) generates all of them from one list, so `/metrics`
//! is a loop over [`Metric`]s and no counter can be missing from one of the five.

use std::fmt::{Display, Write as _};

/// The Prometheus type of a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
}

/// One metric of a snapshot `S`: its name (after `decnet_`), help and value.
pub(crate) struct Metric<S> {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub value: fn(&S) -> f64,
}

impl<S> Metric<S> {
    /// Writes every metric of `of` in the Prometheus text format.
    pub(crate) fn write_all(metrics: &[Metric<S>], of: &S, out: &mut String) {
        for m in metrics {
            write_metric(out, m.name, m.help, m.kind, (m.value)(of));
        }
    }
}

/// One metric in the Prometheus text format: `# HELP`, `# TYPE` and the sample.
pub(crate) fn write_metric(out: &mut String, name: &str, help: &str, kind: Kind, v: impl Display) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    // Writing into a String cannot fail.
    let _ = writeln!(
        out,
        "# HELP decnet_{name} {help}\n# TYPE decnet_{name} {kind}\ndecnet_{name} {v}"
    );
}

/// Declares a counter set: `$atomic` (the `AtomicU64`s a stage bumps), `$snap` (a
/// serialisable copy), `snapshot()`, `restore()` and `$snap::METRICS`.
///
/// - `counters`: totals; restored across a pinned restart; a Prometheus counter when named.
/// - `gauges`: levels; start afresh; a Prometheus gauge when named.
/// - `state`: bookkeeping in the atomics only (neither snapshot nor metric).
/// - `computed`: snapshot fields worked out from the atomics by a function, with a gauge.
#[macro_export]
macro_rules! counters {
    (
        $(#[doc = $sdoc:literal])*
        $vis:vis struct $atomic:ident => $snap:ident {
            counters {$(
                $(#[doc = $cdoc:literal])*
                $c:ident $(($cm:literal, $ch:literal))?,
            )*}
            gauges {$(
                $(#[doc = $gdoc:literal])*
                $g:ident $(($gm:literal, $gh:literal))?,
            )*}
            state {$(
                $(#[doc = $sd:literal])*
                $s:ident,
            )*}
            computed {$(
                $(#[doc = $xdoc:literal])*
                $x:ident: $xf:path, $xm:literal, $xh:literal,
            )*}
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Default)]
        $vis struct $atomic {
            $($(#[doc = $cdoc])* pub $c: ::std::sync::atomic::AtomicU64,)*
            $($(#[doc = $gdoc])* pub $g: ::std::sync::atomic::AtomicU64,)*
            $($(#[doc = $sd])* pub $s: ::std::sync::atomic::AtomicU64,)*
        }

        #[doc = concat!("A point-in-time copy of [`", stringify!($atomic), "`], for the API, logs and the handover.")]
        #[derive(Clone, Copy, Debug, Default, ::serde::Serialize, ::serde::Deserialize, PartialEq)]
        #[serde(default)]
        $vis struct $snap {
            $($(#[doc = $cdoc])* pub $c: u64,)*
            $($(#[doc = $gdoc])* pub $g: u64,)*
            $($(#[doc = $xdoc])* pub $x: f64,)*
        }

        impl $atomic {
            pub fn snapshot(&self) -> $snap {
                use ::std::sync::atomic::Ordering::Relaxed;
                $snap {
                    $($c: self.$c.load(Relaxed),)*
                    $($g: self.$g.load(Relaxed),)*
                    $($x: $xf(self),)*
                }
            }

            /// Counters that continue a pinned sensor's totals after a clean restart
            /// (`handover`); gauges and bookkeeping start afresh.
            #[allow(
                clippy::needless_update,
                reason = "a set may have no gauges or bookkeeping to leave at their default"
            )]
            pub(crate) fn restore(s: &$snap) -> Self {
                Self {
                    $($c: s.$c.into(),)*
                    ..Self::default()
                }
            }

            pub fn add(counter: &::std::sync::atomic::AtomicU64, n: u64) {
                counter.fetch_add(n, ::std::sync::atomic::Ordering::Relaxed);
            }
        }

        impl $snap {
            /// The Prometheus metrics of this set, in declaration order.
            pub(crate) const METRICS: &'static [$crate::counters::Metric<$snap>] = &[
                $($($crate::counters::Metric {
                    name: $cm,
                    help: $ch,
                    kind: $crate::counters::Kind::Counter,
                    value: |s: &$snap| s.$c as f64,
                },)?)*
                $($($crate::counters::Metric {
                    name: $gm,
                    help: $gh,
                    kind: $crate::counters::Kind::Gauge,
                    value: |s: &$snap| s.$g as f64,
                },)?)*
                $($crate::counters::Metric {
                    name: $xm,
                    help: $xh,
                    kind: $crate::counters::Kind::Gauge,
                    value: |s: &$snap| s.$x,
                },)*
            ];

            /// Every metric of this snapshot in the Prometheus text format.
            pub(crate) fn write_prometheus(&self, out: &mut String) {
                $crate::counters::Metric::write_all(Self::METRICS, self, out);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #![allow(
        unreachable_pub,
        reason = "the macro declares public sets; this one is a test's"
    )]

    crate::counters! {
        /// Test set.
        pub struct Demo => DemoSnapshot {
            counters {
                /// Totals.
                total("demo_total", "All of them."),
                unnamed,
            }
            gauges {
                level("demo_level", "How high."),
            }
            state {
                since,
            }
            computed {
                half: half_of, "demo_half", "Half the total.",
            }
        }
    }

    fn half_of(d: &Demo) -> f64 {
        d.total.load(std::sync::atomic::Ordering::Relaxed) as f64 / 2.0
    }

    #[test]
    fn counters_restore_gauges_restart_and_metrics_follow_declaration() {
        let d = Demo::default();
        Demo::add(&d.total, 41);
        Demo::add(&d.total, 1);
        Demo::add(&d.unnamed, 3);
        Demo::add(&d.level, 7);
        Demo::add(&d.since, 9);
        let s = d.snapshot();
        assert_eq!((s.total, s.unnamed, s.level, s.half), (42, 3, 7, 21.0));
        let r = Demo::restore(&s).snapshot();
        assert_eq!((r.total, r.unnamed, r.level), (42, 3, 0));
        let mut out = String::new();
        s.write_prometheus(&mut out);
        assert_eq!(
            out,
            "# HELP decnet_demo_total All of them.\n# TYPE decnet_demo_total counter\ndecnet_demo_total 42\n\
             # HELP decnet_demo_level How high.\n# TYPE decnet_demo_level gauge\ndecnet_demo_level 7\n\
             # HELP decnet_demo_half Half the total.\n# TYPE decnet_demo_half gauge\ndecnet_demo_half 21\n"
        );
    }
}
