//! Hand-over and failover times, promd's footprint and its load on the store, on three real
//! systemd hosts (nspawn) with a 3-member etcd. Prints markdown tables.
//!
//! `cargo bench --bench failover` (root). `PROMD_BENCH_RUNS` (default 10) sets the runs per
//! figure; `PROMD_BENCH_LEASES` (default "2,10", seconds) the leases; a 1 s lease runs etcd
//! with `--election-timeout=500` (README, "Short leases").
//!
//! Per lease, on a fresh cluster:
//! - planned hand-over: D-Bus `Promote` on a passive host (from the call to the new host's
//!   `web.service` start, from the span log; and until the call returned), and
//!   `systemctl stop promd` on the active host;
//! - unplanned failover: kill -9, SIGSTOP and a silent network cut of the active host's promd,
//!   from the fault to the new host's `web.service` start;
//! - promd's RSS and CPU while idle, and while the store is down (every etcd member killed);
//! - store requests per second per host per group while idle: etcd's own gRPC counters
//!   (`/metrics` on each member's client port), summed over members and methods.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::campaign::report::{ms, percentile};
use support::cluster::{Cluster, StoreKind, elapsed};
use support::etcd::{EtcdCluster, Options};
use support::hosts::{self, Net, Signal};

const SCENARIOS: [&str; 6] = [
    "D-Bus Promote (call → new web start)",
    "D-Bus Promote (call → return)",
    "systemctl stop promd (hand-over)",
    "kill -9 promd",
    "SIGSTOP promd",
    "silent cut of the active host",
];

/// Samples per (scenario, lease).
type Samples = BTreeMap<(&'static str, u64), Vec<Duration>>;

/// Waits until the host that was active is passive again with promd running (a new pid
/// unless `old_pid` is `None`).
fn wait_back(c: &Cluster, i: usize, old_pid: Option<u32>) {
    hosts::wait_until(
        Duration::from_secs(60),
        "the old active host is passive again",
        || {
            c.hosts[i]
                .pid_on_machine("promd")
                .is_some_and(|p| Some(p) != old_pid)
                && c.hosts[i].is_active("web-passive.target")
                && !c.hosts[i].is_active("web.service")
        },
    );
}

/// D-Bus Promote on a passive host: (call → the new host's web start, call → return).
fn promote(c: &Cluster) -> (Duration, Duration) {
    let active = c.wait_one_active(None, Duration::from_secs(60));
    let target = (active + 1) % c.hosts.len();
    let t0 = c.promote_next(active);
    let returned = elapsed(t0, hosts::now_ns());
    let started = elapsed(t0, c.start_after(target, t0));
    wait_back(c, active, None);
    (started, returned)
}

/// One fault on the active host; returns the time until another host's service started.
fn fault(c: &Cluster, kind: &str) -> Duration {
    let active = c.wait_one_active(None, Duration::from_secs(60));
    let pid = c.promd_pid(active);
    let mut t0 = hosts::now_ns();
    match kind {
        "systemctl stop promd (hand-over)" => {
            c.hosts[active].run_ok(&["systemctl", "stop", "promd"]);
        }
        "kill -9 promd" => c.hosts[active].signal(pid, Signal::SIGKILL),
        "SIGSTOP promd" => c.hosts[active].signal(pid, Signal::SIGSTOP),
        "silent cut of the active host" => {
            c.hosts[active].cut();
            // From the moment the cut is in force: nft commits its rules at its end.
            t0 = hosts::now_ns();
        }
        _ => unreachable!(),
    }
    let next = c.wait_one_active(Some(active), c.lease * 3 + Duration::from_secs(10));
    let took = elapsed(t0, c.start_after(next, t0));
    // Let the faulted host recover and rejoin as passive before the next run.
    match kind {
        "systemctl stop promd (hand-over)" => {
            c.hosts[active].run_ok(&["systemctl", "start", "promd"]);
        }
        "SIGSTOP promd" if c.hosts[active].pids_on_machine("promd").contains(&pid) => {
            c.hosts[active].signal(pid, Signal::SIGCONT)
        }
        "silent cut of the active host" => {
            hosts::wait_until(c.lease * 3, "the cut host fenced itself", || {
                !c.hosts[active].is_active("web.service")
            });
            c.hosts[active].heal();
        }
        _ => {}
    }
    let old = (kind != "silent cut of the active host").then_some(pid);
    wait_back(c, active, old);
    took
}

/// RSS (KiB) and CPU share (% of one CPU) of each host's promd over `window`.
fn footprint(c: &Cluster, window: Duration) -> Vec<(u64, f64)> {
    let ticks = |pid: u32| -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of stat, 12 and 13 after the comm.
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    };
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            })
            .unwrap_or(0)
    };
    let pids: Vec<u32> = (0..c.hosts.len()).map(|i| c.promd_pid(i)).collect();
    let before: Vec<Option<u64>> = pids.iter().map(|&p| ticks(p)).collect();
    let start = Instant::now();
    std::thread::sleep(window); // the measuring window: nothing to await
    let secs = start.elapsed().as_secs_f64();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    pids.iter()
        .zip(before)
        .enumerate()
        .map(|(i, (&p, b))| {
            let (Some(b), Some(a)) = (b, ticks(p)) else {
                panic!("promd on {} restarted while measured", c.hosts[i].name());
            };
            (rss(p), a.saturating_sub(b) as f64 / hz / secs * 100.0)
        })
        .collect()
}

/// The body of `GET /metrics` from an etcd client URL `http://127.0.0.1:PORT`.
fn metrics(endpoint: &str) -> String {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read /metrics");
    body
}

/// Sums of etcd's gRPC counters over all members, methods and codes: (RPCs handled,
/// messages received from clients — every keepalive on a stream counts).
fn grpc_counters(etcd: &EtcdCluster) -> (f64, f64) {
    let (mut handled, mut received) = (0.0, 0.0);
    for ep in etcd.endpoints() {
        for line in metrics(&ep).lines() {
            let value = || {
                line.rsplit_once(' ')
                    .and_then(|(_, v)| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            if line.starts_with("grpc_server_handled_total{") {
                handled += value();
            } else if line.starts_with("grpc_server_msg_received_total{") {
                received += value();
            }
        }
    }
    (handled, received)
}

/// Client requests per second per host per group over `window` of idleness.
fn store_rate(etcd: &EtcdCluster, hosts: usize, groups: usize, window: Duration) -> (f64, f64) {
    let before = grpc_counters(etcd);
    let start = Instant::now();
    std::thread::sleep(window); // the measuring window: nothing to await
    let per = start.elapsed().as_secs_f64() * (hosts * groups) as f64;
    let after = grpc_counters(etcd);
    ((after.0 - before.0) / per, (after.1 - before.1) / per)
}

/// An etcd member this benchmark started itself (from the command line of the member it
/// replaces), killed by pid on drop.
struct Stand(Child);

impl Stand {
    fn spawn(cmdline: &[String]) -> Stand {
        let mut cmd = Command::new(&cmdline[0]);
        cmd.args(&cmdline[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD") {
                cmd.env_remove(key);
            }
        }
        Stand(cmd.spawn().expect("spawn etcd"))
    }
}

impl Drop for Stand {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// promd's footprint with every etcd member dead for `window`; then the store is restored.
/// `EtcdCluster::restart_member` waits until the member serves, which one member alone never
/// does, so member 1 first comes back as a stand-in this function starts (its own command
/// line, its own data dir), and is handed back to the harness once 0 and 2 serve.
fn store_down_footprint(c: &Cluster, etcd: &mut EtcdCluster, window: Duration) -> Vec<(u64, f64)> {
    let cmdline: Vec<String> = std::fs::read(format!(
        "/proc/{}/cmdline",
        etcd.member_pid(1).expect("member 1 runs")
    ))
    .expect("cmdline of etcd member 1")
    .split(|&b| b == 0)
    .filter(|a| !a.is_empty())
    .map(|a| String::from_utf8_lossy(a).into_owned())
    .collect();
    for m in 0..3 {
        etcd.kill_member(m);
    }
    let figures = footprint(c, window);
    {
        let _stand_in = Stand::spawn(&cmdline);
        etcd.restart_member(0); // serves once it and the stand-in elect a leader
        etcd.restart_member(2);
    }
    etcd.restart_member(1);
    c.wait_one_active(None, Duration::from_secs(60));
    figures
}

fn main() {
    if support::bench::only_listing() {
        return;
    }
    let runs = support::bench::runs(10);
    let leases: Vec<Duration> = std::env::var("PROMD_BENCH_LEASES")
        .unwrap_or_else(|_| "2,10".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .map(Duration::from_secs)
        .collect();
    let mut samples: Samples = BTreeMap::new();
    // Per lease: (idle footprint, store-down footprint, (RPCs, messages) per s per host per group).
    type Foot = Vec<(u64, f64)>;
    let mut feet: Vec<(u64, Foot, Foot, (f64, f64))> = Vec::new();
    let bench_start = Instant::now();
    for &lease in &leases {
        let l = lease.as_secs();
        let net = Net::new(3);
        // Under 2 s, etcd as the README's "Short leases" says: its default election timeout
        // raises any TTL under 2 s to 2 s.
        let options = Options {
            election_timeout_ms: (lease < Duration::from_secs(2)).then_some(500),
            ..Options::default()
        };
        let mut etcd = EtcdCluster::start_with(3, &net.gateway_ips(), &options);
        let c = Cluster::boot(&net, StoreKind::Etcd(&etcd), lease);
        let first = c.wait_one_active(None, Duration::from_secs(60));
        for i in (0..3).filter(|&i| i != first) {
            hosts::wait_until(Duration::from_secs(60), "passive hosts", || {
                c.hosts[i].is_active("web-passive.target")
            });
        }
        let idle = footprint(&c, Duration::from_secs(10));
        let rate = store_rate(&etcd, c.hosts.len(), 1, Duration::from_secs(20));
        eprintln!(
            "lease {l}s: store RPCs {:.2}/s, messages {:.2}/s per host per group",
            rate.0, rate.1
        );
        for run in 0..runs {
            let (started, returned) = promote(&c);
            eprintln!(
                "lease {l}s Promote #{run}: web started after {} ms, call returned after {} ms",
                ms(started),
                ms(returned)
            );
            samples.entry((SCENARIOS[0], l)).or_default().push(started);
            samples.entry((SCENARIOS[1], l)).or_default().push(returned);
        }
        for kind in &SCENARIOS[2..] {
            for run in 0..runs {
                let d = fault(&c, kind);
                eprintln!("lease {l}s {kind} #{run}: {} ms", ms(d));
                samples.entry((*kind, l)).or_default().push(d);
            }
        }
        let down = store_down_footprint(&c, &mut etcd, Duration::from_secs(10));
        let spans = c.check_history();
        eprintln!("lease {l}s: {spans} active spans, none overlapping, terms growing");
        feet.push((l, idle, down, rate));
    }

    let mut head = String::from("| scenario |");
    let mut rule = String::from("|---|");
    for l in &leases {
        let l = l.as_secs();
        head += &format!(" {l}s median ms | {l}s p99 ms | {l}s max ms |");
        rule += "---|---|---|";
    }
    println!(
        "\n{runs} runs per figure, {:.0} s in all. Time from the request or fault to the new active \
         host's web.service start (Promote also: until the call returned).\n",
        bench_start.elapsed().as_secs_f64()
    );
    println!("{head}\n{rule}");
    for s in SCENARIOS {
        let mut row = format!("| {s} |");
        for l in &leases {
            let mut v = samples.get(&(s, l.as_secs())).cloned().unwrap_or_default();
            v.sort();
            row += &format!(
                " {} | {} | {} |",
                ms(percentile(&v, 0.5)),
                ms(percentile(&v, 0.99)),
                ms(v.last().copied().unwrap_or_default())
            );
        }
        println!("{row}");
    }
    println!(
        "\n| lease | host | promd RSS idle (KiB) | CPU idle (%) | RSS store down (KiB) | CPU store down (%) |"
    );
    println!("|---|---|---|---|---|---|");
    for (l, idle, down, _) in &feet {
        for (i, ((r1, c1), (r2, c2))) in idle.iter().zip(down).enumerate() {
            println!("| {l}s | n{} | {r1} | {c1:.2} | {r2} | {c2:.2} |", i + 1);
        }
    }
    println!(
        "\n| lease | store RPCs handled /s per host per group | gRPC messages received /s per host per group |"
    );
    println!("|---|---|---|");
    for (l, _, _, (rpcs, msgs)) in &feet {
        println!("| {l}s | {rpcs:.2} | {msgs:.2} |");
    }
}
