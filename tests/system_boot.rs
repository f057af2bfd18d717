//! Cluster boots on three real systemd hosts (nspawn) with a real 3-member etcd: every promd
//! starts at once, the lowest-priority host's first, and the highest-priority host's start-up
//! finishes last. The first election goes by priority all the same (`election.rs`, "The first
//! election"); and a host that never finishes starting holds the election up for one lease
//! at most.
//!
//! promd does not start at the hosts' boot here (a `ConditionPathExists=` drop-in): each round
//! stops every promd, empties the store, then starts them in order with `--no-block`.

mod support;

use std::time::Duration;

use support::cluster::{Cluster, StoreKind, elapsed};
use support::etcd::EtcdCluster;
use support::hosts::{self, HostSpec, Net};

const LEASE: Duration = Duration::from_secs(3);
/// How long the first election waits at most for a member still starting
/// (`Timing::first_election_wait`): one lease.
const BOUND: Duration = LEASE;
const PRIORITIES: [i32; 3] = [10, 20, 30];
const ROUNDS: usize = 4;

/// promd starts only once `/run/promd-go` exists (never at the hosts' boot).
const GATE: &str = "[Unit]\nConditionPathExists=/run/promd-go\n";

/// Each host's priority (n1 lowest, n3 highest), the start gate, and whatever `more` adds.
fn cluster(
    net: &Net,
    etcd: &EtcdCluster,
    group_extra: &str,
    more: impl Fn(usize, &mut HostSpec),
) -> Cluster {
    Cluster::boot_with(net, StoreKind::Etcd(etcd), LEASE, group_extra, |i, spec| {
        let toml = String::from_utf8_lossy(
            spec.file_contents("/etc/promd/promd.toml")
                .expect("promd.toml"),
        )
        .into_owned();
        // The group's table is the file's last: the key lands in it.
        spec.file(
            "/etc/promd/promd.toml",
            format!("{toml}priority = {}\n", PRIORITIES[i]),
        );
        spec.file("/etc/systemd/system/promd.service.d/gate.conf", GATE);
        more(i, spec);
    })
}

/// Stops promd everywhere and waits until the store holds nothing of the group: the next
/// start is a cold boot.
fn stop_all(c: &Cluster, etcd: &EtcdCluster) {
    for h in &c.hosts {
        h.run_ok(&["systemctl", "stop", "promd"]);
    }
    hosts::wait_until(Duration::from_secs(20), "the store emptied", || {
        etcd.etcdctl(&["get", "--prefix", "/promd/web/", "--keys-only"])
            .lines()
            .all(|k| k.trim().is_empty() || k.ends_with("/term"))
    });
    for h in &c.hosts {
        assert!(!h.is_active("web.service"), "{}", h.name());
    }
}

/// Waits until `node`'s record in the store says `starting`.
fn wait_starting(etcd: &EtcdCluster, node: &str) {
    let key = format!("/promd/web/members/{node}");
    hosts::wait_until(
        Duration::from_secs(10),
        &format!("{node}'s record in the store, starting"),
        || {
            etcd.etcdctl(&["get", &key, "--print-value-only"])
                .contains("\"starting\"")
        },
    );
}

/// Starts promd on host `i` without waiting for it; returns the realtime of the start.
fn start(c: &Cluster, i: usize) -> u64 {
    c.hosts[i].run_ok(&["touch", "/run/promd-go"]);
    let t = hosts::now_ns();
    c.hosts[i].run_ok(&["systemctl", "start", "--no-block", "promd"]);
    t
}

/// Starts promd on every host, in order n1, n2, n3, without waiting for any; returns the
/// realtime of the last start.
fn start_all(c: &Cluster) -> u64 {
    // Every host is started: a fold, not `last()`, which could skip the others.
    (0..c.hosts.len()).fold(0, |_, i| start(c, i))
}

fn journal(c: &Cluster, i: usize) -> String {
    c.hosts[i].journal(&["-u", "promd", "-o", "cat"])
}

/// Every host's promd journal of this boot, on one clock (realtime, µs): what each saw when.
fn journals(c: &Cluster) -> String {
    c.hosts
        .iter()
        .map(|h| {
            format!(
                "---- {} ----\n{}",
                h.name(),
                h.journal(&["-u", "promd", "-o", "short-precise", "--since", "-60s"])
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Cold starts, `ROUNDS` times: n3 (the highest priority) takes the role every time, though
/// its promd starts a second after the others' (`ExecStartPre=/bin/sleep 1`): with `members`
/// configured, the others wait for a member that has no record yet (it may outrank them).
#[test]
fn the_highest_priority_wins_every_cold_boot_with_members() {
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let c = cluster(
        &net,
        &etcd,
        "members = [\"n1\", \"n2\", \"n3\"]\n",
        |i, spec| {
            if i == 2 {
                spec.file(
                    "/etc/systemd/system/promd.service.d/slow.conf",
                    "[Service]\nExecStartPre=/bin/sleep 1\n",
                );
            }
        },
    );
    for round in 0..ROUNDS {
        stop_all(&c, &etcd);
        start_all(&c);
        let winner = c.wait_one_active(None, Duration::from_secs(30));
        assert_eq!(
            winner,
            2,
            "round {round}: n{} took the role, not n3\n{}",
            winner + 1,
            journals(&c)
        );
        eprintln!("round {round}: n3 active");
    }
    c.check_history();
}

/// The same without `members`: n3's promd is in the store first (its record says
/// `starting`), but its passive target takes a second to start, so n1 and n2, started after it,
/// finish starting long before it. They wait for it. (Without `members` a host is known only
/// once its record is in the store: nothing can wait for a host that has not reached it.)
#[test]
fn the_highest_priority_wins_every_cold_boot_while_it_is_starting() {
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let c = cluster(&net, &etcd, "", |i, spec| {
        if i == 2 {
            slow_passive_target(spec, "/bin/sleep 1");
        }
    });
    for round in 0..ROUNDS {
        stop_all(&c, &etcd);
        // Left active by the round before (RemainAfterExit=yes): stopped, so that n3's passive
        // target takes its second in every round, and its record says `starting` meanwhile.
        c.hosts[2].run_ok(&["systemctl", "stop", "slow-passive.service"]);
        start(&c, 2);
        wait_starting(&etcd, "n3");
        start(&c, 0);
        start(&c, 1);
        let winner = c.wait_one_active(None, Duration::from_secs(30));
        assert_eq!(
            winner,
            2,
            "round {round}: n{} took the role, not n3\n{}",
            winner + 1,
            journals(&c)
        );
        eprintln!("round {round}: n3 active");
    }
    c.check_history();
}

/// n3's passive target never finishes starting (its promd stays `starting`; started first, so
/// that its record is in the store before the others finish starting): n2, the next best,
/// takes the role within the bound + a lease + 1 s of the last start, and says why it stopped
/// waiting.
#[test]
fn a_host_that_never_finishes_starting_delays_the_first_election_by_the_bound_only() {
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let c = cluster(&net, &etcd, "", |i, spec| {
        if i == 2 {
            slow_passive_target(spec, "/bin/sleep infinity");
        }
    });
    stop_all(&c, &etcd);
    start(&c, 2);
    wait_starting(&etcd, "n3");
    start(&c, 0);
    let t0 = start(&c, 1);
    let limit = BOUND + LEASE + Duration::from_secs(1);
    let winner = c.wait_one_active(None, limit + Duration::from_secs(10));
    let took = elapsed(t0, c.start_after(winner, t0));
    eprintln!(
        "n{} active {} ms after the last start",
        winner + 1,
        took.as_millis()
    );
    assert_eq!(winner, 1, "n2 is the best host that finished starting");
    assert!(took <= limit, "took {took:?}, bound {limit:?}");
    let said = journal(&c, 1);
    assert!(
        said.contains("first election: n3 still starting"),
        "n2 did not say why it stopped waiting:\n{said}"
    );
    assert!(
        !c.hosts[2].is_active("web-passive.target"),
        "n3 was meant to be still starting"
    );
    c.check_history();
}

/// The passive target pulls in a oneshot that runs `command` before the target is up.
fn slow_passive_target(spec: &mut HostSpec, command: &str) {
    spec.file(
        "/etc/systemd/system/slow-passive.service",
        format!("[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart={command}\nTimeoutStartSec=infinity\n"),
    );
    spec.file(
        "/etc/systemd/system/web-passive.target",
        "[Unit]\nDescription=web: passive\nConflicts=web-active.target\n\
         Wants=slow-passive.service\nAfter=slow-passive.service\n",
    );
}
