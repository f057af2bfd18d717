//! Load on promd's HTTP endpoint, and what its users see meanwhile (tests/system_http_load.rs).
//!
//! - [`SlowClients`]: connections held open against hosts' HTTP ports, half of them sending
//!   nothing, half dribbling a request header a byte every 100 ms and never ending it (a
//!   slowloris). The server closes each at its header-read timeout; the client connects
//!   again at once, so the load stays on until the test drops it.
//! - [`Observers`]: a normal client per host polling `GET /v1/groups/web/active`, and a probe
//!   per host of promd's event loop over D-Bus, each answer recorded on the machine's
//!   realtime clock (the clock of the span logs).
//!
//! Every TCP connection leaves from the machine's end of the host's own link and goes to the
//! host's own address: the observers' from its gateway address (which the test's
//! [`Net`](super::hosts::Net) made), the slow clients' from addresses of their own that
//! [`Sources`] adds there — a flood of many clients, as a real one is, so that promd's cap per
//! client address (32) does not turn it away, and the observers are not counted with it. Each kind runs on a thread of its own with its own tokio runtime, so the slow
//! clients cannot delay the observers' requests in this process; dropping one closes every
//! connection it opened and joins its thread, also while a failed test unwinds.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use super::hosts::{self, Host};

/// A slow client's connect attempt, and a normal request, give up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// After a refused or timed-out connect (promd restarting), a slow client tries again this
/// much later.
const RETRY: Duration = Duration::from_millis(100);
/// A dribbling client sends one byte this often.
const DRIBBLE_EVERY: Duration = Duration::from_millis(100);
/// What a dribbling client sends, a byte at a time; then `a` for ever, never ending the header.
const DRIBBLE: &[u8] = b"GET /v1/groups/web/active HTTP/1.1\r\nHost: promd\r\nX-Slow: ";
/// Slow clients start spread over this long, so that their header timeouts do not all fall
/// at the same instant.
const SPREAD: Duration = Duration::from_secs(1);

/// How many slow clients share one source address: under promd's cap per client address.
const PER_SOURCE: usize = 25;

/// `count` slow clients from `from` (in turn) to `to`, half silent and half dribbling.
#[derive(Clone, Debug)]
pub struct Target {
    /// The host's name, for messages.
    pub name: String,
    /// Addresses of the machine's end of the host's link, [`PER_SOURCE`] clients each.
    pub from: Arc<Sources>,
    /// The host's HTTP address.
    pub to: SocketAddr,
    pub count: usize,
}

impl Target {
    /// `count` slow clients against host `h`'s `port`, from addresses of their own on the
    /// machine's end of its link.
    pub fn host(h: &Host, port: u16, count: usize) -> Target {
        Target {
            name: h.name().to_string(),
            from: Arc::new(Sources::add(h, count.div_ceil(PER_SOURCE))),
            to: SocketAddr::from((h.ip(), port)),
            count,
        }
    }
}

/// `n` addresses `10.200.X.100`, `.101`, … (X: the host's subnet) added to the machine's end
/// of host `h`'s link; deleted on drop.
#[derive(Debug)]
pub struct Sources {
    link: String,
    pub addrs: Vec<Ipv4Addr>,
}

impl Sources {
    pub fn add(h: &Host, n: usize) -> Sources {
        assert!(n <= 100, "{n} source addresses: at most 100 per link");
        let [a, b, c, _] = h.gateway_ip().octets();
        let mut sources = Sources {
            link: h.link().to_string(),
            addrs: Vec::new(),
        };
        for k in 0..n {
            let addr = Ipv4Addr::new(a, b, c, 100 + k as u8);
            // Kept before it exists, so that a failure below still deletes what was added.
            sources.addrs.push(addr);
            hosts::run_must(
                "ip",
                &[
                    "address",
                    "add",
                    &format!("{addr}/32"),
                    "dev",
                    &sources.link,
                ],
            );
        }
        sources
    }
}

impl Drop for Sources {
    fn drop(&mut self) {
        for addr in &self.addrs {
            let _ = hosts::run(
                "ip",
                &["address", "del", &format!("{addr}/32"), "dev", &self.link],
            );
        }
    }
}

/// What the clients of one [`Target`] did.
#[derive(Default, Debug)]
struct Counts {
    /// Connections open now.
    open: AtomicUsize,
    /// Clients whose connection the server has closed at least once.
    cycled: AtomicUsize,
    connects: AtomicU64,
    /// Connections the server closed (header timeout, or promd gone).
    closed_by_server: AtomicU64,
    connect_failures: AtomicU64,
}

/// Slow clients against one or more hosts, until dropped.
pub struct SlowClients {
    targets: Vec<(Target, Arc<Counts>)>,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl SlowClients {
    /// Starts every target's clients (they connect over the next second).
    pub fn start(targets: Vec<Target>) -> SlowClients {
        let targets: Vec<(Target, Arc<Counts>)> = targets
            .into_iter()
            .map(|t| (t, Arc::new(Counts::default())))
            .collect();
        let (stop, stopped) = watch::channel(false);
        let work = targets.clone();
        let thread = std::thread::Builder::new()
            .name("slow-clients".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime for the slow clients");
                rt.block_on(async move {
                    let total: usize = work.iter().map(|(t, _)| t.count).sum();
                    let mut tasks = Vec::with_capacity(total);
                    let mut n = 0u32;
                    for (t, counts) in &work {
                        for k in 0..t.count {
                            let delay = SPREAD * n / total.max(1) as u32;
                            n += 1;
                            let from = t.from.addrs[k / PER_SOURCE % t.from.addrs.len()];
                            tasks.push(tokio::spawn(slow_client(
                                from,
                                t.to,
                                k % 2 == 1,
                                delay,
                                counts.clone(),
                                stopped.clone(),
                            )));
                        }
                    }
                    for task in tasks {
                        let _ = task.await;
                    }
                });
            })
            .expect("cannot start the slow clients' thread");
        SlowClients {
            targets,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Waits until the load is steady: every client is connected and the server has already
    /// closed each one's connection once (at its header timeout), so the clients are held,
    /// closed and back as they will be for as long as the load lasts.
    pub fn wait_steady(&self, timeout: Duration) {
        hosts::wait_until(
            timeout,
            "every slow client connected, each closed once by the server and back",
            || {
                self.targets.iter().all(|(t, c)| {
                    c.open.load(Ordering::Relaxed) == t.count
                        && c.cycled.load(Ordering::Relaxed) == t.count
                })
            },
        );
    }

    /// One line per target: what its clients did so far.
    pub fn summary(&self) -> String {
        self.targets
            .iter()
            .map(|(t, c)| {
                format!(
                    "{} ({} slow clients): {} open, {} connects, {} closed by the server, {} \
                     failed connects",
                    t.name,
                    t.count,
                    c.open.load(Ordering::Relaxed),
                    c.connects.load(Ordering::Relaxed),
                    c.closed_by_server.load(Ordering::Relaxed),
                    c.connect_failures.load(Ordering::Relaxed),
                )
            })
            .collect::<Vec<_>>()
            .join("\n  ")
    }
}

impl Drop for SlowClients {
    /// Every client closes its connection and ends; the thread is joined.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A TCP connection from `from` (any port) to `to`.
async fn connect(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

/// One slow client: connects, holds the connection until the server closes it, connects
/// again; until `stop`.
async fn slow_client(
    from: Ipv4Addr,
    to: SocketAddr,
    dribble: bool,
    delay: Duration,
    counts: Arc<Counts>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.changed() => return,
    }
    let mut cycled = false;
    loop {
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, connect(from, to));
        let stream = tokio::select! {
            r = attempt => r,
            _ = stop.changed() => return,
        };
        match stream {
            Ok(Ok(stream)) => {
                counts.connects.fetch_add(1, Ordering::Relaxed);
                counts.open.fetch_add(1, Ordering::Relaxed);
                let closed_by_server = hold(stream, dribble, &mut stop).await;
                counts.open.fetch_sub(1, Ordering::Relaxed);
                if !closed_by_server {
                    return;
                }
                counts.closed_by_server.fetch_add(1, Ordering::Relaxed);
                if !cycled {
                    cycled = true;
                    counts.cycled.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                counts.connect_failures.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// Holds `stream` (dribbling a header if `dribble`) until the server closes it (`true`) or
/// `stop` (`false`: the connection is closed here, by dropping it).
async fn hold(mut stream: TcpStream, dribble: bool, stop: &mut watch::Receiver<bool>) -> bool {
    let (mut rd, mut wr) = stream.split();
    let mut buf = [0u8; 1024];
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(DRIBBLE_EVERY);
    loop {
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                // An answer (a 408, say) is read; the close that follows ends the hold.
                Ok(n) if n > 0 => {}
                _ => return true,
            },
            _ = tick.tick(), if dribble => {
                let byte = DRIBBLE.get(sent).copied().unwrap_or(b'a');
                sent += 1;
                if wr.write_all(&[byte]).await.is_err() {
                    return true;
                }
            }
            _ = stop.changed() => return false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Observers

/// One request of an observer.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Index of the host asked.
    pub host: usize,
    /// When it was sent (realtime ns).
    pub sent_ns: u64,
    pub took: Duration,
    /// The HTTP status (0 for D-Bus), or why there was no answer.
    pub answer: Result<u16, String>,
}

impl Sample {
    /// When it ended (realtime ns).
    pub fn end_ns(&self) -> u64 {
        self.sent_ns + self.took.as_nanos() as u64
    }
}

/// How often each observer asks.
const POLL_EVERY: Duration = Duration::from_millis(100);
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// A D-Bus probe gives up after this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a host's observers need: its HTTP address, where requests leave from, and its bus.
#[derive(Clone, Debug)]
struct Watched {
    from: Ipv4Addr,
    to: SocketAddr,
    bus: String,
}

/// Normal clients and D-Bus probes against every host, until dropped.
pub struct Observers {
    polls: Arc<Mutex<Vec<Sample>>>,
    probes: Arc<Mutex<Vec<Sample>>>,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl Observers {
    /// For each host: `GET /v1/groups/web/active` on `port` every 100 ms, a new connection
    /// each time (as a balancer's check), answered or not within 2 s; and every 500 ms, over
    /// the host's system bus, `org.promd1.Manager.SetMaintenance("web", false)`. Maintenance is
    /// off, so that call changes nothing, but unlike a property read it is answered by
    /// promd's event loop (src/agent/calls.rs), not by its D-Bus service alone.
    pub fn start(hosts: &[Host], port: u16) -> Observers {
        let watched: Vec<Watched> = hosts
            .iter()
            .map(|h| Watched {
                from: h.gateway_ip(),
                to: SocketAddr::from((h.ip(), port)),
                bus: h.bus_address(),
            })
            .collect();
        let polls = Arc::new(Mutex::new(Vec::new()));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = watch::channel(false);
        let (p, q) = (polls.clone(), probes.clone());
        let thread = std::thread::Builder::new()
            .name("observers".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime for the observers");
                rt.block_on(async move {
                    let mut tasks = Vec::new();
                    for (i, w) in watched.into_iter().enumerate() {
                        tasks.push(tokio::spawn(poll(i, w.clone(), p.clone(), stopped.clone())));
                        tasks.push(tokio::spawn(probe(i, w.bus, q.clone(), stopped.clone())));
                    }
                    for task in tasks {
                        let _ = task.await;
                    }
                });
            })
            .expect("cannot start the observers' thread");
        Observers {
            polls,
            probes,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The normal clients' requests sent from `from_ns` to `to_ns`.
    pub fn polls(&self, from_ns: u64, to_ns: u64) -> Vec<Sample> {
        between(&self.polls, from_ns, to_ns)
    }

    /// The D-Bus probes sent from `from_ns` to `to_ns`.
    pub fn probes(&self, from_ns: u64, to_ns: u64) -> Vec<Sample> {
        between(&self.probes, from_ns, to_ns)
    }
}

impl Drop for Observers {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn between(samples: &Mutex<Vec<Sample>>, from_ns: u64, to_ns: u64) -> Vec<Sample> {
    let all = samples.lock().unwrap_or_else(|e| e.into_inner());
    all.iter()
        .filter(|s| s.sent_ns >= from_ns && s.sent_ns <= to_ns)
        .cloned()
        .collect()
}

fn record(samples: &Mutex<Vec<Sample>>, sample: Sample) {
    samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(sample);
}

/// Waits `every`; `false` if told to stop first.
async fn pause(every: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(every) => true,
        _ = stop.changed() => false,
    }
}

async fn poll(
    host: usize,
    w: Watched,
    samples: Arc<Mutex<Vec<Sample>>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let sent_ns = hosts::now_ns();
        let start = Instant::now();
        let answer = match tokio::time::timeout(CONNECT_TIMEOUT, get(w.from, w.to)).await {
            Ok(a) => a,
            Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
        };
        let took = start.elapsed();
        record(
            &samples,
            Sample {
                host,
                sent_ns,
                took,
                answer,
            },
        );
        if !pause(POLL_EVERY, &mut stop).await {
            return;
        }
    }
}

/// `GET /v1/groups/web/active`: the status code.
async fn get(from: Ipv4Addr, to: SocketAddr) -> Result<u16, String> {
    let mut s = connect(from, to)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let req =
        format!("GET /v1/groups/web/active HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line: {text:?}"))
}

async fn probe(
    host: usize,
    bus: String,
    samples: Arc<Mutex<Vec<Sample>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn: Option<zbus::Connection> = None;
    loop {
        let sent_ns = hosts::now_ns();
        let start = Instant::now();
        let answer =
            match tokio::time::timeout(PROBE_TIMEOUT, set_maintenance_off(&bus, &mut conn)).await {
                Ok(a) => a,
                Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            };
        if answer.is_err() {
            // The next probe connects anew.
            conn = None;
        }
        record(
            &samples,
            Sample {
                host,
                sent_ns,
                took: start.elapsed(),
                answer,
            },
        );
        if !pause(PROBE_EVERY, &mut stop).await {
            return;
        }
    }
}

async fn set_maintenance_off(
    bus: &str,
    conn: &mut Option<zbus::Connection>,
) -> Result<u16, String> {
    if conn.is_none() {
        let c = zbus::connection::Builder::address(bus)
            .build()
            .await
            .map_err(|e| format!("connect to the bus: {e}"))?;
        *conn = Some(c);
    }
    let Some(c) = conn.as_ref() else {
        return Err("no connection".into());
    };
    c.call_method(
        Some("org.promd1"),
        "/org/promd1",
        Some("org.promd1.Manager"),
        "SetMaintenance",
        &("web", false),
    )
    .await
    .map(|_| 0)
    .map_err(|e| format!("SetMaintenance: {e}"))
}
