//! Hand-over and failover times, and promd's footprint, on three real systemd hosts (nspawn)
//! with a 3-member etcd. Prints a markdown table.
//!
//! `cargo bench --bench failover` (root). `PROMD_BENCH_RUNS` (default 10) sets the runs per
//! figure; `PROMD_BENCH_LEASES` (default "2,10", seconds) the leases.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::cluster::{Cluster, StoreKind, elapsed};
use support::etcd::EtcdCluster;
use support::hosts::{self, Net, Signal};

struct Row {
    what: String,
    lease: Duration,
    samples: Vec<Duration>,
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One fault on the active host; returns the time until another host's service started.
fn fault(c: &Cluster, kind: &str) -> Duration {
    let active = c.wait_one_active(None, Duration::from_secs(60));
    let pid = c.promd_pid(active);
    let t0 = hosts::now_ns();
    match kind {
        "systemctl stop promd" => {
            c.hosts[active].run_ok(&["systemctl", "stop", "promd"]);
        }
        "kill -9" => c.hosts[active].signal(pid, Signal::SIGKILL),
        "SIGSTOP" => c.hosts[active].signal(pid, Signal::SIGSTOP),
        "cut" => c.hosts[active].cut(),
        _ => unreachable!(),
    }
    let next = c.wait_one_active(Some(active), c.lease * 3 + Duration::from_secs(10));
    let took = elapsed(t0, c.start_after(next, t0));
    // Let the faulted host recover and rejoin as passive before the next run.
    match kind {
        "systemctl stop promd" => {
            c.hosts[active].run_ok(&["systemctl", "start", "promd"]);
        }
        "SIGSTOP" if c.hosts[active].owns_pid(pid) => c.hosts[active].signal(pid, Signal::SIGCONT),
        "cut" => {
            hosts::wait_until(c.lease * 3, "the cut host fenced itself", || {
                !c.hosts[active].is_active("web.service")
            });
            c.hosts[active].heal();
        }
        _ => {}
    }
    if kind != "cut" {
        c.wait_promd_back(active, pid);
    } else {
        hosts::wait_until(
            Duration::from_secs(60),
            "the healed host is passive",
            || c.hosts[active].is_active("web-passive.target"),
        );
    }
    took
}

/// RSS (KiB) and CPU share of each host's promd over `window` of idleness.
fn footprint(c: &Cluster, window: Duration) -> Vec<(String, u64, f64)> {
    let ticks = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of stat, 12 and 13 after the comm.
        f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
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
    let before: Vec<u64> = pids.iter().map(|&p| ticks(p)).collect();
    let start = Instant::now();
    std::thread::sleep(window); // measuring idleness: nothing to await
    let secs = start.elapsed().as_secs_f64();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    pids.iter()
        .zip(before)
        .zip(&c.hosts)
        .map(|((&p, b), h)| {
            (
                h.name().to_string(),
                rss(p),
                (ticks(p) - b) as f64 / hz / secs * 100.0,
            )
        })
        .collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and `cargo bench -- --list`: nothing to list
    }
    let runs: usize = std::env::var("PROMD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let leases: Vec<Duration> = std::env::var("PROMD_BENCH_LEASES")
        .unwrap_or_else(|_| "2,10".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .map(Duration::from_secs)
        .collect();
    let mut rows: Vec<Row> = Vec::new();
    let mut idle = Vec::new();
    for &lease in &leases {
        let net = Net::new(3);
        let etcd = EtcdCluster::start(3, &net.gateway_ips());
        let c = Cluster::boot(&net, StoreKind::Etcd(&etcd), lease);
        c.wait_one_active(None, Duration::from_secs(60));
        if idle.is_empty() {
            idle = footprint(&c, Duration::from_secs(10));
        }
        for kind in ["systemctl stop promd", "kill -9", "SIGSTOP", "cut"] {
            let mut samples = Vec::new();
            for run in 0..runs {
                let d = fault(&c, kind);
                eprintln!("lease {}s {kind} #{run}: {} ms", lease.as_secs(), ms(d));
                samples.push(d);
            }
            rows.push(Row {
                what: kind.to_string(),
                lease,
                samples,
            });
        }
        let spans = c.check_history();
        eprintln!(
            "lease {}s: {spans} active spans, none overlapping, terms growing",
            lease.as_secs()
        );
    }

    println!("\n| scenario | lease | runs | median ms | p90 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    for r in &mut rows {
        r.samples.sort();
        println!(
            "| {} | {}s | {} | {} | {} | {} |",
            r.what,
            r.lease.as_secs(),
            r.samples.len(),
            ms(percentile(&r.samples, 0.5)),
            ms(percentile(&r.samples, 0.9)),
            ms(*r.samples.last().unwrap_or(&Duration::ZERO))
        );
    }
    println!("\n| host | promd RSS idle (KiB) | promd CPU idle (%) |");
    println!("|---|---|---|");
    for (h, rss, cpu) in idle {
        println!("| {h} | {rss} | {cpu:.2} |");
    }
}
