//! promd on three real systemd hosts (nspawn containers) with a real 3-member etcd cluster:
//! one active host, failover on kill -9 / SIGSTOP / a cut link, hand-over on `systemctl stop`,
//! and the fencing token in the units' environment. The same basic case with the `dir` store
//! shared by the hosts.
//!
//! Every run span of the protected service is recorded by the service itself (before it
//! starts, after it died) on the one clock the hosts share, and checked for overlap.

mod support;

use std::time::Duration;

use support::cluster::{Cluster, StoreKind, elapsed};
use support::etcd::EtcdCluster;
use support::hosts::{self, Net, Signal};

const LEASE: Duration = Duration::from_secs(2);
/// The bound the issue sets for an unplanned failover.
const FAILOVER_BOUND: Duration = Duration::from_millis(LEASE.as_millis() as u64 + 1000);

fn assert_failover(what: &str, t0: u64, started: u64, bound: Duration) {
    let took = elapsed(t0, started);
    eprintln!("{what}: new active after {} ms", took.as_millis());
    assert!(took <= bound, "{what}: took {took:?}, bound {bound:?}");
}

#[test]
fn etcd_one_active_host_and_failover_under_crash_pause_and_cut() {
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let c = Cluster::boot(&net, StoreKind::Etcd(&etcd), LEASE);

    // Exactly one host runs the active target; the others the passive one.
    let first = c.wait_one_active(None, Duration::from_secs(30));
    // The others may still be finishing their start-up stop: wait for their passive targets.
    hosts::wait_until(Duration::from_secs(10), "the others passive", || {
        c.hosts
            .iter()
            .enumerate()
            .all(|(i, h)| i == first || h.is_active("web-passive.target"))
    });
    for (i, h) in c.hosts.iter().enumerate() {
        assert_eq!(h.is_active("web-active.target"), i == first, "{}", h.name());
        assert_eq!(
            h.is_active("web-passive.target"),
            i != first,
            "{}",
            h.name()
        );
    }
    let env = c.hosts[first]
        .read_file("/run/promd/web.env")
        .expect("env file");
    assert!(
        env.contains("PROMD_ROLE=active") && env.contains("PROMD_TERM="),
        "{env}"
    );

    // kill -9 promd on the active host.
    let pid = c.promd_pid(first);
    let t0 = hosts::now_ns();
    c.hosts[first].signal(pid, Signal::SIGKILL);
    let second = c.wait_one_active(Some(first), FAILOVER_BOUND + Duration::from_secs(5));
    assert_failover("kill -9", t0, c.start_after(second, t0), FAILOVER_BOUND);
    c.wait_promd_back(first, pid);

    // SIGSTOP promd on the active host: the watchdog kills it, the units go down with it.
    let pid = c.promd_pid(second);
    let t0 = hosts::now_ns();
    c.hosts[second].signal(pid, Signal::SIGSTOP);
    let third = c.wait_one_active(Some(second), FAILOVER_BOUND + Duration::from_secs(5));
    assert_failover("SIGSTOP", t0, c.start_after(third, t0), FAILOVER_BOUND);
    if c.hosts[second].owns_pid(pid) {
        c.hosts[second].signal(pid, Signal::SIGCONT);
    }
    c.wait_promd_back(second, pid);

    // Cut the active host off (silent partition): it fences itself, another takes over.
    let t0 = hosts::now_ns();
    c.hosts[third].cut();
    let fourth = c.wait_one_active(Some(third), FAILOVER_BOUND + Duration::from_secs(5));
    assert_failover("cut", t0, c.start_after(fourth, t0), FAILOVER_BOUND);
    hosts::wait_until(Duration::from_secs(10), "the cut host is passive", || {
        !c.hosts[third].is_active("web.service")
    });
    c.hosts[third].heal();

    // systemctl stop promd on the active host hands over at once.
    let t0 = hosts::now_ns();
    c.hosts[fourth].run_ok(&["systemctl", "stop", "promd"]);
    let fifth = c.wait_one_active(Some(fourth), Duration::from_secs(10));
    assert_failover(
        "systemctl stop promd",
        t0,
        c.start_after(fifth, t0),
        Duration::from_secs(1),
    );
    assert!(!c.hosts[fourth].is_active("web.service"));
    c.hosts[fourth].run_ok(&["systemctl", "start", "promd"]);

    let spans = c.check_history();
    assert!(spans >= 5, "expected a span per active period, got {spans}");
    // The journal carries the role change with its fields.
    let j = c.hosts[fifth].journal(&[
        "-u",
        "promd",
        "-o",
        "verbose",
        "MESSAGE_ID=3ba961b1cce44bc28764c67b3a86f614",
    ]);
    assert!(
        j.contains("PROMD_ROLE=active")
            && j.contains("PROMD_GROUP=web")
            && j.contains("PROMD_TERM="),
        "{j}"
    );
    eprintln!("{spans} active spans, none overlapping");
}

#[test]
fn dir_store_shared_by_three_hosts() {
    let net = Net::new(3);
    let shared = tempfile::tempdir().unwrap();
    let c = Cluster::boot(&net, StoreKind::Dir(shared.path()), LEASE);
    let first = c.wait_one_active(None, Duration::from_secs(30));

    let pid = c.promd_pid(first);
    let t0 = hosts::now_ns();
    c.hosts[first].signal(pid, Signal::SIGKILL);
    let second = c.wait_one_active(Some(first), FAILOVER_BOUND + Duration::from_secs(5));
    assert_failover(
        "dir: kill -9",
        t0,
        c.start_after(second, t0),
        FAILOVER_BOUND,
    );
    c.wait_promd_back(first, pid);

    let t0 = hosts::now_ns();
    c.hosts[second].run_ok(&["systemctl", "stop", "promd"]);
    let third = c.wait_one_active(Some(second), Duration::from_secs(10));
    assert_failover(
        "dir: systemctl stop promd",
        t0,
        c.start_after(third, t0),
        Duration::from_secs(1),
    );
    c.check_history();
}

/// Issue 12: losing any one member of a 3-member etcd is not a failover. At the default 10 s
/// lease, each member in turn is paused (SIGSTOP: its connections stay open and nothing
/// answers, as when its packets are dropped), the raft leader included: the active host moves
/// its session to another member and keeps the role, its term and its running service
/// throughout.
///
/// A follower is paused for longer than a lease. etcd's raft leader is paused for less than a
/// lease less a renewal interval: etcd before the fix of etcd-io/etcd#15247 (PR #16822,
/// backported to 3.4 and 3.5 in 2024; this machine's 3.4.23 has not got it) lets a leader that was
/// stalled longer than that revoke, once it resumes, every lease it did not see renewed,
/// although it is no longer the leader: the holder's key goes and a failover follows (safe,
/// but not promd's to prevent; see docs/safety.md).
#[test]
fn etcd_losing_any_one_member_is_not_a_failover() {
    use nix::sys::signal::{Signal as Sig, kill};
    use nix::unistd::Pid;
    const DEFAULT_LEASE: Duration = Duration::from_secs(10);
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let c = Cluster::boot(&net, StoreKind::Etcd(&etcd), DEFAULT_LEASE);
    let first = c.wait_one_active(None, Duration::from_secs(40));
    let h = &c.hosts[first];
    let term = support::cluster::group_prop(h, "Term");
    let spans_before: Vec<usize> = c.spans().iter().map(|(_, s)| s.len()).collect();

    // The followers first (pausing one leaves the raft leader where it is), then the leader.
    let leader_first = etcd.leader().expect("etcd has a leader");
    let order = (0..3).filter(|m| *m != leader_first).chain([leader_first]);
    for member in order {
        let raft_leader = etcd.leader();
        let pause = if raft_leader == Some(member) {
            // Under L - L/3: no lease looks expired to the stalled leader when it resumes.
            Duration::from_secs(5)
        } else {
            DEFAULT_LEASE + Duration::from_secs(2)
        };
        let pid = etcd.member_pid(member).expect("the member runs");
        kill(Pid::from_raw(pid as i32), Sig::SIGSTOP).expect("SIGSTOP etcd");
        // The active host never changes.
        let until = std::time::Instant::now() + pause;
        let mut seen = Vec::new();
        while std::time::Instant::now() < until {
            let active = c.active_hosts();
            if active != [first] {
                seen = active;
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        kill(Pid::from_raw(pid as i32), Sig::SIGCONT).expect("SIGCONT etcd");
        assert!(
            seen.is_empty(),
            "etcd member {member} (raft leader: {raft_leader:?}) paused: active hosts {seen:?}, \
             not only {first}"
        );
        hosts::wait_until(Duration::from_secs(20), "etcd has a leader again", || {
            etcd.leader().is_some()
        });
        eprintln!(
            "etcd member {member} paused for {pause:?} (raft leader was {raft_leader:?}): no \
             failover"
        );
    }
    // The active host's session was on a paused member at least once, and moved.
    let journal = h.journal(&["-u", "promd", "-o", "cat"]);
    assert!(
        journal.contains("lease keepalive: no answer") && journal.contains("store reachable again"),
        "{journal}"
    );
    assert_eq!(support::cluster::group_prop(h, "Role"), "s \"active\"");
    assert_eq!(
        support::cluster::group_prop(h, "Term"),
        term,
        "the term stayed"
    );
    let spans_after: Vec<usize> = c.spans().iter().map(|(_, s)| s.len()).collect();
    assert_eq!(
        spans_before, spans_after,
        "web.service neither stopped nor started anywhere"
    );
    c.check_history();
}

/// Issue 12: production etcd. Three hosts reach a 3-member etcd on the test network, over
/// IPv6 addresses, a DNS name (each host's `/etc/hosts`) of an IPv6 address, and the name of an
/// IPv4 address; over TLS with client certificates, as an RBAC user limited to promd's prefix
/// whose password comes as a systemd credential (`LoadCredential=`); etcd's tokens expire
/// every 5 s. One host is active; a cut fails it over within the bound, as with a plain etcd.
#[test]
fn etcd_tls_rbac_by_name_and_ipv6_one_active_and_failover_on_a_cut() {
    use support::etcd::Options;
    use support::pki::{self, Pki};
    const NAME: &str = "etcd.promd.test";
    const PREFIX: &str = "/promd";
    let net = Net::new_dual_stack(3);
    let mut names: Vec<String> = net.gateway_ips().iter().map(|ip| ip.to_string()).collect();
    names.extend(net.gateway_ips6().iter().map(|ip| ip.to_string()));
    names.push(NAME.to_string());
    let pki = Pki::with_server_names(&names);
    let options = Options {
        auth_token_ttl: Some(5),
        listen_v6: net.gateway_ips6(),
        ..Options::mutual_tls(pki.mutual_tls())
    };
    let mut etcd = EtcdCluster::start_with(3, &net.gateway_ips(), &options);
    etcd.enable_auth("root-secret");
    etcd.add_prefix_user("promd", "promd-secret", PREFIX);
    // Each host writes its endpoints another way: n1 IPv6 addresses as etcdctl's bare
    // `[ADDR]:PORT` (https, as TLS is configured), n2 a DNS name its /etc/hosts maps to an
    // IPv6 address, n3 the same name mapped to an IPv4 address.
    let v6 = |i: usize| etcd.endpoints_via_v6(net.gateway_ip6(i));
    let by_name = |eps: Vec<String>, addr: String| -> Vec<String> {
        eps.iter().map(|e| e.replacen(&addr, NAME, 1)).collect()
    };
    let endpoints = vec![
        v6(0)
            .iter()
            .map(|e| e.replacen("https://", "", 1))
            .collect(),
        by_name(v6(1), format!("[{}]", net.gateway_ip6(1))),
        by_name(
            etcd.endpoints_via(net.gateway_ip(2)),
            net.gateway_ip(2).to_string(),
        ),
    ];
    let hosts_line = [
        None,
        Some(net.gateway_ip6(1).to_string()),
        Some(net.gateway_ip(2).to_string()),
    ];
    let store_extra = "ca-file = \"/etc/promd/ca.pem\"\ncert-file = \"/etc/promd/client.pem\"\n\
         key-file = \"/etc/promd/client-key.pem\"\nuser = \"promd\"\npassword-file = \"etcd-password\"\n";
    let store = StoreKind::EtcdAt {
        endpoints,
        store_extra,
    };
    let c = Cluster::boot_with(&net, store, LEASE, "", |i, spec| {
        if let Some(addr) = &hosts_line[i] {
            spec.file(
                "/etc/hosts",
                format!("127.0.0.1 localhost\n::1 localhost\n{addr} {NAME}\n"),
            );
        }
        spec.file("/etc/promd/ca.pem", pki.pem(pki::CA));
        spec.file("/etc/promd/client.pem", pki.pem(pki::CLIENT));
        spec.file_mode("/etc/promd/client-key.pem", pki.pem(pki::CLIENT_KEY), 0o600);
        spec.file_mode("/etc/promd/etcd-password", "promd-secret", 0o600);
        spec.file(
            "/etc/systemd/system/promd.service.d/credential.conf",
            "[Service]\nLoadCredential=etcd-password:/etc/promd/etcd-password\n",
        );
    });

    let first = c.wait_one_active(None, Duration::from_secs(40));
    let status = c.hosts[first].run_ok(&["promctl", "status", "web"]);
    assert!(status.contains("active"), "{status}");
    // Longer than the token TTL: the hosts stay in the group (renewals, watches, records).
    hosts::wait_until(Duration::from_secs(20), "the others passive", || {
        c.hosts
            .iter()
            .enumerate()
            .all(|(i, h)| i == first || h.is_active("web-passive.target"))
    });
    let t0 = hosts::now_ns();
    c.hosts[first].cut();
    let second = c.wait_one_active(Some(first), FAILOVER_BOUND + Duration::from_secs(5));
    assert_failover(
        "cut (TLS, RBAC)",
        t0,
        c.start_after(second, t0),
        FAILOVER_BOUND,
    );
    hosts::wait_until(Duration::from_secs(10), "the cut host is passive", || {
        !c.hosts[first].is_active("web.service")
    });
    c.hosts[first].heal();
    // The healed host comes back to the group through TLS and its user.
    hosts::wait_until(Duration::from_secs(20), "the healed host passive", || {
        c.hosts[first].is_active("web-passive.target")
    });
    let j = c.hosts[second].journal(&["-u", "promd", "-o", "cat"]);
    assert!(!j.contains("TLS:") && !j.contains("refused user"), "{j}");
    c.check_history();
}
