//! The shortest lease, 1 s (issue 13), on three real systemd hosts with a 3-member etcd run as
//! the README's "Short leases" says (`--election-timeout=500`, so that etcd grants a 1 s TTL as
//! asked), promd as shipped (`promd.service` without a drop-in: promd fits its own watchdog to
//! the lease). Each unplanned fault — kill -9, SIGSTOP, a silent cut of the active host — twice:
//! another host's service must start within 1.5 s of the fault, and no two hosts ever run the
//! role's services at once: `web.service`, and `drain.service`, which ignores SIGTERM and has a
//! child that ignores it too (so a fence must kill, not wait). promd warns that 1 s is too
//! short for these two units (README, "Short leases"); the test checks that it says so.
//!
//! The cut's bound is 100 ms longer: etcd revokes an expired lease on its own 500 ms tick, so
//! a host cut right after a renewal is replaced `L + 500 ms` later plus etcd's commit, the
//! watch, one campaign and the start job (README, "Short leases").

mod support;

use std::time::Duration;

use support::cluster::{Cluster, StoreKind, elapsed};
use support::etcd::{EtcdCluster, Options};
use support::hosts::{self, Net, Signal, Span};

const LEASE: Duration = Duration::from_secs(1);
/// kill -9 and SIGSTOP: the bound.
const BOUND: Duration = Duration::from_millis(1500);
/// A silent cut: the lease, etcd's revoke tick, and 100 ms for the commit, the watch, the
/// campaign and the start.
const CUT_BOUND: Duration = Duration::from_millis(1600);
const ROUNDS: usize = 2;

/// Under the active target beside `web.service`: ignores SIGTERM, and so does its child; its
/// `TimeoutStopSec=10s` would let it outlive any 1 s lease unless promd (or its fence) kills
/// it. Its run spans go to `/spans/drain.log`.
fn drain_unit() -> String {
    hosts::span_unit_running(
        "drain.service",
        "web",
        "/spans/drain.log",
        "/bin/sh -c 'trap \"\" TERM; sleep infinity & wait'",
    )
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Stop,
    Cut,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9 promd",
            Fault::Stop => "SIGSTOP promd",
            Fault::Cut => "silent cut of the active host",
        }
    }

    fn bound(self) -> Duration {
        match self {
            Fault::Cut => CUT_BOUND,
            _ => BOUND,
        }
    }
}

/// Injects `fault` on the active host `a`; returns when it took effect (realtime ns).
fn inject(c: &Cluster, a: usize, fault: Fault) -> u64 {
    match fault {
        Fault::Kill | Fault::Stop => {
            let pid = c.promd_pid(a);
            let t0 = hosts::now_ns();
            let signal = match fault {
                Fault::Kill => Signal::SIGKILL,
                _ => Signal::SIGSTOP,
            };
            c.hosts[a].signal(pid, signal);
            t0
        }
        Fault::Cut => {
            // From the moment the cut is in force: nft commits its rules at its end.
            c.hosts[a].cut();
            hosts::now_ns()
        }
    }
}

/// Brings the host that was active back as a passive host.
fn recover(c: &Cluster, a: usize, fault: Fault, pid: u32) {
    match fault {
        Fault::Kill => c.wait_promd_back(a, pid),
        Fault::Stop => {
            // The watchdog killed it; a process still stopped would be a bug caught below.
            if c.hosts[a].owns_pid(pid) {
                c.hosts[a].signal(pid, Signal::SIGCONT);
            }
            c.wait_promd_back(a, pid);
        }
        Fault::Cut => {
            hosts::wait_until(Duration::from_secs(10), "the cut host fenced", || {
                !c.hosts[a].is_active("web.service") && !c.hosts[a].is_active("drain.service")
            });
            c.hosts[a].heal();
            hosts::wait_until(
                Duration::from_secs(30),
                "the cut host passive again",
                || c.hosts[a].is_active("web-passive.target"),
            );
        }
    }
}

#[test]
fn a_one_second_lease_fails_over_within_a_second_and_a_half_without_overlap() {
    let net = Net::new(3);
    let etcd = EtcdCluster::start_with(
        3,
        &net.gateway_ips(),
        &Options {
            election_timeout_ms: Some(500),
            ..Options::default()
        },
    );
    let c = Cluster::boot_with(&net, StoreKind::Etcd(&etcd), LEASE, "", |_, spec| {
        // promd.service as shipped: no WatchdogSec= or RestartSec= of the tests'.
        spec.file("/etc/systemd/system/promd.service.d/test.conf", "");
        spec.file(
            "/etc/systemd/system/web-active.target",
            "[Unit]\nDescription=web: active\nWants=web.service drain.service\n\
             Conflicts=web-passive.target\n",
        );
        spec.file("/etc/systemd/system/drain.service", drain_unit());
    });

    let mut active = c.wait_one_active(None, Duration::from_secs(30));
    hosts::wait_until(Duration::from_secs(10), "the others passive", || {
        (0..c.hosts.len()).all(|i| i == active || c.hosts[i].is_active("web-passive.target"))
    });
    let mut took: Vec<(Fault, Duration)> = Vec::new();
    for _ in 0..ROUNDS {
        for fault in [Fault::Kill, Fault::Stop, Fault::Cut] {
            let pid = c.promd_pid(active);
            let t0 = inject(&c, active, fault);
            let next = c.wait_one_active(Some(active), Duration::from_secs(10));
            let t = elapsed(t0, c.start_after(next, t0));
            eprintln!("{}: web started on n{} after {t:?}", fault.name(), next + 1);
            took.push((fault, t));
            recover(&c, active, fault, pid);
            active = next;
        }
    }

    // No overlap, of either service; the term grows with every new active host.
    let spans = c.check_history();
    let drains: Vec<(String, Vec<Span>)> = (0..c.hosts.len())
        .map(|i| {
            let path = c.span_dir(i).join("drain.log");
            (c.hosts[i].name().to_string(), hosts::read_spans(path))
        })
        .collect();
    hosts::assert_no_overlap(&drains);
    let drain_runs: usize = drains.iter().map(|(_, s)| s.len()).sum();
    assert!(
        spans > 3 * ROUNDS && drain_runs > 3 * ROUNDS,
        "a run per active period: web {spans}, drain {drain_runs}"
    );
    // etcd granted the lease as asked: promd did not warn of a longer one.
    for h in &c.hosts {
        let stretched = h.journal(&["-u", "promd", "--grep", "etcd granted"]);
        assert!(stretched.trim().is_empty(), "{}: {stretched}", h.name());
    }

    // What the README says of a 1 s lease: it leaves PID 1 no time to carry out a kill after
    // the fence's, so promd warns on every host whose groups have units with processes, and
    // names the lease that would (2 s for web.service and drain.service).
    for h in &c.hosts {
        let said = h.journal(&["-u", "promd", "--grep", "too short"]);
        assert!(
            said.contains("lease 1s is too short for the 2 units")
                && said.contains("make lease at least 2s"),
            "{}: no warning that 1 s is too short for its units: {said:?}",
            h.name()
        );
    }
    // `promd check-config` says it beforehand, from the file alone.
    let check = c.hosts[0].exec(&["promd", "check-config"]);
    let notes = String::from_utf8_lossy(&check.stderr);
    assert!(
        check.status.success()
            && notes.contains("note: lease 1s (group web) holds no unit with processes")
            && notes.contains("make lease at least 1s 400ms"),
        "{notes}"
    );

    let late: Vec<String> = took
        .iter()
        .filter(|(f, t)| *t > f.bound())
        .map(|(f, t)| format!("{}: {t:?} (bound {:?})", f.name(), f.bound()))
        .collect();
    assert!(late.is_empty(), "failovers too slow: {late:?}");
}
