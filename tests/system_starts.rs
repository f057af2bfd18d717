//! Starts of the active target on a real systemd host (dir store, one host): a start that
//! leaves a unit down (a crash under `Restart=on-failure`, waiting in `auto-restart`) never
//! reads `active`; a host alone keeps retrying a failed start at the backoff, without a hot
//! loop, and comes up once the fault is gone; a slow start that succeeds is no failure.

mod support;

use std::time::Duration;

use support::cluster::promd_unit;
use support::hosts::{self, Host, HostSpec, Net};

const CONFIG: &str = "node = \"solo\"\n[[group]]\nname = \"web\"\nactive-target = \"web-active.target\"\n\
                      lease = \"2s\"\nrestart-backoff = \"1s\"\n";

/// One host with the dir store and `web.service` as given.
fn boot(net: &Net, web: &str) -> Host {
    let mut spec = HostSpec::new("solo");
    spec.file("/etc/promd/promd.toml", CONFIG);
    spec.file("/etc/systemd/system/promd.service", promd_unit());
    spec.file(
        "/etc/systemd/system/web-active.target",
        "[Unit]\nWants=web.service\n",
    );
    spec.file("/etc/systemd/system/web.service", web);
    spec.enable("promd.service", "multi-user.target");
    spec.bin(env!("CARGO_BIN_EXE_promd"));
    net.boot(0, spec)
}

fn journal(h: &Host) -> String {
    h.journal(&["-u", "promd", "-o", "cat"])
}

fn nrestarts(h: &Host, unit: &str) -> u32 {
    h.run_ok(&["systemctl", "show", "-P", "NRestarts", unit])
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A service with `Restart=on-failure` that crashes at every start: between the crash and
/// systemd's restart it is `activating (auto-restart)`, which is not up. The role must stay
/// `promoting`: web.service never ran, so the host never reads active.
///
/// `Type=notify` and an exit before `READY=1` is a crash *at start* by systemd's own word:
/// the start job fails, and the target (ordered after what it wants) ends after it. A
/// `Type=simple` service is up once forked, so whether a crash 1 ms later is seen by the
/// check after the start or by the watch afterwards is a race (CI once lost it).
#[test]
fn a_unit_that_crashes_at_start_under_restart_on_failure_never_reads_active() {
    let net = Net::new(1);
    let h = boot(
        &net,
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nType=notify\nExecStart=/bin/false\nRestart=on-failure\nRestartSec=2s\n",
    );
    hosts::wait_until(
        Duration::from_secs(30),
        "web.service crashed and was restarted by systemd twice",
        || nrestarts(&h, "web.service") >= 2,
    );
    let said = journal(&h);
    assert!(
        !said.contains("-> active"),
        "the role read active though web.service never ran:\n{said}"
    );
    assert!(
        said.contains("web.service is activating (auto-restart) after the active target started"),
        "the failed start was not counted:\n{said}"
    );
}

/// Alone (no standby), a start that leaves web.service down is retried at the restart
/// backoff, not in a hot loop, past max-restarts and past systemd's start limit; once the
/// fault is gone, the next retry brings the host up.
#[test]
fn alone_a_failed_start_is_retried_at_the_backoff_and_comes_up_once_fixed() {
    let net = Net::new(1);
    let h = boot(
        &net,
        "[Service]\nExecStartPre=/usr/bin/test -e /run/web-ready\nExecStart=/bin/sleep infinity\n",
    );
    let t0 = std::time::Instant::now();
    // max-restarts (3) + 5: past the limit, and past systemd's default start limit (5 in 10s).
    hosts::wait_until(Duration::from_secs(40), "eight failed starts", || {
        journal(&h)
            .matches("did not come up with the active target")
            .count()
            >= 8
    });
    let tries = journal(&h)
        .matches("did not come up with the active target")
        .count();
    let elapsed = t0.elapsed();
    assert!(
        tries as f64 <= elapsed.as_secs_f64() + 2.0,
        "{tries} failed starts in {elapsed:?}: faster than one per restart-backoff (1s)"
    );
    h.write_file("/run/web-ready", "");
    hosts::wait_until(
        Duration::from_secs(20),
        "web.service up and the host active once the fault is gone",
        || {
            h.is_active("web.service")
                && h.run_ok(&["systemctl", "show", "-P", "StatusText", "promd"])
                    .starts_with("web: active")
        },
    );
}

/// A service that is slow to become ready but does (3s of `ExecStartPre=`, then `READY=1`
/// 3s after its start) is a successful start: never counted as a failure, and the host reads
/// active once it is ready.
#[test]
fn a_slow_but_successful_start_is_not_a_failure() {
    let net = Net::new(1);
    let h = boot(
        &net,
        "[Service]\nType=notify\nNotifyAccess=all\nExecStartPre=/bin/sleep 3\n\
         ExecStart=/bin/sh -c 'sleep 3; systemd-notify --ready; exec sleep infinity'\n",
    );
    hosts::wait_until(Duration::from_secs(30), "the host active", || {
        h.run_ok(&["systemctl", "show", "-P", "StatusText", "promd"])
            .starts_with("web: active")
    });
    assert!(h.is_active("web.service"));
    let said = journal(&h);
    assert!(
        !said.contains("did not come up") && !said.contains("failure"),
        "a slow start was counted as a failure:\n{said}"
    );
}
