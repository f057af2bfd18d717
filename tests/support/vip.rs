//! Floating addresses on one layer-2 segment (tests/system_addresses.rs, benches/vip.rs): the
//! segment with the hosts, a client and a probe on it; the faults; one fault against promd;
//! and how long two hosts held an address at once.

use std::net::IpAddr;
use std::time::Duration;

use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::cluster::Cluster;
use super::haproxy::{Client, Gap};
use super::hosts::{self, Net, Signal};
use super::lan::{self, AddrMonitor, Lan};

/// The floating addresses: documentation prefixes, on the test's own segment only.
pub const VIP4: &str = "192.0.2.10";
pub const VIP6: &str = "2001:db8::10";

/// The segment: every host of `net` with a `lan0` on it (192.0.2.11.., 2001:db8::11..), a
/// client and a probe namespace, each host's MAC, and a monitor of each host's addresses
/// started before anything can add one. Removed on drop.
pub struct Segment {
    pub lan: Lan,
    /// The hosts' network namespaces, in host order.
    pub netns: Vec<String>,
    pub client_ns: String,
    pub probe_ns: String,
    /// Each host's `lan0` MAC, in host order.
    pub macs: Vec<String>,
    pub monitors: Vec<AddrMonitor>,
}

impl Segment {
    pub fn new(net: &Net) -> Segment {
        let mut lan = Lan::new();
        let netns = net.netns_names();
        for (i, ns) in netns.iter().enumerate() {
            lan.attach(
                ns,
                &format!("192.0.2.{}", 11 + i),
                &format!("2001:db8::{}", 11 + i),
            );
        }
        let client_ns = lan.side("cl", "192.0.2.100", "2001:db8::100");
        let probe_ns = lan.side("pr", "192.0.2.200", "2001:db8::200");
        let macs = netns.iter().map(|ns| lan::mac_of(ns)).collect();
        let monitors = netns.iter().map(|ns| AddrMonitor::start(ns)).collect();
        Segment {
            lan,
            netns,
            client_ns,
            probe_ns,
            macs,
            monitors,
        }
    }

    /// The two floating addresses.
    pub fn vips() -> [IpAddr; 2] {
        [VIP4.parse().unwrap(), VIP6.parse().unwrap()]
    }

    /// The host that holds `ip` now by `ip address` (the first, if several do).
    pub fn holder(&self, ip: IpAddr) -> Option<usize> {
        self.holders(ip).first().copied()
    }

    /// Every host that holds `ip` now, by `ip address`.
    pub fn holders(&self, ip: IpAddr) -> Vec<usize> {
        (0..self.netns.len())
            .filter(|&i| {
                lan::in_netns(
                    &self.netns[i],
                    &["ip", "-o", "address", "show", "dev", lan::LAN_IF],
                )
                .split_whitespace()
                .any(|w| w.split('/').next() == Some(&ip.to_string()))
            })
            .collect()
    }

    /// How long, within `from_ns..to_ns`, two or more hosts held `ip` at once, by the
    /// monitors: the sum of the overlaps.
    pub fn held_twice(&self, ip: IpAddr, from_ns: u64, to_ns: u64) -> Duration {
        let mut edges: Vec<(u64, i32)> = Vec::new();
        for m in &self.monitors {
            for (a, b) in m.held(ip) {
                let (a, b) = (a.max(from_ns), b.min(to_ns));
                if a < b {
                    edges.push((a, 1));
                    edges.push((b, -1));
                }
            }
        }
        // Ends before starts at one instant: touching holdings are no overlap.
        edges.sort_by_key(|&(t, d)| (t, d));
        let (mut depth, mut since, mut total) = (0, 0u64, 0u64);
        for (t, d) in edges {
            if depth >= 2 {
                total += t - since;
            }
            depth += d;
            since = t;
        }
        Duration::from_nanos(total)
    }
}

/// A fault of the active host, as the test and the bench inflict it on promd.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    Promote,
    Stop,
    Kill,
    Hang,
    Cut,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::Promote,
        Fault::Stop,
        Fault::Kill,
        Fault::Hang,
        Fault::Cut,
    ];

    /// The faults `PROMD_BENCH_FAULTS` lists (`promote,stop,kill,hang,cut`), or all of them.
    pub fn selected() -> Vec<Fault> {
        let Ok(list) = std::env::var("PROMD_BENCH_FAULTS") else {
            return Fault::ALL.to_vec();
        };
        let keys = ["promote", "stop", "kill", "hang", "cut"];
        list.split(',')
            .map(|k| {
                let i = keys
                    .iter()
                    .position(|x| *x == k.trim())
                    .unwrap_or_else(|| panic!("PROMD_BENCH_FAULTS: {k:?} is none of {keys:?}"));
                Fault::ALL[i]
            })
            .collect()
    }

    /// The fault's name, the same for every agent (benches/vip.rs says what each means for
    /// promd and for keepalived).
    pub fn name(self) -> &'static str {
        match self {
            Fault::Promote => "planned switchover",
            Fault::Stop => "graceful stop",
            Fault::Kill => "kill -9",
            Fault::Hang => "pause (SIGSTOP)",
            Fault::Cut => "silent cut (IP and ARP)",
        }
    }
}

/// One fault on the active host while the clients ask; returns the gap each client saw. Ends
/// with the faulted host back as passive and the addresses on the new active host only.
pub fn run_fault(
    c: &Cluster,
    netns: &[String],
    clients: &[Client],
    vips: &[IpAddr],
    fault: Fault,
) -> Vec<Gap> {
    let active = c.wait_one_active(None, Duration::from_secs(60));
    let name = c.hosts[active].name().to_string();
    let old: Vec<(String, u64)> = clients
        .iter()
        .map(|cl| cl.wait_served_after(hosts::now_ns(), Some(&name), Duration::from_secs(30)))
        .collect();
    let pid = c.promd_pid(active);
    let mut t0 = hosts::now_ns();
    match fault {
        Fault::Promote => t0 = c.promote_next(active),
        Fault::Stop => {
            c.hosts[active].run_ok(&["systemctl", "stop", "promd"]);
        }
        Fault::Kill => c.hosts[active].signal(pid, Signal::SIGKILL),
        Fault::Hang => c.hosts[active].signal(pid, Signal::SIGSTOP),
        Fault::Cut => {
            c.hosts[active].cut();
            lan::cut_arp(&c.hosts[active]);
            t0 = hosts::now_ns();
        }
    }
    let bound = c.lease * 3 + Duration::from_secs(15);
    let gaps: Vec<Gap> = clients
        .iter()
        .zip(&old)
        .map(|(cl, old)| cl.wait_new_run(t0, old, bound))
        .collect();
    eprintln!(
        "{}: {} -> {}: gap {} ms ({VIP4}), {} ms ({VIP6})",
        fault.name(),
        gaps[0].before.0,
        gaps[0].after.0,
        gaps[0].gap.as_millis(),
        gaps[1].gap.as_millis()
    );
    match fault {
        Fault::Stop => {
            c.hosts[active].run_ok(&["systemctl", "start", "promd"]);
        }
        Fault::Hang => {
            // The watchdog has killed it by now, unless it is still waiting to: let it go.
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
        }
        Fault::Cut => {
            hosts::wait_until(c.lease * 3, "the cut host fenced itself", || {
                !c.hosts[active].is_active("web.service")
            });
            lan::heal_arp(&c.hosts[active]);
            c.hosts[active].heal();
        }
        Fault::Promote | Fault::Kill => {}
    }
    c.wait_passive_again(active, pid, !matches!(fault, Fault::Promote | Fault::Cut));
    let now = c.wait_one_active(None, Duration::from_secs(60));
    wait_addresses_on(c, netns, now, vips);
    gaps
}

/// Waits until the addresses are on host `on` and on no other host, as `ip address` says.
pub fn wait_addresses_on(c: &Cluster, netns: &[String], on: usize, vips: &[IpAddr]) {
    let mut seen = String::new();
    hosts::wait_until(
        Duration::from_secs(30),
        &format!("the floating addresses on {} only", c.hosts[on].name()),
        || {
            seen.clear();
            let mut ok = true;
            for (i, ns) in netns.iter().enumerate() {
                let text = lan::in_netns(ns, &["ip", "-o", "address", "show", "dev", lan::LAN_IF]);
                for ip in vips {
                    let has = text
                        .split_whitespace()
                        .any(|w| w.split('/').next() == Some(&ip.to_string()));
                    if has {
                        seen.push_str(&format!("{} has {ip}; ", c.hosts[i].name()));
                    }
                    ok &= has == (i == on);
                }
            }
            ok
        },
    );
}
