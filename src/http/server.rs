//! The listener: its own OS thread and single-threaded tokio runtime, hyper's HTTP/1 server
//! per connection, and the limits that keep a flood of clients (or slow ones) to that thread.
//!
//! - At most [`Limits::max_connections`] connections at once, across every address: at the
//!   cap the server stops accepting until one ends (new clients wait in the kernel's
//!   backlog), so memory and file descriptors stay bounded.
//! - A connection must send a request's whole header within [`Limits::header_read_timeout`]
//!   of the moment the server starts reading it, also between keep-alive requests: an idle
//!   or dribbling client is closed then.
//! - A connection lives at most [`Limits::max_connection_age`]; then it is closed after the
//!   request in flight (or at once if it has none).
//! - Request bodies are not read; headers are read into at most [`MAX_BUF`] bytes.
//!
//! An address that cannot be bound (in use, not configured on this host yet) is logged with
//! the error (and its errno) and tried again with a growing delay, up to
//! [`Limits::bind_retry_max`] apart; promd's role goes on regardless.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

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
    /// How long a client may take to send a request's header, also the longest a
    /// keep-alive connection may idle between requests (default 5 s).
    pub header_read_timeout: Duration,
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
            header_read_timeout: Duration::from_secs(5),
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
                    for addr in addrs {
                        let listener = Listener {
                            addr,
                            reader: reader.clone(),
                            limits,
                            permits: permits.clone(),
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

/// One configured address: bound (with retries), then accepting.
struct Listener {
    addr: SocketAddr,
    reader: StateReader,
    limits: Limits,
    permits: Arc<Semaphore>,
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
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve(stream, self.reader.clone(), self.limits, permit));
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
            match TcpListener::bind(self.addr).await {
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

/// One connection, within the limits; its permit is given back when it ends.
async fn serve(
    stream: TcpStream,
    reader: StateReader,
    limits: Limits,
    permit: OwnedSemaphorePermit,
) {
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
    let conn = builder.serve_connection(TokioIo::new(stream), service);
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
    drop(permit);
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
