//! Issue 12, "the term never goes back", on three real systemd hosts (nspawn containers) with a
//! real 3-member etcd: the cluster's data is lost and restored from an older snapshot (every
//! member stopped, its data dir wiped, `etcdctl snapshot restore`d and started again, as
//! etcd's disaster-recovery guide says), after hand-overs that took the term past the
//! snapshot's. The store's counter goes back with the restore; the `PROMD_TERM` a unit sees
//! must not: every term a unit saw after the restore is larger than every term any unit saw
//! before it, and `promctl status` and the D-Bus `Term` agree.
//!
//! Every run span of the protected service records the `PROMD_TERM` it started with (before
//! it starts, after it died) on the one clock the hosts share, and is checked for overlap.

mod support;

use std::time::Duration;

use support::cluster::{Cluster, StoreKind, group_prop};
use support::etcd::EtcdCluster;
use support::hosts::{self, Host, Net};

const LEASE: Duration = Duration::from_secs(2);
/// The group's term counter in etcd (the default `[store] prefix`).
const TERM_KEY: &str = "/promd/web/term";

/// etcd's revision now (the header of a `get -w json`).
fn revision(etcd: &EtcdCluster) -> u64 {
    let text = etcd.etcdctl(&["get", TERM_KEY, "-w", "json"]);
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("etcdctl get -w json: {e}\n{text}"));
    json["header"]["revision"]
        .as_u64()
        .unwrap_or_else(|| panic!("no revision in {text}"))
}

/// `promctl status --json web` on a host: (store connected, role, leader, term).
fn status(h: &Host) -> (bool, String, String, u64) {
    let text = h.run_ok(&["promctl", "status", "--json", "web"]);
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("promctl status --json on {}: {e}\n{text}", h.name()));
    let g = &json["groups"][0];
    (
        json["store_connected"].as_bool().unwrap_or(false),
        g["role"].as_str().unwrap_or_default().to_string(),
        g["leader"].as_str().unwrap_or_default().to_string(),
        g["term"]
            .as_u64()
            .unwrap_or_else(|| panic!("no term in {text}")),
    )
}

/// The group's D-Bus `Term` on a host (busctl prints `t 42`).
fn dbus_term(h: &Host) -> u64 {
    let prop = group_prop(h, "Term");
    prop.strip_prefix("t ")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("D-Bus Term on {}: {prop:?}", h.name()))
}

/// What the hosts and the store say now, for a failure message: each host's `promctl status`
/// and the group's keys in etcd.
fn explain(c: &Cluster, etcd: &EtcdCluster) -> String {
    let mut text = String::new();
    for h in &c.hosts {
        let out = h.exec(&["promctl", "status", "web"]);
        text += &format!(
            "--- {}: web.service {}; promctl status ---\n{}{}",
            h.name(),
            h.unit_state("web.service"),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let keys = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        etcd.etcdctl(&["get", "--prefix", "/promd/web/", "-w", "fields"])
    }))
    .unwrap_or_else(|_| "(etcdctl get failed)".into());
    text + "--- etcd: /promd/web/ ---\n" + &keys
}

/// Waits until every host is connected to the store and agrees on one leader and one term,
/// and that leader is the one host running the service; returns (that host, the term). On
/// timeout, panics with what every host and the store say.
fn wait_settled(c: &Cluster, etcd: &EtcdCluster, timeout: Duration) -> (usize, u64) {
    let what = "one active host, every host connected and agreeing on leader and term";
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(settled) = settled(c) {
            return settled;
        }
        if std::time::Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting until {what}\n{}",
                explain(c, etcd)
            );
        }
        // Polling, as hosts::wait_until does.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`wait_settled`]'s condition: the active host and the term, once settled.
fn settled(c: &Cluster) -> Option<(usize, u64)> {
    let active = c.active_hosts();
    if active.len() != 1 {
        return None;
    }
    let all: Vec<_> = c.hosts.iter().map(status).collect();
    let leader = c.hosts[active[0]].name();
    let term = all[active[0]].3;
    let agree = all.iter().enumerate().all(|(i, (connected, role, l, t))| {
        *connected
            && l == leader
            && *t == term
            && role == if i == active[0] { "active" } else { "passive" }
    });
    agree.then_some((active[0], term))
}

/// `promctl promote web` on host `to`: returns once it is active; the hosts settle.
fn promote(c: &Cluster, etcd: &EtcdCluster, to: usize) -> u64 {
    let out = c.hosts[to].run_ok(&["promctl", "promote", "web"]);
    eprintln!("{}: {}", c.hosts[to].name(), out.trim());
    let (active, term) = wait_settled(c, etcd, Duration::from_secs(20));
    assert_eq!(
        active,
        to,
        "promctl promote on {} returned, but {} is active",
        c.hosts[to].name(),
        c.hosts[active].name()
    );
    term
}

/// Every term the service started with on any host, with its start time and host.
fn span_terms(c: &Cluster) -> Vec<(u64, u64, String)> {
    let mut all: Vec<(u64, u64, String)> = c
        .spans()
        .into_iter()
        .flat_map(|(h, spans)| {
            spans.into_iter().map(move |s| {
                let term = s
                    .term
                    .unwrap_or_else(|| panic!("{h}: web.service started without PROMD_TERM"));
                (s.start_ns, term, h.clone())
            })
        })
        .collect();
    all.sort();
    all
}

#[test]
fn etcd_restored_from_an_older_snapshot_the_term_still_grows() {
    let net = Net::new(3);
    let mut etcd = EtcdCluster::start(3, &net.gateway_ips());
    let c = Cluster::boot(&net, StoreKind::Etcd(&etcd), LEASE);
    let snapshots = tempfile::tempdir().expect("tempdir");
    let snapshot = snapshots.path().join("snap.db");

    let (first, snap_term) = wait_settled(&c, &etcd, Duration::from_secs(40));
    etcd.save_snapshot(&snapshot);
    let counter_in_snapshot = etcd.etcdctl(&["get", TERM_KEY, "--print-value-only"]);
    eprintln!(
        "snapshot saved: {} active, term {snap_term}, counter {}",
        c.hosts[first].name(),
        counter_in_snapshot.trim()
    );

    // Hand-overs after the snapshot: two switchovers, then `systemctl stop promd` on the
    // active host (another takes over) and start again (it comes back passive, its term read
    // back from its state dir), and, if needed, a switchover back to the host that was active
    // at the snapshot. So at the restore the active host is the one the snapshot's leader key
    // names, under the lease its promd still renews: the restore gives it back its own key at
    // an old term, which it must not use and must release.
    let second = (first + 1) % 3;
    let third = (first + 2) % 3;
    let mut terms = vec![
        snap_term,
        promote(&c, &etcd, second),
        promote(&c, &etcd, third),
    ];
    c.hosts[third].run_ok(&["systemctl", "stop", "promd"]);
    let fourth = c.wait_one_active(Some(third), Duration::from_secs(10));
    c.hosts[third].run_ok(&["systemctl", "start", "promd"]);
    let (now_active, term) = wait_settled(&c, &etcd, Duration::from_secs(30));
    assert_eq!(now_active, fourth, "the host that took over stays active");
    terms.push(term);
    if fourth != first {
        terms.push(promote(&c, &etcd, first));
    }
    assert!(
        terms.windows(2).all(|w| w[0] < w[1]),
        "each hand-over gives a larger term: {terms:?}"
    );
    let counter_before = etcd.etcdctl(&["get", TERM_KEY, "--print-value-only"]);
    assert_ne!(
        counter_before, counter_in_snapshot,
        "the counter moved on since the snapshot"
    );
    let before = span_terms(&c);
    let highest_before = before.iter().map(|s| s.1).max().expect("spans");
    eprintln!(
        "before the restore: {} active, terms {terms:?}, units saw {:?}",
        c.hosts[first].name(),
        before.iter().map(|s| s.1).collect::<Vec<_>>()
    );

    // etcd loses its data, and stays down (as a real restore takes time) until the active
    // host has fenced itself (its lease cannot be renewed); then it comes back from the older
    // snapshot.
    let t_restore = hosts::now_ns();
    etcd.stop_and_wipe();
    hosts::wait_until(
        Duration::from_secs(10),
        "the active host fenced itself with etcd down",
        || c.active_hosts().is_empty(),
    );
    // The hosts are cut off while the restore is checked: a promd that reconnects at once
    // campaigns, and moves the counter and the revision on before the test can read them.
    for h in &c.hosts {
        h.cut();
    }
    etcd.restore_all(&snapshot);
    assert_eq!(
        etcd.etcdctl(&["get", TERM_KEY, "--print-value-only"]),
        counter_in_snapshot,
        "the store's counter went back to the snapshot's"
    );
    // Its revision went back too: neither the counter nor the revision remembers the terms
    // handed out since, only the hosts do.
    let restored_revision = revision(&etcd);
    assert!(
        restored_revision < highest_before,
        "etcd's revision after the restore ({restored_revision}) is below the highest term \
         ({highest_before})"
    );
    for h in &c.hosts {
        h.heal();
    }

    // The hosts reconnect and settle on one active host.
    let (after_restore, term) = wait_settled(&c, &etcd, Duration::from_secs(30));
    eprintln!(
        "after the restore: {} active, term {term}",
        c.hosts[after_restore].name()
    );
    let mut terms_after = vec![term];
    // And one more hand-over.
    let next = (after_restore + 1) % 3;
    terms_after.push(promote(&c, &etcd, next));

    // What a user reads: every host's `promctl status` and D-Bus Term, and the PROMD_TERM of
    // every run of web.service that started after the restore.
    for h in &c.hosts {
        let (connected, role, leader, t) = status(h);
        assert!(connected, "{}: store not connected", h.name());
        assert_eq!(leader, c.hosts[next].name(), "{}: leader", h.name());
        assert_eq!(
            dbus_term(h),
            t,
            "{}: D-Bus Term and promctl status",
            h.name()
        );
        assert!(
            t > highest_before,
            "{}: promctl status says term {t} ({role}) after the restore, but a unit saw \
             term {highest_before} before it",
            h.name()
        );
    }
    let after: Vec<_> = span_terms(&c)
        .into_iter()
        .filter(|s| s.0 >= t_restore)
        .collect();
    assert!(
        !after.is_empty(),
        "web.service started somewhere after the restore"
    );
    for (_, t, h) in &after {
        assert!(
            *t > highest_before,
            "{h}: web.service started with PROMD_TERM={t} after the restore, but a unit saw \
             PROMD_TERM={highest_before} before it (before: {before:?}, after: {after:?})"
        );
    }
    eprintln!(
        "after the restore: terms {terms_after:?}, units saw {:?}",
        after.iter().map(|s| s.1).collect::<Vec<_>>()
    );

    // Exactly one host is active at the end, and it is the one promoted.
    assert_eq!(
        c.active_hosts(),
        vec![next],
        "only the promoted host runs web.service"
    );
    for (i, h) in c.hosts.iter().enumerate() {
        let expected = if i == next { "active" } else { "passive" };
        assert_eq!(
            group_prop(h, "Role"),
            format!("s \"{expected}\""),
            "{}",
            h.name()
        );
    }
    let spans = c.check_history();
    eprintln!("{spans} active spans, none overlapping, terms never going back");
}
