//! The HTTP state endpoint against a real listener on loopback (an ephemeral port): every
//! route over the wire, slow clients that do not hold up a normal one and are closed at the
//! header-read timeout, clients that never read their answers (closed at the write
//! timeout), the connection cap and the cap per client address.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use promd::agent::{GroupId, GroupView, MemberView, ViewUpdate};
use promd::http::{HttpServer, Limits, StateFeed};
use promd::metrics::Metrics;
use promd::status::StatusReport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

#[path = "support/promtool.rs"]
mod promtool;

fn view(id: u64, name: &str, role: &str, term: u64) -> GroupView {
    GroupView {
        id: GroupId(id),
        name: name.into(),
        role: role.into(),
        leader: "n1".into(),
        term,
        priority: 100,
        healthy: true,
        maintenance: false,
        failures: 0,
        since_usec: 1_700_000_000_000_000,
        members: vec![
            MemberView::of_state((
                "n1".into(),
                role.into(),
                100,
                true,
                false,
                "not-passive".into(),
                0,
                1_700_000_000_000_000,
                term,
            )),
            MemberView::of_state((
                "n2".into(),
                "passive".into(),
                90,
                true,
                true,
                String::new(),
                1,
                1_600_000_000_000_000,
                term,
            )),
        ],
        retired: false,
        eligible: false,
        why: "not-passive".into(),
        units_down: Vec::new(),
        slots: Vec::new(),
        addresses: Vec::new(),
    }
}

/// A server on 127.0.0.1 (ephemeral port) with groups `web` (active, term 7) and `db`
/// (passive), the store connected.
fn start(limits: Limits) -> (StateFeed, HttpServer, SocketAddr) {
    let views = vec![view(0, "web", "active", 7), view(1, "db", "passive", 7)];
    let (mut feed, reader) = StateFeed::new("n1", views);
    feed.update(&ViewUpdate::Some(Vec::new()), true, false);
    let any: SocketAddr = match "127.0.0.1:0".parse() {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    };
    let server = match HttpServer::start(vec![any], reader, limits) {
        Ok(s) => s,
        Err(e) => panic!("cannot start the server: {e}"),
    };
    let Some(addr) = server.next_bound(Duration::from_secs(10)) else {
        panic!("the server did not bind 127.0.0.1:0");
    };
    (feed, server, addr)
}

/// A parsed answer: status, headers (lowercase names), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn parse(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        panic!("no end of header in {text:?}");
    };
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.as_bytes().to_vec(),
    }
}

/// One request on a new connection (`Connection: close`), read to the end.
async fn request(addr: SocketAddr, method: &str, path: &str) -> Answer {
    let s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => panic!("connect {addr}: {e}"),
    };
    ask(s, method, path).await
}

/// One request on `s` (`Connection: close`), read to the end.
async fn ask(mut s: TcpStream, method: &str, path: &str) -> Answer {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    if let Err(e) = s.write_all(req.as_bytes()).await {
        panic!("write: {e}");
    }
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw).await {
        panic!("read: {e}");
    }
    parse(&raw)
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path).await
}

/// A connection to `addr` from the loopback address `from` (127.0.0.0/8 is all local on
/// Linux, so each is a client address of its own to the server), with a receive buffer of
/// `rcvbuf` bytes if given (the kernel doubles it, and has a floor).
async fn connect_from(from: Ipv4Addr, addr: SocketAddr, rcvbuf: Option<u32>) -> TcpStream {
    let socket = match TcpSocket::new_v4() {
        Ok(s) => s,
        Err(e) => panic!("socket: {e}"),
    };
    if let Some(size) = rcvbuf
        && let Err(e) = socket.set_recv_buffer_size(size)
    {
        panic!("SO_RCVBUF: {e}");
    }
    if let Err(e) = socket.bind(SocketAddr::from((from, 0))) {
        panic!("bind {from}: {e}");
    }
    match socket.connect(addr).await {
        Ok(s) => s,
        Err(e) => panic!("connect {addr} from {from}: {e}"),
    }
}

/// `GET path` from the loopback address `from`, on a new connection.
async fn get_from(from: Ipv4Addr, addr: SocketAddr, path: &str) -> Answer {
    ask(connect_from(from, addr, None).await, "GET", path).await
}

/// A client that pipelines `GET /v1/status` without end and never reads the answers, with a
/// small receive buffer: the server soon cannot write to it.
struct NonReader {
    connected: Instant,
    /// Never read; only peeked at, which leaves the bytes where they are.
    rd: OwnedReadHalf,
    /// Ends at the first failed write (the server closed the connection: it answers the
    /// requests that keep coming with a reset), with the moment it failed.
    writer: JoinHandle<Instant>,
}

impl NonReader {
    async fn open(from: Ipv4Addr, addr: SocketAddr) -> NonReader {
        let s = connect_from(from, addr, Some(4096)).await;
        let connected = Instant::now();
        let (rd, mut wr) = s.into_split();
        let writer = tokio::spawn(async move {
            let batch = "GET /v1/status HTTP/1.1\r\nHost: stuck\r\n\r\n".repeat(100);
            while wr.write_all(batch.as_bytes()).await.is_ok() {}
            Instant::now()
        });
        NonReader {
            connected,
            rd,
            writer,
        }
    }

    /// Whether the server serves this connection: true once an answer's first byte has come
    /// (left unread), false if the server closed it unanswered. Panics after `limit`.
    async fn served(&mut self, limit: Duration) -> bool {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(limit, self.rd.peek(&mut byte)).await {
            Ok(Ok(n)) => n > 0,
            Ok(Err(_)) => false,
            Err(_) => panic!("neither answered nor closed within {limit:?}"),
        }
    }

    /// The moment the server closed the connection (seen by the writer); panics after
    /// `limit`.
    async fn closed_within(self, limit: Duration) -> Instant {
        let NonReader { rd, writer, .. } = self;
        let abort = writer.abort_handle();
        let at = match tokio::time::timeout(limit, writer).await {
            Ok(Ok(at)) => at,
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => {
                abort.abort();
                panic!("the server did not close a non-reading client within {limit:?}");
            }
        };
        drop(rd);
        at
    }
}

/// Read until the server closes the connection (EOF or reset); panics after `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Instant {
    let mut buf = [0u8; 4096];
    let end = Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Instant::now(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server did not close the connection within {limit:?}"),
        }
    }
}

#[tokio::test]
async fn every_route_over_the_wire() {
    let (mut feed, _server, addr) = start(Limits::default());

    let a = get(addr, "/v1/groups/web/active").await;
    assert_eq!((a.status, a.text().as_str()), (200, "active (term 7)\n"));
    assert_eq!(a.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(a.header("cache-control"), Some("no-store"));
    assert_eq!(get(addr, "/v1/groups/web/passive").await.status, 503);
    assert_eq!(get(addr, "/v1/groups/db/active").await.status, 503);
    assert_eq!(get(addr, "/v1/groups/db/passive").await.status, 200);
    assert_eq!(get(addr, "/v1/groups/db/state").await.text(), "passive\n");
    assert_eq!(get(addr, "/v1/groups/nope/active").await.status, 404);
    assert_eq!(get(addr, "/nowhere").await.status, 404);
    // A query string does not change the route.
    assert_eq!(get(addr, "/v1/groups/web/active?x=1").await.status, 200);

    let h = get(addr, "/v1/health").await;
    assert_eq!(h.status, 200, "{}", h.text());
    assert_eq!(h.header("content-type"), Some("application/json"));

    // /v1/status is the promctl document of the same views.
    let s = get(addr, "/v1/status").await;
    assert_eq!(s.status, 200);
    let expected = StatusReport::of_views(
        "n1",
        true,
        &[view(0, "web", "active", 7), view(1, "db", "passive", 7)],
    );
    assert_eq!(s.text(), expected.to_json().unwrap_or_default());

    // HEAD: the same status and headers, no body.
    for path in ["/v1/status", "/v1/groups/db/active", "/nowhere"] {
        let g = get(addr, path).await;
        let h = request(addr, "HEAD", path).await;
        assert_eq!(h.status, g.status, "{path}");
        assert!(h.body.is_empty(), "{path}: {:?}", h.text());
        assert_eq!(
            h.header("content-length"),
            Some(g.body.len().to_string().as_str()),
            "{path}"
        );
        assert_eq!(h.header("content-type"), g.header("content-type"), "{path}");
    }

    // Other methods: 405 with Allow (a body sent along is not read).
    let p = request(addr, "POST", "/v1/groups/web/active").await;
    assert_eq!(p.status, 405);
    assert_eq!(p.header("allow"), Some("GET, HEAD"));

    // A demotion begins: 503 at once, before the units are down.
    feed.update(
        &ViewUpdate::Some(vec![view(0, "web", "demoting", 7)]),
        true,
        false,
    );
    let a = get(addr, "/v1/groups/web/active").await;
    assert_eq!((a.status, a.text().as_str()), (503, "demoting (term 7)\n"));
    // The store is lost: health says so.
    feed.update(&ViewUpdate::Some(Vec::new()), false, false);
    let h = get(addr, "/v1/health").await;
    assert_eq!(h.status, 503);
    assert!(
        h.text().contains("\"store_connected\":false"),
        "{}",
        h.text()
    );
}

/// 200 clients that connect and send nothing, or dribble a header a byte at a time, do not
/// hold up a normal client; each is closed once the header-read timeout has passed. A
/// keep-alive connection that idles after a request is closed the same way.
#[tokio::test]
async fn slow_clients_neither_stall_others_nor_stay() {
    let timeout = Duration::from_secs(3);
    let limits = Limits {
        header_read_timeout: timeout,
        // All 200 come from 127.0.0.1: the cap per address is out of the way here (it has
        // tests of its own), this is about the header timeout.
        max_per_client: Limits::default().max_connections,
        ..Limits::default()
    };
    let (_feed, _server, addr) = start(limits);

    let opened = Instant::now();
    let mut silent = Vec::new();
    let mut dribblers = Vec::new();
    for i in 0..200 {
        let s = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => panic!("connect #{i}: {e}"),
        };
        if i % 2 == 0 {
            silent.push(s);
        } else {
            let (mut rd, mut wr) = s.into_split();
            let drip = tokio::spawn(async move {
                for b in b"GET /v1/health HTTP/1.1\r\nHost: slow\r\nX-Slow: "
                    .iter()
                    .cycle()
                {
                    if wr.write_all(&[*b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            let closed = tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => return Instant::now(),
                        Ok(_) => continue,
                    }
                }
            });
            dribblers.push((closed, drip));
        }
    }
    // Let the dribblers start, then a normal client asks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let a = get(addr, "/v1/groups/web/active").await;
    let took = asked.elapsed();
    assert_eq!(a.status, 200);
    assert!(
        took < Duration::from_secs(1),
        "a normal client waited {took:?} behind 200 slow ones"
    );

    // Every slow client is closed: after the timeout, and not long after it.
    for mut s in silent {
        let at = closed_within(&mut s, timeout * 3).await;
        assert!(at.duration_since(opened) >= timeout - Duration::from_millis(100));
    }
    for (closed, drip) in dribblers {
        let at = match tokio::time::timeout(timeout * 3, closed).await {
            Ok(Ok(at)) => at,
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("a dribbling client was not closed within {:?}", timeout * 3),
        };
        assert!(at.duration_since(opened) >= timeout - Duration::from_millis(100));
        drip.abort();
    }

    // A keep-alive connection that idles after its request.
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => panic!("connect: {e}"),
    };
    let req = "GET /v1/groups/web/state HTTP/1.1\r\nHost: ka\r\n\r\n";
    if let Err(e) = s.write_all(req.as_bytes()).await {
        panic!("write: {e}");
    }
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap_or(0);
    let answered = Instant::now();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let at = closed_within(&mut s, timeout * 3).await;
    assert!(at.duration_since(answered) >= timeout - Duration::from_millis(100));
}

/// With a cap of 4, four idle keep-alive connections hold every slot: a fifth client is
/// answered only once the server has closed one of them (at the header-read timeout).
#[tokio::test]
async fn the_connection_cap_holds() {
    let timeout = Duration::from_secs(2);
    let limits = Limits {
        max_connections: 4,
        header_read_timeout: timeout,
        ..Limits::default()
    };
    let (_feed, _server, addr) = start(limits);
    let mut held = Vec::new();
    for i in 0..4 {
        let mut s = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => panic!("connect #{i}: {e}"),
        };
        // A whole request, answered: the connection holds a slot, and now idles.
        let req = "GET /v1/health HTTP/1.1\r\nHost: held\r\n\r\n";
        if let Err(e) = s.write_all(req.as_bytes()).await {
            panic!("write: {e}");
        }
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap_or(0);
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let asked = Instant::now();
    let fifth = tokio::spawn(async move {
        let a = get(addr, "/v1/groups/web/active").await;
        (a.status, Instant::now())
    });
    let mut first_close = None;
    for mut s in held {
        let at = closed_within(&mut s, timeout * 3).await;
        first_close = Some(first_close.map_or(at, |f: Instant| f.min(at)));
    }
    let (status, answered) = match fifth.await {
        Ok(x) => x,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status, 200);
    let Some(first_close) = first_close else {
        panic!("no connection held");
    };
    assert!(
        answered >= first_close,
        "the fifth client was answered {:?} after it asked, before any of the four held \
         connections was closed",
        answered.duration_since(asked)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn metrics_over_the_wire_pass_promtool() {
    let views = vec![view(0, "web", "active", 7), view(1, "db", "passive", 7)];
    let metrics = Metrics::new(Instant::now());
    // Some of everything, as the agent counts it.
    for name in ["web", "db"] {
        let g = metrics.group(name);
        g.promotions.inc();
        g.leader_seen(6);
        g.leader_seen(7);
        g.health(true, Duration::from_millis(12));
        g.health(false, Duration::from_millis(1200));
        let t = promd::core::Mono(metrics.now());
        g.renewed(t, t + Duration::from_millis(3));
        g.set_fence_at(Some(t + Duration::from_secs(7)));
    }
    metrics
        .agent()
        .dbus_calls
        .get_or_create(&[("method", "Promote"), ("result", "ok")])
        .inc();
    let (mut feed, reader) = StateFeed::new("n1", views);
    feed.update(&ViewUpdate::Some(Vec::new()), true, false);
    let any: SocketAddr = match "127.0.0.1:0".parse() {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    };
    let server = match HttpServer::start(vec![any], reader.with_metrics(metrics), Limits::default())
    {
        Ok(s) => s,
        Err(e) => panic!("cannot start the server: {e}"),
    };
    let Some(addr) = server.next_bound(Duration::from_secs(10)) else {
        panic!("the server did not bind 127.0.0.1:0");
    };
    let a = get(addr, "/metrics").await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = a.text();
    for line in [
        "promd_group_role{group=\"web\",role=\"active\"} 1",
        "promd_group_role{group=\"db\",role=\"passive\"} 1",
        "promd_group_term{group=\"web\"} 7",
        "promd_group_promotions_total{group=\"web\"} 1",
        "promd_group_leader_changes_total{group=\"db\"} 1",
        "promd_dbus_calls_total{method=\"Promote\",result=\"ok\"} 1",
        "promd_store_connected 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}\n{text}");
    }
    assert!(text.contains("promd_group_fence_headroom_seconds{group=\"web\"} 6."));
    if let Some(Err(e)) = promtool::check_metrics(&text) {
        panic!("promtool check metrics: {e}\n{text}");
    }
    // OpenMetrics for a scraper that asks for it (Prometheus does).
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => panic!("connect {addr}: {e}"),
    };
    let req = "GET /metrics HTTP/1.1\r\nHost: test\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\nConnection: close\r\n\r\n";
    if let Err(e) = s.write_all(req.as_bytes()).await {
        panic!("write: {e}");
    }
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw).await {
        panic!("read: {e}");
    }
    let om = parse(&raw);
    assert_eq!(om.status, 200);
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(om.text().ends_with("# EOF\n"), "{}", om.text());
    drop(server);
}

/// The reviewer's case: 300 connections from one address that pipeline `GET /v1/status` and
/// never read, against 64 slots. Only `max_per_client` (16) of them are served, the rest are
/// closed at once, so a balancer's check from another address is answered within 1 s while
/// the 16 are still open; and the 16 are closed once their answers have made no progress for
/// the write timeout (3 s; the header timeout is set to 60 s, so it is not what closes them).
#[tokio::test]
async fn clients_that_never_read_neither_lock_out_others_nor_stay() {
    let write_timeout = Duration::from_secs(3);
    let limits = Limits {
        max_connections: 64,
        max_per_client: 16,
        write_timeout,
        header_read_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let (_feed, _server, addr) = start(limits);
    let flooder = Ipv4Addr::new(127, 0, 0, 1);
    let mut clients = Vec::new();
    for _ in 0..300 {
        clients.push(NonReader::open(flooder, addr).await);
    }
    let mut stuck = Vec::new();
    let mut refused = Vec::new();
    for mut c in clients {
        if c.served(Duration::from_secs(10)).await {
            stuck.push(c);
        } else {
            refused.push(c);
        }
    }
    assert_eq!((stuck.len(), refused.len()), (16, 284));

    // A balancer's check from another address, while the 16 are stuck.
    let asked = Instant::now();
    let check = get_from(Ipv4Addr::new(127, 0, 0, 2), addr, "/v1/groups/web/active");
    let a = match tokio::time::timeout(Duration::from_secs(1), check).await {
        Ok(a) => a,
        Err(_) => panic!("a check from 127.0.0.2 was not answered within 1 s"),
    };
    let answered = Instant::now();
    assert_eq!((a.status, a.text().as_str()), (200, "active (term 7)\n"));

    for c in refused {
        c.closed_within(Duration::from_secs(5)).await;
    }
    // Each stuck client is closed: not before the write timeout has passed since it
    // connected, and within it plus the time to fill the buffers, with slack.
    for c in stuck {
        let connected = c.connected;
        let at = c
            .closed_within(write_timeout + Duration::from_secs(5))
            .await;
        assert!(
            at > answered,
            "a stuck client was closed {:?} after the check asked, before it was answered",
            at.duration_since(asked)
        );
        assert!(
            at.duration_since(connected) >= write_timeout,
            "a stuck client was closed {:?} after it connected",
            at.duration_since(connected)
        );
    }
}

/// Non-readers from four addresses, each within its cap, take every slot (32): a client from
/// a fifth address waits in the backlog, and is answered once the write timeout (1 s) has
/// closed one of them, not at the connection age limit (5 min by default).
#[tokio::test]
async fn non_readers_in_every_slot_leave_at_the_write_timeout() {
    let write_timeout = Duration::from_secs(1);
    let limits = Limits {
        max_connections: 32,
        max_per_client: 8,
        write_timeout,
        header_read_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let (_feed, _server, addr) = start(limits);
    let mut stuck = Vec::new();
    for last in [1, 3, 4, 5] {
        for _ in 0..8 {
            stuck.push(NonReader::open(Ipv4Addr::new(127, 0, 0, last), addr).await);
        }
    }
    for c in &mut stuck {
        assert!(
            c.served(Duration::from_secs(10)).await,
            "a client within the caps was refused"
        );
    }
    let asked = Instant::now();
    let check = tokio::spawn(async move {
        let a = get_from(Ipv4Addr::new(127, 0, 0, 2), addr, "/v1/groups/web/active").await;
        (a.status, Instant::now())
    });
    let mut first_close: Option<Instant> = None;
    for c in stuck {
        let connected = c.connected;
        let at = c
            .closed_within(write_timeout + Duration::from_secs(5))
            .await;
        assert!(at.duration_since(connected) >= write_timeout);
        first_close = Some(first_close.map_or(at, |f| f.min(at)));
    }
    let (status, answered) = match tokio::time::timeout(Duration::from_secs(5), check).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("the check was not answered within 5 s of the last close"),
    };
    assert_eq!(status, 200);
    let Some(first_close) = first_close else {
        panic!("no connection held");
    };
    assert!(
        answered >= first_close,
        "the check was answered {:?} after it asked, with every slot held",
        answered.duration_since(asked)
    );
}

/// With a cap of 4 per address and 5 slots, 4 keep-alive connections from 127.0.0.1 are
/// served and stay; 6 more from it are closed at once, unanswered (within 1 s; the header
/// timeout, 30 s here, would close them only then), and do not take the fifth slot: a client
/// from 127.0.0.2 is answered. Once one of the 4 ends, 127.0.0.1 may open another.
#[tokio::test]
async fn one_address_holds_at_most_max_per_client() {
    let limits = Limits {
        max_connections: 5,
        max_per_client: 4,
        header_read_timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let (_feed, _server, addr) = start(limits);
    let one = Ipv4Addr::new(127, 0, 0, 1);
    let req = "GET /v1/health HTTP/1.1\r\nHost: held\r\n\r\n";
    // Whether `s` is answered 200 (and stays open), or closed unanswered, within 1 s.
    async fn answered(s: &mut TcpStream, req: &str) -> bool {
        if s.write_all(req.as_bytes()).await.is_err() {
            return false;
        }
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
                true
            }
            Err(_) => panic!("neither answered nor closed within 1 s"),
        }
    }
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..10 {
        let mut s = connect_from(one, addr, None).await;
        if answered(&mut s, req).await {
            held.push(s);
        } else {
            refused += 1;
        }
    }
    assert_eq!((held.len(), refused), (4, 6));

    let a = get_from(Ipv4Addr::new(127, 0, 0, 2), addr, "/v1/groups/web/active").await;
    assert_eq!(a.status, 200);
    // The 4 are still open, and served.
    for s in &mut held {
        assert!(answered(s, req).await, "a held connection was closed");
    }
    // One of them ends (the server's close is seen before its place is free to reuse: both
    // happen in one step of the server's thread); then 127.0.0.1 has a place again.
    let Some(mut first) = held.pop() else {
        panic!("nothing held");
    };
    if let Err(e) = first.shutdown().await {
        panic!("shutdown: {e}");
    }
    closed_within(&mut first, Duration::from_secs(5)).await;
    let mut again = connect_from(one, addr, None).await;
    assert!(
        answered(&mut again, req).await,
        "127.0.0.1 was refused below its cap"
    );
    let mut over = connect_from(one, addr, None).await;
    assert!(
        !answered(&mut over, req).await,
        "127.0.0.1 got a fifth connection"
    );
}

/// `listen = ["127.0.0.1:P", "[::]:P"]`: both bind (the IPv6 wildcard IPv6-only, since an
/// IPv4 address shares its port; dual-stack it would have taken 127.0.0.1:P too, and one of
/// the two binds would fail and be retried for ever), and both answer.
#[tokio::test]
async fn an_ipv4_address_and_the_ipv6_wildcard_share_a_port() {
    // A port free on both families now (taken from the kernel, then let go).
    let port = match std::net::TcpListener::bind("[::]:0") {
        Ok(l) => match l.local_addr() {
            Ok(a) => a.port(),
            Err(e) => panic!("{e}"),
        },
        Err(e) => panic!("bind [::]:0: {e}"),
    };
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
    let (mut feed, reader) = StateFeed::new("n1", vec![view(0, "web", "active", 7)]);
    feed.update(&ViewUpdate::Some(Vec::new()), true, false);
    let server = match HttpServer::start(vec![v4, v6], reader, Limits::default()) {
        Ok(s) => s,
        Err(e) => panic!("cannot start the server: {e}"),
    };
    let mut bound: Vec<SocketAddr> = (0..2)
        .filter_map(|_| server.next_bound(Duration::from_secs(5)))
        .collect();
    bound.sort();
    assert_eq!(bound, vec![v4, v6], "both addresses bound at once");
    let loopback6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    for addr in [v4, loopback6] {
        let a = get(addr, "/v1/groups/web/active").await;
        assert_eq!(
            (a.status, a.text()),
            (200, "active (term 7)\n".into()),
            "{addr}"
        );
    }
}
