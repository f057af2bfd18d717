//! A real HAProxy (Debian `haproxy`, run by the test on this machine, the shipped
//! `packaging/examples/haproxy.cfg` with the test's addresses) in front of three nspawn hosts
//! with a 3-member etcd, health-checking `/v1/groups/web/active` on each host every 100 ms. A
//! client sends requests through it, every 10 ms, during a D-Bus Promote, a `systemctl stop
//! promd` on the active host, a kill -9 of its promd and a silent cut of the active host.
//!
//! Checked as a user would: every answer came from a host inside its own active span (the
//! service's answer time within that host's recorded run, with that run's `PROMD_TERM`), the
//! service answers through HAProxy again after each fault, and no two hosts ever ran it at
//! once. The gap each fault cost the client is printed (benches/haproxy.rs measures it over
//! many runs). Traffic: loopback (HAProxy's frontend) and the hosts' own addresses.

mod support;

use std::time::Duration;

use support::cluster::Cluster;
use support::etcd::EtcdCluster;
use support::haproxy::{self, Client, Fault, Haproxy, Stage};
use support::hosts::{self, Net};

const LEASE: Duration = Duration::from_secs(2);

#[test]
fn haproxy_sends_every_request_to_the_active_host_through_switchovers_and_failures() {
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let stage = Stage::start(&net, &etcd, LEASE);
    let (c, client, lb, first) = (&stage.c, &stage.client, &stage.lb, stage.active);
    let (host, term) = stage.first.clone();
    assert_eq!(
        host,
        c.hosts[first].name(),
        "haproxy routes to the active host"
    );
    eprintln!("through haproxy at {}: {host} term {term}", lb.addr());

    let mut gaps = Vec::new();
    for fault in Fault::ALL {
        let gap = haproxy::run_fault(c, client, fault);
        eprintln!(
            "{}: {} term {} -> {} term {}: client-visible gap {} ms, {} requests without an \
             answer from the service",
            fault.name(),
            gap.before.0,
            gap.before.1,
            gap.after.0,
            gap.after.1,
            gap.gap.as_millis(),
            gap.failed
        );
        assert!(gap.after.1 > gap.before.1, "a new term serves: {gap:?}");
        gaps.push((fault, gap));
    }
    // The service answers after the last fault too, from the host that is active now.
    let now_active = c.wait_one_active(None, Duration::from_secs(30));
    let (host, _) = client.wait_served_after(
        hosts::now_ns(),
        Some(c.hosts[now_active].name()),
        Duration::from_secs(30),
    );
    assert_eq!(host, c.hosts[now_active].name());
    client_answers_checked(c, stage.client, lb);
    c.check_history();

    eprintln!("\n| fault | client-visible gap ms | requests without an answer |\n|---|---|---|");
    for (fault, gap) in &gaps {
        eprintln!(
            "| {} | {} | {} |",
            fault.name(),
            gap.gap.as_millis(),
            gap.failed
        );
    }
}

/// Stops the client and checks every answer it got against the hosts' spans.
fn client_answers_checked(c: &Cluster, client: Client, lb: &Haproxy) {
    let answers = client.answers();
    drop(client);
    let spans = c.spans();
    let served = answers.iter().filter(|a| a.served().is_some()).count();
    let outside = haproxy::outside_spans(&answers, &spans);
    assert!(
        outside.is_empty(),
        "{} of {served} answers came from outside an active span:\n  {}\ntimeline:\n{}\nhaproxy:\n{}",
        outside.len(),
        outside.join("\n  "),
        hosts::timeline(&spans),
        lb.log()
    );
    assert!(
        served >= 2 * Fault::ALL.len(),
        "only {served} answers of {}",
        answers.len()
    );
    eprintln!(
        "{} requests through haproxy, {served} answered by the service, every one inside its \
         host's active span with that span's term",
        answers.len()
    );
}
