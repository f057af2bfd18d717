//! The gap a client sees through a real HAProxy (the shipped `packaging/examples/haproxy.cfg`,
//! checks every 100 ms on `/v1/groups/web/active`) when the active host changes: D-Bus
//! Promote, `systemctl stop promd`, kill -9 of promd, a silent cut of the active host. Three
//! nspawn hosts, a 3-member etcd, a 2 s lease; a client sends a request every 10 ms through
//! HAProxy. Prints a Markdown table (median, p99, max per fault) and the number of answers
//! that came from a host outside its own active span (must be 0).
//!
//! `cargo bench --bench haproxy` (root). `PROMD_BENCH_RUNS` (default 30) sets the runs per
//! fault. The gap: from the last answer of the old run of the service to the first answer of
//! the new one, both as the client received them.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::campaign::report::{ms, percentile};

use support::etcd::EtcdCluster;
use support::haproxy::{self, Fault, Stage};
use support::hosts::Net;

const LEASE: Duration = Duration::from_secs(2);

fn main() {
    if support::bench::only_listing() {
        return;
    }
    let runs = support::bench::runs(30);
    let start = Instant::now();
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let stage = Stage::start(&net, &etcd, LEASE);
    let (c, client) = (&stage.c, &stage.client);

    let mut rows = Vec::new();
    for fault in Fault::ALL {
        let mut gaps = Vec::new();
        let mut failed = 0;
        for run in 0..runs {
            let g = haproxy::run_fault(c, client, fault);
            eprintln!(
                "{} #{run}: {} term {} -> {} term {}: gap {} ms, {} requests unanswered",
                fault.name(),
                g.before.0,
                g.before.1,
                g.after.0,
                g.after.1,
                ms(g.gap),
                g.failed
            );
            failed += g.failed;
            gaps.push(g.gap);
        }
        gaps.sort();
        rows.push((fault, gaps, failed));
    }
    let answers = client.answers();
    drop(stage.client);
    let spans = c.spans();
    let outside = haproxy::outside_spans(&answers, &spans);
    let served = answers.iter().filter(|a| a.served().is_some()).count();
    let history = c.check_history();

    println!(
        "\n{runs} runs per fault, lease {} s, {:.0} s in all; {} requests through haproxy, {served} \
         answered by the service, {} from outside an active span; {history} runs of the \
         service, none overlapping.\n",
        LEASE.as_secs(),
        start.elapsed().as_secs_f64(),
        answers.len(),
        outside.len()
    );
    println!(
        "| fault (client-visible gap through HAProxy) | median ms | p99 ms | max ms | goal | \
         requests unanswered per run |"
    );
    println!("|---|---|---|---|---|---|");
    for (fault, gaps, failed) in &rows {
        let goal = if fault.planned() {
            "≤ 300 ms median".to_string()
        } else {
            format!("≤ {} ms", (LEASE + Duration::from_secs(1)).as_millis())
        };
        println!(
            "| {} | {} | {} | {} | {goal} | {:.1} |",
            fault.name(),
            ms(percentile(gaps, 0.5)),
            ms(percentile(gaps, 0.99)),
            ms(gaps.last().copied().unwrap_or_default()),
            *failed as f64 / gaps.len().max(1) as f64
        );
    }
    println!("\nanswers from outside an active span: {}", outside.len());
    for o in &outside {
        println!("  {o}");
    }
    assert!(outside.is_empty(), "answers from outside an active span");
}
