//! A real HAProxy in front of promd hosts (tests/system_haproxy.rs, benches/haproxy.rs): the
//! shipped `packaging/examples/haproxy.cfg` with the test's addresses, a web service on each
//! host that answers with its host, `PROMD_TERM` and the time it answered, a client that sends
//! requests through HAProxy, and the checks on what it got: every answer from a host inside its
//! own active span (spans and answers on one clock, CLOCK_REALTIME of this machine), and the
//! gap a client sees around each fault.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::cluster::{Cluster, StoreKind};
use super::etcd::EtcdCluster;
use super::hosts::{self, HostSpec, Net, Signal, Span};

/// promd's HTTP endpoint on each host.
pub const HTTP_PORT: u16 = 8008;
/// The web service on each host.
pub const WEB_PORT: u16 = 8080;
/// Where the web service records its runs inside the host (bound from the machine by
/// `Cluster::boot_with`).
pub const SPAN_LOG: &str = "/spans/spans.log";
const SERVER_PATH: &str = "/etc/web/server.py";

/// A tiny HTTP server, as a protected service would be: it refuses to start without a fencing
/// token, says READY=1 once it listens (IPv4 and IPv6, on every address, floating ones too), and answers every request with `HOST TERM NS` (NS: when
/// it answered, CLOCK_REALTIME). One connection at a time: the client is sequential and
/// HAProxy's checks go to promd, not here. Only python3-minimal's modules.
const SERVER: &str = r#"import os, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
term = os.environ.get("PROMD_TERM", "")
if not term.isdigit():
    sys.exit("web: no PROMD_TERM in /run/promd/web.env: refusing to serve")
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", port))
s.listen(128)
n = os.environ.get("NOTIFY_SOCKET", "")
if n:
    u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    u.sendto(b"READY=1", "\0" + n[1:] if n.startswith("@") else n)
while True:
    c, _ = s.accept()
    try:
        c.settimeout(2)
        req = b""
        while b"\r\n\r\n" not in req and len(req) < 16384:
            d = c.recv(4096)
            if not d:
                break
            req += d
        body = ("%s %s %d\n" % (host, term, time.time_ns())).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                  b"Connection: close\r\n\r\n%s" % (len(body), body))
    except OSError:
        pass
    finally:
        c.close()
"#;

/// Host `i`'s files for the HAProxy tests, on top of `Cluster::boot_with`'s: the web service
/// (Type=notify, `EnvironmentFile=/run/promd/web.env`, its runs recorded like
/// `hosts::span_unit_running`), `web-active.target` ordered after it (so the role is active,
/// and the check 200, only once the service listens), and `[http] listen` on the host's own
/// address and its loopback.
pub fn web_host(spec: &mut HostSpec, host_ip: Ipv4Addr) {
    let name = spec.name().to_string();
    spec.file(SERVER_PATH, SERVER);
    let recorded = hosts::span_unit_running(
        "web.service",
        "web",
        SPAN_LOG,
        &format!("/usr/bin/python3 {SERVER_PATH} {name} {WEB_PORT}"),
    );
    // The span recorder's lines as they are (no start limit: `span_unit_running`); a service
    // that says when it is ready, and that does not start without its environment file.
    let unit = recorded
        .replace("Type=exec\n", "Type=notify\nNotifyAccess=main\n")
        .replace(
            "EnvironmentFile=-/run/promd/web.env",
            "EnvironmentFile=/run/promd/web.env",
        );
    assert!(
        unit.contains("StartLimitIntervalSec=0")
            && unit.contains("Type=notify")
            && unit.contains("EnvironmentFile=/run/"),
        "span_unit_running changed: {recorded}"
    );
    spec.file("/etc/systemd/system/web.service", unit);
    spec.file(
        "/etc/systemd/system/web-active.target",
        "[Unit]\nDescription=web: active\nWants=web.service\nAfter=web.service\n\
         Conflicts=web-passive.target\n",
    );
    let toml = spec
        .file_contents("/etc/promd/promd.toml")
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .expect("Cluster::boot_with writes promd.toml first");
    spec.file(
        "/etc/promd/promd.toml",
        format!(
            "{toml}\n[http]\nlisten = [\"127.0.0.1:{HTTP_PORT}\", \"{host_ip}:{HTTP_PORT}\"]\n"
        ),
    );
}

/// The shipped example, `packaging/examples/haproxy.cfg`.
pub fn example_config() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/examples/haproxy.cfg");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The example as the test runs it: its `global` section replaced by one for a foreground
/// HAProxy of the test's own (no syslog, no user switch), the frontend bound to `bind`, and
/// its `server` lines replaced by `servers` (name, address), with everything else as shipped.
pub fn test_config(example: &str, bind: SocketAddr, servers: &[(String, Ipv4Addr)]) -> String {
    let from_defaults = example
        .find("\ndefaults")
        .map(|i| &example[i + 1..])
        .expect("the example has a defaults section");
    let mut out = String::from("global\n    maxconn 1024\n\n");
    let mut binds = 0;
    let mut placed = false;
    for line in from_defaults.lines() {
        let t = line.trim_start();
        if t.starts_with("bind ") {
            out += &format!("    bind {bind}\n");
            binds += 1;
        } else if t.starts_with("server ") {
            if !placed {
                for (name, ip) in servers {
                    out += &format!("    server {name} {ip}:{WEB_PORT}\n");
                }
                placed = true;
            }
        } else {
            out += line;
            out.push('\n');
        }
    }
    assert!(
        binds == 1 && placed,
        "the example has one bind line and server lines"
    );
    out
}

/// An HAProxy this test started, in the foreground, its configuration in a temp dir; ended by
/// its pid on drop (also when the test fails). It also gets SIGTERM if the test process dies.
pub struct Haproxy {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts HAProxy with the shipped example on a free port of 127.0.0.1 in front of
    /// `servers`; returns once it accepts connections.
    pub fn start(servers: &[(String, Ipv4Addr)]) -> Haproxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = free_loopback_port();
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, test_config(&example_config(), addr, servers)).expect("write cfg");
        let check = hosts::run("haproxy", &["-c", "-q", "-f", &cfg.to_string_lossy()]);
        assert!(
            check.status.success(),
            "haproxy -c refused the configuration:\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("log file");
        let mut cmd = Command::new("haproxy");
        // -db: foreground, no daemon; -f: the test's file only.
        cmd.args(["-db", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        let child = hosts::spawn_with_parent_death_signal(cmd).expect("spawn haproxy");
        let mut lb = Haproxy { child, addr, dir };
        hosts::wait_until(Duration::from_secs(10), "haproxy listens", || {
            if let Ok(Some(status)) = lb.child.try_wait() {
                panic!("haproxy exited ({status}):\n{}", lb.log());
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        lb
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What HAProxy wrote (its warnings, server state changes).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("haproxy.cfg")
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        if hosts::wait_child(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port of 127.0.0.1 that nothing listens on now (the kernel's pick).
fn free_loopback_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}

/// What one request through HAProxy got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The web service answered: its host, its term, and when it answered (realtime ns).
    Served { host: String, term: u64, at_ns: u64 },
    /// Another status (HAProxy's 503 while no server is up, ...).
    Status(u16),
    /// No answer (refused, timed out, cut short).
    Failed(String),
}

/// One request: when it was sent and when its answer was complete (realtime ns), and what.
#[derive(Clone, Debug)]
pub struct Answer {
    pub sent_ns: u64,
    pub recv_ns: u64,
    pub reply: Reply,
}

impl Answer {
    /// (host, term) if the service answered.
    pub fn served(&self) -> Option<(&str, u64)> {
        match &self.reply {
            Reply::Served { host, term, .. } => Some((host, *term)),
            _ => None,
        }
    }
}

/// How long a client waits for a connection and for an answer. HAProxy answers 503 at once
/// while no server is up; a longer wait is a request stuck on a host that was cut off.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time between two requests.
const CLIENT_PACE: Duration = Duration::from_millis(10);

/// One `GET /` through `addr`, a new connection each time (as a browser after a reset would).
pub fn request(addr: SocketAddr) -> Answer {
    let sent_ns = hosts::now_ns();
    let reply = match get(addr) {
        Ok(raw) => parse(&raw),
        Err(e) => Reply::Failed(e.to_string()),
    };
    Answer {
        sent_ns,
        recv_ns: hosts::now_ns(),
        reply,
    }
}

fn get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

fn parse(raw: &str) -> Reply {
    let Some(code) = raw.split(' ').nth(1).and_then(|c| c.parse::<u16>().ok()) else {
        return Reply::Failed(format!("no status line: {raw:?}"));
    };
    if code != 200 {
        return Reply::Status(code);
    }
    let body = raw.split_once("\r\n\r\n").map_or("", |x| x.1);
    let w: Vec<&str> = body.split_whitespace().collect();
    match (
        w.first(),
        w.get(1).and_then(|t| t.parse().ok()),
        w.get(2).and_then(|t| t.parse().ok()),
    ) {
        (Some(host), Some(term), Some(at_ns)) if w.len() == 3 => Reply::Served {
            host: host.to_string(),
            term,
            at_ns,
        },
        _ => Reply::Failed(format!("200 with an unexpected body: {body:?}")),
    }
}

/// Requests through HAProxy, one after another every 10 ms, on a thread of its own, until
/// dropped; every answer kept.
pub struct Client {
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    pub fn start(addr: SocketAddr) -> Client {
        Client::start_with(addr, |run| {
            std::thread::Builder::new()
                .name("haproxy-client".into())
                .spawn(run)
                .expect("client thread")
        })
    }

    /// [`Client::start`] from network namespace `netns` (a client on a segment of the
    /// test's own, `super::lan`).
    pub fn start_in(netns: &str, addr: SocketAddr) -> Client {
        Client::start_with(addr, |run| {
            super::lan::spawn_in_netns(netns, "lan-client", run)
        })
    }

    fn start_with(
        addr: SocketAddr,
        spawn: impl FnOnce(Box<dyn FnOnce() + Send>) -> JoinHandle<()>,
    ) -> Client {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (answers, stop) = (answers.clone(), stop.clone());
            spawn(Box::new(move || {
                while !stop.load(Ordering::Relaxed) {
                    let a = request(addr);
                    answers.lock().unwrap().push(a);
                    std::thread::sleep(CLIENT_PACE); // the client's pace, not a wait
                }
            }))
        };
        Client {
            answers,
            stop,
            thread: Some(thread),
        }
    }

    /// Every answer so far, in the order sent.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().clone()
    }

    /// Waits until the service answers through HAProxy after `t0` (realtime ns), from
    /// `host` if given; returns (host, term).
    pub fn wait_served_after(
        &self,
        t0: u64,
        host: Option<&str>,
        timeout: Duration,
    ) -> (String, u64) {
        let mut found = None;
        let what = format!(
            "an answer through haproxy from {}",
            host.unwrap_or("any host")
        );
        hosts::wait_until(timeout, &what, || {
            found = self.answers.lock().unwrap().iter().find_map(|a| {
                let (h, t) = a.served()?;
                (a.sent_ns >= t0 && host.is_none_or(|want| want == h)).then(|| (h.to_string(), t))
            });
            found.is_some()
        });
        found.unwrap_or_default()
    }

    /// Waits until an answer after `t0` comes from another run of the service than `old`
    /// (another host, or the same host with a new term), then says what the client saw.
    pub fn wait_new_run(&self, t0: u64, old: &(String, u64), timeout: Duration) -> Gap {
        let mut gap = None;
        hosts::wait_until(timeout, "the service answers through haproxy again", || {
            gap = gap_after(&self.answers(), t0, old);
            gap.is_some()
        });
        gap.expect("found")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a client saw across one fault.
#[derive(Clone, Debug)]
pub struct Gap {
    /// The run that served before, and the one that serves after.
    pub before: (String, u64),
    pub after: (String, u64),
    /// From the last answer of the old run to the first of the new (receive times).
    pub gap: Duration,
    /// Requests in between that got no answer from the service (HAProxy's 503, timeouts).
    pub failed: usize,
}

/// After `t0`: the first answer from another run than `old`, the last served answer before
/// it, and the requests in between.
pub fn gap_after(answers: &[Answer], t0: u64, old: &(String, u64)) -> Option<Gap> {
    let is_old = |a: &Answer| a.served() == Some((old.0.as_str(), old.1));
    let first_new = answers
        .iter()
        .position(|a| a.sent_ns >= t0 && a.served().is_some() && !is_old(a))?;
    let last_served = answers[..first_new]
        .iter()
        .rposition(|a| a.served().is_some())?;
    let (last, new) = (&answers[last_served], &answers[first_new]);
    let (h, t) = new.served()?;
    Some(Gap {
        before: last
            .served()
            .map(|(h, t)| (h.to_string(), t))
            .unwrap_or_default(),
        after: (h.to_string(), t),
        gap: Duration::from_nanos(new.recv_ns.saturating_sub(last.recv_ns)),
        failed: first_new - last_served - 1,
    })
}

/// Every served answer that did not come from a host inside its own active span: the
/// service's answer time within [start, stop] of a span of that host whose term is the
/// answer's, and within the request's own [sent, received] (one clock). Described.
pub fn outside_spans(answers: &[Answer], spans: &[(String, Vec<Span>)]) -> Vec<String> {
    let mut bad = Vec::new();
    for a in answers {
        let Reply::Served { host, term, at_ns } = &a.reply else {
            continue;
        };
        let inside = spans
            .iter()
            .filter(|(h, _)| h == host)
            .flat_map(|(_, s)| s)
            .any(|s| s.term == Some(*term) && s.start_ns <= *at_ns && *at_ns <= s.end_ns());
        let in_request = a.sent_ns <= *at_ns && *at_ns <= a.recv_ns;
        if !inside || !in_request {
            bad.push(format!(
                "{host} term {term} answered at {at_ns} (request {}..{}): {}",
                a.sent_ns,
                a.recv_ns,
                if inside {
                    "outside its own request"
                } else {
                    "outside every active span of that host with that term"
                }
            ));
        }
    }
    bad
}

/// The faults the HAProxy test and benchmark put the cluster through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// D-Bus `Promote` on a passive host (the next one after the active host).
    Promote,
    /// `systemctl stop promd` on the active host (a hand-over).
    Stop,
    /// kill -9 of promd on the active host.
    Kill,
    /// A silent cut of the active host (nft drops all but loopback in its namespace).
    Cut,
}

impl Fault {
    pub const ALL: [Fault; 4] = [Fault::Promote, Fault::Stop, Fault::Kill, Fault::Cut];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Promote => "D-Bus Promote",
            Fault::Stop => "systemctl stop promd",
            Fault::Kill => "kill -9 promd",
            Fault::Cut => "silent cut of the active host",
        }
    }

    pub fn planned(self) -> bool {
        matches!(self, Fault::Promote | Fault::Stop)
    }
}

/// One fault while `client` sends requests: waits until the active host serves through
/// HAProxy, puts the fault on it, waits until another run of the service answers through
/// HAProxy, and lets the faulted host come back as passive. Returns what the client saw.
pub fn run_fault(c: &Cluster, client: &Client, fault: Fault) -> Gap {
    let active = c.wait_one_active(None, Duration::from_secs(60));
    let name = c.hosts[active].name().to_string();
    let old = client.wait_served_after(hosts::now_ns(), Some(&name), Duration::from_secs(30));
    let pid = c.promd_pid(active);
    let mut t0 = hosts::now_ns();
    match fault {
        Fault::Promote => t0 = c.promote_next(active),
        Fault::Stop => {
            c.hosts[active].run_ok(&["systemctl", "stop", "promd"]);
        }
        Fault::Kill => c.hosts[active].signal(pid, Signal::SIGKILL),
        Fault::Cut => {
            c.hosts[active].cut();
            // From the moment the cut is in force: nft commits its rules at its end.
            t0 = hosts::now_ns();
        }
    }
    let bound = if fault.planned() {
        Duration::from_secs(15)
    } else {
        c.lease * 3 + Duration::from_secs(15)
    };
    let gap = client.wait_new_run(t0, &old, bound);
    // The faulted host back as passive before the next fault.
    match fault {
        Fault::Stop => {
            c.hosts[active].run_ok(&["systemctl", "start", "promd"]);
        }
        Fault::Cut => {
            hosts::wait_until(c.lease * 3, "the cut host fenced itself", || {
                !c.hosts[active].is_active("web.service")
            });
            c.hosts[active].heal();
        }
        Fault::Promote | Fault::Kill => {}
    }
    c.wait_passive_again(
        active,
        pid,
        !(fault == Fault::Promote || fault == Fault::Cut),
    );
    gap
}

/// `(name, address)` of every host, for [`Haproxy::start`].
pub fn servers(c: &Cluster) -> Vec<(String, Ipv4Addr)> {
    c.hosts
        .iter()
        .map(|h| (h.name().to_string(), h.ip()))
        .collect()
}

/// Three hosts with the web service behind HAProxy, the role settled (one active, the others
/// passive) and the client served: what the test and the bench start from. Fields drop in
/// order: the client, HAProxy, then the hosts.
pub struct Stage {
    pub client: Client,
    pub lb: Haproxy,
    pub c: Cluster,
    /// The host that answered first, and its term.
    pub first: (String, u64),
    /// Index of the first active host.
    pub active: usize,
}

impl Stage {
    pub fn start(net: &Net, etcd: &EtcdCluster, lease: Duration) -> Stage {
        let c = Cluster::boot_with(net, StoreKind::Etcd(etcd), lease, "", |i, spec| {
            web_host(spec, net.host_ip(i))
        });
        let active = c.wait_one_active(None, Duration::from_secs(60));
        for i in (0..3).filter(|&i| i != active) {
            hosts::wait_until(Duration::from_secs(60), "the other hosts passive", || {
                c.hosts[i].is_active("web-passive.target")
            });
        }
        let lb = Haproxy::start(&servers(&c));
        let client = Client::start(lb.addr());
        let first = client.wait_served_after(hosts::now_ns(), None, Duration::from_secs(30));
        Stage {
            client,
            lb,
            c,
            first,
            active,
        }
    }
}
