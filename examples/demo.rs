//! A live promd cluster on this machine: three systemd hosts (nspawn containers) and a
//! 3-member etcd. Shows who is active, then cuts the active host off and shows the failover,
//! heals it, hands the role over with `systemctl stop promd`, and prints the run spans of the
//! protected service on one clock. Ctrl-C ends it early; everything it made is removed.
//!
//! Run it with `sudo scripts/demo.sh`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use support::cluster::{Cluster, StoreKind, elapsed};
use support::etcd::EtcdCluster;
use support::hosts::{self, Net};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: i32) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

const LEASE: Duration = Duration::from_secs(3);

/// One line per host: promd's own STATUS= text and whether the service runs.
fn show(c: &Cluster, started: Instant) {
    println!("--- t = {:5.1}s", started.elapsed().as_secs_f64());
    for h in &c.hosts {
        let status = h.exec(&["systemctl", "show", "-P", "StatusText", "promd"]);
        let status = String::from_utf8_lossy(&status.stdout).trim().to_string();
        let web = if h.is_active("web.service") {
            "web.service RUNNING"
        } else {
            "web.service stopped"
        };
        println!(
            "  {:<3} {:<20} promd: {}",
            h.name(),
            web,
            if status.is_empty() {
                "(not running)"
            } else {
                &status
            }
        );
    }
}

/// Shows the cluster every half second for `d`, or until interrupted.
fn watch(c: &Cluster, started: Instant, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return false;
        }
        show(c, started);
        std::thread::sleep(Duration::from_millis(500)); // a display refresh, not synchronisation
    }
    true
}

fn main() {
    let handler = SigAction::new(
        SigHandler::Handler(on_interrupt),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        if let Err(e) = unsafe { sigaction(sig, &handler) } {
            eprintln!("demo: cannot handle {sig}: {e}");
        }
    }
    println!(
        "Booting a 3-member etcd and three systemd hosts (n1, n2, n3), lease {}s...",
        LEASE.as_secs()
    );
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let c = Cluster::boot(&net, StoreKind::Etcd(&etcd), LEASE);
    let started = Instant::now();
    let active = c.wait_one_active(None, Duration::from_secs(60));
    println!(
        "\n{} is active: it runs web-active.target (web.service); the others run web-passive.target.",
        c.hosts[active].name()
    );
    if !watch(&c, started, Duration::from_secs(3)) {
        return;
    }

    println!(
        "\n>>> Cutting {} off the network (all packets dropped, link up).",
        c.hosts[active].name()
    );
    let t0 = hosts::now_ns();
    c.hosts[active].cut();
    let next = c.wait_one_active(Some(active), LEASE * 4);
    println!(
        ">>> {} took over {} ms after the cut ({} fenced itself before its {}s lease could expire).",
        c.hosts[next].name(),
        elapsed(t0, c.start_after(next, t0)).as_millis(),
        c.hosts[active].name(),
        LEASE.as_secs()
    );
    if !watch(&c, started, Duration::from_secs(3)) {
        return;
    }
    println!(
        "\n>>> Healing {}: it rejoins as passive.",
        c.hosts[active].name()
    );
    c.hosts[active].heal();
    if !watch(&c, started, Duration::from_secs(3)) {
        return;
    }

    println!(
        "\n>>> systemctl stop promd on {}: a planned hand-over.",
        c.hosts[next].name()
    );
    let t0 = hosts::now_ns();
    c.hosts[next].run_ok(&["systemctl", "stop", "promd"]);
    let third = c.wait_one_active(Some(next), Duration::from_secs(10));
    println!(
        ">>> {} took over {} ms after the stop.",
        c.hosts[third].name(),
        elapsed(t0, c.start_after(third, t0)).as_millis()
    );
    c.hosts[next].run_ok(&["systemctl", "start", "promd"]);
    if !watch(&c, started, Duration::from_secs(3)) {
        return;
    }

    println!("\nRun spans of web.service, recorded by the service itself, on one clock:");
    let spans = c.spans();
    println!("{}", hosts::timeline(&spans));
    hosts::assert_no_overlap(&spans);
    println!(
        "No two hosts ever ran web.service at the same time; PROMD_TERM grew at every change."
    );
    c.check_history();
    println!(
        "\nThe journal of {} (journalctl -u promd):",
        c.hosts[third].name()
    );
    println!(
        "{}",
        c.hosts[third].journal(&["-u", "promd", "-n", "8", "-o", "cat"])
    );
    println!("Cleaning up (containers, namespaces, links, etcd).");
}
