//! Issue 14: "The HTTP listener under 200 slow clients leaves fencing and failover times
//! unchanged." Three real systemd hosts, a 3-member etcd, `[http] listen` on every host, a
//! 2 s lease. Each unplanned fault is injected on the active host first without, then with
//! a flood of slow clients: 200 held open against the active host's HTTP port and 50 against
//! each other host, half sending nothing, half dribbling a header a byte every 100 ms
//! (`support::http_load`). A normal client per host polls `/v1/groups/web/active` every
//! 100 ms, and a D-Bus call answered by promd's event loop probes each host every 500 ms,
//! throughout.
//!
//! - A silent cut of the active host from the store and its peers. Its HTTP port stays
//!   reachable (`Host::cut_except_tcp_port`), so the flood and the polls keep arriving while
//!   it fences: its service must be dead before its lease can end (`s + L`, `s` the send
//!   time of its last acknowledged renewal, which its `/metrics` gives), and another host
//!   active within `L + 1 s`.
//! - kill -9 of promd on the active host: another host active within `L + 1 s`, the killed
//!   host's service dead before its lease can end.
//!
//! Every run of the service is recorded on the one realtime clock the hosts share (the span
//! logs): no two hosts' runs overlap. Every poll and every D-Bus probe is answered, except
//! those to a host while its promd is dead; no promd's watchdog ever fires (journal,
//! `NRestarts` counts only the kills). The measured times, with and without the flood, are
//! printed; they are not compared with each other, as this machine is shared and noisy.

mod support;

use std::time::Duration;

use support::cluster::{Cluster, elapsed};
use support::hosts::{self, Host, Signal};
use support::http::{PORT, get_from_machine, try_get_from_machine};
use support::http_load::{Observers, Sample, SlowClients, Target};

const LEASE: Duration = Duration::from_secs(2);
/// The bound for an unplanned failover.
const FAILOVER_BOUND: Duration = Duration::from_millis(LEASE.as_millis() as u64 + 1000);
/// Slow clients against the active host, and against each other host.
const ON_ACTIVE: usize = 200;
const ON_OTHERS: usize = 50;
/// Each fault, each way, this many times.
const ROUNDS: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Cut,
    Kill,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Cut => "silent cut",
            Fault::Kill => "kill -9 promd",
        }
    }
}

/// One fault, as measured from the moment it took effect (`t0`).
struct Measured {
    fault: Fault,
    flood: bool,
    /// The old host's service recorded its stop.
    fenced: Duration,
    /// Its lease could end (`s + L`).
    lease_end: Duration,
    /// Another host's service started.
    failover: Duration,
    /// The normal clients' requests and the D-Bus probes from the flood's start to the
    /// recovery.
    polls: Vec<Sample>,
    probes: Vec<Sample>,
}

/// The slow clients: [`ON_ACTIVE`] against the active host `a`, [`ON_OTHERS`] against each
/// other one; returned once steady, with the active host holding them.
fn flood(c: &Cluster, a: usize) -> SlowClients {
    let targets = c
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| Target::host(h, PORT, if i == a { ON_ACTIVE } else { ON_OTHERS }))
        .collect();
    let load = SlowClients::start(targets);
    load.wait_steady(Duration::from_secs(30));
    let held = established(&c.hosts[a]);
    assert!(
        held >= ON_ACTIVE,
        "{} holds {held} connections on port {PORT}, not the {ON_ACTIVE} slow clients\n  {}",
        c.hosts[a].name(),
        load.summary()
    );
    eprintln!(
        "flood steady, {} holds {held} connections on port {PORT}:\n  {}",
        c.hosts[a].name(),
        load.summary()
    );
    load
}

/// Established TCP connections to the host's HTTP port, as its kernel counts them.
fn established(h: &Host) -> usize {
    let filter = format!("( sport = :{PORT} )");
    h.run_ok(&["ss", "-Htn", "state", "established", &filter])
        .lines()
        .count()
}

/// When the host's lease can end at the earliest (realtime ns): `s + L`, `s` the send time of
/// its last acknowledged renewal, from `promd_group_lease_renewal_age_seconds` (the time since
/// `s` when promd answered). Counted from when the request was sent, so never later than the
/// real `s + L`; a renewal acknowledged after this call only makes the real one later.
fn lease_end(h: &Host) -> u64 {
    const AGE: &str = "promd_group_lease_renewal_age_seconds{group=\"web\"}";
    let sent = hosts::now_ns();
    let (code, text) = get_from_machine(h, "/metrics");
    assert_eq!(code, 200, "{}: /metrics: {text}", h.name());
    let age = text
        .lines()
        .find_map(|l| l.strip_prefix(AGE)?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{}: no {AGE} in:\n{text}", h.name()));
    sent - Duration::from_secs_f64(age).as_nanos() as u64 + LEASE.as_nanos() as u64
}

/// The stop of the run of the service that ran on host `i` at `t0` (realtime ns).
fn stop_of_run_at(c: &Cluster, i: usize, t0: u64) -> u64 {
    let spans = c.spans();
    let (name, spans) = &spans[i];
    spans
        .iter()
        .find(|s| s.start_ns < t0 && s.end_ns() >= t0)
        .and_then(|s| s.stop_ns)
        .unwrap_or_else(|| panic!("{name}: no run that stopped after the fault: {spans:?}"))
}

/// Waits until `a` runs the service, every other host its passive target, and `a` answers
/// 200 on `/active`.
fn settle(c: &Cluster, a: usize) {
    hosts::wait_until(
        Duration::from_secs(30),
        "one active host, the others passive",
        || {
            c.active_hosts() == [a]
                && (0..c.hosts.len()).all(|i| i == a || c.hosts[i].is_active("web-passive.target"))
        },
    );
    hosts::wait_until(
        Duration::from_secs(30),
        "/active is 200 on the active host, every promd healthy (store connected)",
        || {
            let ok = |h: &Host, path: &str| {
                try_get_from_machine(h, path).is_ok_and(|(code, _)| code == 200)
            };
            ok(&c.hosts[a], "/v1/groups/web/active") && c.hosts.iter().all(|h| ok(h, "/v1/health"))
        },
    );
}

/// Waits until promd on host `i` answers again over HTTP and D-Bus.
fn wait_answers(c: &Cluster, i: usize) {
    let h = &c.hosts[i];
    hosts::wait_until(
        Duration::from_secs(30),
        "promd answers over HTTP and D-Bus",
        || {
            let bus = h.exec_timeout(
                &support::cluster::group_prop_command("Role"),
                Duration::from_secs(5),
            );
            bus.status.success()
                && try_get_from_machine(h, "/v1/health").is_ok_and(|(code, _)| code == 200)
        },
    );
}

/// Injects `fault` on the active host `a`, with or without the flood; checks the fence, the
/// failover and what the observers saw; returns the measurement and the new active host.
fn run(
    c: &Cluster,
    obs: &Observers,
    a: usize,
    fault: Fault,
    with_flood: bool,
) -> (Measured, usize) {
    settle(c, a);
    let from_ns = hosts::now_ns();
    let load = with_flood.then(|| flood(c, a));
    let h = &c.hosts[a];
    hosts::wait_until(
        Duration::from_secs(10),
        "a poll of the active host answered 200",
        || {
            obs.polls(from_ns, u64::MAX)
                .iter()
                .any(|s| s.host == a && s.answer == Ok(200))
        },
    );
    let (t0, lease_end_ns, pid) = match fault {
        Fault::Cut => {
            h.cut_except_tcp_port(PORT);
            // From the moment the cut is in force; no renewal is acknowledged after it.
            let t0 = hosts::now_ns();
            (t0, lease_end(h), None)
        }
        Fault::Kill => {
            let end = lease_end(h);
            let pid = c.promd_pid(a);
            let t0 = hosts::now_ns();
            h.signal(pid, Signal::SIGKILL);
            (t0, end, Some(pid))
        }
    };
    let b = c.wait_one_active(Some(a), FAILOVER_BOUND + Duration::from_secs(5));
    let started = c.start_after(b, t0);
    hosts::wait_until(
        Duration::from_secs(10),
        "the old host's service stopped",
        || !h.is_active("web.service"),
    );
    let stopped = stop_of_run_at(c, a, t0);
    // Back to three hosts; promd's dead time on the killed host is when nothing need answer.
    let dead = match (fault, pid) {
        (Fault::Kill, Some(pid)) => {
            c.wait_promd_back(a, pid);
            wait_answers(c, a);
            Some((t0, hosts::now_ns()))
        }
        _ => {
            h.heal();
            hosts::wait_until(
                Duration::from_secs(30),
                "the cut host passive again",
                || h.is_active("web-passive.target"),
            );
            None
        }
    };
    drop(load);
    let to_ns = hosts::now_ns();
    let m = Measured {
        fault,
        flood: with_flood,
        fenced: elapsed(t0, stopped),
        lease_end: elapsed(t0, lease_end_ns),
        failover: elapsed(t0, started),
        polls: obs.polls(from_ns, to_ns),
        probes: obs.probes(from_ns, to_ns),
    };
    let what = format!(
        "{}{} on {}",
        fault.name(),
        if with_flood { " under the flood" } else { "" },
        h.name()
    );
    eprintln!(
        "{what}: fenced after {} ms, its lease could end after {} ms; {} active after {} ms",
        m.fenced.as_millis(),
        m.lease_end.as_millis(),
        c.hosts[b].name(),
        m.failover.as_millis()
    );
    assert!(
        stopped < lease_end_ns,
        "{what}: its service stopped {} ms after the fault, its lease could end after {} ms",
        m.fenced.as_millis(),
        m.lease_end.as_millis()
    );
    assert!(
        stopped <= started,
        "{what}: {} started the service before {} had stopped it\n{}",
        c.hosts[b].name(),
        h.name(),
        hosts::timeline(&c.spans())
    );
    assert!(
        m.failover <= FAILOVER_BOUND,
        "{what}: another host active after {:?}, bound {FAILOVER_BOUND:?}",
        m.failover
    );
    let in_dead = |s: &Sample| {
        dead.is_some_and(|(from, to)| s.host == a && s.end_ns() >= from && s.sent_ns <= to)
    };
    let unanswered = |samples: &[Sample]| -> Vec<String> {
        samples
            .iter()
            .filter(|s| s.answer.is_err() && !in_dead(s))
            .map(|s| {
                format!(
                    "{} at {:+} ms: {:?}",
                    c.hosts[s.host].name(),
                    (s.sent_ns as i64 - t0 as i64) / 1_000_000,
                    s.answer
                )
            })
            .collect()
    };
    let missed = unanswered(&m.polls);
    assert!(
        missed.is_empty(),
        "{what}: polls of /active without an answer:\n  {}",
        missed.join("\n  ")
    );
    let missed = unanswered(&m.probes);
    assert!(
        missed.is_empty(),
        "{what}: D-Bus probes without an answer:\n  {}",
        missed.join("\n  ")
    );
    // The balancer saw the flooded active host active up to the fault.
    let before: Vec<&Sample> = m
        .polls
        .iter()
        .filter(|s| s.host == a && s.end_ns() < t0)
        .collect();
    assert!(
        !before.is_empty() && before.iter().all(|s| s.answer == Ok(200)),
        "{what}: /active on {} before the fault: {:?}",
        h.name(),
        before.iter().map(|s| &s.answer).collect::<Vec<_>>()
    );
    (m, b)
}

/// promd restarts on `h`: [`Host::promd_restarts`].
fn restarts(h: &Host) -> (u64, usize) {
    h.promd_restarts()
}

/// Milliseconds of the `q` quantile (0..=1) of the answered samples' durations.
fn quantile_ms(samples: &[Sample], q: f64) -> f64 {
    let mut took: Vec<Duration> = samples
        .iter()
        .filter(|s| s.answer.is_ok())
        .map(|s| s.took)
        .collect();
    took.sort();
    match took.len() {
        0 => f64::NAN,
        n => took[((n - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0,
    }
}

fn report(all: &[Measured]) -> String {
    let mut out = String::from(
        "fault            flood  fenced  lease end  headroom  failover  /active p50/max   \
         D-Bus p50/max\n",
    );
    for m in all {
        out.push_str(&format!(
            "{:<16} {:<5} {:>7} {:>10} {:>9} {:>9} {:>8.1}/{:<7.1} {:>7.1}/{:<7.1}\n",
            m.fault.name(),
            if m.flood { "yes" } else { "no" },
            m.fenced.as_millis(),
            m.lease_end.as_millis(),
            m.lease_end.saturating_sub(m.fenced).as_millis(),
            m.failover.as_millis(),
            quantile_ms(&m.polls, 0.5),
            quantile_ms(&m.polls, 1.0),
            quantile_ms(&m.probes, 0.5),
            quantile_ms(&m.probes, 1.0),
        ));
    }
    out.push_str(
        "(ms after the fault; headroom: from the service's stop to the lease's end, which does \
         not depend on where in the renewal cycle the fault fell; latencies: answered requests)\n",
    );
    out
}

#[test]
fn slow_clients_leave_fencing_and_failover_unchanged() {
    let (_net, _etcd, c) = support::http::boot("0.0.0.0:8008", LEASE);
    let mut active = c.wait_one_active(None, Duration::from_secs(30));
    let observers = Observers::start(&c.hosts, PORT);
    let mut kills = vec![0u64; c.hosts.len()];
    let mut all = Vec::new();
    for _ in 0..ROUNDS {
        for fault in [Fault::Cut, Fault::Kill] {
            for with_flood in [false, true] {
                if fault == Fault::Kill {
                    kills[active] += 1;
                }
                let (m, next) = run(&c, &observers, active, fault, with_flood);
                all.push(m);
                active = next;
            }
        }
    }
    drop(observers);
    eprintln!("{}", report(&all));
    for (i, h) in c.hosts.iter().enumerate() {
        let (n, timeouts) = restarts(h);
        eprintln!(
            "{}: NRestarts {n} (kill -9: {}), watchdog timeouts {timeouts}",
            h.name(),
            kills[i]
        );
        assert_eq!(timeouts, 0, "{}: promd's watchdog fired", h.name());
        assert_eq!(
            n,
            kills[i],
            "{}: promd restarted other than by the kills",
            h.name()
        );
    }
    let spans = c.check_history();
    eprintln!("{spans} runs of the service, none overlapping");
}
