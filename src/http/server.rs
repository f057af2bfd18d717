//! The listener: its own OS thread and single-threaded tokio runtime, hyper's HTTP/1 server
//! per connection, and the limits that keep a flood of clients (or slow ones) to that thread.
//!
//! - At most [`Limits::max_connections`] connections at once, across every address: at the
//!   cap the server stops accepting until one ends (new clients wait in the kernel's
//!   backlog), so memory and file descriptors stay bounded.
//! - At most [`Limits::max_per_client`] of them from one peer IP address: a connection over
//!   that is closed at once after it is accepted, without taking one of the global slots, so
//!   one client cannot take every slot.
//! - A connection must send a request's whole header within [`Limits::header_read_timeout`]
//!   of the moment the server starts reading it, also between keep-alive requests: an idle
//!   or dribbling client is closed then.
//! - Writing an answer must make progress at least every [`Limits::write_timeout`]: a client
//!   that sends requests but does not read the answers (its receive window stays shut) is
//!   closed then, instead of holding its slot until [`Limits::max_connection_age`].
//! - A connection lives at most [`Limits::max_connection_age`]; then it is closed after the
//!   request in flight (or at once if it has none).
//! - Request bodies are not read; headers are read into at most [`MAX_BUF`] bytes.
//!
//! An address that cannot be bound (in use, not configured on this host yet) is logged with
//! the error (and its errno) and tried again with a growing delay, up to
//! [`Limits::bind_retry_max`] apart; promd's role goes on regardless.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Sleep;

use super::StateReader;
use super::metrics::wants_openmetrics;
use super::routes::{MetricsRequest, Reply, route_with_metrics};

/// The most a connection's read buffer holds: a request's header must fit (hyper's
/// minimum is 8 KiB).
pub const MAX_BUF: usize = 16 * 1024;

/// The server's bounds; [`Limits::default`] is what promd runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once, across every address (default 256).
    pub max_connections: usize,
    /// Connections served at once from one peer IP address (default 32). A balancer's health
    /// checks are short, one connection each (one or a few in flight per balancer), and a
    /// scraper or `curl` takes one more: 32 leaves room for several of them behind one
    /// address (a NAT, a proxy host), while one client (broken or hostile) can take at most
    /// an eighth of [`Limits::max_connections`]. Above it, a new connection is closed at once.
    pub max_per_client: usize,
    /// How long a client may take to send a request's header, also the longest a
    /// keep-alive connection may idle between requests (default 5 s).
    pub header_read_timeout: Duration,
    /// How long writing an answer may make no progress (the client's receive window shut)
    /// before the connection is closed (default 5 s). A client that pipelines requests and
    /// never reads would otherwise hold its slot until [`Limits::max_connection_age`]; a
    /// client that reads at all, however slowly, resets it. A reader on a working network
    /// opens its window again within milliseconds; 5 s is the header-read timeout's bound
    /// for the other direction, and well above what a balancer's check waits anyway.
    pub write_timeout: Duration,
    /// How long one connection may be kept open (default 5 min).
    pub max_connection_age: Duration,
    /// The longest wait between two attempts to bind an address (default 30 s; the first
    /// retry comes after 1 s, and the wait doubles).
    pub bind_retry_max: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 256,
            max_per_client: 32,
            header_read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_connection_age: Duration::from_secs(300),
            bind_retry_max: Duration::from_secs(30),
        }
    }
}

/// The running server. Dropping it stops the thread (open connections are dropped).
pub struct HttpServer {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    bound: std::sync::mpsc::Receiver<SocketAddr>,
}

impl HttpServer {
    /// Start serving `reader`'s snapshots on `addrs` on a new thread (`promd-http`). Errors
    /// only if the thread or its runtime cannot be made; addresses that cannot be bound are
    /// retried in the background (see the module documentation).
    pub fn start(
        addrs: Vec<SocketAddr>,
        reader: StateReader,
        limits: Limits,
    ) -> std::io::Result<HttpServer> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let (bound_tx, bound) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("promd-http".into())
            .spawn(move || {
                rt.block_on(async move {
                    let permits = Arc::new(Semaphore::new(limits.max_connections));
                    let clients = Arc::new(Clients::new(limits.max_per_client));
                    for &addr in &addrs {
                        let listener = Listener {
                            addr,
                            only_v6: only_v6(addr, &addrs),
                            reader: reader.clone(),
                            limits,
                            permits: permits.clone(),
                            clients: clients.clone(),
                            bound: bound_tx.clone(),
                        };
                        tokio::spawn(listener.run());
                    }
                    // The sender dropped (promd ending) stops the thread as well.
                    let _ = stopped.await;
                });
            })?;
        Ok(HttpServer {
            stop: Some(stop),
            thread: Some(thread),
            bound,
        })
    }

    /// The next address bound (as bound: port 0 resolved), waiting at most `timeout`.
    pub fn next_bound(&self, timeout: Duration) -> Option<SocketAddr> {
        self.bound.recv_timeout(timeout).ok()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether `addr` is to be bound IPv6-only: it is the IPv6 wildcard `[::]:P` and `all` also
/// has an IPv4 address on port P. Bound dual-stack (Linux's default, unless
/// `net.ipv6.bindv6only=1`), `[::]:P` would also take IPv4's port P, and the IPv4 listener
/// or this one would fail to bind; so `["0.0.0.0:8008", "[::]:8008"]` means what it says.
fn only_v6(addr: SocketAddr, all: &[SocketAddr]) -> bool {
    match addr {
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            all.iter().any(|b| b.is_ipv4() && b.port() == addr.port())
        }
        _ => false,
    }
}

/// A listening socket on `addr` as tokio's `TcpListener::bind` makes one (`SO_REUSEADDR`,
/// a backlog of 1024), IPv6-only if `only_v6`.
fn listen(addr: SocketAddr, only_v6: bool) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // Only ever set: otherwise the host's `net.ipv6.bindv6only` decides, as it does for
    // any other daemon.
    if only_v6 {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// One configured address: bound (with retries), then accepting.
struct Listener {
    addr: SocketAddr,
    /// Bind it IPv6-only ([`only_v6`]).
    only_v6: bool,
    reader: StateReader,
    limits: Limits,
    permits: Arc<Semaphore>,
    clients: Arc<Clients>,
    bound: std::sync::mpsc::Sender<SocketAddr>,
}

impl Listener {
    async fn run(self) {
        let listener = self.bind().await;
        let local = listener.local_addr().unwrap_or(self.addr);
        tracing::info!("http: serving the state endpoint on {local}");
        let _ = self.bound.send(local);
        loop {
            // At the cap: wait for a connection to end before accepting another.
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                return; // never closed
            };
            self.accept_one(&listener, local, permit).await;
        }
    }

    /// Accept until one connection is served with `permit`. A connection from an address
    /// already at its cap is closed at once (dropped), and the permit kept for the next.
    async fn accept_one(
        &self,
        listener: &TcpListener,
        local: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let Some(slot) = self.clients.enter(peer.ip()) else {
                        // Debug only: a flood would otherwise flood the journal too.
                        tracing::debug!("http: {peer} is at its connection cap; closed");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let conn = serve(stream, self.reader.clone(), self.limits);
                    tokio::spawn(async move {
                        conn.await;
                        drop((slot, permit));
                    });
                    return;
                }
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was
                    // accepted: wait a little rather than spin.
                    tracing::warn!("http: accepting on {local}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Bind, retrying with a doubling delay until it works.
    async fn bind(&self) -> TcpListener {
        let mut delay = Duration::from_secs(1).min(self.limits.bind_retry_max);
        loop {
            match listen(self.addr, self.only_v6) {
                Ok(listener) => return listener,
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(0);
                    tracing::error!(
                        ERRNO = errno,
                        "http: cannot listen on {}: {e}; trying again in {}s (the HA role is \
                         not affected)",
                        self.addr,
                        delay.as_secs_f32()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.limits.bind_retry_max);
                }
            }
        }
    }
}

/// The connections open per peer address, shared by every listener of the server.
struct Clients {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl Clients {
    fn new(max: usize) -> Clients {
        Clients {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one more connection from `ip`, or `None` if it has [`Clients::max`]
    /// already. An IPv4 client seen through an IPv6 socket (`::ffff:a.b.c.d`) counts as its
    /// IPv4 address.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let ip = ip.to_canonical();
        let mut open = self.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            if *n == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: self.clone(),
            ip,
        })
    }

    /// The map, also if a thread panicked while holding it: nothing in here panics between
    /// two consistent states, so its counts are still right.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        crate::sync::lock(&self.open)
    }
}

/// One connection's place in [`Clients`]; dropping it gives the place back.
struct ClientSlot {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A stream whose writes fail with [`io::ErrorKind::TimedOut`] once they have made no
/// progress for `timeout`. hyper's header-read timeout only covers reading; without this, a
/// client that pipelines requests and never reads the answers keeps hyper waiting to write
/// (and the connection's slot taken) until the connection's age runs out.
struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Armed when a write or flush first returns `Pending`; dropped on any progress.
    stall: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteTimeout<S> {
    fn new(inner: S, timeout: Duration) -> WriteTimeout<S> {
        WriteTimeout {
            inner,
            timeout,
            stall: None,
        }
    }

    /// Pass on the inner stream's answer: progress (or an error) disarms the timer;
    /// `Pending` arms it, or fails once it has fired (its waker is `cx`'s as well).
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        inner: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if inner.is_ready() {
            self.stall = None;
            return inner;
        }
        let timeout = self.timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client has not read its answer",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let inner = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, inner)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let inner = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, inner)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let inner = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, inner)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TCP shutdown does not wait for the peer.
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One connection, within the limits.
async fn serve(stream: TcpStream, reader: StateReader, limits: Limits) {
    let service = service_fn(move |req: Request<Incoming>| {
        let snapshot = reader.snapshot();
        let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
        let metrics = reader.metrics().map(|metrics| MetricsRequest {
            metrics,
            openmetrics: wants_openmetrics(accept),
        });
        let reply = route_with_metrics(
            &snapshot,
            reader.loop_alive(),
            metrics,
            req.method(),
            req.uri().path(),
        );
        std::future::ready(Ok::<_, Infallible>(response(reply)))
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_BUF);
    let io = TokioIo::new(WriteTimeout::new(stream, limits.write_timeout));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        // Errors are the client's doing (a reset, a header timeout, a bad request, which
        // hyper answers itself): nothing to log.
        _ = conn.as_mut() => {}
        _ = tokio::time::sleep(limits.max_connection_age) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.header_read_timeout, conn).await;
        }
    }
}

/// A [`Reply`] as hyper's response.
fn response(reply: Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(reply.body));
    *resp.status_mut() = reply.status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(reply.length));
    // A balancer or proxy in between must ask again every time.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(allow) = reply.allow {
        headers.insert(ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn a_client_gets_at_most_its_cap_and_its_places_back() {
        let clients = Arc::new(Clients::new(2));
        let a = clients.enter(ip("192.0.2.1"));
        let b = clients.enter(ip("::ffff:192.0.2.1"));
        assert!(a.is_some() && b.is_some());
        // The same client over IPv4 and IPv4-mapped IPv6: at its cap.
        assert!(clients.enter(ip("192.0.2.1")).is_none());
        assert!(clients.enter(ip("192.0.2.2")).is_some());
        drop(a);
        let c = clients.enter(ip("192.0.2.1"));
        assert!(c.is_some());
        drop((b, c));
        assert!(clients.lock().is_empty(), "{:?}", clients.lock());
        // A cap of 0 refuses everyone and leaves nothing behind.
        let none = Arc::new(Clients::new(0));
        assert!(none.enter(ip("192.0.2.1")).is_none());
        assert!(none.lock().is_empty());
    }

    #[test]
    fn a_poisoned_map_still_counts() {
        let clients = Arc::new(Clients::new(1));
        let held = clients.enter(ip("192.0.2.1"));
        let poisoner = clients.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.open.lock();
            panic!("poisoning the map on purpose");
        })
        .join();
        assert!(clients.open.is_poisoned());
        assert!(clients.enter(ip("192.0.2.1")).is_none());
        drop(held);
        assert!(clients.enter(ip("192.0.2.1")).is_some());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_write_that_makes_no_progress_times_out_and_progress_resets_it() {
        let timeout = Duration::from_millis(200);
        let (ours, mut peer) = tokio::io::duplex(64);
        let mut w = WriteTimeout::new(ours, timeout);
        // The peer reads 64 bytes every 100 ms: slow, but progress, so no timeout.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if peer.read(&mut buf).await.unwrap_or(0) == 0 {
                    break;
                }
            }
            peer // then it stops reading, and holds its end open
        });
        let data = [7u8; 64 * 4];
        if let Err(e) = w.write_all(&data).await {
            panic!("a slow reader's writes failed: {e}");
        }
        // Now nobody reads: the write fails once it has stalled for `timeout`.
        let started = std::time::Instant::now();
        let e = match w.write_all(&[7u8; 1024]).await {
            Ok(()) => panic!("a write nobody reads succeeded"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        let took = started.elapsed();
        assert!(took >= timeout, "timed out after {took:?}");
        assert!(took < timeout * 10, "timed out only after {took:?}");
        drop(reader.await);
    }
}
