//! Local failure first, on real systemd hosts with etcd: a crash is restarted in place; a crash
//! loop fails over and leaves the host failed until its cooldown or `promctl reset`; systemd's
//! own restarts (watchdog included) are counted; a failing health command fails over, and an
//! unhealthy passive host never takes over; with no standby the host stays and restarts; a crash
//! is still seen after PID 1 lost its bus connection (and so every client's subscription).

mod support;

use std::time::Duration;

use support::bus;
use support::cluster::{Cluster, StoreKind, elapsed, group_prop};
use support::etcd::EtcdCluster;
use support::hosts::{self, Host, Net};

const LEASE: Duration = Duration::from_secs(2);

fn failures(h: &Host) -> u32 {
    group_prop(h, "Failures")
        .trim_start_matches("u ")
        .parse()
        .unwrap_or(u32::MAX)
}

/// SIGKILL the service's processes, as a crash would.
fn crash(h: &Host) {
    h.run_ok(&["systemctl", "kill", "--signal=KILL", "web.service"]);
}

fn etcd_cluster(net: &Net, etcd: &EtcdCluster, group_extra: &str) -> Cluster {
    Cluster::boot_with(net, StoreKind::Etcd(etcd), LEASE, group_extra, |_, _| {})
}

#[test]
fn a_crash_is_restarted_in_place_and_a_crash_loop_fails_over() {
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let backoff = Duration::from_millis(500);
    let max_restarts = 2u32;
    let c = etcd_cluster(
        &net,
        &etcd,
        "max-restarts = 2\nrestart-window = \"1min\"\nrestart-backoff = \"500ms\"\nfailure-cooldown = \"10min\"\n",
    );
    let a = c.wait_one_active(None, Duration::from_secs(30));
    let h = &c.hosts[a];

    // One crash: restarted in place after the backoff, no failover.
    let t0 = hosts::now_ns();
    crash(h);
    hosts::wait_until(
        Duration::from_secs(5),
        "web.service restarted in place",
        || h.is_active("web.service") && c.spans()[a].1.iter().any(|s| s.start_ns > t0),
    );
    let restarted_after = elapsed(t0, c.start_after(a, t0));
    assert!(
        restarted_after >= backoff,
        "restarted after {restarted_after:?}, before the backoff"
    );
    assert_eq!(c.active_hosts(), vec![a]);
    assert_eq!(failures(h), 1);
    assert!(
        h.journal(&["-u", "promd"])
            .contains("web.service failed (1 of at most 2 failures within 1m)")
    );

    // promctl reset clears the count; then a crash loop: each restart crashes again.
    h.run_ok(&["promctl", "reset", "web"]);
    assert_eq!(failures(h), 0);
    let t0 = hosts::now_ns();
    let mut crashes = 0;
    let mut other = None;
    hosts::wait_until(
        Duration::from_secs(15),
        "failover after the crash loop",
        || {
            let active = c.active_hosts();
            if let Some(&b) = active.iter().find(|&&i| i != a) {
                other = Some(b);
                return true;
            }
            if h.is_active("web.service") {
                crash(h);
                crashes += 1;
            }
            false
        },
    );
    let b = other.unwrap_or_default();
    let took = elapsed(t0, c.start_after(b, t0));
    let bound = backoff * (max_restarts + 1) + Duration::from_secs(1);
    eprintln!(
        "crash loop: {crashes} crashes, failover after {} ms (bound {} ms)",
        took.as_millis(),
        bound.as_millis()
    );
    assert!(took <= bound, "failover took {took:?}, bound {bound:?}");
    assert_eq!(crashes, max_restarts + 1);

    // The failed host says so and is skipped in elections during its cooldown.
    hosts::wait_until(Duration::from_secs(5), "failed role", || {
        group_prop(h, "Role") == "s \"failed\""
    });
    assert!(h.run_ok(&["promctl", "status", "web"]).contains("failed"));
    let third = (0..3).find(|&i| i != a && i != b).unwrap_or_default();
    c.hosts[b].run_ok(&["systemctl", "stop", "promd"]);
    let next = c.wait_one_active(Some(b), Duration::from_secs(10));
    assert_eq!(next, third, "the failed host was skipped");

    // promctl reset makes it eligible again: a demote of the active host now reaches it.
    h.run_ok(&["promctl", "reset", "web"]);
    hosts::wait_until(Duration::from_secs(5), "passive again", || {
        group_prop(h, "Role") == "s \"passive\""
    });
    c.hosts[third].run_ok(&["promctl", "demote", "web"]);
    assert_eq!(c.wait_one_active(Some(third), Duration::from_secs(10)), a);
    c.check_history();
}

/// Queue a start job for each unit over the host's system bus, all from one connection that
/// stays until every call is answered; what the calls ended with, counted.
fn queue_jobs(h: &Host, units: impl Iterator<Item = String>) -> String {
    bus::with_host_bus(h, async |conn| {
        let calls = units.map(|u| {
            let conn = conn.clone();
            async move {
                conn.call_method(
                    Some("org.freedesktop.systemd1"),
                    "/org/freedesktop/systemd1",
                    Some("org.freedesktop.systemd1.Manager"),
                    "StartUnit",
                    &(u, "replace"),
                )
                .await
            }
        });
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for r in futures_util::future::join_all(calls).await {
            let key = match r {
                Ok(_) => "queued".to_string(),
                Err(zbus::Error::MethodError(name, _, _)) => name.to_string(),
                Err(e) => e.to_string(),
            };
            *counts.entry(key).or_default() += 1;
        }
        format!("{counts:?}")
    })
}

/// PID 1 drops its bus connection when dbus-daemon refuses it a match rule: it adds one for
/// the client of each job queued over D-Bus, and one client with more jobs queued than the
/// limit leaves room for is enough. Every client's `Subscribe()` goes with the connection.
/// Before: promd never subscribed again and so heard of no unit change any more; a crash after
/// that was neither restarted in place nor failed over. (At 1,000 groups promd's own start-up
/// jobs did this to PID 1; promd now keeps fewer in flight, see `NORMAL_JOBS`.)
#[test]
fn a_crash_after_pid1_lost_its_bus_connection_is_still_restarted_in_place() {
    let net = Net::new(2);
    let etcd = EtcdCluster::start(1, &net.gateway_ips());
    let c = Cluster::boot_with(
        &net,
        StoreKind::Etcd(&etcd),
        LEASE,
        "max-restarts = 3\nrestart-backoff = \"500ms\"\n",
        |_, spec| {
            // Few match rules for PID 1's connection (the system bus allows 512), so that
            // the jobs of one client below use them up.
            spec.file(
                "/etc/dbus-1/system-local.conf",
                "<busconfig>\n  <limit name=\"max_match_rules_per_connection\">64</limit>\n</busconfig>\n",
            );
            spec.file(
                "/etc/systemd/system/gate.service",
                "[Service]\nType=oneshot\nExecStart=/bin/sleep 2\n",
            );
            spec.file(
                "/etc/systemd/system/queued@.service",
                "[Unit]\nAfter=gate.service\n[Service]\nType=oneshot\nExecStart=/bin/true\n",
            );
        },
    );
    let a = c.wait_one_active(None, Duration::from_secs(30));
    let h = &c.hosts[a];

    // 100 start jobs queued behind gate.service by one client that stays on the bus (as
    // root, systemctl talks to PID 1 over its private socket, not the bus).
    h.run_ok(&["systemctl", "start", "--no-block", "gate.service"]);
    let answers = queue_jobs(h, (1..=100).map(|i| format!("queued@{i}.service")));
    eprintln!("100 StartUnit calls over the bus: {answers}");
    h.wait_for_journal(
        &["-t", "systemd"],
        "Got disconnect on API bus",
        Duration::from_secs(10),
    );
    hosts::wait_until(Duration::from_secs(10), "promd subscribed again", || {
        h.journal(&["-u", "promd"])
            .contains("systemd is back on the bus: subscribed to its signals again")
    });

    // A crash now is seen, and restarted in place.
    let t0 = hosts::now_ns();
    crash(h);
    hosts::wait_until(
        Duration::from_secs(10),
        "web.service restarted in place",
        || h.is_active("web.service") && c.spans()[a].1.iter().any(|s| s.start_ns > t0),
    );
    assert_eq!(c.active_hosts(), vec![a]);
    assert_eq!(failures(h), 1);
    c.check_history();
}

#[test]
fn systemd_restarts_including_the_watchdog_are_counted() {
    let net = Net::new(1);
    let shared = tempfile::tempdir().unwrap();
    // A Type=notify service that says READY=1 itself, then never pings its watchdog.
    let notify_unit = "[Service]\nType=notify\nWatchdogSec=1s\nRestart=on-failure\nRestartSec=100ms\n\
        ExecStart=/usr/bin/python3 -c 'import os,socket,time; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); \
        s.sendto(b\"READY=1\", os.environ[\"NOTIFY_SOCKET\"]); time.sleep(1e9)'\n";
    let c = Cluster::boot_with(
        &net,
        StoreKind::Dir(shared.path()),
        LEASE,
        "max-restarts = 100\n",
        |_, spec| {
            spec.file("/etc/systemd/system/web.service", notify_unit);
        },
    );
    c.wait_one_active(None, Duration::from_secs(30));
    let h = &c.hosts[0];
    hosts::wait_until(
        Duration::from_secs(15),
        "two watchdog restarts counted",
        || failures(h) >= 2,
    );
    let journal = h.journal(&["-u", "promd"]);
    assert!(
        journal.contains("web.service failed and was restarted by systemd"),
        "{journal}"
    );
    // Counted once per incident, and left to systemd: promd restarts nothing itself.
    assert!(
        !journal.contains("restarting web.service in place"),
        "{journal}"
    );
    assert!(!journal.contains("web.service failed ("), "{journal}");
    let sys = h.journal(&["-u", "web.service"]);
    assert!(
        sys.contains("Watchdog timeout"),
        "the restarts were the watchdog's: {sys}"
    );
    // The service itself restarts every second; the host keeps the role.
    assert_eq!(
        group_prop(h, "Role"),
        "s \"active\"",
        "no failover below max-restarts"
    );
    assert!(h.is_active("web-active.target"));
}

#[test]
fn a_failing_health_check_fails_over_and_an_unhealthy_passive_host_never_takes_over() {
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let c = etcd_cluster(
        &net,
        &etcd,
        "max-restarts = 1\nrestart-backoff = \"200ms\"\nhealth-command = [\"/bin/sh\", \"-c\", \"! test -e /run/web-broken\"]\n\
         health-interval = \"300ms\"\nhealth-timeout = \"200ms\"\n",
    );
    let a = c.wait_one_active(None, Duration::from_secs(30));
    let broken = (a + 1) % 3;
    let healthy = (a + 2) % 3;
    c.hosts[broken].write_file("/run/web-broken", "");
    hosts::wait_until(
        Duration::from_secs(5),
        "the broken passive host is unhealthy",
        || group_prop(&c.hosts[broken], "Healthy") == "b false",
    );
    assert!(
        c.hosts[healthy]
            .run_ok(&["promctl", "status", "web"])
            .contains("no"),
        "members show the unhealthy host"
    );

    c.hosts[a].write_file("/run/web-broken", "");
    let next = c.wait_one_active(Some(a), Duration::from_secs(10));
    assert_eq!(next, healthy, "never the unhealthy host");
    assert!(
        c.spans()[broken].1.is_empty(),
        "the unhealthy host never ran the service"
    );
    assert!(
        c.hosts[a]
            .journal(&["-u", "promd"])
            .contains("health check failed")
    );
    c.check_history();
}

#[test]
fn without_a_standby_the_host_stays_active_and_keeps_restarting() {
    let net = Net::new(1);
    let shared = tempfile::tempdir().unwrap();
    let c = Cluster::boot_with(
        &net,
        StoreKind::Dir(shared.path()),
        LEASE,
        "max-restarts = 1\nrestart-backoff = \"200ms\"\n",
        |_, _| {},
    );
    c.wait_one_active(None, Duration::from_secs(30));
    let h = &c.hosts[0];
    for n in 1..=4 {
        let t0 = hosts::now_ns();
        crash(h);
        hosts::wait_until(Duration::from_secs(5), "restarted again", || {
            h.is_active("web.service") && c.spans()[0].1.iter().any(|s| s.start_ns > t0)
        });
        assert_eq!(group_prop(h, "Role"), "s \"active\"", "crash {n}");
    }
    // STATUS= goes to PID 1 at most four times a second: awaited, not read once.
    hosts::wait_until(Duration::from_secs(2), "the status says so", || {
        h.run_ok(&["systemctl", "show", "-P", "StatusText", "promd"])
            .contains("no eligible standby: restarting in place")
    });
    assert!(
        h.journal(&["-u", "promd"])
            .contains("no eligible standby: staying active")
    );
}

#[test]
fn a_failed_passive_target_unit_makes_the_host_ineligible_until_it_recovers() {
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    // The passive target runs a standby service on every passive host.
    let c = Cluster::boot_with(&net, StoreKind::Etcd(&etcd), LEASE, "", |_, spec| {
        spec.file(
            "/etc/systemd/system/web-passive.target",
            "[Unit]\nWants=web-standby.service\nConflicts=web-active.target\n",
        );
        spec.file(
            "/etc/systemd/system/web-standby.service",
            "[Unit]\nConflicts=web-active.target\n[Service]\nExecStart=/bin/sleep infinity\n",
        );
    });
    let a = c.wait_one_active(None, Duration::from_secs(30));
    let broken = (a + 1) % 3;
    let other = (a + 2) % 3;
    hosts::wait_until(Duration::from_secs(10), "standby running", || {
        c.hosts[broken].is_active("web-standby.service")
    });
    c.hosts[broken].run_ok(&["systemctl", "kill", "--signal=KILL", "web-standby.service"]);
    hosts::wait_until(
        Duration::from_secs(5),
        "the host with a failed standby is unhealthy",
        || group_prop(&c.hosts[broken], "Healthy") == "b false",
    );
    // The active host goes away: the healthy standby takes over, never the broken one.
    c.hosts[a].run_ok(&["systemctl", "stop", "promd"]);
    assert_eq!(c.wait_one_active(Some(a), Duration::from_secs(10)), other);
    // Recovered: healthy again.
    c.hosts[broken].run_ok(&["systemctl", "restart", "web-standby.service"]);
    hosts::wait_until(Duration::from_secs(5), "healthy again", || {
        group_prop(&c.hosts[broken], "Healthy") == "b true"
    });
    c.check_history();
}

/// A passive target whose start fails (its standby service fails in `ExecStartPre=` until what
/// it needs is there) leaves the host ineligible, and is started again by itself once it can
/// succeed. Before: it stayed ineligible until `promctl reset` or a restart of promd, and so
/// did a host whose passive start failed for a passing reason (a call systemd dropped).
#[test]
fn a_passive_target_that_failed_to_start_is_started_again_by_itself() {
    let net = Net::new(2);
    let etcd = EtcdCluster::start(1, &net.gateway_ips());
    let c = Cluster::boot_with(&net, StoreKind::Etcd(&etcd), LEASE, "", |i, spec| {
        if i == 0 {
            spec.file("/etc/web-primary", "10.0.0.1\n");
        }
        spec.file(
            "/etc/systemd/system/web-passive.target",
            "[Unit]\nRequires=web-standby.service\nAfter=web-standby.service\nConflicts=web-active.target\n",
        );
        // Needs its primary's address, written by provisioning that comes late.
        spec.file(
            "/etc/systemd/system/web-standby.service",
            "[Unit]\nConflicts=web-active.target\n[Service]\n\
             ExecStartPre=/bin/test -e /etc/web-primary\nExecStart=/bin/sleep infinity\n",
        );
    });
    let a = c.wait_one_active(None, Duration::from_secs(30));
    assert_eq!(a, 0, "the only host whose passive target could start");
    let b = 1;
    let h = &c.hosts[b];
    hosts::wait_until(
        Duration::from_secs(10),
        "the standby's host ineligible",
        || {
            group_prop(h, "Eligible") == "b false"
                && h.run_ok(&["promctl", "status", "web"])
                    .contains("the passive target failed")
        },
    );
    assert!(
        h.journal(&["-u", "promd"])
            .contains("starting the passive target failed (1 in a row)"),
        "promd says what failed and that it tries again"
    );
    assert!(!h.is_active("web-passive.target"));

    // What the standby needs is there now: no operator, no restart of promd.
    h.write_file("/etc/web-primary", "10.0.0.1\n");
    hosts::wait_until(
        Duration::from_secs(70),
        "the passive target started again and the host eligible",
        || h.is_active("web-standby.service") && group_prop(h, "Eligible") == "b true",
    );
    assert!(h.is_active("web-passive.target"));

    // And it is a standby in earnest: it takes over when the active host stops.
    c.hosts[a].run_ok(&["systemctl", "stop", "promd"]);
    assert_eq!(c.wait_one_active(Some(a), Duration::from_secs(10)), b);
    c.check_history();
}
