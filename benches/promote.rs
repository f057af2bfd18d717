//! Promote latency: from the D-Bus call `org.promd1.Manager.Promote("web")` on a passive host
//! to its return, which promd sends once the host's active target job is done. Three systemd
//! hosts (nspawn) with a 3-member etcd; the role goes round the hosts.
//!
//! `cargo bench --bench promote` (root). `PROMD_BENCH_SWITCHOVERS` (default 60).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::cluster::{Cluster, StoreKind};
use support::etcd::EtcdCluster;
use support::hosts::Net;

const LEASE: Duration = Duration::from_secs(2);

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let n: usize = std::env::var("PROMD_BENCH_SWITCHOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    // PROMD_BENCH_TRACE=1: after each switchover, both hosts' journals merged on one clock
    // (CLOCK_REALTIME is the kernel's, shared by the containers): where the time goes.
    let trace = std::env::var_os("PROMD_BENCH_TRACE").is_some();
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let c = Cluster::boot(&net, StoreKind::Etcd(&etcd), LEASE);
    let mut active = c.wait_one_active(None, Duration::from_secs(60));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let conns: Vec<zbus::Connection> = c
        .hosts
        .iter()
        .map(|h| {
            rt.block_on(zbus::connection::Builder::address(h.bus_address().as_str()).build())
                .expect("the host's system bus")
        })
        .collect();

    if trace {
        // PID 1's own steps (D-Bus calls received, jobs queued and run) join the timeline.
        for h in &c.hosts {
            h.run_ok(&["systemd-analyze", "log-level", "debug"]);
        }
    }
    let mut samples = Vec::with_capacity(n);
    for run in 0..n {
        let target = (active + 1 + run % 2) % 3;
        // Every standby must be back in the member list before the next switchover.
        support::hosts::wait_until(Duration::from_secs(30), "all standbys eligible", || {
            c.hosts[target].is_active("web-passive.target")
        });
        let started = Instant::now();
        let wall = std::time::SystemTime::now();
        let reply = rt.block_on(conns[target].call_method(
            Some("org.promd1"),
            "/org/promd1",
            Some("org.promd1.Manager"),
            "Promote",
            &("web",),
        ));
        let took = started.elapsed();
        if let Err(e) = reply {
            panic!("switchover {run} to {}: {e}", c.hosts[target].name());
        }
        assert!(
            c.hosts[target].is_active("web-active.target"),
            "the call returns once active"
        );
        eprintln!(
            "switchover {run}: {} -> {} in {} ms",
            c.hosts[active].name(),
            c.hosts[target].name(),
            took.as_millis()
        );
        samples.push(took);
        if trace {
            print_timeline(&[&c.hosts[active], &c.hosts[target]], wall);
        }
        active = target;
    }
    let spans = c.check_history();
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1000.0);
    println!(
        "\n| Promote latency (call -> active target started) | switchovers | median ms | p99 ms | max ms |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| D-Bus Promote on a passive host, lease {}s | {} | {} | {} | {} |",
        LEASE.as_secs(),
        samples.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(*samples.last().unwrap_or(&Duration::ZERO))
    );
    eprintln!("{spans} active spans, none overlapping, terms growing");
}

/// Print the journal lines of `hosts` since `since`, merged by time, each tagged with its host
/// and its offset from `since` in milliseconds.
fn print_timeline(hosts: &[&support::hosts::Host], since: std::time::SystemTime) {
    let from = since
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut lines: Vec<(u64, String)> = Vec::new();
    for h in hosts {
        let text = h.journal(&[
            "-o",
            "json",
            "--output-fields=MESSAGE,__REALTIME_TIMESTAMP,_SYSTEMD_UNIT,UNIT",
            "--since",
            &format!("@{}.{:06}", from.as_secs(), from.subsec_micros()),
        ]);
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let at: u64 = v["__REALTIME_TIMESTAMP"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let unit = v["_SYSTEMD_UNIT"].as_str().unwrap_or("");
            let msg = v["MESSAGE"].as_str().unwrap_or("");
            lines.push((at, format!("{} {unit}: {msg}", h.name())));
        }
    }
    lines.sort();
    let origin = u64::try_from(from.as_micros()).unwrap_or(0);
    for (at, line) in lines {
        eprintln!(
            "  {:>7.1} ms  {line}",
            (at.saturating_sub(origin)) as f64 / 1000.0
        );
    }
}
