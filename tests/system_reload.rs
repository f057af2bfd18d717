//! `systemctl reload promd` on a real systemd host: a valid new file is applied without
//! disturbing the groups that did not change (new groups start, removed ones hand over and
//! stop); an invalid one is refused with its errors in the journal and changes nothing. On
//! three hosts and etcd: a priority change is applied in place on the active host (same
//! MainPID, same term), a lease change restarts the group and says why; and after a failover
//! every passive host's env file names the new leader, and the shipped `PathChanged=` recipe
//! restarts the follower unit of the passive target, which reads it.

mod support;

use std::time::Duration;

use support::bus;
use support::cluster::{
    Cluster, StoreKind, bus_policy, group_prop, promctl_bin, promd_bin, promd_unit,
};
use support::etcd::EtcdCluster;
use support::hosts::{self, Host, HostSpec, Net, Signal};

const WEB: &str =
    "[[group]]\nname = \"web\"\nactive-target = \"web-active.target\"\nlease = \"2s\"\n";
/// db has a passive target, which its hand-over starts (and, when it is removed, its close
/// stops).
const DB: &str = "[[group]]\nname = \"db\"\nactive-target = \"db-active.target\"\n\
                  passive-target = \"db-passive.target\"\nlease = \"2s\"\n";

fn config(groups: &[&str]) -> String {
    format!("node = \"solo\"\n{}", groups.concat())
}

fn boot(net: &Net, spans: &std::path::Path) -> Host {
    let mut spec = HostSpec::new("solo");
    spec.file("/etc/promd/promd.toml", config(&[WEB]));
    spec.file("/etc/systemd/system/promd.service", promd_unit());
    spec.file(
        "/etc/systemd/system/promd.service.d/test.conf",
        "[Service]\nWatchdogSec=500ms\n",
    );
    spec.file("/etc/dbus-1/system.d/org.promd1.conf", bus_policy());
    for g in ["web", "db"] {
        spec.file(
            &format!("/etc/systemd/system/{g}-active.target"),
            format!("[Unit]\nWants={g}.service\n"),
        );
        spec.file(
            &format!("/etc/systemd/system/{g}.service"),
            hosts::span_unit(&format!("{g}.service"), g, &format!("/spans/{g}.log")),
        );
    }
    // db's passive target runs a standby that takes a second to stop, `PartOf=` it as the
    // README's follower recipe has it.
    spec.file(
        "/etc/systemd/system/db-passive.target",
        "[Unit]\nWants=db-standby.service\n",
    );
    spec.file(
        "/etc/systemd/system/db-standby.service",
        "[Unit]\nPartOf=db-passive.target\n\
         [Service]\nExecStart=/bin/sleep infinity\nExecStop=/bin/sleep 1\n",
    );
    // The target of `web` renamed: its role is the same web.service.
    spec.file(
        "/etc/systemd/system/www-active.target",
        "[Unit]\nWants=web.service\n",
    );
    spec.enable("promd.service", "multi-user.target");
    spec.bin(promd_bin());
    spec.bin(promctl_bin());
    spec.bind_rw(spans, "/spans");
    net.boot(0, spec)
}

fn groups(h: &Host) -> String {
    h.run_ok(&[
        "busctl",
        "call",
        "org.promd1",
        "/org/promd1",
        "org.promd1.Manager",
        "ListGroups",
    ])
}

fn web_starts(h: &Host) -> usize {
    h.read_file("/spans/web.log")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("start"))
        .count()
}

/// The one rule through which promd follows systemd's units.
const UNIT_SIGNALS: &str = "path_namespace='/org/freedesktop/systemd1/unit'";

/// SIGKILL a group's service and wait for promd to restart it in place.
fn crash_and_wait_restart(h: &Host, group: &str) {
    let unit = format!("{group}.service");
    let pid = |h: &Host| h.run_ok(&["systemctl", "show", "-P", "MainPID", &unit]);
    let before = pid(h);
    h.run_ok(&["systemctl", "kill", "--signal=KILL", &unit]);
    hosts::wait_until(
        Duration::from_secs(10),
        &format!("{unit} restarted in place"),
        || h.is_active(&unit) && pid(h) != before,
    );
    let said = format!("{unit} failed (1 of at most");
    assert!(h.journal(&["-u", "promd"]).contains(&said), "{said}");
}

fn reload(h: &Host, groups: &[&str]) -> std::process::Output {
    h.write_file("/etc/promd/promd.toml", config(groups));
    h.exec(&["systemctl", "reload", "promd"])
}

/// Boots the host and waits until it runs web.service; returns it and promd's pid.
fn boot_active(net: &Net, spans: &std::path::Path) -> (Host, u32) {
    let h = boot(net, spans);
    hosts::wait_until(Duration::from_secs(20), "web active", || {
        h.is_active("web.service")
    });
    let pid = h.pid_on_machine("promd").expect("promd");
    (h, pid)
}

#[test]
fn reload_applies_valid_changes_and_refuses_invalid_ones() {
    let net = Net::new(1);
    // Declared before the host, so it is removed after the host is gone.
    let spans = tempfile::tempdir().unwrap();
    let (h, pid) = boot_active(&net, spans.path());
    assert_eq!(web_starts(&h), 1);
    let rules_of_web = bus::promd_match_rules(&h);
    assert!(
        rules_of_web.iter().any(|r| r.contains(UNIT_SIGNALS)),
        "{rules_of_web:#?}"
    );

    // Add a group: it starts (passive first, then, alone, active); web is not touched.
    assert!(reload(&h, &[WEB, DB]).status.success());
    hosts::wait_until(Duration::from_secs(10), "db active", || {
        h.is_active("db.service")
    });
    assert!(groups(&h).contains("\"db\""), "{}", groups(&h));
    // promd follows db's units: a crash of db.service is seen and restarted in place, with
    // no match rule added for them.
    crash_and_wait_restart(&h, "db");
    assert_eq!(bus::promd_match_rules(&h), rules_of_web);
    assert_eq!(web_starts(&h), 1, "web was not restarted");
    assert!(h.is_active("web.service"));
    assert_eq!(
        h.pid_on_machine("promd"),
        Some(pid),
        "reloaded in place, not restarted"
    );
    // STATUS= goes to PID 1 at most four times a second: awaited, not read once.
    hosts::wait_until(
        Duration::from_secs(2),
        "both groups active in the status",
        || {
            let status = h.run_ok(&["systemctl", "show", "-P", "StatusText", "promd"]);
            status.contains("web: active") && status.contains("db: active")
        },
    );

    // An invalid file: refused, with its errors in the journal; nothing changes.
    h.write_file(
        "/etc/promd/promd.toml",
        format!("{}lease = \"soon\"\nbogus = 1\n", config(&[WEB, DB])),
    );
    let out = h.exec(&["systemctl", "reload", "promd"]);
    hosts::wait_until(Duration::from_secs(5), "the refusal in the journal", || {
        h.journal(&["-u", "promd"]).contains("promd.toml:")
    });
    let journal = h.journal(&["-u", "promd"]);
    assert!(
        journal.contains("/etc/promd/promd.toml:"),
        "errors with positions: {journal}"
    );
    assert!(
        !out.status.success(),
        "systemctl reload fails on an invalid file"
    );
    assert!(h.is_active("web.service") && h.is_active("db.service"));
    assert_eq!(web_starts(&h), 1);
    assert_eq!(h.pid_on_machine("promd"), Some(pid));

    // Remove a group: it hands over (here: stops its units, starts its passive target and
    // releases) and disappears; its passive target, which nothing starts any more, is
    // stopped; web stays.
    assert!(reload(&h, &[WEB]).status.success());
    hosts::wait_until(Duration::from_secs(10), "db stopped", || {
        !h.is_active("db.service")
    });
    h.wait_for_journal(
        &["-u", "promd"],
        "db: its passive target db-passive.target stopped",
        Duration::from_secs(10),
    );
    // The standby stops after the target (a target is ordered after what it wants).
    hosts::wait_until(Duration::from_secs(5), "db's standby stopped", || {
        h.run_ok(&[
            "systemctl",
            "show",
            "-P",
            "ActiveState",
            "db-standby.service",
        ])
        .trim()
            == "inactive"
    });
    assert!(!h.is_active("db-passive.target"));
    assert!(
        h.journal(&["-u", "db-standby.service"]).contains("Started"),
        "the standby ran before: {}",
        h.journal(&["-u", "db-standby.service"])
    );
    hosts::wait_until(Duration::from_secs(5), "db gone from D-Bus", || {
        !groups(&h).contains("\"db\"")
    });
    let gone = h.exec(&[
        "busctl",
        "get-property",
        "org.promd1",
        "/org/promd1/group/db",
        "org.promd1.Group",
        "Role",
    ]);
    assert!(!gone.status.success(), "the removed group's object is gone");
    // Nothing of db's is left on the bus: promd's rules are web's alone again (the rule for
    // the unit signals stays, web's units are still followed through it).
    assert_eq!(bus::promd_match_rules(&h), rules_of_web);
    assert!(h.is_active("web.service"));
    assert_eq!(web_starts(&h), 1, "web was not disturbed");

    // Change a group: it is handed over and started again under its new settings.
    let web_changed = WEB.replace("lease = \"2s\"", "lease = \"3s\"\npriority = 150");
    assert!(reload(&h, &[&web_changed]).status.success());
    hosts::wait_until(Duration::from_secs(15), "web active again", || {
        h.is_active("web.service") && web_starts(&h) == 2
    });
    let prio = h.run_ok(&[
        "busctl",
        "get-property",
        "org.promd1",
        "/org/promd1/group/web",
        "org.promd1.Group",
        "Priority",
    ]);
    assert_eq!(prio.trim(), "i 150");
    assert_eq!(h.pid_on_machine("promd"), Some(pid));

    // Rename the group and its target: www's role pulls in the same web.service, which the
    // reload finds by walking www-active.target. www starts once web has handed over; opened
    // at once, its start-up would SIGKILL the web.service that web still runs.
    let www = "[[group]]\nname = \"www\"\nactive-target = \"www-active.target\"\nlease = \"3s\"\n";
    assert!(reload(&h, &[www]).status.success());
    hosts::wait_until(Duration::from_secs(15), "www active, web gone", || {
        let listed = groups(&h);
        web_starts(&h) == 3
            && h.is_active("web.service")
            && listed.contains("\"www\"")
            && !listed.contains("\"web\"")
    });
    let journal = h.journal(&["-u", "promd", "-o", "cat"]);
    assert!(
        journal.contains("www: starts once group web has handed over"),
        "{journal}"
    );
    let web = h.journal(&["-u", "web.service", "-o", "cat"]);
    assert!(
        !web.contains("status=9/KILL"),
        "web.service was stopped, not killed: {web}"
    );
    assert_eq!(h.pid_on_machine("promd"), Some(pid));
}

/// The command that reads promd's node name over D-Bus.
const NODE_PROPERTY: [&str; 6] = [
    "busctl",
    "get-property",
    "org.promd1",
    "/org/promd1",
    "org.promd1.Manager",
    "Node",
];

fn node_property(h: &Host) -> String {
    h.run_ok(&NODE_PROPERTY).trim().to_owned()
}

/// `node` (like `[store]`) cannot change on a reload. `systemctl reload promd` says so and
/// fails, before promd is even signalled (ExecReload= runs `promd check-config --reload`); the
/// daemon keeps running as it was; `systemctl restart promd` applies the file.
#[test]
fn a_reload_that_changes_node_fails_visibly_and_a_restart_applies_it() {
    let net = Net::new(1);
    let spans = tempfile::tempdir().unwrap();
    let (h, pid) = boot_active(&net, spans.path());
    assert_eq!(node_property(&h), "s \"solo\"");
    let record = h.read_file("/run/promd/running.json").expect("the record");
    assert!(record.contains("\"node\": \"solo\""), "{record}");

    let renamed = config(&[WEB]).replace("node = \"solo\"", "node = \"solo2\"");
    h.write_file("/etc/promd/promd.toml", &renamed);
    let out = h.exec(&["systemctl", "reload", "promd"]);
    assert!(
        !out.status.success(),
        "systemctl reload fails: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = "/etc/promd/promd.toml:1:8: `node` = \"solo2\" but the running promd is node \
                    \"solo\": a reload cannot change it; apply it with `systemctl restart promd`";
    hosts::wait_until(Duration::from_secs(5), "the refusal in the journal", || {
        h.journal(&["-u", "promd"]).contains(expected)
    });
    // As an operator sees it: at priority err, and in `systemctl status`.
    let errors = h.journal(&["-u", "promd", "-p", "err"]);
    assert!(errors.contains(expected), "{errors}");
    assert!(
        errors.contains("reload refused: the running promd"),
        "{errors}"
    );
    let status = h.exec(&["systemctl", "status", "--no-pager", "-n", "20", "promd"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("`node` = \"solo2\""),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    // promd was not signalled, and runs on as node solo.
    assert!(
        !h.journal(&["-u", "promd"])
            .contains("reload refused: keeping the running configuration"),
        "the daemon never saw the file"
    );
    assert_eq!(h.pid_on_machine("promd"), Some(pid));
    assert_eq!(h.unit_state("promd.service"), "active");
    assert_eq!(node_property(&h), "s \"solo\"");
    assert!(h.is_active("web.service"));
    assert_eq!(web_starts(&h), 1);

    // Checking the file by hand, as before a restart: valid, with a note.
    let check = h.exec(&["promd", "check-config"]);
    assert!(check.status.success(), "{check:?}");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains("/etc/promd/promd.toml:1:8: note: `node` = \"solo2\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("needs `systemctl restart promd`"),
        "{stderr}"
    );

    // The last line of defence: a SIGHUP that skips the check is refused by promd itself.
    h.run_ok(&["systemctl", "kill", "--kill-who=main", "-s", "HUP", "promd"]);
    hosts::wait_until(Duration::from_secs(5), "promd refuses by itself", || {
        h.journal(&["-u", "promd"])
            .contains("reload refused: keeping the running configuration")
    });
    assert_eq!(node_property(&h), "s \"solo\"");
    assert_eq!(h.pid_on_machine("promd"), Some(pid));

    // A restart applies it, and the record follows.
    h.run_ok(&["systemctl", "restart", "promd"]);
    hosts::wait_until(Duration::from_secs(20), "promd runs as solo2", || {
        h.exec(&NODE_PROPERTY).stdout.starts_with(b"s \"solo2\"")
    });
    hosts::wait_until(Duration::from_secs(20), "web active again", || {
        h.is_active("web.service")
    });
    let record = h.read_file("/run/promd/running.json").expect("the record");
    assert!(record.contains("\"node\": \"solo2\""), "{record}");
    assert!(h.exec(&["systemctl", "reload", "promd"]).status.success());
}

/// The active host's web.service: its MainPID.
fn main_pid(h: &Host, unit: &str) -> String {
    h.run_ok(&["systemctl", "show", "-P", "MainPID", unit])
        .trim()
        .to_string()
}

/// Boots three hosts on a 3-member etcd, waits until one is active and the others passive;
/// returns the cluster and the active host.
fn three_hosts(
    net: &Net,
    etcd: &EtcdCluster,
    customize: impl Fn(usize, &mut HostSpec),
) -> (Cluster, usize) {
    let c = Cluster::boot_with(
        net,
        StoreKind::Etcd(etcd),
        Duration::from_secs(2),
        "",
        customize,
    );
    let first = c.wait_one_active(None, Duration::from_secs(30));
    hosts::wait_until(Duration::from_secs(15), "the others passive", || {
        c.hosts
            .iter()
            .enumerate()
            .all(|(i, h)| i == first || h.is_active("web-passive.target"))
    });
    (c, first)
}

/// Rewrites promd.toml on `h` with `edit` and reloads promd; the reload must succeed.
fn edit_and_reload(h: &Host, edit: impl Fn(&str) -> String) {
    let toml = h.read_file("/etc/promd/promd.toml").expect("promd.toml");
    h.write_file("/etc/promd/promd.toml", edit(&toml));
    let out = h.exec(&["systemctl", "reload", "promd"]);
    assert!(
        out.status.success(),
        "systemctl reload promd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_priority_reload_on_the_active_host_keeps_its_units_and_a_lease_change_restarts_the_group() {
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let (c, first) = three_hosts(&net, &etcd, |_, _| {});
    let h = &c.hosts[first];
    let name = h.name().to_string();
    let pid = main_pid(h, "web.service");
    let term = group_prop(h, "Term");
    let promd = c.promd_pid(first);

    // priority 100 -> 50 on the active host: applied in place.
    edit_and_reload(h, |t| format!("{t}priority = 50\n"));
    hosts::wait_until(Duration::from_secs(10), "the in-place note", || {
        h.journal(&["-u", "promd"])
            .contains("web: applied in place: priority 100 → 50")
    });
    // The other hosts rank it by its new priority: it is in its record in the store.
    let other = (first + 1) % 3;
    let published = format!("\"{name}\" \"active\" 50 true");
    hosts::wait_until(
        Duration::from_secs(10),
        "the new priority published",
        || group_prop(&c.hosts[other], "Members").contains(&published),
    );
    // A hand-over would have shown within two leases of the publication; none does.
    std::thread::sleep(2 * c.lease);
    assert_eq!(c.active_hosts(), vec![first], "the role did not move");
    assert_eq!(
        main_pid(h, "web.service"),
        pid,
        "web.service kept its MainPID"
    );
    assert_eq!(group_prop(h, "Term"), term, "no new term");
    assert_eq!(group_prop(h, "Priority"), "i 50");
    assert_eq!(c.promd_pid(first), promd, "reloaded, not restarted");
    let journal = h.journal(&["-u", "promd"]);
    assert!(
        !journal.contains("handing over and stopping this group"),
        "{journal}"
    );
    assert!(
        journal.contains("changed in place [web], changed (handed over, then restarted) []"),
        "{journal}"
    );

    // lease 2s -> 3s: the group restarts (hands over: the others now rank higher), and the
    // journal says why.
    edit_and_reload(h, |t| t.replace("lease = \"2000ms\"", "lease = \"3s\""));
    hosts::wait_until(Duration::from_secs(10), "the restart note", || {
        h.journal(&["-u", "promd"])
            .contains("restarting group web: lease changed 2s → 3s")
    });
    let second = c.wait_one_active(Some(first), Duration::from_secs(20));
    assert_ne!(second, first);
    hosts::wait_until(
        Duration::from_secs(20),
        "the restarted group passive",
        || h.is_active("web-passive.target"),
    );
    assert_eq!(c.promd_pid(first), promd, "reloaded, not restarted");
    c.check_history();
}

/// The env file's value of `key` on `h` (empty when absent).
fn env_value(h: &Host, key: &str) -> String {
    let text = h.read_file("/run/promd/web.env").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
        .to_string()
}

/// What web-follower.service runs with: InvocationID, ExecMainStartTimestampMonotonic (µs;
/// the plain timestamp has whole seconds, and a restart within the second looked like none),
/// and the PROMD_LEADER and PROMD_TERM its main process read.
fn follower(h: &Host) -> (String, String, String, String) {
    let show = |p: &str| {
        h.run_ok(&["systemctl", "show", "-P", p, "web-follower.service"])
            .trim()
            .to_string()
    };
    let pid = show("MainPID");
    let environ = h
        .read_file(&format!("/proc/{pid}/environ"))
        .unwrap_or_default();
    let var = |k: &str| {
        environ
            .split('\0')
            .find_map(|v| v.strip_prefix(&format!("{k}=")))
            .unwrap_or_default()
            .to_string()
    };
    (
        show("InvocationID"),
        show("ExecMainStartTimestampMonotonic"),
        var("PROMD_LEADER"),
        var("PROMD_TERM"),
    )
}

/// The example units as shipped in packaging/examples.
fn example(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("packaging/examples")
            .join(name),
    )
    .expect(name)
}

#[test]
fn after_a_failover_passive_hosts_follow_the_new_leader_and_the_path_recipe_restarts_the_follower()
{
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let (c, first) = three_hosts(&net, &etcd, |_, spec| {
        for unit in [
            "web-passive.target",
            "web-follower.service",
            "web-follow-leader.path",
            "web-follow-leader.service",
        ] {
            spec.file(&format!("/etc/systemd/system/{unit}"), example(unit));
        }
    });
    let first_name = c.hosts[first].name().to_string();
    let passive: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    let mut before = Vec::new();
    for &i in &passive {
        let h = &c.hosts[i];
        hosts::wait_until(Duration::from_secs(10), "the follower runs", || {
            h.is_active("web-follower.service") && h.is_active("web-follow-leader.path")
        });
        let f = follower(h);
        assert_eq!(
            f.2,
            first_name,
            "{}: the follower follows the leader",
            h.name()
        );
        before.push(f);
    }

    // kill -9 promd on the active host: another takes over at a higher term.
    let pid = c.promd_pid(first);
    c.hosts[first].signal(pid, Signal::SIGKILL);
    let second = c.wait_one_active(Some(first), Duration::from_secs(15));
    let new_leader = c.hosts[second].name().to_string();
    let new_term = env_value(&c.hosts[second], "PROMD_TERM");
    assert_eq!(env_value(&c.hosts[second], "PROMD_LEADER"), new_leader);
    c.wait_promd_back(first, pid);

    // Every passive host's env file names the new leader and term: the one that stayed
    // passive, and the old active host once its promd is back.
    for i in (0..3).filter(|&i| i != second) {
        let h = &c.hosts[i];
        hosts::wait_until(Duration::from_secs(10), "the env file follows", || {
            env_value(h, "PROMD_LEADER") == new_leader && env_value(h, "PROMD_TERM") == new_term
        });
        assert_eq!(env_value(h, "PROMD_ROLE"), "passive", "{}", h.name());
        // Its follower runs with what the file says now.
        hosts::wait_until(
            Duration::from_secs(10),
            "the follower follows the new leader",
            || {
                let f = follower(h);
                f.2 == new_leader && f.3 == new_term
            },
        );
    }
    // The host that stayed passive throughout: the same follower unit, restarted by the path
    // unit (a new invocation, a new start), reading the new leader.
    let stayed = passive
        .iter()
        .position(|&i| i != second)
        .expect("a host stayed passive");
    let h = &c.hosts[passive[stayed]];
    let now = follower(h);
    let was = &before[stayed];
    assert_ne!(now.0, was.0, "{}: a new InvocationID", h.name());
    assert_ne!(
        now.1,
        was.1,
        "{}: a new ExecMainStartTimestampMonotonic",
        h.name()
    );
    assert_eq!(
        (now.2.as_str(), now.3.as_str()),
        (new_leader.as_str(), new_term.as_str())
    );
    let journal = h.journal(&["-u", "web-follower.service"]);
    assert!(
        journal.contains(&format!(
            "web-follower: following {new_leader} (term {new_term})"
        )),
        "{journal}"
    );
    assert!(
        h.journal(&["-u", "web-follow-leader.service"])
            .contains("Finished")
            || h.journal(&["-u", "web-follow-leader.service"])
                .contains("Deactivated"),
        "the path unit's service ran"
    );
    c.check_history();
}
