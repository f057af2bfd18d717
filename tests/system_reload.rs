//! `systemctl reload promd` on a real systemd host: a valid new file is applied without
//! disturbing the groups that did not change (new groups start, removed ones hand over and
//! stop); an invalid one is refused with its errors in the journal and changes nothing.

mod support;

use std::time::Duration;

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

/// How many of the bus's match rules (every connection's signal subscriptions) concern one of
/// the group's units: promd follows the units of a group through such subscriptions.
fn subscriptions_to_units_of(h: &Host, group: &str) -> usize {
    let rules = h.run_ok(&[
        "busctl",
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.Debug.Stats",
        "GetAllMatchRules",
    ]);
    rules.matches(&format!("/unit/{group}_2")).count()
}

fn reload(h: &Host, groups: &[&str]) -> std::process::Output {
    h.write_file("/etc/promd/promd.toml", config(groups));
    h.exec(&["systemctl", "reload", "promd"])
}

#[test]
fn reload_applies_valid_changes_and_refuses_invalid_ones() {
    let net = Net::new(1);
    // Declared before the host, so it is removed after the host is gone.
    let spans = tempfile::tempdir().unwrap();
    let h = boot(&net, spans.path());
    hosts::wait_until(Duration::from_secs(20), "web active", || {
        h.is_active("web.service")
    });
    let pid = h.pid_on_machine("promd").expect("promd");
    assert_eq!(web_starts(&h), 1);

    // Add a group: it starts (passive first, then, alone, active); web is not touched.
    assert!(reload(&h, &[WEB, DB]).status.success());
    hosts::wait_until(Duration::from_secs(10), "db active", || {
        h.is_active("db.service")
    });
    assert!(groups(&h).contains("\"db\""), "{}", groups(&h));
    hosts::wait_until(Duration::from_secs(5), "promd follows db's units", || {
        subscriptions_to_units_of(&h, "db") > 0
    });
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
    hosts::wait_until(
        Duration::from_secs(5),
        "nobody follows db's units any more",
        || subscriptions_to_units_of(&h, "db") == 0,
    );
    assert!(
        subscriptions_to_units_of(&h, "web") > 0,
        "web is still followed"
    );
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
