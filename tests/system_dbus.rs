//! The D-Bus API `org.promd1` and `promctl`, on three real systemd hosts with a real etcd:
//! what an operator types (`busctl call ...`, `promctl ...`) and what they see.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::bus;
use support::cluster::{Cluster, StoreKind, group_prop};
use support::etcd::EtcdCluster;
use support::hosts::{self, Host, Net, Signal};

const LEASE: Duration = Duration::from_secs(2);
const MGR: [&str; 3] = ["org.promd1", "/org/promd1", "org.promd1.Manager"];

fn boot(net: &Net, etcd: &EtcdCluster) -> Cluster {
    Cluster::boot(net, StoreKind::Etcd(etcd), LEASE)
}

/// `busctl call org.promd1 /org/promd1 org.promd1.Manager METHOD ARGS...` as `user` (None: root).
fn busctl_call(h: &Host, user: Option<u32>, method_and_args: &[&str]) -> (bool, String) {
    let mut args: Vec<String> = Vec::new();
    if let Some(uid) = user {
        args.extend(
            [
                "setpriv",
                "--reuid",
                &uid.to_string(),
                "--regid",
                &uid.to_string(),
                "--clear-groups",
            ]
            .map(String::from),
        );
    }
    args.extend(["busctl", "--timeout=60", "call"].map(String::from));
    args.extend(MGR.map(String::from));
    args.extend(method_and_args.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = h.exec(&argv);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Calls a Manager method from this process over the host's bus (as root); the D-Bus error
/// name if it failed.
fn manager_error<B>(h: &Host, method: &str, body: &B) -> Option<String>
where
    B: serde::Serialize + zbus::Type,
{
    bus::with_host_bus(h, async |conn| {
        match conn
            .call_method(
                Some("org.promd1"),
                "/org/promd1",
                Some("org.promd1.Manager"),
                method,
                body,
            )
            .await
        {
            Ok(_) => None,
            Err(zbus::Error::MethodError(name, _, _)) => Some(name.to_string()),
            Err(zbus::Error::FDO(e)) => Some(zbus::DBusError::name(&*e).to_string()),
            Err(e) => Some(format!("not a method error: {e}")),
        }
    })
}

fn status_json(h: &Host) -> serde_json::Value {
    let text = h.run_ok(&["promctl", "status", "--json"]);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("promctl status --json on {}: {e}\n{text}", h.name()))
}

/// `promctl watch` on a host, its lines sent to the returned channel. Ended by pid on drop.
struct Watch {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    /// Starts `promctl watch` and returns once it says it is subscribed.
    fn start(h: &Host) -> Watch {
        let mut child = Command::new("nsenter")
            .args(["-t", &h.init_pid().to_string(), "-a", "promctl", "watch"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsenter promctl watch");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (ready_tx, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("watching role changes") {
                    let _ = ready_tx.send(());
                }
            }
        });
        ready
            .recv_timeout(Duration::from_secs(10))
            .expect("promctl watch subscribed");
        Watch { child, lines }
    }

    /// The next line containing `what`, within `timeout`; earlier lines are kept in `seen`.
    fn expect(&self, what: &str, timeout: Duration, seen: &mut Vec<String>) {
        let end = std::time::Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(what);
                    seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!(
                    "promctl watch printed no {what:?}; got:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn status_agrees_everywhere_and_promote_and_demote_move_the_role() {
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let c = boot(&net, &etcd);
    let first = c.wait_one_active(None, Duration::from_secs(30));
    // Start-up (find the closure, stop and kill it, start the passive target) may still be
    // under way on the other hosts: wait until each has settled, as an operator would.
    hosts::wait_until(
        Duration::from_secs(10),
        "every host sees three members and has left `starting`",
        || {
            c.hosts.iter().all(|h| {
                let g = &status_json(h)["groups"][0];
                g["members"].as_array().is_some_and(|m| m.len() == 3) && g["role"] != "starting"
            })
        },
    );

    // Every host reports the same leader and term, and its own role.
    let leader = c.hosts[first].name().to_string();
    let mut terms = Vec::new();
    for (i, h) in c.hosts.iter().enumerate() {
        let s = status_json(h);
        let g = &s["groups"][0];
        assert_eq!(s["node"], h.name());
        assert_eq!(g["name"], "web");
        assert_eq!(g["leader"], leader.as_str(), "{}", h.name());
        assert_eq!(
            g["role"],
            if i == first { "active" } else { "passive" },
            "{}",
            h.name()
        );
        terms.push(g["term"].as_u64().expect("term"));
        // The JSON is the D-Bus properties.
        assert_eq!(
            group_prop(h, "Role"),
            format!("s \"{}\"", g["role"].as_str().unwrap_or(""))
        );
        assert_eq!(group_prop(h, "Leader"), format!("s \"{leader}\""));
        assert_eq!(group_prop(h, "Term"), format!("t {}", terms[i]));
    }
    assert!(
        terms.windows(2).all(|w| w[0] == w[1]),
        "terms differ: {terms:?}"
    );
    let table = c.hosts[first].run_ok(&["promctl", "status"]);
    for h in &c.hosts {
        assert!(table.contains(h.name()), "{table}");
    }

    // busctl Promote on a passive host: a switchover, seen live by promctl watch.
    let target = (first + 1) % 3;
    let watch = Watch::start(&c.hosts[target]);
    let t0 = hosts::now_ns();
    let (ok, out) = busctl_call(&c.hosts[target], None, &["Promote", "s", "web"]);
    assert!(ok, "Promote failed: {out}");
    // The call returns once the new host is active.
    assert!(c.hosts[target].is_active("web-active.target"));
    assert_eq!(group_prop(&c.hosts[target], "Role"), "s \"active\"");
    assert_eq!(c.active_hosts(), vec![target]);
    // The old active's units stopped before the new one's started.
    let spans = c.spans();
    let old_stop = spans[first]
        .1
        .iter()
        .filter_map(|s| s.stop_ns)
        .filter(|&s| s >= t0)
        .min()
        .expect("old stop");
    let new_start = c.start_after(target, t0);
    assert!(
        old_stop <= new_start,
        "old active stopped at {old_stop}, new one started at {new_start}"
    );
    let mut seen = Vec::new();
    watch.expect(
        "web passive -> promoting",
        Duration::from_secs(5),
        &mut seen,
    );
    watch.expect("web promoting -> active", Duration::from_secs(5), &mut seen);
    drop(watch);

    // Promote on the active host is a no-op success.
    let (ok, out) = busctl_call(&c.hosts[target], None, &["Promote", "s", "web"]);
    assert!(ok, "{out}");
    assert_eq!(c.active_hosts(), vec![target]);

    // Demote hands over to the best eligible other member (n1 < n2 < n3 by name, same priority).
    let out = c.hosts[target].run_ok(&["promctl", "demote", "web"]);
    assert!(!out.is_empty());
    let next = c.wait_one_active(Some(target), Duration::from_secs(10));
    let expected = (0..3).find(|&i| i != target).unwrap_or(0);
    assert_eq!(next, expected, "hand-over to the best standby");
    assert_eq!(group_prop(&c.hosts[target], "Role"), "s \"passive\"");
    c.check_history();
}

#[test]
fn errors_access_and_introspection() {
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let c = boot(&net, &etcd);
    let active = c.wait_one_active(None, Duration::from_secs(30));
    let h = &c.hosts[active];
    let term = group_prop(h, "Term");

    // Named errors for bad arguments; nothing changes.
    for method in ["Promote", "Demote", "ResetFailed"] {
        assert_eq!(
            manager_error(h, method, &("nosuchgroup",)).as_deref(),
            Some("org.promd1.Error.UnknownGroup")
        );
        assert_eq!(
            manager_error(h, method, &(5i32,)).as_deref(),
            Some("org.freedesktop.DBus.Error.InvalidArgs")
        );
    }
    assert_eq!(
        manager_error(h, "SetMaintenance", &("web", "yes")).as_deref(),
        Some("org.freedesktop.DBus.Error.InvalidArgs")
    );
    let (ok, out) = busctl_call(h, None, &["Promote", "s", "nosuchgroup"]);
    assert!(
        !ok && out.contains("no group"),
        "busctl shows the reason: {out}"
    );
    let out = h.exec(&["promctl", "promote"]);
    assert_eq!(out.status.code(), Some(2), "usage error");
    let out = h.exec(&["promctl", "promote", "nosuchgroup"]);
    assert_eq!(out.status.code(), Some(1));

    // Anyone may read; an unprivileged caller's every method is refused by the bus policy...
    let nobody = 65534;
    let read = h.exec(&[
        "setpriv",
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "busctl",
        "get-property",
        "org.promd1",
        "/org/promd1/group/web",
        "org.promd1.Group",
        "Role",
    ]);
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let (ok, _) = busctl_call(h, Some(nobody), &["ListGroups"]);
    assert!(ok, "ListGroups is a read");
    for call in [
        &["Promote", "s", "web"][..],
        &["Demote", "s", "web"],
        &["SetMaintenance", "sb", "web", "true"],
        &["ResetFailed", "s", "web"],
    ] {
        let (ok, out) = busctl_call(h, Some(nobody), call);
        assert!(
            !ok && (out.contains("Access denied") || out.contains("AccessDenied")),
            "{call:?}: {out}"
        );
    }
    // ...and by promd itself under a lax policy.
    h.write_file(
        "/etc/dbus-1/system.d/zz-lax.conf",
        "<busconfig><policy context=\"default\"><allow send_destination=\"org.promd1\"/></policy></busconfig>\n",
    );
    h.run_ok(&[
        "busctl",
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "ReloadConfig",
    ]);
    let (ok, out) = busctl_call(h, Some(nobody), &["Demote", "s", "web"]);
    assert!(
        !ok && (out.contains("org.promd1.Error.AccessDenied") || out.contains("only root")),
        "{out}"
    );
    assert_eq!(c.active_hosts(), vec![active], "nothing changed");
    assert_eq!(group_prop(h, "Term"), term);

    // Demote with no eligible standby: NoStandby, still active.
    for (i, other) in c.hosts.iter().enumerate() {
        if i != active {
            other.run_ok(&["systemctl", "stop", "promd"]);
        }
    }
    hosts::wait_until(
        Duration::from_secs(10),
        "the others' members are gone",
        || {
            status_json(h)["groups"][0]["members"]
                .as_array()
                .is_some_and(|m| {
                    m.iter()
                        .filter(|x| x["node"] != h.name())
                        .all(|x| x["role"] != "passive")
                })
        },
    );
    assert_eq!(
        manager_error(h, "Demote", &("web",)).as_deref(),
        Some("org.promd1.Error.NoStandby")
    );
    let out = h.exec(&["promctl", "demote", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(c.active_hosts(), vec![active]);

    // The live introspection is the committed XML.
    for (path, file) in [
        ("/org/promd1", "org.promd1.Manager.xml"),
        ("/org/promd1/group/web", "org.promd1.Group.xml"),
    ] {
        let live = h.run_ok(&[
            "busctl",
            "introspect",
            "--xml-interface",
            "org.promd1",
            path,
        ]);
        let committed = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("dbus")
                .join(file),
        )
        .expect("committed XML");
        let iface = file.trim_end_matches(".xml");
        assert_eq!(
            interface_shape(&live, iface),
            interface_shape(&committed, iface),
            "{path} differs from dbus/{file}"
        );
    }
}

/// An interface's methods, properties and signals with their signatures, sorted.
fn interface_shape(xml: &str, iface: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse_with_options(
        xml,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .expect("introspection XML");
    let node = doc
        .descendants()
        .find(|n| n.has_tag_name("interface") && n.attribute("name") == Some(iface))
        .unwrap_or_else(|| panic!("no interface {iface}"));
    let mut shape: Vec<String> = node
        .children()
        .filter(|n| n.is_element())
        .map(|m| {
            let args: Vec<String> = m
                .children()
                .filter(|a| a.has_tag_name("arg"))
                .map(|a| {
                    format!(
                        "{}:{}:{}",
                        a.attribute("name").unwrap_or(""),
                        a.attribute("type").unwrap_or(""),
                        a.attribute("direction").unwrap_or("")
                    )
                })
                .collect();
            format!(
                "{} {} {} {} ({})",
                m.tag_name().name(),
                m.attribute("name").unwrap_or(""),
                m.attribute("type").unwrap_or(""),
                m.attribute("access").unwrap_or(""),
                args.join(", ")
            )
        })
        .filter(|s| !s.starts_with("annotation"))
        .collect();
    shape.sort();
    shape
}

#[test]
fn maintenance_freezes_the_group_cluster_wide() {
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let c = boot(&net, &etcd);
    let active = c.wait_one_active(None, Duration::from_secs(30));
    let other = (active + 1) % 3;

    c.hosts[other].run_ok(&["promctl", "maintenance", "web", "on"]);
    hosts::wait_until(Duration::from_secs(5), "every host in maintenance", || {
        c.hosts
            .iter()
            .all(|h| group_prop(h, "Maintenance") == "b true")
    });

    // The operator stops the service by hand: promd leaves it stopped, counts nothing, and
    // the host stays active.
    let h = &c.hosts[active];
    h.run_ok(&["systemctl", "stop", "web.service"]);
    let left = "web.service is not running, though nobody failed it: left as it is while \
                maintenance mode is on";
    hosts::wait_until(Duration::from_secs(10), "promd to see the stop", || {
        h.journal(&["-u", "promd.service", "-o", "cat"])
            .contains(left)
    });
    let state = h.exec(&["systemctl", "is-active", "web.service"]);
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "inactive");
    assert_eq!(group_prop(h, "Role"), "s \"active\"");
    assert_eq!(group_prop(h, "Failures"), "u 0");
    // Off: the active host starts it again, without a failure or a hand-over.
    c.hosts[other].run_ok(&["promctl", "maintenance", "web", "off"]);
    assert_eq!(c.wait_one_active(None, Duration::from_secs(10)), active);
    assert_eq!(group_prop(h, "Failures"), "u 0");
    assert!(
        h.journal(&["-u", "promd.service", "-o", "cat"])
            .contains("maintenance mode off: starting web.service again, down since")
    );
    c.hosts[other].run_ok(&["promctl", "maintenance", "web", "on"]);
    hosts::wait_until(Duration::from_secs(5), "every host in maintenance", || {
        c.hosts
            .iter()
            .all(|h| group_prop(h, "Maintenance") == "b true")
    });

    // The active promd dies: its units go with it, and nobody takes over.
    let pid = c.promd_pid(active);
    c.hosts[active].signal(pid, Signal::SIGKILL);
    hosts::wait_until(
        Duration::from_secs(5),
        "the dead agent's units stopped",
        || c.active_hosts().is_empty(),
    );
    // Observe for two leases plus the restart: the lease expires, and still nothing acts.
    let until = std::time::Instant::now() + LEASE * 2 + Duration::from_secs(2);
    while std::time::Instant::now() < until {
        assert!(
            c.active_hosts().is_empty(),
            "a host became active during maintenance"
        );
    }
    c.wait_promd_back(active, pid);
    let (ok, out) = busctl_call(&c.hosts[other], None, &["Promote", "s", "web"]);
    assert!(
        !ok && (out.contains("Maintenance") || out.contains("maintenance")),
        "{out}"
    );

    // Off: the group elects again.
    let t0 = hosts::now_ns();
    c.hosts[other].run_ok(&["promctl", "maintenance", "web", "off"]);
    let next = c.wait_one_active(None, LEASE + Duration::from_secs(2));
    assert!(
        support::cluster::elapsed(t0, c.start_after(next, t0)) <= LEASE + Duration::from_secs(1)
    );
    assert!(
        c.hosts
            .iter()
            .all(|h| group_prop(h, "Maintenance") == "b false")
    );
    c.check_history();
}
