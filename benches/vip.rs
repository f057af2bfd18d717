//! Floating addresses side by side (issue 15): promd's `addresses` against Debian's
//! keepalived (VRRP) on the same three nspawn hosts, the same layer-2 segment
//! (`support::vip::Segment`), the same web service and the same client, in one run.
//!
//! First promd (a 3-member etcd, lease 2 s, `192.0.2.10/24` and `2001:db8::10/64` on `lan0`),
//! then promd is stopped on every host and keepalived takes over the same addresses
//! (VRRPv3 with keepalived's defaults: `advert_int 1`, so a backup takes over after 3
//! advertisements plus its skew, about 3 s; preempt, 5 gratuitous ARPs;
//! `PROMD_BENCH_ADVERT_INT=0.5` for a backup as quick as promd's 2 s lease), with the
//! web service running on every host, as keepalived deployments run it. Each fault, on the
//! host that holds the addresses, `PROMD_BENCH_RUNS` times (default 20):
//!
//! | fault | promd | keepalived |
//! |---|---|---|
//! | planned switchover | D-Bus Promote on the next host | that host's priority raised above the others, SIGHUP (reload) |
//! | graceful stop | `systemctl stop promd` | `systemctl stop` of keepalived (it sends priority 0) |
//! | kill -9 | of promd | of every keepalived process |
//! | pause | SIGSTOP promd | SIGSTOP every keepalived process |
//! | silent cut | IP and ARP dropped on the host | the same |
//!
//! Between the two, promd runs again with the service on every host (as under keepalived) and
//! only the addresses (and a marker unit) as its role, for the planned cases: what moving the
//! addresses alone costs, without the service's own stop and start.
//!
//! A faulted keepalived comes back (restarted, resumed, healed) 2 s after another host took
//! the address; promd's recovery is its own (watchdog, fence). Printed per agent and fault:
//! the gap the client saw (median, p99, max), and how long two hosts held the address at
//! once, by `ip monitor address` on every host (the sum over the runs, and in how many runs).
//!
//! `PROMD_BENCH_FAULTS=promote,stop` runs only those faults (of `promote,stop,kill,hang,cut`).
//!
//! `cargo bench --bench vip` (root; keepalived installed: scripts/deps.sh, which leaves its
//! own service off).

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use support::campaign::report::{ms, percentile};
use support::cluster::{Cluster, StoreKind};
use support::etcd::EtcdCluster;
use support::haproxy::{self, Client, Gap, WEB_PORT};
use support::hosts::{self, Net};
use support::lan;
use support::vip::{Fault, Segment, VIP4, VIP6, run_fault, wait_addresses_on};

const LEASE: Duration = Duration::from_secs(2);
/// How long a faulted keepalived stays down (killed, paused, cut) after another host took
/// the address.
const FAULT_HELD: Duration = Duration::from_secs(2);
/// The transient unit keepalived runs in on each host.
const KEEPALIVED_UNIT: &str = "keepalived-bench";
const KEEPALIVED_CONF: &str = "/etc/keepalived/bench.conf";
/// keepalived's `advert_int` unless `PROMD_BENCH_ADVERT_INT` says otherwise: its default.
fn advert_int() -> String {
    std::env::var("PROMD_BENCH_ADVERT_INT")
        .ok()
        .filter(|v| v.parse::<f64>().is_ok_and(|s| s > 0.0))
        .unwrap_or_else(|| "1".to_string())
}
/// How long one host must hold the addresses alone before the next fault.
const SETTLED: Duration = Duration::from_secs(3);

/// One agent's runs of one fault.
struct Row {
    fault: Fault,
    /// The client's gap to the IPv4 address, per run, sorted.
    gaps: Vec<Duration>,
    /// How long two hosts held the IPv4 address at once, per run.
    twice: Vec<Duration>,
}

impl Row {
    fn new(fault: Fault) -> Row {
        Row {
            fault,
            gaps: Vec::new(),
            twice: Vec::new(),
        }
    }

    fn gap_cell(&self) -> String {
        let mut g = self.gaps.clone();
        g.sort();
        format!(
            "{} / {} / {}",
            ms(percentile(&g, 0.5)),
            ms(percentile(&g, 0.99)),
            ms(g.last().copied().unwrap_or_default())
        )
    }

    fn twice_cell(&self) -> String {
        let runs = self.twice.iter().filter(|d| !d.is_zero()).count();
        let total: Duration = self.twice.iter().sum();
        format!("{} ms in {runs} of {} runs", ms(total), self.twice.len())
    }
}

fn main() {
    if support::bench::only_listing() {
        return;
    }
    let runs = support::bench::runs(20);
    let faults = Fault::selected();
    let start = Instant::now();
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let seg = Segment::new(&net);
    let vips = Segment::vips();
    let v4 = vips[0];

    let extra = format!("addresses = [\"{VIP4}/24 dev lan0\", \"{VIP6}/64 dev lan0\"]\n");
    let c = Cluster::boot_with(&net, StoreKind::Etcd(&etcd), LEASE, &extra, |i, spec| {
        haproxy::web_host(spec, net.host_ip(i));
        spec.capability("CAP_NET_ADMIN");
    });
    let active = c.wait_one_active(None, Duration::from_secs(60));
    wait_addresses_on(&c, &seg.netns, active, &vips);
    let clients: Vec<Client> = vips
        .iter()
        .map(|ip| Client::start_in(&seg.client_ns, SocketAddr::new(*ip, WEB_PORT)))
        .collect();

    let promd_rows = measure("promd", &faults, runs, &seg, v4, |fault| {
        run_fault(&c, &seg.netns, &clients, &vips, fault)
    });
    let answers = clients[0].answers().len() + clients[1].answers().len();
    c.check_history();

    // promd again with the service on every host, as keepalived runs it: the role is the
    // addresses (and a marker unit the bench's helpers know the active host by), so a planned
    // hand-over moves the addresses alone, as keepalived's does.
    stop_promd_everywhere(&c, &seg, &vips);
    let mut k = Keepalived::new(&c);
    for (i, h) in c.hosts.iter().enumerate() {
        h.write_file(
            "/etc/systemd/system/web.service",
            hosts::span_unit_running(
                "web.service",
                "web",
                haproxy::SPAN_LOG,
                "/usr/bin/sleep infinity",
            ),
        );
        h.run_ok(&["systemctl", "daemon-reload"]);
        k.start_web(i);
        h.run_ok(&["systemctl", "start", "promd"]);
    }
    let active = c.wait_one_active(None, Duration::from_secs(60));
    wait_addresses_on(&c, &seg.netns, active, &vips);
    let planned: Vec<Fault> = faults
        .iter()
        .copied()
        .filter(|f| matches!(f, Fault::Promote | Fault::Stop))
        .collect();
    let alone_rows = measure(
        "promd, addresses alone",
        &planned,
        runs,
        &seg,
        v4,
        |fault| run_fault(&c, &seg.netns, &clients, &vips, fault),
    );

    // The same hosts without promd: keepalived moves the addresses, the service runs on all.
    stop_promd_everywhere(&c, &seg, &vips);
    for i in 0..c.hosts.len() {
        k.start(i);
    }
    let keepalived_rows = measure("keepalived", &faults, runs, &seg, v4, |fault| {
        k.run_fault(&seg, &clients, &vips, fault)
    });
    for i in 0..c.hosts.len() {
        let _ = c.hosts[i].exec(&["systemctl", "stop", KEEPALIVED_UNIT, "web-vrrp"]);
    }
    drop(clients);

    println!(
        "\n{runs} runs per fault and agent, {:.0} s in all ({answers} requests to the addresses \
         under promd). promd: lease {} s; keepalived: VRRPv3, advert_int {} s, preempt; a \
         faulted keepalived comes back {} s after the take-over.\n",
        start.elapsed().as_secs_f64(),
        LEASE.as_secs(),
        advert_int(),
        FAULT_HELD.as_secs()
    );
    println!(
        "| fault | promd gap ms (median / p99 / max) | keepalived gap ms | promd: {VIP4} on two \
         hosts | keepalived: {VIP4} on two hosts |"
    );
    println!("|---|---|---|---|---|");
    for (p, k) in promd_rows.iter().zip(&keepalived_rows) {
        println!(
            "| {} | {} | {} | {} | {} |",
            p.fault.name(),
            p.gap_cell(),
            k.gap_cell(),
            p.twice_cell(),
            k.twice_cell()
        );
    }
    println!(
        "\nThe addresses alone (promd, the service on every host as under keepalived):\n\n\
         | fault | promd gap ms (median / p99 / max) | keepalived gap ms | promd: {VIP4} on two \
         hosts |\n|---|---|---|---|"
    );
    for p in &alone_rows {
        let Some(k) = keepalived_rows.iter().find(|k| k.fault == p.fault) else {
            continue;
        };
        println!(
            "| {} | {} | {} | {} |",
            p.fault.name(),
            p.gap_cell(),
            k.gap_cell(),
            p.twice_cell()
        );
    }
    let promd_twice: Duration = promd_rows
        .iter()
        .chain(&alone_rows)
        .flat_map(|r| &r.twice)
        .sum();
    assert!(
        promd_twice.is_zero(),
        "promd put {VIP4} on two hosts at once for {} ms",
        ms(promd_twice)
    );
}

/// `runs` runs of each of `faults` by `run` (the gaps each client saw), with the time `v4`
/// was on two hosts meanwhile; each run journalled on stderr under `agent`.
fn measure(
    agent: &str,
    faults: &[Fault],
    runs: usize,
    seg: &Segment,
    v4: IpAddr,
    mut run: impl FnMut(Fault) -> Vec<Gap>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for &fault in faults {
        let mut row = Row::new(fault);
        for n in 0..runs {
            let t0 = hosts::now_ns();
            let gaps = run(fault);
            let twice = seg.held_twice(v4, t0, hosts::now_ns());
            eprintln!("{agent} {} #{n}: {}", fault.name(), describe(&gaps, twice));
            row.gaps.push(gaps[0].gap);
            row.twice.push(twice);
        }
        rows.push(row);
    }
    rows
}

/// `systemctl stop promd` on every host, and wait until no host holds the addresses.
fn stop_promd_everywhere(c: &Cluster, seg: &Segment, vips: &[IpAddr]) {
    for h in &c.hosts {
        h.run_ok(&["systemctl", "stop", "promd"]);
    }
    hosts::wait_until(
        Duration::from_secs(60),
        "promd stopped everywhere, its addresses gone",
        || vips.iter().all(|ip| seg.holders(*ip).is_empty()),
    );
}

fn describe(gaps: &[Gap], twice: Duration) -> String {
    format!(
        "{} -> {}: gap {} ms ({VIP4}), {} ms ({VIP6}); on two hosts {} ms",
        gaps[0].before.0,
        gaps[0].after.0,
        ms(gaps[0].gap),
        ms(gaps[1].gap),
        ms(twice)
    )
}

/// keepalived on the cluster's hosts, each in a transient unit ([`KEEPALIVED_UNIT`]) with a
/// configuration of the bench's own, and the web service under a unit of its own
/// (`web-vrrp`, `PROMD_TERM=0`: the service insists on one).
struct Keepalived<'a> {
    c: &'a Cluster,
    /// Each host's VRRP priority now: n1 starts highest.
    priority: Vec<u32>,
}

impl<'a> Keepalived<'a> {
    fn new(c: &'a Cluster) -> Keepalived<'a> {
        let priority = (0..c.hosts.len()).map(|i| 100 - i as u32).collect();
        Keepalived { c, priority }
    }

    /// `keepalived.conf` of host `i`: one VRRP instance on `lan0` for the IPv4 address, the
    /// IPv6 address moved with it (VRRP cannot carry both families in one instance).
    fn config(&self, i: usize) -> String {
        format!(
            "global_defs {{\n    router_id {name}\n    vrrp_version 3\n}}\n\
             vrrp_instance web {{\n    state BACKUP\n    interface {lan}\n    \
             virtual_router_id 51\n    priority {prio}\n    advert_int {advert}\n    \
             virtual_ipaddress {{\n        {VIP4}/24 dev {lan}\n    }}\n    \
             virtual_ipaddress_excluded {{\n        {VIP6}/64 dev {lan}\n    }}\n}}\n",
            name = self.c.hosts[i].name(),
            lan = lan::LAN_IF,
            prio = self.priority[i],
            advert = advert_int(),
        )
    }

    fn start_web(&self, i: usize) {
        let h = &self.c.hosts[i];
        h.run_ok(&[
            "systemd-run",
            "--unit=web-vrrp",
            "--collect",
            "--property=Type=notify",
            "--property=NotifyAccess=main",
            "--setenv=PROMD_TERM=0",
            "/usr/bin/python3",
            "/etc/web/server.py",
            h.name(),
            &WEB_PORT.to_string(),
        ]);
    }

    fn start(&self, i: usize) {
        let h = &self.c.hosts[i];
        h.write_file(KEEPALIVED_CONF, self.config(i));
        h.run_ok(&[
            "systemd-run",
            &format!("--unit={KEEPALIVED_UNIT}"),
            "--collect",
            "/usr/sbin/keepalived",
            "--dont-fork",
            "--log-console",
            "--vrrp",
            &format!("--use-file={KEEPALIVED_CONF}"),
        ]);
    }

    fn signal(&self, i: usize, signal: &str, whom: &str) {
        self.c.hosts[i].run_ok(&[
            "systemctl",
            "kill",
            &format!("--signal={signal}"),
            &format!("--kill-whom={whom}"),
            KEEPALIVED_UNIT,
        ]);
    }

    /// The host that alone holds both addresses, unchanged for [`SETTLED`] (with preempt, a
    /// host that comes back takes the addresses again a moment later), once the clients are
    /// answered by it.
    fn wait_settled(&self, seg: &Segment, vips: &[IpAddr], clients: &[Client]) -> usize {
        let mut last: Option<(usize, Instant)> = None;
        hosts::wait_until(
            Duration::from_secs(60),
            "one host holds the addresses, unchanged for a while",
            || {
                let h: Vec<Vec<usize>> = vips.iter().map(|ip| seg.holders(*ip)).collect();
                let one = (h[0].len() == 1 && h.iter().all(|x| *x == h[0])).then(|| h[0][0]);
                last = match (one, last) {
                    (Some(i), Some((j, since))) if i == j => Some((j, since)),
                    (Some(i), _) => Some((i, Instant::now())),
                    (None, _) => None,
                };
                last.is_some_and(|(_, since)| since.elapsed() >= SETTLED)
            },
        );
        let i = last.map_or(0, |(i, _)| i);
        let name = self.c.hosts[i].name().to_string();
        for cl in clients {
            cl.wait_served_after(hosts::now_ns(), Some(&name), Duration::from_secs(30));
        }
        i
    }

    /// One fault on the host that holds the addresses; the gaps the clients saw. Ends with
    /// every keepalived running and one host holding the addresses.
    fn run_fault(
        &mut self,
        seg: &Segment,
        clients: &[Client],
        vips: &[IpAddr],
        fault: Fault,
    ) -> Vec<Gap> {
        let c = self.c;
        let active = self.wait_settled(seg, vips, clients);
        let name = c.hosts[active].name().to_string();
        let old: Vec<(String, u64)> = clients
            .iter()
            .map(|cl| cl.wait_served_after(hosts::now_ns(), Some(&name), Duration::from_secs(30)))
            .collect();
        let h = &c.hosts[active];
        let t0 = hosts::now_ns();
        match fault {
            Fault::Promote => {
                let target = (active + 1) % c.hosts.len();
                self.priority[target] = self.priority.iter().max().copied().unwrap_or(100) + 1;
                c.hosts[target].write_file(KEEPALIVED_CONF, self.config(target));
                self.signal(target, "SIGHUP", "main");
            }
            Fault::Stop => {
                h.run_ok(&["systemctl", "stop", KEEPALIVED_UNIT]);
            }
            Fault::Kill => self.signal(active, "SIGKILL", "all"),
            Fault::Hang => self.signal(active, "SIGSTOP", "all"),
            Fault::Cut => {
                h.cut();
                lan::cut_arp(h);
            }
        }
        let bound = Duration::from_secs(30);
        let gaps: Vec<Gap> = clients
            .iter()
            .zip(&old)
            .map(|(cl, old)| cl.wait_new_run(t0, old, bound))
            .collect();
        match fault {
            Fault::Promote => {}
            Fault::Stop => self.start(active),
            Fault::Kill => {
                std::thread::sleep(FAULT_HELD);
                // The unit is gone with its processes (--collect); the address may not be.
                self.start(active);
            }
            Fault::Hang => {
                std::thread::sleep(FAULT_HELD);
                self.signal(active, "SIGCONT", "all");
            }
            Fault::Cut => {
                std::thread::sleep(FAULT_HELD);
                lan::heal_arp(h);
                h.heal();
            }
        }
        self.wait_settled(seg, vips, clients);
        gaps
    }
}
