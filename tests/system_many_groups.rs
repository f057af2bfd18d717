//! Many groups on one real systemd host (issue 13): promd follows the units of 60 groups, each
//! an active target that pulls in a service of its own, through one subscription to systemd's
//! unit signals. dbus-daemon allows a connection 512 match rules, so promd's must not grow with
//! its groups: going from 1 group to 60 by a reload adds none. And a service of one group that
//! is killed is still restarted in place and counted against that group only; one restarted
//! by hand is no failure; one stopped by hand is one, and is restarted in place too.
//!
//! The match rules are dbus-daemon's own figures (`org.freedesktop.DBus.Debug.Stats`):
//! `GetConnectionStats` → `MatchRules` for each of promd's connections, and
//! `GetAllMatchRules` for what they are.

mod support;

use std::time::Duration;

use support::bus;
use support::cluster::{bus_policy, promctl_bin, promd_bin, promd_unit};
use support::hosts::{self, Host, HostSpec, Net};

const GROUPS: usize = 60;

fn group(i: usize) -> String {
    format!(
        "[[group]]\nname = \"g{i}\"\nactive-target = \"g{i}-active.target\"\nlease = \"4s\"\n\
         restart-backoff = \"200ms\"\n"
    )
}

/// promd's configuration with groups g1..=gN.
fn config(n: usize) -> String {
    let groups: String = (1..=n).map(group).collect();
    format!("node = \"solo\"\n{groups}")
}

fn boot(net: &Net) -> Host {
    let mut spec = HostSpec::new("solo");
    spec.file("/etc/promd/promd.toml", config(1));
    spec.file("/etc/systemd/system/promd.service", promd_unit());
    spec.file(
        "/etc/systemd/system/promd.service.d/test.conf",
        "[Service]\nWatchdogSec=1s\n",
    );
    spec.file("/etc/dbus-1/system.d/org.promd1.conf", bus_policy());
    for i in 1..=GROUPS {
        spec.file(
            &format!("/etc/systemd/system/g{i}-active.target"),
            format!("[Unit]\nWants=g{i}.service\n"),
        );
        spec.file(
            &format!("/etc/systemd/system/g{i}.service"),
            "[Service]\nExecStart=/bin/sleep infinity\n",
        );
    }
    spec.enable("promd.service", "multi-user.target");
    spec.bin(promd_bin());
    spec.bin(promctl_bin());
    net.boot(0, spec)
}

/// The groups of g1..=gN that do not run their service or are not `active` by promd's word,
/// with what systemd and promd say of them.
fn inactive_groups(h: &Host, n: usize) -> Vec<String> {
    let units: Vec<String> = (1..=n).map(|i| format!("g{i}.service")).collect();
    let mut args = vec!["systemctl", "is-active"];
    args.extend(units.iter().map(String::as_str));
    let out = h.exec(&args);
    let states: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let listed = bus::busctl_json(
        h,
        &[
            "call",
            "org.promd1",
            "/org/promd1",
            "org.promd1.Manager",
            "ListGroups",
        ],
    );
    let roles: Vec<(String, String)> = listed["data"][0]
        .as_array()
        .map(|groups| {
            groups
                .iter()
                .map(|g| {
                    let text = |i: usize| g[i].as_str().unwrap_or_default().to_string();
                    (text(0), text(1))
                })
                .collect()
        })
        .unwrap_or_default();
    (1..=n)
        .filter_map(|i| {
            let name = format!("g{i}");
            let unit = states.get(i - 1).map_or("?", String::as_str);
            let role = roles
                .iter()
                .find(|(g, _)| *g == name)
                .map_or("?", |(_, r)| r.as_str());
            (unit != "active" || role != "active")
                .then(|| format!("{name}: service {unit}, role {role}"))
        })
        .collect()
}

/// Waits until g1..=gN all run their service and are `active`; says which are not if not.
fn wait_all_active(h: &Host, n: usize, timeout: Duration) {
    let until = std::time::Instant::now() + timeout;
    loop {
        let missing = inactive_groups(h, n);
        if missing.is_empty() {
            return;
        }
        if std::time::Instant::now() > until {
            let journal = h.journal(&["-u", "promd", "-o", "short-monotonic"]);
            panic!("after {timeout:?}, not every group is active: {missing:#?}\npromd:\n{journal}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The match rules of promd's connections: (total by `GetConnectionStats`, the rules).
fn measure(h: &Host, what: &str) -> (u64, Vec<String>) {
    let names = bus::promd_connections(h);
    let counts: Vec<(String, u64)> = names
        .iter()
        .map(|n| (n.clone(), bus::match_rule_count(h, n)))
        .collect();
    let total = counts.iter().map(|(_, c)| c).sum();
    let rules = bus::match_rules(h, &names);
    eprintln!(
        "{what}: promd's match rules {total} ({counts:?}):\n  {}",
        rules.join("\n  ")
    );
    (total, rules)
}

fn failures(h: &Host, group: &str) -> String {
    h.run_ok(&[
        "busctl",
        "get-property",
        "org.promd1",
        &format!("/org/promd1/group/{group}"),
        "org.promd1.Group",
        "Failures",
    ])
    .trim()
    .to_string()
}

fn main_pid(h: &Host, unit: &str) -> String {
    h.run_ok(&["systemctl", "show", "-P", "MainPID", unit])
        .trim()
        .to_string()
}

#[test]
fn sixty_groups_share_one_subscription_and_a_killed_service_is_restarted_in_place() {
    let net = Net::new(1);
    let h = boot(&net);
    wait_all_active(&h, 1, Duration::from_secs(30));
    let (one, _) = measure(&h, "1 group");

    h.write_file("/etc/promd/promd.toml", config(GROUPS));
    h.run_ok(&["systemctl", "reload", "promd"]);
    wait_all_active(&h, GROUPS, Duration::from_secs(120));
    let (sixty, rules) = measure(&h, "60 groups");
    assert_eq!(sixty, one, "promd's match rules grew with its groups");
    let hub: Vec<&String> = rules
        .iter()
        .filter(|r| r.contains("path_namespace='/org/freedesktop/systemd1/unit'"))
        .collect();
    assert_eq!(
        hub.len(),
        1,
        "one rule for every unit's signals: {rules:#?}"
    );
    assert!(
        !rules
            .iter()
            .any(|r| r.contains("/org/freedesktop/systemd1/unit/")),
        "no rule for a unit of its own: {rules:#?}"
    );

    // A crash of one group's service: restarted in place, counted against that group only.
    let before = main_pid(&h, "g37.service");
    h.run_ok(&["systemctl", "kill", "--signal=KILL", "g37.service"]);
    hosts::wait_until(
        Duration::from_secs(10),
        "g37.service restarted in place",
        || {
            h.is_active("g37.service") && {
                let now = main_pid(&h, "g37.service");
                now != before && now != "0"
            }
        },
    );
    let journal = h.journal(&["-u", "promd", "-o", "cat"]);
    assert!(
        journal.contains("g37.service failed (1 of at most"),
        "{journal}"
    );
    assert_eq!(failures(&h, "g37"), "u 1");
    assert_eq!(failures(&h, "g36"), "u 0");

    // A restart by hand passes through inactive with its start job queued: no failure.
    h.run_ok(&["systemctl", "restart", "g12.service"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(failures(&h, "g12"), "u 0");
    assert!(h.is_active("g12.service"));
    let journal = h.journal(&["-u", "promd", "-o", "cat"]);
    assert!(
        !journal.contains("g12.service failed") && !journal.contains("g12.service is not running"),
        "{journal}"
    );

    // Stopped by hand: a failure of the role, restarted in place.
    h.run_ok(&["systemctl", "stop", "g5.service"]);
    hosts::wait_until(Duration::from_secs(10), "g5.service back", || {
        h.is_active("g5.service") && failures(&h, "g5") == "u 1"
    });
    let journal = h.journal(&["-u", "promd", "-o", "cat"]);
    assert!(
        journal.contains("g5.service is not running, though nobody failed it"),
        "{journal}"
    );

    let missing = inactive_groups(&h, GROUPS);
    assert!(missing.is_empty(), "every group stays active: {missing:#?}");
    let (after, _) = measure(&h, "60 groups, after the failures");
    assert_eq!(after, one);
    assert_eq!(
        h.run_ok(&["systemctl", "show", "-P", "NRestarts", "promd"])
            .trim(),
        "0",
        "promd was never restarted"
    );
}
