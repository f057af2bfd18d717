//! Who is who, on three real systemd hosts with a real 3-member etcd: a host configured with
//! another host's `node` is refused, and so is a second promd on one host, before either can
//! release the other's key, overwrite its records or kill its units.
//!
//! What an operator sees is what the test checks: the refused promd exits with status 78 and
//! says why (with the catalogued MESSAGE_ID in the journal), `promd.service` stays failed
//! instead of restarting, and the rest of the cluster does not notice: the active host keeps
//! its service running (the same run span), its term and its leader key.

mod support;

use std::time::Duration;

use support::cluster::{Cluster, StoreKind, group_prop};
use support::etcd::EtcdCluster;
use support::hosts::{self, Net};

const LEASE: Duration = Duration::from_secs(4);
/// `MESSAGE_ID` of "another host uses this node" (packaging/promd.catalog).
const NODE_CONFLICT: &str = "6bac36e13336432d8a9e674449559384";
const CONFIG: &str = "/etc/promd/promd.toml";

/// `systemctl show -p PROP --value promd.service` on host `h`.
fn promd_prop(c: &Cluster, h: usize, prop: &str) -> String {
    c.hosts[h]
        .run_ok(&["systemctl", "show", "-p", prop, "--value", "promd.service"])
        .trim()
        .to_string()
}

/// Waits until every host's Role is `active` on `a` and `passive` elsewhere.
fn wait_settled(c: &Cluster, a: usize) {
    hosts::wait_until(
        Duration::from_secs(30),
        "one active host, the others passive",
        || {
            (0..c.hosts.len()).all(|i| {
                let role = c.hosts[i].exec(&support::cluster::group_prop_command("Role"));
                let want = if i == a {
                    "s \"active\""
                } else {
                    "s \"passive\""
                };
                String::from_utf8_lossy(&role.stdout).trim() == want
            })
        },
    );
}

#[test]
fn a_second_promd_on_a_host_and_a_node_name_used_twice_are_refused() {
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let c = Cluster::boot_with(&net, StoreKind::Etcd(&etcd), LEASE, "", |_, _| {});
    let a = c.wait_one_active(None, Duration::from_secs(30));
    wait_settled(&c, a);
    let a_name = c.hosts[a].name().to_string();
    let term = group_prop(&c.hosts[a], "Term");
    let span = |c: &Cluster| c.spans()[a].1.last().copied();
    let span_before = span(&c);
    assert!(
        span_before.is_some_and(|s| s.stop_ns.is_none()),
        "web.service runs on {a_name}: {span_before:?}"
    );

    // 1. A second promd on the active host, with the same configuration.
    let out = c.hosts[a].exec_timeout(
        &["/usr/local/bin/promd", "--config", CONFIG],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "second promd: {stderr}");
    let holder = c.hosts[a]
        .read_file("/run/promd/promd.lock")
        .unwrap_or_default();
    assert!(
        stderr.contains(&format!(
            "another promd already runs on this host (pid {})",
            holder.trim()
        )),
        "second promd's message: {stderr}"
    );

    // 2. A passive host renamed to the active host's node.
    let b = (a + 1) % 3;
    let b_name = c.hosts[b].name().to_string();
    let original = c.hosts[b].read_file(CONFIG).expect("promd.toml");
    let renamed = original.replace(
        &format!("node = \"{b_name}\""),
        &format!("node = \"{a_name}\""),
    );
    assert_ne!(renamed, original, "the test renames the node");
    c.hosts[b].write_file(CONFIG, &renamed);
    let restarts_before = promd_prop(&c, b, "NRestarts");
    // Returns once promd is ready; it finds the other host's records right after.
    let _ = c.hosts[b].exec(&["systemctl", "restart", "promd.service"]);
    hosts::wait_until(
        Duration::from_secs(20),
        "promd on the renamed host refuses and fails",
        || c.hosts[b].unit_state("promd.service") == "failed",
    );
    assert_eq!(promd_prop(&c, b, "ExecMainStatus"), "78");
    let said = c.hosts[b].journal(&[
        "-u",
        "promd.service",
        &format!("MESSAGE_ID={NODE_CONFLICT}"),
        "-o",
        "cat",
    ]);
    assert!(
        said.contains(&format!("node {a_name} is in use by another host")),
        "the journal of {b_name} says why: {said:?}"
    );
    // Not restarted (RestartPreventExitStatus=78): still failed a while later.
    std::thread::sleep(Duration::from_secs(3)); // an observation window: nothing may happen
    assert_eq!(c.hosts[b].unit_state("promd.service"), "failed");
    assert_eq!(promd_prop(&c, b, "NRestarts"), restarts_before);

    // The cluster did not notice: the same run of web.service, the same term, the same key.
    assert_eq!(c.active_hosts(), vec![a]);
    assert_eq!(
        span(&c),
        span_before,
        "web.service on {a_name} was not restarted"
    );
    assert_eq!(group_prop(&c.hosts[a], "Term"), term);
    assert_eq!(group_prop(&c.hosts[a], "Role"), "s \"active\"");
    assert!(!c.hosts[b].is_active("web.service"));
    c.check_history();

    // 3. With its own name back, the host rejoins as a standby.
    c.hosts[b].write_file(CONFIG, &original);
    c.hosts[b].run_ok(&["systemctl", "restart", "promd.service"]);
    wait_settled(&c, a);
    assert_eq!(span(&c), span_before);
}
