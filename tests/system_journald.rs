//! A stalled journald must not stall promd: three real hosts with a real etcd; journald is
//! stopped (SIGSTOP) on the active host, and the role is moved away and back by D-Bus
//! Promote, which makes that host's promd log. Its promd must carry both out and keep running:
//! no watchdog kill (same pid), no unplanned failover. Before promd's journald socket was
//! made non-blocking, the first log lines that journald could not take blocked promd's event
//! loop, its watchdog killed it, and the role moved (the packaging test's flake).

mod support;

use std::time::Duration;

use support::hosts::Signal;

const LEASE: Duration = Duration::from_secs(2);

#[test]
fn a_stopped_journald_neither_stalls_promd_nor_moves_the_role() {
    let (_net, _etcd, c) = support::http::boot("127.0.0.1:8008", LEASE);
    let first = c.wait_one_active(None, Duration::from_secs(30));
    let h = &c.hosts[first];
    let promd = c.promd_pid(first);
    let journald = h
        .pid_on_machine("systemd-journal")
        .expect("journald runs on the host");
    h.signal(journald, Signal::SIGSTOP);

    // Away: the active host's promd demotes (and logs it) while journald does not read.
    let other = (first + 1) % 3;
    c.hosts[other].run_ok(&["promctl", "promote", "web"]);
    assert_eq!(
        c.wait_one_active(Some(first), Duration::from_secs(10)),
        other
    );
    // And back: this host's promd promotes itself, logging all the way.
    for _ in 0..3 {
        h.run_ok(&["promctl", "promote", "web"]);
        assert_eq!(c.active_hosts(), vec![first]);
        c.hosts[other].run_ok(&["promctl", "promote", "web"]);
        assert_eq!(c.active_hosts(), vec![other]);
    }
    assert_eq!(
        h.pid_on_machine("promd"),
        Some(promd),
        "{}: promd was restarted while journald was stopped",
        h.name()
    );
    h.signal(journald, Signal::SIGCONT);
    c.check_history();
}
