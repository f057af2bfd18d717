//! `promctl import-prom` end to end: the files generated from a PROM `config.json` for
//! replicas 0 and 1, installed on two real systemd hosts (nspawn containers) with a real etcd,
//! run the old ensure scripts under promd: one host runs the app, and when that host is cut
//! off the other one runs it within the lease and a little, after the cut host stopped it.
//!
//! The ensure scripts are a stand-in (`fixtures/prom/ensureRunning.sh`) that starts and stops
//! a real process, `votingapp-work`, with a pidfile. Replica 1's commands use shell syntax
//! (`&&`, `$(...)`, `%`, a redirection to a file name with a quote and a space), so the
//! `/bin/sh -c '...'` quoting is checked by systemd itself. Needs root; run with
//! `--test-threads=1`.

mod support;

use std::time::{Duration, Instant};

use promd::config;
use promd::migrate::import_prom;
use support::cluster::{bus_policy, promd_bin, promd_unit};
use support::etcd::EtcdCluster;
use support::hosts::{self, Host, HostSpec, Net};

const SAMPLE: &str = include_str!("fixtures/prom/system-config.json");
const ENSURE_SCRIPT: &str = include_str!("fixtures/prom/ensureRunning.sh");
/// The stand-in app's process name (what the script runs `sleep` as).
const APP: &str = "votingapp-work";
/// `prom-timeout` in the sample.
const LEASE: Duration = Duration::from_secs(2);
/// How much later than the lease the other host may start the app after a cut.
const FAILOVER_SLACK: Duration = Duration::from_secs(4);

/// Replaces the generated `endpoints` (the MUSIC hosts) with the test's etcd: the step the
/// migration notes tell operators to take.
fn point_at_etcd(toml: &str, endpoints: &[String]) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let mut replaced = 0;
    let lines: Vec<String> = toml
        .lines()
        .map(|line| {
            if line.starts_with("endpoints = ") {
                replaced += 1;
                format!("endpoints = [{}]", list.join(", "))
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert_eq!(replaced, 1, "one `endpoints` line in:\n{toml}");
    lines.join("\n") + "\n"
}

/// A host for `replica`, with exactly the generated files (endpoints adjusted), the stand-in
/// script, and the shipped promd.service (promd fits its watchdog to the 2s lease itself).
fn spec(replica: usize, net: &Net, etcd: &EtcdCluster) -> HostSpec {
    let migration = import_prom(SAMPLE, &replica.to_string()).expect("the sample imports");
    let mut spec = HostSpec::new(&format!("replica{replica}"));
    for (path, text) in &migration.files {
        let name = path.to_str().expect("UTF-8 file name");
        if name == "promd.toml" {
            let toml = point_at_etcd(text, &etcd.endpoints_via(net.gateway_ip(replica)));
            if let Err(e) = config::parse(&toml, "promd.toml") {
                panic!("adjusted promd.toml is invalid:\n{e}\n{toml}");
            }
            spec.file("/etc/promd/promd.toml", toml);
        } else {
            spec.file(&format!("/etc/systemd/system/{name}"), text);
        }
    }
    spec.executable("/opt/app/ensureRunning.sh", ENSURE_SCRIPT);
    spec.file("/etc/systemd/system/promd.service", promd_unit());
    spec.file(
        "/etc/systemd/system/promd.service.d/restart.conf",
        "[Service]\nRestartSec=200ms\n",
    );
    spec.enable("promd.service", "multi-user.target");
    spec.file("/etc/dbus-1/system.d/org.promd1.conf", bus_policy());
    spec.bin(promd_bin());
    spec
}

fn runs_app(h: &Host) -> bool {
    !h.pids_on_machine(APP).is_empty()
}

#[test]
fn imported_prom_config_keeps_one_active_and_fails_over_on_cut() {
    let net = Net::new(2);
    let etcd = EtcdCluster::start(1, &net.gateway_ips());
    let hosts = net.boot_all(vec![spec(0, &net, &etcd), spec(1, &net, &etcd)]);

    // Exactly one host runs the app, from the active target; the other ran its passive script.
    let mut active = usize::MAX;
    hosts::wait_until(
        Duration::from_secs(60),
        "exactly one host runs the app, the other is passive",
        || {
            let running: Vec<usize> = (0..2).filter(|&i| runs_app(&hosts[i])).collect();
            let [a] = running[..] else {
                return false;
            };
            active = a;
            hosts[a].is_active("votingapp-active.target")
                && hosts[a].is_active("votingapp-ensure-active.service")
                && hosts[1 - a].is_active("votingapp-passive.target")
                && hosts[1 - a].is_active("votingapp-ensure-passive.service")
        },
    );
    let standby = 1 - active;
    eprintln!("replica {active} is active first (replica 0 has start-active-0 = true)");
    assert_eq!(hosts[active].pids_on_machine(APP).len(), 1);
    let env = hosts[active]
        .read_file("/run/promd/votingapp.env")
        .expect("the env file");
    assert!(
        env.contains(&format!("PROMD_NODE=votingapp-{active}"))
            && env.contains("PROMD_ROLE=active"),
        "{env}"
    );

    // Cut the active host off: the other runs the app within the lease and a little, and
    // never while the cut host still runs it.
    let t0 = Instant::now();
    hosts[active].cut();
    let mut overlap = false;
    hosts::wait_until(
        LEASE + FAILOVER_SLACK,
        "the other host runs the app",
        || {
            let old = runs_app(&hosts[active]);
            let new = runs_app(&hosts[standby]);
            overlap |= old && new;
            new
        },
    );
    let took = t0.elapsed();
    eprintln!(
        "cut: replica {standby} runs the app after {} ms",
        took.as_millis()
    );
    assert!(!overlap, "both hosts ran the app at the same time");
    assert!(!runs_app(&hosts[active]), "the cut host still runs the app");
    hosts::wait_until(Duration::from_secs(10), "the cut host is passive", || {
        hosts[active].is_active("votingapp-passive.target")
            && !hosts[active].is_active("votingapp-active.target")
            && hosts[standby].is_active("votingapp-active.target")
    });

    // Replica 1 ran both of its shell commands (as the first active host or as the new one,
    // and as passive at start or when it was cut off): `$`, `%` and the quote reached sh.
    let events = hosts[1]
        .read_file("/run/votingapp/events.log")
        .unwrap_or_default();
    let line = events.lines().next().unwrap_or_default();
    let stamp = line
        .strip_prefix("active at ")
        .and_then(|rest| rest.strip_suffix(" as votingapp-1"))
        .unwrap_or_default();
    assert!(
        !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit()),
        "events.log: {events:?}"
    );
    let passive_log = hosts[1]
        .read_file("/run/votingapp-passive it's.log")
        .unwrap_or_default();
    assert!(
        passive_log.contains("replica 1: stopped"),
        "passive log: {passive_log:?}"
    );
    hosts[active].heal();
}
