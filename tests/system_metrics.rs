//! `/metrics` on three real systemd hosts with a real etcd, `[http] listen` set on each:
//! after the start and after a `promctl promote`, `promd_group_role{role="active"}` is 1 on
//! exactly the host whose D-Bus `Role` is `active`, its `promd_group_term` is the
//! `PROMD_TERM` its units were given, the promoted host's promotions counter grew, and every
//! host's exposition passes `promtool check metrics`.

mod support;

use std::time::Duration;

use support::cluster::{Cluster, group_prop};
use support::hosts::{self, Host};

const LEASE: Duration = Duration::from_secs(2);

/// `GET /metrics` inside the host, on its loopback.
fn metrics(h: &Host) -> String {
    support::http::curl(h, "GET", "/metrics").1
}

/// The value of one series (name and labels exactly as printed).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().ok()).flatten()
    })
}

const ACTIVE: &str = "promd_group_role{group=\"web\",role=\"active\"}";
const TERM: &str = "promd_group_term{group=\"web\"}";
const PROMOTIONS: &str = "promd_group_promotions_total{group=\"web\"}";

/// `PROMD_TERM` of the host's `/run/promd/web.env`.
fn env_term(h: &Host) -> Option<f64> {
    let env = h.read_file("/run/promd/web.env")?;
    env.lines()
        .find_map(|l| l.strip_prefix("PROMD_TERM="))
        .and_then(|t| t.trim().parse().ok())
}

/// Wait until the role gauges agree with D-Bus on every host and exactly `active` has the
/// active one; then check its term against its env file, and promtool on every host.
fn assert_gauges_follow(c: &Cluster, active: usize) {
    hosts::wait_until(
        Duration::from_secs(15),
        "promd_group_role{role=\"active\"} is 1 on exactly the host D-Bus says is active",
        || {
            c.hosts.iter().enumerate().all(|(i, h)| {
                let dbus_active = group_prop(h, "Role") == "s \"active\"";
                let gauge = value(&metrics(h), ACTIVE);
                dbus_active == (i == active) && gauge == Some(if i == active { 1.0 } else { 0.0 })
            })
        },
    );
    let text = metrics(&c.hosts[active]);
    let term = env_term(&c.hosts[active]);
    assert!(term.is_some(), "no PROMD_TERM on the active host");
    assert_eq!(value(&text, TERM), term, "{text}");
    for h in &c.hosts {
        let text = metrics(h);
        // Exactly one role per host is 1.
        let ones = text
            .lines()
            .filter(|l| l.starts_with("promd_group_role{group=\"web\"") && l.ends_with(" 1"))
            .count();
        assert_eq!(ones, 1, "{}: {text}", h.name());
        assert_eq!(value(&text, "promd_store_connected"), Some(1.0));
        // promtool: Debian `prometheus`, installed by scripts/deps.sh.
        if let Some(Err(e)) = support::promtool::check_metrics(&text) {
            panic!("{}: promtool check metrics: {e}\n{text}", h.name());
        }
    }
}

#[test]
fn role_gauges_agree_with_dbus_and_pass_promtool() {
    let (_net, _etcd, c) = support::http::boot("127.0.0.1:8008", LEASE);
    let first = c.wait_one_active(None, Duration::from_secs(30));
    assert_gauges_follow(&c, first);
    assert_eq!(
        value(&metrics(&c.hosts[first]), PROMOTIONS),
        Some(1.0),
        "the first active host was promoted once"
    );

    let target = (first + 1) % 3;
    let before = value(&metrics(&c.hosts[target]), PROMOTIONS).unwrap_or(f64::NAN);
    c.hosts[target].run_ok(&["promctl", "promote", "web"]);
    assert_eq!(c.active_hosts(), vec![target]);
    assert_gauges_follow(&c, target);
    let after = metrics(&c.hosts[target]);
    assert_eq!(value(&after, PROMOTIONS), Some(before + 1.0), "{after}");
    assert_eq!(
        value(
            &after,
            "promd_dbus_calls_total{method=\"Promote\",result=\"ok\"}"
        ),
        Some(1.0),
        "{after}"
    );
    let old = metrics(&c.hosts[first]);
    assert_eq!(
        value(&old, "promd_group_demotions_total{group=\"web\"}"),
        Some(1.0),
        "{old}"
    );
    // The new active host renews its lease: the fence is armed, with headroom.
    let headroom = value(&after, "promd_group_fence_headroom_seconds{group=\"web\"}");
    assert!(headroom.is_some_and(|h| h > 0.0 && h < 2.0), "{after}");
    assert!(value(&old, "promd_group_fence_headroom_seconds{group=\"web\"}").is_none());
    c.check_history();
}
