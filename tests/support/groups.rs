//! Hosts with many groups (issue 13), shared by `tests/system_hundreds_of_groups.rs` and
//! `benches/groups.rs`: group `gN` has its own active and passive targets (each conflicting
//! with the other) and, if asked, a service `gN.service` that records its run spans under
//! `/spans`; promd runs as the shipped unit with a 3-member etcd, not enabled, so that the
//! caller starts it on every host at once.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

use super::cluster::{bus_policy, promctl_bin, promd_bin, promd_unit};
use super::etcd::EtcdCluster;
use super::hosts::{self, Host, HostSpec, Net, Span, nsenter_command};

/// CLOCK_MONOTONIC in µs: the clock of systemd's `*TimestampMonotonic` properties and of
/// `journalctl -o short-monotonic` (the hosts share this machine's kernel and have no time
/// namespace of their own).
pub fn mono_us() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000
}

/// The spec of host `i` (`n{i+1}`) of `net` with `groups` groups of lease `lease`, reaching
/// `etcd` through its gateway; with `spans`, each group's active target pulls in
/// `gN.service`, which records its spans in `/spans/gN.log` (bound to `spans`). If
/// `preferred`, every group has priority 200 and `preempt = true` on this host (100, the
/// default, elsewhere): it takes every group, also those another host won while its promd
/// was still starting.
pub fn host_spec(
    net: &Net,
    i: usize,
    etcd: &EtcdCluster,
    groups: usize,
    lease: Duration,
    spans: Option<&std::path::Path>,
    preferred: bool,
) -> HostSpec {
    let name = format!("n{}", i + 1);
    let eps: Vec<String> = etcd
        .endpoints_via(net.gateway_ip(i))
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect();
    let mut toml = format!(
        "node = \"{name}\"\n[store]\nkind = \"etcd\"\nendpoints = [{}]\n\
         connect-timeout = \"500ms\"\n",
        eps.join(", ")
    );
    let mut spec = HostSpec::new(&name);
    for g in 1..=groups {
        let _ = write!(
            toml,
            "\n[[group]]\nname = \"g{g}\"\nactive-target = \"g{g}-active.target\"\n\
             passive-target = \"g{g}-passive.target\"\nlease = \"{}ms\"\n\
             {}",
            lease.as_millis(),
            if preferred {
                "priority = 200\npreempt = true\n"
            } else {
                ""
            }
        );
        let wants = if spans.is_some() {
            format!("Wants=g{g}.service\n")
        } else {
            String::new()
        };
        spec.file(
            &format!("/etc/systemd/system/g{g}-active.target"),
            format!("[Unit]\nDescription=g{g}: active\n{wants}Conflicts=g{g}-passive.target\n"),
        );
        spec.file(
            &format!("/etc/systemd/system/g{g}-passive.target"),
            format!("[Unit]\nDescription=g{g}: passive\nConflicts=g{g}-active.target\n"),
        );
        if spans.is_some() {
            spec.file(
                &format!("/etc/systemd/system/g{g}.service"),
                hosts::span_unit(
                    &format!("g{g}.service"),
                    &format!("g{g}"),
                    &format!("/spans/g{g}.log"),
                ),
            );
        }
    }
    spec.file("/etc/promd/promd.toml", toml);
    // As shipped (watchdog included), not enabled: the caller starts it.
    spec.file("/etc/systemd/system/promd.service", promd_unit());
    spec.file("/etc/dbus-1/system.d/org.promd1.conf", bus_policy());
    spec.bin(promd_bin());
    spec.bin(promctl_bin());
    if let Some(dir) = spans {
        spec.bind_rw(dir, "/spans");
    }
    spec
}

/// `systemctl start --no-block promd` on every host at once; panics if one fails.
pub fn start_promd_everywhere(hosts: &[Host]) {
    let starts: Vec<_> = hosts
        .iter()
        .map(|h| {
            nsenter_command(
                h.init_pid(),
                &["systemctl", "start", "--no-block", "promd"],
                Duration::from_secs(30),
            )
            .spawn()
            .expect("nsenter")
        })
        .collect();
    for (h, child) in hosts.iter().zip(starts) {
        let out = child.wait_with_output().expect("wait for nsenter");
        assert!(
            out.status.success(),
            "{}: systemctl start promd: {}",
            h.name(),
            out.status
        );
    }
}

/// The command that lists a host's active group targets; [`parse_roles`] reads its output.
pub const ROLES_COMMAND: [&str; 8] = [
    "systemctl",
    "list-units",
    "--plain",
    "--no-legend",
    "--state=active",
    "--type=target",
    "g*-active.target",
    "g*-passive.target",
];

/// The groups whose active (`.0`) and passive (`.1`) targets are up, from the output of
/// [`ROLES_COMMAND`].
pub fn parse_roles(list_units: &str) -> (BTreeSet<usize>, BTreeSet<usize>) {
    let (mut active, mut passive) = (BTreeSet::new(), BTreeSet::new());
    for unit in list_units
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        let Some(rest) = unit.strip_prefix('g') else {
            continue;
        };
        if let Some(n) = rest.strip_suffix("-active.target") {
            active.extend(n.parse::<usize>().ok());
        } else if let Some(n) = rest.strip_suffix("-passive.target") {
            passive.extend(n.parse::<usize>().ok());
        }
    }
    (active, passive)
}

/// The spans each host recorded in `/spans/{log}.log` (`log` without `.log`, e.g. `g7`), as
/// `(host name, spans)`: `spans[i]` is the directory bound to host `names[i]`'s `/spans`.
pub fn spans_per_host(
    spans: &[tempfile::TempDir],
    names: &[String],
    log: &str,
) -> Vec<(String, Vec<Span>)> {
    names
        .iter()
        .zip(spans)
        .map(|(n, d)| {
            (
                n.clone(),
                hosts::read_spans(d.path().join(format!("{log}.log"))),
            )
        })
        .collect()
}
