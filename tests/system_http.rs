//! The HTTP state endpoint on three real systemd hosts with a real etcd, `[http] listen` set
//! on each: `/v1/groups/web/active` answers 200 on exactly the active host and follows a
//! promote and is 503 while the active host's service is restarted in place; `/v1/status` is
//! the document `promctl status --json` prints on the same host.
//! Traffic goes to each host's loopback (curl inside) and to the hosts' own addresses.

mod support;

use std::time::Duration;

use support::cluster::Cluster;
use support::hosts::{self, Host};
use support::http::{curl, get_from_machine};

const LEASE: Duration = Duration::from_secs(2);

fn active_codes(c: &Cluster) -> Vec<u16> {
    c.hosts
        .iter()
        .map(|h| curl(h, "GET", "/v1/groups/web/active").0)
        .collect()
}

/// `/v1/status` and `promctl status --json` read on `h` while nothing changed in between (the
/// endpoint read before and after gives the same bytes): they must be the same document, byte
/// for byte. promctl reads property by property, so a role change during its read can give
/// a mixed view; such a pair is read again, never compared loosely.
fn assert_status_is_promctls(h: &Host) {
    let mut last = String::new();
    for _ in 0..40 {
        let (code, before) = curl(h, "GET", "/v1/status");
        assert_eq!(code, 200, "{}: {before}", h.name());
        let promctl = h.run_ok(&["promctl", "status", "--json"]);
        let (_, after) = curl(h, "GET", "/v1/status");
        if before == after {
            if promctl == before {
                let parsed: serde_json::Value =
                    serde_json::from_str(&before).expect("/v1/status is JSON");
                assert_eq!(parsed["node"], h.name());
                return;
            }
            last = format!("promctl:\n{promctl}\n/v1/status:\n{before}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "{}: /v1/status never equalled promctl status --json over a stable pair; last:\n{last}",
        h.name()
    );
}

/// systemd restarts web.service in place when it dies, after a pause a balancer's checks
/// can see.
const RESTART: &str = "[Service]\nRestart=on-failure\nRestartSec=2s\n";

#[test]
fn the_endpoint_follows_the_role_and_matches_promctl() {
    let (_net, _etcd, c) = support::http::boot_with("0.0.0.0:8008", LEASE, |_, spec| {
        spec.file("/etc/systemd/system/web.service.d/restart.conf", RESTART);
    });
    let first = c.wait_one_active(None, Duration::from_secs(30));
    hosts::wait_until(
        Duration::from_secs(15),
        "exactly the active host answers 200 on /active, the others 503",
        || {
            let codes = active_codes(&c);
            (0..3).all(|i| codes[i] == if i == first { 200 } else { 503 })
        },
    );
    hosts::wait_until(
        Duration::from_secs(15),
        "every host passive or active, store connected",
        || {
            c.hosts.iter().enumerate().all(|(i, h)| {
                let want = if i == first { "active\n" } else { "passive\n" };
                curl(h, "GET", "/v1/groups/web/state").1 == want
                    && curl(h, "GET", "/v1/health").0 == 200
            })
        },
    );
    for (i, h) in c.hosts.iter().enumerate() {
        let (code, body) = curl(h, "GET", "/v1/groups/web/passive");
        assert_eq!(
            code,
            if i == first { 503 } else { 200 },
            "{}: {body}",
            h.name()
        );
        // As a balancer sees it, from another machine.
        let want = if i == first { 200 } else { 503 };
        assert_eq!(get_from_machine(h, "/v1/groups/web/active").0, want);
        let (code, _) = curl(h, "HEAD", "/v1/groups/web/active");
        assert_eq!(code, want, "{} HEAD", h.name());
        assert_eq!(curl(h, "GET", "/v1/groups/nope/active").0, 404);
        assert_eq!(curl(h, "POST", "/v1/groups/web/active").0, 405);
        let (code, body) = curl(h, "GET", "/v1/health");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"store_connected\":true"), "{body}");
    }
    // Members all seen, then the two documents agree on every host.
    hosts::wait_until(
        Duration::from_secs(15),
        "every host's /v1/status lists three members",
        || {
            c.hosts.iter().all(|h| {
                let (_, body) = curl(h, "GET", "/v1/status");
                serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| {
                    v["groups"][0]["members"]
                        .as_array()
                        .is_some_and(|m| m.len() == 3)
                })
            })
        },
    );
    for h in &c.hosts {
        assert_status_is_promctls(h);
    }

    // A switchover: the endpoint follows.
    let target = (first + 1) % 3;
    c.hosts[target].run_ok(&["promctl", "promote", "web"]);
    assert_eq!(c.active_hosts(), vec![target]);
    hosts::wait_until(
        Duration::from_secs(10),
        "/active answers 200 on the promoted host only",
        || {
            let codes = active_codes(&c);
            (0..3).all(|i| codes[i] == if i == target { 200 } else { 503 })
        },
    );
    assert_eq!(
        get_from_machine(&c.hosts[target], "/v1/groups/web/active").0,
        200
    );
    assert_eq!(
        get_from_machine(&c.hosts[first], "/v1/groups/web/active").0,
        503
    );
    for h in &c.hosts {
        assert_status_is_promctls(h);
    }

    // The service dies on the active host and systemd restarts it in place: the host keeps
    // the role (one failure, under max-restarts), but /active is 503 while nothing listens,
    // and says why, then 200 again once the service is back.
    let h = &c.hosts[target];
    let pid = h.run_ok(&[
        "systemctl",
        "show",
        "--property=MainPID",
        "--value",
        "web.service",
    ]);
    let pid = pid.trim();
    assert!(pid.parse::<u32>().is_ok_and(|p| p > 0), "MainPID {pid:?}");
    h.run_ok(&["kill", "-9", pid]);
    let mut seen = String::new();
    hosts::wait_until(
        Duration::from_secs(5),
        "/active 503 on the active host while web.service is restarted in place",
        || {
            let (code, body) = curl(h, "GET", "/v1/groups/web/active");
            seen = body.clone();
            code == 503
        },
    );
    assert!(seen.contains("not up: web.service"), "{seen}");
    assert!(seen.starts_with("active (term "), "{seen}");
    assert_eq!(curl(h, "GET", "/v1/groups/web/state").1, "active\n");
    assert_eq!(get_from_machine(h, "/v1/groups/web/active").0, 503);
    hosts::wait_until(
        Duration::from_secs(10),
        "/active 200 again once systemd has restarted web.service",
        || curl(h, "GET", "/v1/groups/web/active").0 == 200,
    );
    assert!(h.is_active("web.service"));
    assert_eq!(
        c.active_hosts(),
        vec![target],
        "restarted in place, no failover"
    );
    c.check_history();
}
