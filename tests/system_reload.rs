//! `systemctl reload promd` on a real systemd host: a valid new file is applied without
//! disturbing the groups that did not change (new groups start, removed ones hand over and
//! stop); an invalid one is refused with its errors in the journal and changes nothing.

mod support;

use std::time::Duration;

use support::bus;
use support::cluster::{bus_policy, promctl_bin, promd_bin, promd_unit};
use support::hosts::{self, Host, HostSpec, Net};

const WEB: &str =
    "[[group]]\nname = \"web\"\nactive-target = \"web-active.target\"\nlease = \"2s\"\n";
const DB: &str = "[[group]]\nname = \"db\"\nactive-target = \"db-active.target\"\nlease = \"2s\"\n";

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
    let status = h.run_ok(&["systemctl", "show", "-P", "StatusText", "promd"]);
    assert!(
        status.contains("web: active") && status.contains("db: active"),
        "{status}"
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

    // Remove a group: it hands over (here: stops its units) and disappears; web stays.
    assert!(reload(&h, &[WEB]).status.success());
    hosts::wait_until(Duration::from_secs(10), "db stopped", || {
        !h.is_active("db.service")
    });
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
