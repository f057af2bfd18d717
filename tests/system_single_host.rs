//! promd's start-up on one real systemd host: an unreachable store, a bad configuration, a
//! watchdog too long for the lease.

mod support;

use std::net::TcpListener;
use std::time::Duration;

use support::cluster::promd_unit;
use support::hosts::{self, Host, HostSpec, Net};

fn boot(net: &Net, config: &str, watchdog: &str) -> Host {
    let mut spec = HostSpec::new("solo");
    spec.file("/etc/promd/promd.toml", config);
    spec.file("/etc/systemd/system/promd.service", promd_unit());
    spec.file(
        "/etc/systemd/system/promd.service.d/test.conf",
        format!("[Service]\nWatchdogSec={watchdog}\n"),
    );
    spec.file(
        "/etc/systemd/system/web-active.target",
        "[Unit]\nWants=web.service\n",
    );
    spec.file(
        "/etc/systemd/system/web.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
    spec.enable("promd.service", "multi-user.target");
    spec.bin(env!("CARGO_BIN_EXE_promd"));
    net.boot(0, spec)
}

fn status_text(h: &Host) -> String {
    h.run_ok(&["systemctl", "show", "-P", "StatusText", "promd"])
}

#[test]
fn unreachable_store_at_start_reports_ready_and_waits_passive() {
    let net = Net::new(1);
    // A port on the gateway where nothing answers: bound, never accepted, then closed.
    let port = TcpListener::bind((net.gateway_ip(0), 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "node = \"solo\"\n[store]\nkind = \"etcd\"\nendpoints = [\"http://{}:{port}\"]\nconnect-timeout = \"300ms\"\n\
         [[group]]\nname = \"web\"\nactive-target = \"web-active.target\"\nlease = \"2s\"\n",
        net.gateway_ip(0)
    );
    let h = boot(&net, &config, "500ms");
    // READY=1 was sent (Type=notify: "active" means ready), and STATUS= says why it waits:
    // passive (STATUS= goes out at most four times a second, so the line is awaited).
    hosts::wait_until(
        Duration::from_secs(20),
        "promd ready, passive, waiting for the store",
        || {
            let status = status_text(&h);
            h.is_active("promd")
                && status.starts_with("web: passive")
                && status.contains("waiting for the store")
        },
    );
    // It keeps retrying, passive, and never starts the active target without the role.
    let journal = h.journal(&["-u", "promd"]);
    assert!(journal.contains("store unreachable"), "{journal}");
    assert!(!h.is_active("web-active.target"));
    assert!(!h.is_active("web.service"));
    assert_eq!(
        h.run_ok(&["systemctl", "show", "-P", "NRestarts", "promd"])
            .trim(),
        "0"
    );
}

#[test]
fn bad_configuration_is_refused_with_reasons_and_a_long_watchdog_fits_itself() {
    let net = Net::new(1);
    let bad = "node = \"solo\"\n[[group]]\nname = \"web\"\nactive-target = \"web-active.target\"\nlease = \"10 parsecs\"\nbogus = 1\n";
    let h = boot(&net, bad, "500ms");
    hosts::wait_until(Duration::from_secs(20), "promd refused to start", || {
        h.unit_state("promd") == "failed"
    });
    // At priority err, attributed to the unit although promd has already exited.
    let journal = h.journal(&["-u", "promd", "-p", "err"]);
    assert!(
        journal.contains("/etc/promd/promd.toml:5:9:"),
        "lease position missing:\n{journal}"
    );
    assert!(
        journal.contains("/etc/promd/promd.toml:6:1:"),
        "unknown key position missing:\n{journal}"
    );
    assert_eq!(
        h.run_ok(&["systemctl", "show", "-P", "ExecMainStatus", "promd"])
            .trim(),
        "78"
    );
    assert_eq!(
        h.run_ok(&["systemctl", "show", "-P", "NRestarts", "promd"])
            .trim(),
        "0",
        "no restart loop"
    );
    assert!(!h.is_active("web.service"));
    // check-config says the same, with exit status 2.
    let out = h.exec(&["promd", "check-config", "/etc/promd/promd.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("promd.toml:5:9:"));

    // A valid file, and the shipped watchdog (3s) is too long for a 2s lease: promd lowers
    // its own watchdog to fit (WATCHDOG_USEC=) instead of refusing to start.
    h.write_file(
        "/etc/promd/promd.toml",
        "node = \"solo\"\n[[group]]\nname = \"web\"\nactive-target = \"web-active.target\"\nlease = \"2s\"\n",
    );
    h.write_file(
        "/etc/systemd/system/promd.service.d/test.conf",
        "[Service]\nWatchdogSec=3s\n",
    );
    h.run_ok(&["systemctl", "daemon-reload"]);
    let out = h.exec(&["promd", "check-config", "/etc/promd/promd.toml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "check-config and start-up agree"
    );
    h.run_ok(&["systemctl", "restart", "promd"]);
    // The unit is up a moment before promd has recorded the job's result: wait for both.
    hosts::wait_until(
        Duration::from_secs(20),
        "the only host becomes active and says so",
        || h.is_active("web.service") && status_text(&h).starts_with("web: active"),
    );
    let journal = h.journal(&["-u", "promd", "-n", "50"]);
    assert!(
        journal.contains("watchdog 3s -> 300ms to fit group web's lease"),
        "{journal}"
    );
    assert_eq!(
        h.run_ok(&["systemctl", "show", "-P", "NRestarts", "promd"])
            .trim(),
        "0",
        "never killed by its own watchdog"
    );
}

/// A dead or hung agent cannot leave its service running: the units are bound to promd, so
/// systemd stops them itself, long before promd is restarted.
#[test]
fn units_stop_with_a_killed_or_hung_promd_without_waiting_for_its_restart() {
    let net = Net::new(1);
    let config = "node = \"solo\"\n[[group]]\nname = \"web\"\nactive-target = \"web-active.target\"\nlease = \"2s\"\n";
    let h = boot(&net, config, "500ms");
    h.write_file(
        "/etc/systemd/system/promd.service.d/slow-restart.conf",
        "[Service]\nRestartSec=1min\n",
    );
    h.run_ok(&["systemctl", "daemon-reload"]);
    h.run_ok(&["systemctl", "restart", "promd"]);
    hosts::wait_until(Duration::from_secs(20), "active", || {
        h.is_active("web.service")
    });

    let pid = h.pid_on_machine("promd").expect("promd runs");
    h.signal(pid, hosts::Signal::SIGKILL);
    hosts::wait_until(
        Duration::from_secs(3),
        "web.service stopped with promd",
        || !h.is_active("web.service"),
    );
    assert!(
        h.pid_on_machine("promd").is_none(),
        "promd must not have been restarted yet"
    );

    h.run_ok(&["systemctl", "restart", "promd"]);
    hosts::wait_until(Duration::from_secs(20), "active again", || {
        h.is_active("web.service")
    });
    let pid = h.pid_on_machine("promd").expect("promd runs");
    h.signal(pid, hosts::Signal::SIGSTOP);
    // WatchdogSec=500ms: the watchdog SIGKILLs the paused promd, the units follow.
    hosts::wait_until(
        Duration::from_secs(3),
        "web.service stopped with the hung promd",
        || !h.is_active("web.service"),
    );
    // systemd stops the bound units as soon as it sends the SIGKILL, before it has reaped
    // promd: the process may outlive web.service by a few ms, but not for long.
    hosts::wait_until(Duration::from_secs(3), "the watchdog killed it", || {
        !h.owns_pid(pid) || h.pid_on_machine("promd") != Some(pid)
    });
    let journal = h.run_ok(&["journalctl", "-u", "promd", "-o", "cat"]);
    assert!(journal.contains("Watchdog timeout"), "{journal}");
}
