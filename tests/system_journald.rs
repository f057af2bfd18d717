//! A stalled journald must not stall promd: three real hosts with a real etcd; journald is
//! stopped (SIGSTOP) on the active host, and the role is moved away and back by D-Bus
//! Promote, which makes that host's promd log. Its promd must carry both out and keep running:
//! no watchdog kill (same pid), no unplanned failover; the lines it had to drop are counted
//! (`promd_journal_lines_dropped_total`) and reported once journald reads again. Before
//! promd's journald socket had a send timeout, the first log lines that journald could not
//! take blocked promd's event loop, its watchdog killed it, and the role moved (the packaging
//! test's flake).

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
    // What it dropped is counted, not lost without a word: the metric while journald is
    // stopped (HTTP does not log), and one warning once journald reads again.
    let dropped = |h: &support::hosts::Host| -> u64 {
        let (code, text) = support::http::curl(h, "GET", "/metrics");
        assert_eq!(code, 200, "{}: GET /metrics: {text}", h.name());
        text.lines()
            .find_map(|l| l.strip_prefix("promd_journal_lines_dropped_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .expect("promd_journal_lines_dropped_total in /metrics")
    };
    let lost = dropped(h);
    assert!(lost > 0, "{}: no log line counted as dropped", h.name());
    h.signal(journald, Signal::SIGCONT);
    // promd learns that journald reads again from the first line it tries after its holdoff
    // (5 s): make it log, without moving the role, until the warning is there.
    let warning = |h: &support::hosts::Host| -> Option<u64> {
        h.journal(&["-u", "promd.service", "-p", "warning", "-o", "cat"])
            .lines()
            .find_map(|l| l.split_once(": ")?.1.strip_suffix(" lines were dropped"))
            .and_then(|n| n.parse().ok())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let reported = loop {
        // A reload logs "configuration reloaded".
        h.run_ok(&["systemctl", "reload", "promd"]);
        if let Some(n) = warning(h) {
            break n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: no warning about dropped lines 30 s after journald came back",
            h.name()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(c.active_hosts(), vec![other]);
    eprintln!(
        "{}: promd dropped {reported} log lines while journald was stopped",
        h.name()
    );
    assert!(
        reported >= lost,
        "reported {reported} dropped, counted {lost}"
    );
    assert_eq!(dropped(h), reported, "the warning and the metric disagree");
    c.check_history();
}
