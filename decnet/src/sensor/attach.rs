//! How the programs are attached: the `--xdp-mode` choice and the modes it ends up in.

use std::fmt;

/// How the egress program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    /// A tcx link (kernel >= 6.6): no qdisc, detached with the link.
    Tcx,
    /// A cls_bpf filter on a clsact qdisc (older kernels).
    Clsact,
}

impl fmt::Display for EgressMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcx => "tcx",
            Self::Clsact => "clsact",
        })
    }
}

/// `--xdp-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeChoice {
    /// Native (driver) XDP, then the TC ingress hook, then generic (SKB) XDP; on a veth
    /// the TC hook, generic XDP, native XDP (cheapest there first).
    #[default]
    Auto,
    Native,
    Skb,
    /// No XDP: the same analysis on the TC ingress hook (a tcx link, kernel >= 6.6). Where
    /// XDP can only run in generic mode (a veth, a driver without XDP) this costs less per
    /// packet: the generic hook re-allocates every skb with under 256 bytes of headroom.
    Tc,
}

/// The mode an attachment ended up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    Native,
    Skb,
    /// The ingress program is on the TC hook (tcx), not XDP.
    Tc,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Skb => "skb",
            Self::Tc => "tc",
        })
    }
}
