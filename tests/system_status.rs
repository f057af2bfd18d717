//! The cluster view on three real systemd hosts with a real etcd and `[http] listen` set: a
//! member whose health check fails is shown ineligible, with its reason, on every host (in
//! `GET /v1/status`, in `promctl status --json`, byte for byte the same document, in the
//! `promctl status` table and on D-Bus); `promctl watch --json` prints a JSON line for a
//! promote.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::cluster::{Cluster, StoreKind, group_prop};
use support::etcd::EtcdCluster;
use support::hosts::{self, Host, Net};

const LEASE: Duration = Duration::from_secs(2);
/// The health check fails while `/run/web-unhealthy` exists; then `[http]`.
const EXTRA: &str = "health-command = [\"/bin/sh\", \"-c\", \"! test -e /run/web-unhealthy\"]\n\
                     health-interval = \"300ms\"\nhealth-timeout = \"200ms\"\n\
                     \n[http]\nlisten = [\"0.0.0.0:8008\"]\n";

/// `curl` inside the host on its loopback: (status code, body).
fn curl(h: &Host, path: &str) -> (u16, String) {
    support::http::curl(h, "GET", path)
}

fn status(h: &Host) -> serde_json::Value {
    let (_, body) = curl(h, "/v1/status");
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

/// `node`'s entry in the `web` group of a status document.
fn member<'v>(doc: &'v serde_json::Value, node: &str) -> Option<&'v serde_json::Value> {
    doc["groups"][0]["members"]
        .as_array()?
        .iter()
        .find(|m| m["node"] == node)
}

/// `/v1/status` and `promctl status --json` read on `h` while nothing changed in between (the
/// endpoint read before and after gives the same bytes) are the same document, byte for
/// byte; returns it.
fn status_is_promctls(h: &Host) -> serde_json::Value {
    let mut last = String::new();
    for _ in 0..40 {
        let (code, before) = curl(h, "/v1/status");
        assert_eq!(code, 200, "{}: {before}", h.name());
        let promctl = h.run_ok(&["promctl", "status", "--json"]);
        let (_, after) = curl(h, "/v1/status");
        if before == after {
            if promctl == before {
                return serde_json::from_str(&before).expect("/v1/status is JSON");
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

/// `promctl watch --json` on a host, its lines sent to the returned channel. Ended on drop.
struct Watch {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn start(h: &Host) -> Watch {
        let mut child = Command::new("nsenter")
            .args([
                "-t",
                &h.init_pid().to_string(),
                "-a",
                "promctl",
                "watch",
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsenter promctl watch --json");
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
            .expect("promctl watch --json subscribed");
        Watch { child, lines }
    }

    /// The next line for which `hit` holds, within `timeout`; every line must be one JSON
    /// object; earlier lines are kept in `seen`.
    fn expect(
        &self,
        what: &str,
        timeout: Duration,
        seen: &mut Vec<String>,
        hit: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                panic!(
                    "promctl watch --json printed no {what}; got:\n{}",
                    seen.join("\n")
                );
            };
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(v.is_object(), "{line}");
            assert_eq!(v["group"], "web", "{line}");
            assert!(
                v["time"].as_str().is_some_and(|t| t.ends_with('Z')),
                "{line}"
            );
            seen.push(line);
            if hit(&v) {
                return v;
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
fn an_unhealthy_member_is_shown_ineligible_everywhere_and_watch_json_follows_a_promote() {
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let c = Cluster::boot_with(&net, StoreKind::Etcd(&etcd), LEASE, EXTRA, |_, _| {});
    let first = c.wait_one_active(None, Duration::from_secs(30));
    let sick = (first + 1) % 3;
    let target = (first + 2) % 3;
    let (active_name, sick_name) = (c.hosts[first].name(), c.hosts[sick].name());
    let target_name = c.hosts[target].name().to_string();

    // Settled: every host sees the two standbys eligible, the active one not (not passive).
    hosts::wait_until(
        Duration::from_secs(15),
        "every host shows the active member ineligible and the others eligible",
        || {
            c.hosts.iter().all(|h| {
                let doc = status(h);
                c.hosts.iter().enumerate().all(|(i, m)| {
                    member(&doc, m.name()).is_some_and(|m| {
                        if i == first {
                            m["eligible"] == false && m["why"] == "not-passive"
                        } else {
                            m["eligible"] == true && m["why"] == ""
                        }
                    })
                })
            })
        },
    );

    // The health check fails on one standby: every host shows it ineligible, and why.
    c.hosts[sick].run_ok(&["touch", "/run/web-unhealthy"]);
    hosts::wait_until(
        Duration::from_secs(10),
        "every host shows the sick member ineligible: unhealthy",
        || {
            c.hosts.iter().all(|h| {
                member(&status(h), sick_name).is_some_and(|m| {
                    m["eligible"] == false && m["why"] == "unhealthy" && m["healthy"] == false
                })
            })
        },
    );
    for h in &c.hosts {
        let doc = status_is_promctls(h);
        let g = &doc["groups"][0];
        let sick_entry = member(&doc, sick_name).expect("sick member");
        assert_eq!(sick_entry["role"], "passive", "{}: {doc}", h.name());
        assert!(sick_entry["term"].as_u64().is_some_and(|t| t > 0), "{doc}");
        assert!(
            sick_entry["since_usec"].as_u64().is_some_and(|t| t > 0),
            "{doc}"
        );
        assert_eq!(sick_entry["failures"], 0, "{doc}");
        let active = member(&doc, active_name).expect("active member");
        assert_eq!(active["role"], "active", "{doc}");
        assert_eq!(active["term"], g["term"], "{doc}");
        // This host's own standing, beside its members.
        let own = member(&doc, h.name()).expect("own entry");
        assert_eq!(g["eligible"], own["eligible"], "{doc}");
        assert_eq!(g["why"], own["why"], "{doc}");
        // The table says it in words, under the sick member's row.
        let table = h.run_ok(&["promctl", "status"]);
        let lines: Vec<&str> = table.lines().collect();
        let row = lines
            .iter()
            .position(|l| l.split_whitespace().any(|w| w == sick_name))
            .unwrap_or_else(|| panic!("no row of {sick_name}:\n{table}"));
        assert!(lines[row].trim_end().ends_with(" no"), "{table}");
        assert_eq!(
            lines.get(row + 1).map(|l| l.trim()),
            Some("ineligible: the health check fails"),
            "{table}"
        );
        assert!(lines.iter().all(|l| l.len() <= 80), "{table}");
    }
    assert_eq!(group_prop(&c.hosts[sick], "Eligible"), "b false");
    assert_eq!(group_prop(&c.hosts[sick], "Ineligible"), "s \"unhealthy\"");
    assert_eq!(group_prop(&c.hosts[target], "Eligible"), "b true");
    assert_eq!(group_prop(&c.hosts[target], "Ineligible"), "s \"\"");
    let states = c.hosts[target].run_ok(&[
        "busctl",
        "get-property",
        "org.promd1",
        "/org/promd1/group/web",
        "org.promd1.Group",
        "MemberStates",
    ]);
    assert!(states.starts_with("a(ssibbsutt) 3 "), "{states}");
    assert!(
        states.contains(&format!(
            "\"{sick_name}\" \"passive\" 100 false false \"unhealthy\""
        )),
        "{states}"
    );

    // A promote of the healthy standby, followed live by watch --json on it.
    let watch = Watch::start(&c.hosts[target]);
    c.hosts[target].run_ok(&["promctl", "promote", "web"]);
    assert_eq!(c.active_hosts(), vec![target]);
    let mut seen = Vec::new();
    let promoting = watch.expect(
        "role-changed to promoting",
        Duration::from_secs(5),
        &mut seen,
        |v| v["event"] == "role-changed" && v["new"] == "promoting",
    );
    assert_eq!(promoting["old"], "passive", "{promoting}");
    assert!(promoting["term"].as_u64().is_some_and(|t| t > 0));
    assert!(promoting["reason"].is_string());
    watch.expect(
        "role-changed to active",
        Duration::from_secs(5),
        &mut seen,
        |v| v["event"] == "role-changed" && v["new"] == "active",
    );
    let props = watch.expect(
        "properties-changed showing the role active",
        Duration::from_secs(5),
        &mut seen,
        |v| v["event"] == "properties-changed" && v["role"] == "active",
    );
    if let Some(members) = props["members"].as_array() {
        assert!(
            members
                .iter()
                .any(|m| m["node"] == target_name.as_str() && m["role"] == "active"),
            "{props}"
        );
    }
    drop(watch);

    // The sick member is still shown ineligible after the hand-over; healthy again, eligible.
    for h in &c.hosts {
        let doc = status_is_promctls(h);
        let m = member(&doc, sick_name).expect("sick member");
        assert_eq!(
            (&m["eligible"], &m["why"]),
            (&false.into(), &"unhealthy".into())
        );
    }
    c.hosts[sick].run_ok(&["rm", "/run/web-unhealthy"]);
    hosts::wait_until(
        Duration::from_secs(10),
        "every host shows the recovered member eligible",
        || {
            c.hosts.iter().all(|h| {
                member(&status(h), sick_name)
                    .is_some_and(|m| m["eligible"] == true && m["why"] == "")
            })
        },
    );
    c.check_history();
}
