//! A chain of routers between an attacker and a [`Lab`]'s decoy: the attacker sits behind
//! `hops` namespaces that forward IPv4, as a real scanner sits 10-25 routed hops away. Every
//! router decrements the TTL, which is what tool signatures and hop distances must survive.
//!
//! Layout, decoy first: the decoy (root namespace, the lab's host end) - the lab's
//! namespace (router 1) - router 2 - ... - router `hops` - the attacker. Links past the lab
//! are /30s from `10.240.<subnet>.0/24`; the root namespace gets one route to that /24
//! through the lab's namespace, removed on drop with every namespace.

use std::process::{Command, Output, Stdio};

use crate::{Lab, ip};

pub struct Chain {
    /// Routers 2..=hops, then the attacker.
    namespaces: Vec<String>,
    pub attacker: String,
    /// The attacker's interface, and the MAC of the router it sends through (raw-packet
    /// scanners, masscan and zmap, address frames to it themselves).
    pub attacker_if: String,
    pub gateway_mac: String,
    route: String,
    lab_gw: String,
}

impl Chain {
    /// `hops` routers (the lab's namespace is the first) between the decoy and a new
    /// attacker namespace; `subnet` (1..=250) keeps parallel tests apart.
    pub fn behind(lab: &Lab, hops: u8, subnet: u8) -> Chain {
        assert!((1..=60).contains(&hops), "1-60 hops");
        let prefix = format!("10.240.{subnet}");
        let id = &lab.ns;
        // nodes[0] is the lab's namespace (router 1); the last is the attacker.
        let mut nodes = vec![lab.ns.clone()];
        for i in 2..=hops {
            nodes.push(format!("{id}r{i}"));
        }
        nodes.push(format!("{id}a"));
        for n in &nodes[1..] {
            ip(&["netns", "add", n]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        // Link k (1-based) joins nodes[k-1] (.4(k-1)+1) and nodes[k] (.4(k-1)+2).
        let near = |k: usize| format!("{prefix}.{}", 4 * (k - 1) + 1);
        let far = |k: usize| format!("{prefix}.{}", 4 * (k - 1) + 2);
        for k in 1..nodes.len() {
            let (a, b) = (&nodes[k - 1], &nodes[k]);
            let (ia, ib) = (format!("dc{subnet}l{k}a"), format!("dc{subnet}l{k}b"));
            ip(&[
                "link", "add", &ia, "netns", a, "type", "veth", "peer", "name", &ib, "netns", b,
            ]);
            ip(&[
                "-n",
                a,
                "addr",
                "add",
                &format!("{}/30", near(k)),
                "dev",
                &ia,
            ]);
            ip(&[
                "-n",
                b,
                "addr",
                "add",
                &format!("{}/30", far(k)),
                "dev",
                &ib,
            ]);
            ip(&["-n", a, "link", "set", &ia, "up"]);
            ip(&["-n", b, "link", "set", &ib, "up"]);
        }
        let routers = nodes.len() - 1;
        let last_link = nodes.len() - 1;
        let gateway_if = format!("dc{subnet}l{last_link}a");
        let show = Command::new("ip")
            .args([
                "-n",
                &nodes[last_link - 1],
                "-br",
                "link",
                "show",
                &gateway_if,
            ])
            .output()
            .expect("ip link show");
        let gateway_mac = String::from_utf8_lossy(&show.stdout)
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_owned();
        for (i, n) in nodes.iter().enumerate().take(routers) {
            sysctl(n, "net.ipv4.ip_forward=1");
            // Outward (toward the attacker's side): the next node on link i+1.
            ip(&[
                "-n",
                n,
                "route",
                "add",
                &format!("{prefix}.0/24"),
                "via",
                &far(i + 1),
            ]);
            // Inward (toward the decoy): the previous node; router 1 reaches it directly.
            if i > 0 {
                ip(&["-n", n, "route", "add", "default", "via", &near(i)]);
            }
        }
        let attacker_ns = nodes.last().cloned().unwrap_or_default();
        ip(&[
            "-n",
            &attacker_ns,
            "route",
            "add",
            "default",
            "via",
            &near(routers),
        ]);
        // The decoy's answers go back through the lab's namespace.
        let route = format!("{prefix}.0/24");
        ip(&["route", "add", &route, "via", &lab.attacker]);
        Chain {
            attacker: far(routers),
            attacker_if: format!("dc{subnet}l{last_link}b"),
            gateway_mac,
            namespaces: nodes[1..].to_vec(),
            route,
            lab_gw: lab.attacker.clone(),
        }
    }

    /// The attacker's namespace, for processes that outlive one command (a listener).
    pub fn attacker_ns(&self) -> &str {
        self.namespaces.last().expect("attacker namespace")
    }

    /// Runs a command in the attacker's namespace, bounded by `timeout_s`; it must succeed.
    pub fn exec(&self, args: &[&str], timeout_s: u32) -> Output {
        let ns = self.namespaces.last().expect("attacker namespace");
        let out = Command::new("timeout")
            .arg(timeout_s.to_string())
            .args(["ip", "netns", "exec", ns])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("starting {args:?}: {e}"));
        assert!(
            out.status.success(),
            "{args:?} behind the chain failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

fn sysctl(ns: &str, setting: &str) {
    let ok = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-qw", setting])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "sysctl {setting} in {ns}");
}

impl Drop for Chain {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["route", "del", &self.route, "via", &self.lab_gw])
            .stderr(Stdio::null())
            .status();
        for n in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
    }
}
