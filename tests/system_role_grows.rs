//! A role that grows while it is active: a user adds services to active roles by a drop-in in
//! `/etc/systemd/system/gN-active.target.d/`, runs `systemctl daemon-reload`, and starts
//! the targets again (`systemctl start gN-active.target`: an active target's start starts
//! what it wants now), as one does to add a service to a running role. promd follows the
//! reload (docs/safety.md, "A role grows through promd too"): it walks every group's closure
//! again about a second later, binds the new services to promd and counts them in its fence
//! load. Three real systemd hosts and a 3-member etcd, five groups at a 5 s lease, promd as
//! the shipped unit (watchdog included).
//!
//! What a user would check: `systemctl show -P BindsTo` of each new service names
//! promd.service; the journal says the new fence load; when the host is cut off silently,
//! each new service is down there before another host starts it (their run spans, on one
//! clock), and no promd was restarted by its watchdog; and a `kill -9` of promd on a host
//! takes the services added there down with it (`BindsTo=`, `promd fence`), before the
//! restarted promd could have swept them.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::etcd::EtcdCluster;
use support::groups::{self, mono_us};
use support::hosts::{self, Host, Net, Span};

const HOSTS: usize = 3;
const GROUPS: usize = 5;
const LEASE: Duration = Duration::from_secs(5);
/// Services added to each role while it is active, in each of the two rounds.
const EXTRA: usize = 3;
/// The longest promd may take to bind a service added by a reload: its quiet second, the
/// walk, and a loaded two-core machine that runs three hosts.
const BIND_BOUND: Duration = Duration::from_secs(10);

/// The services of round `round` (`x`, `y`) added to group `g`'s role.
fn added(g: usize, round: char) -> Vec<String> {
    (1..=EXTRA)
        .map(|k| format!("g{g}-{round}{k}.service"))
        .collect()
}

/// The drop-in that adds round `round`'s services to `g`'s active target.
fn grow(h: &Host, g: usize, round: char) {
    h.write_file(
        &format!("/etc/systemd/system/g{g}-active.target.d/50-{round}.conf"),
        format!("[Unit]\nWants={}\n", added(g, round).join(" ")),
    );
}

/// The groups whose active (`.0`) and passive (`.1`) targets are up on `h`.
fn roles(h: &Host) -> (BTreeSet<usize>, BTreeSet<usize>) {
    groups::parse_roles(&h.run_ok(&groups::ROLES_COMMAND))
}

/// Every group active on one host and passive on the others.
fn settled(hosts: &[Host]) -> bool {
    let all: Vec<_> = hosts.iter().map(roles).collect();
    (1..=GROUPS).all(|g| {
        all.iter().filter(|(a, _)| a.contains(&g)).count() == 1
            && all.iter().filter(|(_, p)| p.contains(&g)).count() == HOSTS - 1
    })
}

/// Each unit's `ActiveState` and `BindsTo=` on `h`, in one `systemctl show`.
fn states(h: &Host, units: &[String]) -> BTreeMap<String, (String, String)> {
    let mut args = vec!["systemctl", "show", "-p", "Id,ActiveState,BindsTo"];
    args.extend(units.iter().map(String::as_str));
    let mut found = BTreeMap::new();
    for block in h.run_ok(&args).split("\n\n") {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or("")
                .to_string()
        };
        found.insert(field("Id"), (field("ActiveState"), field("BindsTo")));
    }
    found
}

/// Wait until each of `units` runs on `h` and is bound to promd; how long that took.
fn wait_bound(h: &Host, units: &[String]) -> Duration {
    let began = Instant::now();
    hosts::wait_until(
        BIND_BOUND,
        "the added services running and bound to promd",
        || {
            let s = states(h, units);
            units.iter().all(|u| {
                s.get(u).is_some_and(|(active, binds)| {
                    active == "active" && binds.split_whitespace().any(|b| b == "promd.service")
                })
            })
        },
    );
    began.elapsed()
}

/// promd restarts on `h`: [`Host::promd_restarts`].
fn restarts(h: &Host) -> (u64, usize) {
    h.promd_restarts()
}

/// promd's journal lines on `h` that contain `what`, with their CLOCK_MONOTONIC µs.
fn said(h: &Host, what: &str) -> Vec<(u64, String)> {
    h.journal(&["-u", "promd.service", "-o", "short-monotonic"])
        .lines()
        .filter(|l| l.contains(what))
        .filter_map(|line| {
            let (ts, rest) = line.trim_start_matches('[').split_once(']')?;
            let at_us = (ts.trim().parse::<f64>().ok()? * 1e6) as u64;
            Some((at_us, rest.trim().to_string()))
        })
        .collect()
}

/// The spans of `unit` on each host.
fn spans_of(spans: &[tempfile::TempDir], names: &[String], unit: &str) -> Vec<(String, Vec<Span>)> {
    groups::spans_per_host(spans, names, unit.trim_end_matches(".service"))
}

/// Grow the roles of `groups` on every host (drop-in, `daemon-reload`), the active host
/// `active` last, whose targets are then started again; returns when its `daemon-reload`
/// returned (CLOCK_MONOTONIC µs) and how long until every new service ran bound to promd.
fn grow_roles(
    hosts: &[Host],
    active: usize,
    groups: &BTreeSet<usize>,
    round: char,
) -> (u64, Duration) {
    let order = (0..HOSTS).filter(|&i| i != active).chain([active]);
    let mut reloaded = 0;
    for i in order {
        for &g in groups {
            grow(&hosts[i], g, round);
        }
        hosts[i].run_ok(&["systemctl", "daemon-reload"]);
        reloaded = mono_us();
    }
    let targets: Vec<String> = groups
        .iter()
        .map(|g| format!("g{g}-active.target"))
        .collect();
    let mut start = vec!["systemctl", "start"];
    start.extend(targets.iter().map(String::as_str));
    hosts[active].run_ok(&start);
    let units: Vec<String> = groups.iter().flat_map(|&g| added(g, round)).collect();
    let took = wait_bound(&hosts[active], &units);
    (reloaded, took)
}

#[test]
fn services_added_to_active_roles_are_bound_counted_and_fenced() {
    let net = Net::new(HOSTS);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let spans: Vec<tempfile::TempDir> = (0..HOSTS)
        .map(|_| tempfile::tempdir().expect("span dir"))
        .collect();
    let specs = (0..HOSTS)
        .map(|i| {
            let mut spec =
                groups::host_spec(&net, i, &etcd, GROUPS, LEASE, Some(spans[i].path()), false);
            // Every host has the services; only the drop-ins below put them in the roles.
            for g in 1..=GROUPS {
                for unit in added(g, 'x').into_iter().chain(added(g, 'y')) {
                    let log = format!("/spans/{}.log", unit.trim_end_matches(".service"));
                    spec.file(
                        &format!("/etc/systemd/system/{unit}"),
                        hosts::span_unit(&unit, &format!("g{g}"), &log),
                    );
                }
            }
            spec
        })
        .collect();
    let hosts = net.boot_all(specs);
    let names: Vec<String> = hosts.iter().map(|h| h.name().to_string()).collect();

    // promd on the first host alone, which so takes every group; then on the others.
    hosts[0].run_ok(&["systemctl", "start", "promd"]);
    hosts::wait_until(Duration::from_secs(60), "every group active on n1", || {
        roles(&hosts[0]).0.len() == GROUPS
    });
    groups::start_promd_everywhere(&hosts[1..]);
    hosts::wait_until(Duration::from_secs(60), "every group settled", || {
        settled(&hosts)
    });
    let base = "fence load: 5 units with processes";
    for h in &hosts {
        hosts::wait_until(Duration::from_secs(10), "the first fence load said", || {
            !said(h, base).is_empty()
        });
    }

    // Round x: three services more in each role, on every host; the roles are active on n1.
    let all: BTreeSet<usize> = (1..=GROUPS).collect();
    let (reloaded, took) = grow_roles(&hosts, 0, &all, 'x');
    eprintln!("n1: the added services ran bound to promd {took:?} after the daemon-reload");
    // Each host walked again once (its own reload) and says the new count.
    let grown = format!("fence load: {} units with processes", GROUPS * (1 + EXTRA));
    for h in &hosts {
        hosts::wait_until(BIND_BOUND, "the new fence load said", || {
            !said(h, &grown).is_empty()
        });
    }
    let walks = said(&hosts[0], "systemd reloaded: walked");
    for (at_us, line) in &walks {
        eprintln!(
            "n1: {line} (journalled {:?} after the daemon-reload returned)",
            Duration::from_micros(at_us.saturating_sub(reloaded))
        );
    }
    // promd's own reloads (the new drop-ins) did not set off walks of their own.
    assert_eq!(walks.len(), 1, "one walk for one reload: {walks:?}");
    // The bound services are the role's: promd stops and kills them with it.
    let dropin = hosts[0]
        .read_file("/run/systemd/system/g1-x1.service.d/50-promd-g1.conf")
        .expect("the binding drop-in");
    assert!(dropin.contains("BindsTo=promd.service"), "{dropin}");

    // A silent cut of n1, as the hundreds test does.
    let began = Instant::now();
    hosts[0].cut();
    let (t_cut, t_cut_mono) = (hosts::now_ns(), mono_us());
    eprintln!("the cut took {:?} to be in force", began.elapsed());
    hosts::wait_until(LEASE * 4, "every group active on another host", || {
        let elsewhere: BTreeSet<usize> = (1..HOSTS).flat_map(|i| roles(&hosts[i]).0).collect();
        elsewhere.len() == GROUPS
    });
    hosts::wait_until(LEASE * 2, "the cut host's active targets stopped", || {
        roles(&hosts[0]).0.is_empty()
    });
    hosts[0].heal();
    // Every service of every role, the added ones included: down on the cut host before
    // another host started it, and started on another host after the cut.
    let mut took_down = Vec::new();
    for g in 1..=GROUPS {
        let mut units = added(g, 'x');
        units.push(format!("g{g}.service"));
        for unit in &units {
            let spans = spans_of(&spans, &names, unit);
            hosts::assert_no_overlap(&spans);
            let last = spans[0].1.last().copied();
            let stop = last.and_then(|s| s.stop_ns);
            assert!(
                stop.is_some(),
                "n1: {unit} not down after the cut: {last:?}"
            );
            let elsewhere = spans[1..]
                .iter()
                .flat_map(|(_, s)| s.iter())
                .any(|s| s.start_ns >= t_cut);
            assert!(
                elsewhere,
                "{unit} did not start on another host after the cut"
            );
            took_down.push(Duration::from_nanos(
                stop.unwrap_or(0).saturating_sub(t_cut),
            ));
        }
    }
    took_down.sort();
    let fenced = said(&hosts[0], "lease not renewed in time");
    eprintln!(
        "n1's {} services down {:?} to {:?} after the cut; its fence lines at {:?} after it",
        took_down.len(),
        took_down.first(),
        took_down.last(),
        fenced
            .iter()
            .filter(|(at, _)| *at >= t_cut_mono)
            .map(|(at, _)| Duration::from_micros(at - t_cut_mono))
            .min()
    );
    for (i, h) in hosts.iter().enumerate() {
        assert_eq!(restarts(h), (0, 0), "{}: promd restarted", names[i]);
    }

    // Round y on the host with most groups now: three services more in each of its roles,
    // then `kill -9` of its promd. They go down with promd (`BindsTo=`, and `promd fence`
    // kills what is bound), before the restarted promd (`RestartSec=1s`) could sweep them.
    hosts::wait_until(
        Duration::from_secs(60),
        "settled again after the heal",
        || settled(&hosts),
    );
    let b = (1..HOSTS)
        .max_by_key(|&i| roles(&hosts[i]).0.len())
        .unwrap_or(1);
    let theirs = roles(&hosts[b]).0;
    let (_, took) = grow_roles(&hosts, b, &theirs, 'y');
    eprintln!(
        "{}: {} added services ran bound to promd {took:?} after the daemon-reload",
        names[b],
        theirs.len() * EXTRA
    );
    let pid = hosts[b].pid_on_machine("promd").expect("promd runs");
    let t_kill = hosts::now_ns();
    hosts[b].signal(pid, Signal::SIGKILL);
    let units: Vec<String> = theirs.iter().flat_map(|&g| added(g, 'y')).collect();
    let stopped = |unit: &String| -> Option<u64> {
        let log = unit.trim_end_matches(".service");
        hosts::read_spans(spans[b].path().join(format!("{log}.log")))
            .last()
            .and_then(|s| s.stop_ns)
    };
    hosts::wait_until(Duration::from_secs(10), "the added services down", || {
        units
            .iter()
            .all(|u| stopped(u).is_some_and(|s| s >= t_kill))
    });
    let late: Vec<String> = units
        .iter()
        .filter_map(|u| {
            let after = Duration::from_nanos(stopped(u)?.saturating_sub(t_kill));
            (after >= Duration::from_secs(1)).then(|| format!("{u} {after:?}"))
        })
        .collect();
    let last = units
        .iter()
        .filter_map(stopped)
        .max()
        .map(|s| Duration::from_nanos(s.saturating_sub(t_kill)));
    eprintln!(
        "{}: the last added service down {last:?} after kill -9",
        names[b]
    );
    assert!(
        late.is_empty(),
        "down only after promd could be back: {late:?}"
    );
    hosts::wait_until(Duration::from_secs(60), "settled after the kill", || {
        settled(&hosts)
    });
    for unit in &units {
        hosts::assert_no_overlap(&spans_of(&spans, &names, unit));
    }
}
