//! A stalled journald must not stall promd: three real hosts with a real etcd; journald is
//! stopped (SIGSTOP) on the active host, and the role is moved away and back by D-Bus
//! Promote, which makes that host's promd log. Its promd must carry both out and keep running:
//! no watchdog kill (same pid), no unplanned failover; the lines it had to drop are counted
//! (`promd_journal_lines_dropped_total`) and reported once journald reads again. Before
//! promd's journald socket had a send timeout, the first log lines that journald could not
//! take blocked promd's event loop, its watchdog killed it, and the role moved (the packaging
//! test's flake).
//!
//! journald is stopped with its socket's queue full, as when it stalls on its disk while the
//! host logs: a host with a writable `/proc/sys/net` queues 512 datagrams for it
//! (systemd-sysctl's `net.unix.max_dgram_qlen`), more than this test makes promd log, so a
//! merely stopped journald would take every line and the test would prove nothing.

mod support;

use std::time::Duration;

use support::hosts::Signal;

const LEASE: Duration = Duration::from_secs(2);

/// Fill the queue of the stopped journald `pid` (a pid on this machine) with datagrams of our
/// own, through its host's root, until the kernel refuses more: a fresh socket whose first
/// send would block finds the queue itself full, not its own send buffer.
fn fill_journald_queue(pid: u32) {
    use std::os::unix::net::UnixDatagram;
    let socket = format!("/proc/{pid}/root/run/systemd/journal/socket");
    let mut filled = 0usize;
    let mut fillers = Vec::new(); // kept open until the queue is full: their datagrams stay
    loop {
        let s = UnixDatagram::unbound().expect("a datagram socket");
        s.set_nonblocking(true).expect("non-blocking");
        let mut sent = 0usize;
        loop {
            match s.send_to(
                b"MESSAGE=system_journald fills the queue\nPRIORITY=7\n",
                &socket,
            ) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{socket}: {e}"),
            }
        }
        fillers.push(s);
        filled += sent;
        if sent == 0 {
            break;
        }
        assert!(filled < 1_000_000, "{socket}: the queue never filled");
    }
    eprintln!("journald's queue filled with {filled} datagrams");
}

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
    fill_journald_queue(journald);

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
