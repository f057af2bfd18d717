//! Proves the system-test harness (`tests/support/hosts.rs`): real systemd hosts in nspawn
//! containers boot, run units bound in, record spans, reach their gateways, partition, and leave
//! nothing behind. Needs root and the packages of `scripts/deps.sh`; run one test at a time
//! (`--test-threads=1`).

mod support;

use std::cell::RefCell;
use std::net::{SocketAddrV4, TcpListener};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::hosts::{self, Host, HostSpec, Net, Signal, Span};

const CONNECT: Duration = Duration::from_secs(1);
const SETTLE: Duration = Duration::from_secs(20);

fn web_spec(name: &str, spans_dir: &Path) -> HostSpec {
    let mut spec = HostSpec::new(name);
    let unit = hosts::span_unit("web", "web", &format!("/var/lib/spans/{name}.log"));
    spec.file("/etc/systemd/system/web.service", unit);
    spec.file("/etc/promd/promd.toml", format!("node = \"{name}\"\n"));
    spec.bind_rw(spans_dir, "/var/lib/spans");
    spec.bin(env!("CARGO_BIN_EXE_promd"));
    spec
}

fn listen_on(ip: std::net::Ipv4Addr) -> (TcpListener, SocketAddrV4) {
    let listener = TcpListener::bind(SocketAddrV4::new(ip, 0)).expect("listen on a gateway IP");
    let addr = match listener.local_addr().expect("local addr") {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("not IPv4: {other}"),
    };
    (listener, addr)
}

/// Everything a Net and its hosts made, to check afterwards that it is gone.
struct Made {
    netns: Vec<String>,
    links: Vec<String>,
    dirs: Vec<PathBuf>,
    nspawn_pids: Vec<u32>,
    machines: Vec<String>,
}

impl Made {
    fn of(net: &Net, hosts: &[&Host]) -> Made {
        Made {
            netns: net.netns_names(),
            links: net.link_names(),
            dirs: hosts.iter().map(|h| h.dir().to_path_buf()).collect(),
            nspawn_pids: hosts.iter().map(|h| h.nspawn_pid()).collect(),
            machines: hosts.iter().map(|h| h.machine_name().to_string()).collect(),
        }
    }

    fn assert_gone(&self) {
        let out = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        let list = String::from_utf8_lossy(&out.stdout);
        for ns in &self.netns {
            assert!(
                !list
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(ns.as_str())),
                "netns {ns} is still there:\n{list}"
            );
            assert!(
                !Path::new("/run/netns").join(ns).exists(),
                "/run/netns/{ns} is still there"
            );
        }
        for link in &self.links {
            assert!(
                !Path::new("/sys/class/net").join(link).exists(),
                "link {link} is still there"
            );
        }
        for dir in &self.dirs {
            assert!(!dir.exists(), "host dir {dir:?} is still there");
        }
        for m in &self.machines {
            for root in ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup"] {
                let cg = Path::new(root).join(format!("promd-test-{m}"));
                assert!(!cg.exists(), "cgroup {cg:?} is still there");
            }
            let propagate = Path::new("/run/systemd/nspawn/propagate").join(m);
            assert!(!propagate.exists(), "{propagate:?} is still there");
        }
        for pid in &self.nspawn_pids {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&cmdline).contains("systemd-nspawn"),
                "systemd-nspawn pid {pid} still runs"
            );
        }
    }
}

fn bus_id_over_zbus(address: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(address)
            .build()
            .await
            .expect("connect to the host's bus");
        let reply = conn
            .call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "GetId",
                &(),
            )
            .await
            .expect("GetId");
        reply.body().deserialize::<String>().expect("GetId reply")
    })
}

#[test]
fn two_hosts_boot_run_units_record_spans_and_partition() {
    let spans_dir = tempfile::tempdir().expect("tempdir");
    let net = Net::new(2);
    let gw0 = net.gateway_ip(0);
    let gw1 = net.gateway_ip(1);
    let mut n1 = net.boot(0, web_spec("n1", spans_dir.path()));
    let mut n2 = net.boot(1, web_spec("n2", spans_dir.path()));
    eprintln!(
        "boot time: n1 {:?}, n2 {:?}",
        n1.boot_time(),
        n2.boot_time()
    );
    let made = Made::of(&net, &[&n1, &n2]);

    // Booted: systemd up, own hostname and machine-id, our files and binaries bound in.
    for h in [&n1, &n2] {
        let state = String::from_utf8_lossy(&h.exec(&["systemctl", "is-system-running"]).stdout)
            .trim()
            .to_string();
        assert!(
            state == "running" || state == "degraded",
            "{}: system is {state}",
            h.name()
        );
        assert_eq!(h.run_ok(&["hostname"]).trim(), h.name());
        h.run_ok(&["test", "-x", "/usr/local/bin/promd"]);
        assert!(
            h.run_ok(&["cat", "/etc/promd/promd.toml"])
                .contains(h.name())
        );
        assert_eq!(
            h.pid_on_machine("systemd"),
            Some(h.init_pid()),
            "{}: its init is its oldest systemd",
            h.name()
        );
        assert_eq!(h.pid_inside(h.init_pid()), Some(1));
    }
    assert_ne!(
        n1.run_ok(&["cat", "/etc/machine-id"]),
        n2.run_ok(&["cat", "/etc/machine-id"])
    );

    // The bus from the test process (zbus) is the host's own bus.
    let inside = n1.run_ok(&hosts::BUS_GET_ID);
    let outside = bus_id_over_zbus(&n1.bus_address());
    assert_eq!(inside.trim(), format!("s \"{outside}\""));
    assert_ne!(outside, bus_id_over_zbus(&n2.bus_address()));

    // A bound unit starts, with the term from the env file; its pid is found on n1 only.
    n1.write_file("/run/promd/web.env", "PROMD_GROUP=web\nPROMD_TERM=7\n");
    // Through /var/run (an absolute symlink to /run inside): still the host's own /run.
    n2.write_file("/var/run/promd/web.env", "PROMD_GROUP=web\nPROMD_TERM=8\n");
    let machine_env = std::fs::read_to_string("/run/promd/web.env").unwrap_or_default();
    assert!(
        !machine_env.contains("PROMD_TERM=8"),
        "wrote to the machine's /run"
    );
    assert!(
        n2.run_ok(&["cat", "/run/promd/web.env"])
            .contains("PROMD_TERM=8")
    );
    assert_eq!(
        n2.read_file("/var/run/promd/web.env").as_deref(),
        Some("PROMD_GROUP=web\nPROMD_TERM=8\n")
    );
    let t0 = hosts::now_ns();
    n1.run_ok(&["systemctl", "start", "web.service"]);
    assert!(n1.is_active("web.service"));
    let sleep1 = n1
        .pid_on_machine("sleep")
        .expect("n1's web.service runs sleep");
    assert_eq!(
        n2.pid_on_machine("sleep"),
        None,
        "n2 must not see n1's processes"
    );
    assert!(!n2.owns_pid(sleep1));
    assert!(
        n1.journal(&["-u", "web.service"])
            .contains("span recorder for web")
    );

    // SIGKILL: ExecStopPost still records the stop.
    n1.signal(sleep1, Signal::SIGKILL);
    hosts::wait_until(SETTLE, "n1's web.service is down after SIGKILL", || {
        !n1.is_active("web.service")
    });
    hosts::wait_until(SETTLE, "n1's stop is recorded", || {
        hosts::read_spans(spans_dir.path().join("n1.log"))
            .first()
            .is_some_and(|s| s.stop_ns.is_some())
    });
    n2.run_ok(&["systemctl", "start", "web.service"]);
    n2.run_ok(&["systemctl", "stop", "web.service"]);
    let t1 = hosts::now_ns();

    let s1 = hosts::read_spans(spans_dir.path().join("n1.log"));
    let s2 = hosts::read_spans(spans_dir.path().join("n2.log"));
    assert_eq!(s1.len(), 1, "{s1:?}");
    assert_eq!(s2.len(), 1, "{s2:?}");
    assert_eq!(s1[0].term, Some(7));
    assert_eq!(s2[0].term, Some(8));
    for s in s1.iter().chain(&s2) {
        let stop = s.stop_ns.expect("stopped");
        assert!(
            t0 <= s.start_ns && s.start_ns <= stop && stop <= t1,
            "{s:?} not within [{t0}, {t1}]"
        );
    }
    hosts::assert_no_overlap(&[("n1", s1.clone()), ("n2", s2.clone())]);

    // Both at once: the recorder sees the overlap.
    n1.run_ok(&["systemctl", "start", "web.service"]);
    n2.run_ok(&["systemctl", "start", "web.service"]);
    let open = [
        ("n1", hosts::read_spans(spans_dir.path().join("n1.log"))),
        ("n2", hosts::read_spans(spans_dir.path().join("n2.log"))),
    ];
    assert_eq!(
        hosts::find_overlaps(&open).len(),
        1,
        "{}",
        hosts::timeline(&open)
    );
    n1.run_ok(&["systemctl", "stop", "web.service"]);
    n2.run_ok(&["systemctl", "stop", "web.service"]);
    let closed = [
        ("n1", hosts::read_spans(spans_dir.path().join("n1.log"))),
        ("n2", hosts::read_spans(spans_dir.path().join("n2.log"))),
    ];
    assert!(
        closed
            .iter()
            .all(|(_, s)| s.len() == 2 && s.iter().all(|s| s.stop_ns.is_some())),
        "{closed:?}\n{}",
        hosts::timeline(&closed)
    );
    let caught = catch_unwind(|| hosts::assert_no_overlap(&closed));
    assert!(
        caught.is_err(),
        "assert_no_overlap must panic on overlapping spans"
    );

    // Network: each host reaches every gateway IP, but not the other host.
    let (_l0, a0) = listen_on(gw0);
    let (_l1, a1) = listen_on(gw1);
    for h in [&n1, &n2] {
        assert!(h.can_connect(a0, CONNECT), "{} cannot reach {a0}", h.name());
        assert!(h.can_connect(a1, CONNECT), "{} cannot reach {a1}", h.name());
    }
    let route = n1.exec(&["ip", "route", "get", &n2.ip().to_string()]);
    assert!(
        !route.status.success(),
        "n1 has a route to n2: {}",
        String::from_utf8_lossy(&route.stdout)
    );

    // Silent partition of n1: its packets vanish, the link stays up; n2 is unaffected.
    n1.cut();
    assert!(n1.is_cut());
    assert!(!n1.can_connect(a0, CONNECT), "n1 reaches {a0} while cut");
    assert!(!n1.can_connect(a1, CONNECT), "n1 reaches {a1} while cut");
    assert!(n1.has_carrier(), "a cut keeps the link up");
    assert!(
        n2.can_connect(a0, CONNECT) && n2.can_connect(a1, CONNECT),
        "n2 cut off by n1's cut"
    );
    n1.heal();
    assert!(!n1.is_cut());
    hosts::wait_until(SETTLE, "n1 reaches its gateway after heal", || {
        n1.can_connect(a0, CONNECT)
    });

    // Link down: n1 sees its carrier drop.
    n1.link_down();
    hosts::wait_until(SETTLE, "n1's carrier drops", || !n1.has_carrier());
    assert!(
        !n1.can_connect(a0, CONNECT),
        "n1 reaches {a0} with its link down"
    );
    assert!(n2.can_connect(a0, CONNECT), "n2 lost {a0} with n1's link");
    n1.link_up();
    hosts::wait_until(SETTLE, "n1's carrier is back", || n1.has_carrier());
    hosts::wait_until(SETTLE, "n1 reaches its gateway after link up", || {
        n1.can_connect(a0, CONNECT)
    });

    // A crash is a power cut: no ExecStopPost, the span stays open until the test closes it.
    n2.run_ok(&["systemctl", "start", "web.service"]);
    let sleep2 = n2
        .pid_on_machine("sleep")
        .expect("n2's web.service runs sleep");
    n2.crash();
    let crashed_at = hosts::now_ns();
    assert!(!n2.is_running());
    assert!(!n2.owns_pid(sleep2), "n2's processes died with it");
    let mut s2 = hosts::read_spans(spans_dir.path().join("n2.log"));
    assert_eq!(s2.len(), 3, "{s2:?}");
    assert_eq!(s2[2].stop_ns, None, "a crashed host runs no ExecStopPost");
    hosts::close_open_spans(&mut s2, crashed_at);
    assert_eq!(s2[2].stop_ns, Some(crashed_at));

    // Power off: nspawn exits; then everything goes with the values that own it.
    n1.poweroff();
    assert!(!n1.is_running());
    drop((n1, n2, net));
    made.assert_gone();
}

#[test]
fn everything_is_removed_when_a_test_panics() {
    let made: RefCell<Option<Made>> = RefCell::new(None);
    let spans_dir = tempfile::tempdir().expect("tempdir");
    let result = catch_unwind(AssertUnwindSafe(|| {
        let net = Net::new(2);
        let hosts = net.boot_all(vec![
            web_spec("a1", spans_dir.path()),
            web_spec("a2", spans_dir.path()),
        ]);
        for h in &hosts {
            eprintln!("boot_all: {} up after {:?}", h.name(), h.boot_time());
            h.run_ok(&["systemctl", "start", "web.service"]);
        }
        hosts[0].cut();
        *made.borrow_mut() = Some(Made::of(&net, &hosts.iter().collect::<Vec<_>>()));
        panic!("deliberate panic with two hosts running");
    }));
    assert!(result.is_err());
    let made = made.into_inner().expect("the hosts booted");
    made.assert_gone();
    // The containers were halted cleanly: each web.service recorded its stop.
    for name in ["a1", "a2"] {
        let spans = hosts::read_spans(spans_dir.path().join(format!("{name}.log")));
        assert!(
            spans.len() == 1 && spans[0].stop_ns.is_some(),
            "{name}: {spans:?}"
        );
    }
}

#[test]
fn span_logs_parse_and_overlaps_are_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("x.log");
    std::fs::write(
        &log,
        "start 100 3\nstop 200\nstart 300 \nstart 400 5 slot=1\nstop 500\nstop 600\n",
    )
    .expect("write");
    let spans = hosts::read_spans(&log);
    assert_eq!(
        spans,
        vec![
            Span {
                start_ns: 100,
                stop_ns: Some(200),
                term: Some(3),
                slot: None,
            },
            Span {
                start_ns: 300,
                stop_ns: None,
                term: None,
                slot: None,
            },
            Span {
                start_ns: 400,
                stop_ns: Some(500),
                term: Some(5),
                slot: Some(1),
            },
        ]
    );
    assert!(hosts::read_spans(dir.path().join("missing.log")).is_empty());

    let a = vec![Span {
        start_ns: 100,
        stop_ns: Some(200),
        term: Some(1),
        slot: None,
    }];
    let b = vec![Span {
        start_ns: 200,
        stop_ns: Some(300),
        term: Some(2),
        slot: None,
    }];
    hosts::assert_no_overlap(&[("a", a.clone()), ("b", b.clone())]);
    let c = vec![Span {
        start_ns: 150,
        stop_ns: None,
        term: Some(3),
        slot: None,
    }];
    let all = [("a", a), ("b", b), ("c", c.clone())];
    assert_eq!(
        hosts::find_overlaps(&all).len(),
        2,
        "{}",
        hosts::timeline(&all)
    );
    assert!(catch_unwind(|| hosts::assert_no_overlap(&all)).is_err());
    let mut closed = c;
    hosts::close_open_spans(&mut closed, 160);
    assert_eq!(closed[0].stop_ns, Some(160));
}
