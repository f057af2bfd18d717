//! One layer-2 segment for the floating-address tests (tests/system_addresses.rs): a Linux
//! bridge in a network namespace of its own, a `lan0` veth from it into each host's namespace,
//! and namespaces of the test's own on it (a client, a probe). Everything on it is the test's:
//! 192.0.2.0/24 and 2001:db8::/64 (documentation prefixes), no route off the segment.
//!
//! Also what watches the segment: which host holds an address when (`ip monitor address` in
//! each host's namespace) and who answers for it (`arping`, `ndisc6` from the probe).

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::hosts::{self, Host, run, run_must};

/// The interface every namespace on the segment has.
pub const LAN_IF: &str = "lan0";

static LAN_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The segment: its namespaces, removed (with every veth in them) on drop.
pub struct Lan {
    tag: String,
    /// The bridge's namespace, then every other one made here.
    netns: Vec<String>,
    links: usize,
}

impl Lan {
    /// A bridge `br0` in a namespace of its own.
    pub fn new() -> Lan {
        let tag = format!(
            "pl{:x}{:x}",
            std::process::id(),
            LAN_COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let lan = Lan {
            netns: vec![format!("{tag}-br")],
            tag,
            links: 0,
        };
        run_must("ip", &["netns", "add", &lan.netns[0]]);
        lan.in_bridge(&["ip", "link", "add", "br0", "type", "bridge"]);
        // No STP delay: a port forwards as soon as it is up.
        lan.in_bridge(&[
            "ip",
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
        ]);
        lan.in_bridge(&["ip", "link", "set", "br0", "up"]);
        lan
    }

    fn in_bridge(&self, args: &[&str]) -> String {
        in_netns(&self.netns[0], args)
    }

    /// A `lan0` in namespace `netns` (a host's, or one this segment made), on the bridge,
    /// with `v4` (/24) and `v6` (/64, no duplicate address detection).
    pub fn attach(&mut self, netns: &str, v4: &str, v6: &str) {
        let outer = format!("{}-{}", self.tag, self.links);
        assert!(outer.len() <= 15, "interface name {outer} too long");
        self.links += 1;
        run_must(
            "ip",
            &[
                "link", "add", &outer, "type", "veth", "peer", "name", LAN_IF, "netns", netns,
            ],
        );
        run_must("ip", &["link", "set", &outer, "netns", &self.netns[0]]);
        self.in_bridge(&["ip", "link", "set", &outer, "master", "br0", "up"]);
        in_netns(
            netns,
            &["ip", "address", "add", &format!("{v4}/24"), "dev", LAN_IF],
        );
        in_netns(
            netns,
            &[
                "ip",
                "address",
                "add",
                &format!("{v6}/64"),
                "dev",
                LAN_IF,
                "nodad",
            ],
        );
        in_netns(netns, &["ip", "link", "set", LAN_IF, "up"]);
        in_netns(netns, &["ip", "link", "set", "lo", "up"]);
    }

    /// Take the bridge's side of the `port`-th link attached (0: the first) down or up: its
    /// `lan0` loses or regains its carrier, as when a cable is pulled or put back. The
    /// namespace's own side stays up, with every address on it.
    pub fn set_carrier(&self, port: usize, up: bool) {
        let outer = format!("{}-{port}", self.tag);
        let state = if up { "up" } else { "down" };
        self.in_bridge(&["ip", "link", "set", &outer, state]);
    }

    /// A namespace of this segment's own (`name`: a short word), attached with `v4`, `v6`.
    /// Returns its name.
    pub fn side(&mut self, name: &str, v4: &str, v6: &str) -> String {
        let netns = format!("{}-{name}", self.tag);
        run_must("ip", &["netns", "add", &netns]);
        self.netns.push(netns.clone());
        self.attach(&netns, v4, v6);
        netns
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace destroys its veths, and with each its peer elsewhere.
        for ns in self.netns.iter().rev() {
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}

/// Runs `args` in namespace `netns` (`nsenter --net`, see `hosts::HostNet::netns_exec`);
/// panics unless it succeeds. Returns stdout.
pub fn in_netns(netns: &str, args: &[&str]) -> String {
    let net = format!("--net=/run/netns/{netns}");
    let mut full = vec![net.as_str()];
    full.extend_from_slice(args);
    run_must("nsenter", &full)
}

/// Runs `f` on a new thread that has joined namespace `netns` (only that thread: `setns` is
/// per thread), so that its sockets are the namespace's.
pub fn spawn_in_netns<T: Send + 'static>(
    netns: &str,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = format!("/run/netns/{netns}");
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .expect("thread")
}

/// The whole segment's silent cut for `host`, on top of [`Host::cut`] (which drops IPv4 and
/// IPv6, so also neighbour discovery): ARP too, in both directions. Undone by [`heal_arp`].
pub fn cut_arp(host: &Host) {
    let rules = "table arp promd-cut-arp {\n\
                 \tchain i { type filter hook input priority 0; policy drop; }\n\
                 \tchain o { type filter hook output priority 0; policy drop; }\n\
                 }\n";
    let mut child = Command::new("nsenter")
        .args([
            &format!("--net=/run/netns/{}", host.netns()),
            "nft",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(rules.as_bytes())
        .expect("nft rules");
    assert!(child.wait().expect("nft").success(), "nft arp cut");
}

/// Ends a [`cut_arp`].
pub fn heal_arp(host: &Host) {
    let _ = run(
        "nsenter",
        &[
            &format!("--net=/run/netns/{}", host.netns()),
            "nft",
            "delete",
            "table",
            "arp",
            "promd-cut-arp",
        ],
    );
}

/// A host's `lan0` address event: when this test saw it (realtime ns), whether it was added,
/// the address.
#[derive(Clone, Debug)]
pub struct AddrEvent {
    pub at_ns: u64,
    pub added: bool,
    pub ip: IpAddr,
}

/// `ip monitor address` in one host's namespace, each line stamped as it is read. Stopped
/// (the process killed by pid, its thread joined) on drop.
pub struct AddrMonitor {
    events: Arc<Mutex<Vec<AddrEvent>>>,
    child: Child,
    thread: Option<JoinHandle<()>>,
}

impl AddrMonitor {
    /// Starts watching `lan0` in namespace `netns` (a host's, before or after it boots).
    pub fn start(netns: &str) -> AddrMonitor {
        let mut cmd = Command::new("nsenter");
        cmd.args([
            &format!("--net=/run/netns/{netns}"),
            "ip",
            "-o",
            "monitor",
            "address",
            "dev",
            LAN_IF,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
        let mut child = hosts::spawn_with_parent_death_signal(cmd).expect("ip monitor");
        let stdout = child.stdout.take().expect("stdout");
        let events = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let events = events.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let at_ns = hosts::now_ns();
                    if let Some((added, ip)) = parse_monitor_line(&line) {
                        events.lock().unwrap().push(AddrEvent { at_ns, added, ip });
                    }
                }
            })
        };
        AddrMonitor {
            events,
            child,
            thread: Some(thread),
        }
    }

    pub fn events(&self) -> Vec<AddrEvent> {
        self.events.lock().unwrap().clone()
    }

    /// When `ip` was on this host, as `[added, deleted)` intervals (realtime ns; an open
    /// one ends at `u64::MAX`).
    pub fn held(&self, ip: IpAddr) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut since = None;
        for e in self.events().into_iter().filter(|e| e.ip == ip) {
            match (e.added, since) {
                (true, None) => since = Some(e.at_ns),
                (false, Some(s)) => {
                    out.push((s, e.at_ns));
                    since = None;
                }
                _ => {} // `replace` of an address already there, or a repeated delete
            }
        }
        if let Some(s) = since {
            out.push((s, u64::MAX));
        }
        out
    }
}

impl Drop for AddrMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `ip -o monitor address` lines: `3: lan0    inet 192.0.2.10/24 scope global lan0 ...`, and
/// `Deleted 3: lan0 ...` when removed. `(added, address)`.
pub fn parse_monitor_line(line: &str) -> Option<(bool, IpAddr)> {
    let (added, rest) = match line.strip_prefix("Deleted ") {
        Some(rest) => (false, rest),
        None => (true, line),
    };
    let mut words = rest.split_whitespace();
    words.find(|w| *w == "inet" || *w == "inet6")?;
    let cidr = words.next()?;
    let ip = cidr.split('/').next()?.parse().ok()?;
    Some((added, ip))
}

/// One probe: when it was sent and when its wait ended (realtime ns), and the MACs that
/// answered (upper case).
pub type Probe = (u64, u64, Vec<String>);

/// Who answers for an address on the segment, asked from the probe's namespace again and
/// again until dropped: every probe's set of link-layer addresses that answered.
pub struct OwnerProbe {
    /// `(when the probe began, when it ended, the MACs that answered it)`, realtime ns.
    probes: Arc<Mutex<Vec<Probe>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl OwnerProbe {
    /// Probes `ip` from namespace `netns`: IPv4 with `arping -b` (one broadcast request, every
    /// answer within 1 s: `arping -D` stops at the first answer, so it could not see a
    /// second owner), IPv6 with `ndisc6 -m` (one solicitation, every advertisement within
    /// 500 ms).
    pub fn start(netns: &str, ip: IpAddr) -> OwnerProbe {
        let probes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s, net) = (
            probes.clone(),
            stop.clone(),
            format!("--net=/run/netns/{netns}"),
        );
        let target = ip.to_string();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let args: Vec<&str> = if ip.is_ipv4() {
                    vec![
                        &net, "arping", "-b", "-I", LAN_IF, "-c", "3", "-w", "1", &target,
                    ]
                } else {
                    vec![
                        &net, "ndisc6", "-m", "-n", "-r", "1", "-w", "500", &target, LAN_IF,
                    ]
                };
                let began = hosts::now_ns();
                let out = run("nsenter", &args);
                let text = String::from_utf8_lossy(&out.stdout);
                let mut macs: Vec<String> = text.lines().filter_map(answer_mac).collect();
                macs.sort();
                macs.dedup();
                p.lock().unwrap().push((began, hosts::now_ns(), macs));
                if out.status.code().is_none() {
                    break; // killed
                }
                std::thread::sleep(Duration::from_millis(50)); // pacing, not a wait
            }
        });
        OwnerProbe {
            probes,
            stop,
            thread: Some(thread),
        }
    }

    pub fn probes(&self) -> Vec<Probe> {
        self.probes.lock().unwrap().clone()
    }

    /// Waits until a probe that began after `after_ns` (realtime ns) heard `mac` alone.
    pub fn wait_heard(&self, after_ns: u64, mac: &str, timeout: Duration) {
        hosts::wait_until(timeout, &format!("the probe hears {mac} alone"), || {
            self.probes()
                .iter()
                .any(|(began, _, macs)| *began > after_ns && macs.len() == 1 && macs[0] == mac)
        });
    }
}

impl Drop for OwnerProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The MAC in an answer line of `arping` (`Unicast reply from 192.0.2.10 [AA:..]  0.5ms`) or
/// `ndisc6` (`Target link-layer address: AA:..`), upper case.
pub fn answer_mac(line: &str) -> Option<String> {
    let mac = if let Some(rest) = line.strip_prefix("Target link-layer address: ") {
        rest.trim()
    } else if line.contains("reply from") {
        line.split_once('[')?.1.split_once(']')?.0
    } else {
        return None;
    };
    Some(mac.to_ascii_uppercase())
}

/// The MAC of `lan0` in namespace `netns`, upper case.
pub fn mac_of(netns: &str) -> String {
    // `ip`, not /sys/class/net: nsenter --net keeps the machine's /sys, whose net folder is
    // the machine's namespace's.
    let text = in_netns(netns, &["ip", "-o", "link", "show", "dev", LAN_IF]);
    let mut words = text.split_whitespace();
    words.find(|w| *w == "link/ether");
    words
        .next()
        .unwrap_or_else(|| panic!("no MAC of {LAN_IF} in {netns}: {text}"))
        .to_ascii_uppercase()
}
