//! Promote latency: from the D-Bus call `org.promd1.Manager.Promote("web")` on a passive host
//! to its return, which promd sends once the host's active target job is done. Three systemd
//! hosts (nspawn) with a 3-member etcd; the role goes round the hosts.
//!
//! `cargo bench --bench promote` (root). `PROMD_BENCH_SWITCHOVERS` (default 60);
//! `PROMD_BENCH_TRACE=1` prints each switchover's journal lines of both hosts (PID 1 at debug
//! level), merged on one clock. Besides the latency it prints how much of a switchover is
//! web.service's own stop and start, which promd cannot cut.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::cluster::{Cluster, StoreKind};
use support::etcd::EtcdCluster;
use support::hosts::Net;

const LEASE: Duration = Duration::from_secs(2);

fn main() {
    if support::bench::only_listing() {
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
    // Per switchover: web.service's own stop on the old host plus its own start on the new
    // one (systemd's "Stopping"→"Stopped" and "Starting"→"Started"), what promd cannot cut.
    let mut units_own: Vec<Duration> = Vec::with_capacity(n);
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
        let lines = timeline(&[&c.hosts[active], &c.hosts[target]], wall);
        if trace {
            for l in &lines {
                eprintln!(
                    "  {:>7.1} ms  {} {}: {}",
                    l.at_ms, l.host, l.unit, l.message
                );
            }
        }
        match units_own_time(&lines, c.hosts[active].name(), c.hosts[target].name()) {
            Some(own) => units_own.push(own),
            None => eprintln!("switchover {run}: web.service's stop or start not in the journal"),
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
    if !units_own.is_empty() {
        units_own.sort();
        let own = units_own[units_own.len() / 2];
        println!(
            "\nOf the median switchover, web.service's own stop and start (its ExecStopPost= and \
             ExecStartPre= write its span log) took {} ms (median over {} switchovers); the rest, \
             {} ms, is promd, the store, D-Bus and systemd's jobs.",
            ms(own),
            units_own.len(),
            ms(at(0.5).saturating_sub(own))
        );
    }
    eprintln!("{spans} active spans, none overlapping, terms growing");
}

/// One journal line of a switchover's timeline.
struct Line {
    /// Milliseconds after the call was made.
    at_ms: f64,
    host: String,
    /// The unit that logged it (`init.scope` for PID 1, `promd.service`).
    unit: String,
    message: String,
}

/// The journal lines of `hosts` since `since`, merged by time (CLOCK_REALTIME is the kernel's,
/// shared by the containers).
fn timeline(hosts: &[&support::hosts::Host], since: std::time::SystemTime) -> Vec<Line> {
    let from = since
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let origin = u64::try_from(from.as_micros()).unwrap_or(0);
    let mut lines: Vec<(u64, Line)> = Vec::new();
    for h in hosts {
        let text = h.journal(&[
            "-o",
            "json",
            "--output-fields=MESSAGE,__REALTIME_TIMESTAMP,_SYSTEMD_UNIT",
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
            lines.push((
                at,
                Line {
                    at_ms: at.saturating_sub(origin) as f64 / 1000.0,
                    host: h.name().to_string(),
                    unit: v["_SYSTEMD_UNIT"].as_str().unwrap_or("").to_string(),
                    message: v["MESSAGE"].as_str().unwrap_or("").to_string(),
                },
            ));
        }
    }
    lines.sort_by_key(|(at, _)| *at);
    lines.into_iter().map(|(_, l)| l).collect()
}

/// web.service's own stop on `old` plus its own start on `new`, from PID 1's lines.
fn units_own_time(lines: &[Line], old: &str, new: &str) -> Option<Duration> {
    let at = |host: &str, prefix: &str| {
        lines
            .iter()
            .find(|l| l.host == host && l.unit == "init.scope" && l.message.starts_with(prefix))
            .map(|l| l.at_ms)
    };
    let stop = at(old, "Stopped web.service")? - at(old, "Stopping web.service")?;
    let start = at(new, "Started web.service")? - at(new, "Starting web.service")?;
    Some(Duration::from_secs_f64((stop + start).max(0.0) / 1000.0))
}
