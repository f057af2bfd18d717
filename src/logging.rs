//! Logging: structured fields to journald under systemd, plain lines on stderr otherwise.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::util::SubscriberInitExt;

/// `MESSAGE_ID` of a role change, explained in `packaging/promd.catalog`.
pub const ROLE_CHANGED: &str = "3ba961b1cce44bc28764c67b3a86f614";
/// `MESSAGE_ID` of a self-fencing demotion (the lease could not be renewed in time).
pub const FENCED: &str = "6801be7a5bd8432e81a5d9a284c9a924";
/// `MESSAGE_ID` of promd refusing to run because another host uses its `node`.
pub const NODE_CONFLICT: &str = "6bac36e13336432d8a9e674449559384";
/// `MESSAGE_ID` of a configuration refused on reload (the running groups keep the old one).
pub const CONFIG_REFUSED: &str = "7b805e0449d84e79966e10a5dcec46ec";

/// True when stderr is connected to the journal (systemd sets `JOURNAL_STREAM` for that).
fn under_journald() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Report why promd is about to exit. These lines go to stderr, never the native journal socket:
/// journald attributes a native message to its unit by reading the sender's cgroup, which is
/// gone once the process has exited and been reaped, so `journalctl -u promd` could miss the
/// very lines that say why it stopped. The stderr stream carries the unit in its header; the
/// `<3>` prefix makes them priority err.
pub fn fatal(lines: &str) {
    let prefix = if under_journald() { "<3>" } else { "promd: " };
    for line in lines.lines() {
        eprintln!("{prefix}{line}");
    }
}

/// Syslog priorities for [`stderr_lines`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// `err` (3).
    Error = 3,
    /// `warning` (4).
    Warning = 4,
    /// `notice` (5).
    Notice = 5,
}

/// Print `lines` to stderr as they are, each with a `<N>` priority prefix when stderr is the
/// journal (as under `ExecReload=`), so that `journalctl -p` ranks them.
pub fn stderr_lines(priority: Priority, lines: &str) {
    let prefix = if under_journald() {
        format!("<{}>", priority as u8)
    } else {
        String::new()
    };
    for line in lines.lines() {
        eprintln!("{prefix}{line}");
    }
}

/// How long one log line may wait for journald to take it. journald that is alive takes a
/// burst within milliseconds, even with room for only 10 datagrams queued; one that has not
/// read for this long is stopped, restarting or stalled on its disk.
const SEND_TIMEOUT: Duration = Duration::from_millis(500);

/// After a line waited [`SEND_TIMEOUT`] in vain, how long further lines are dropped without
/// waiting before one is tried again: a stalled journald costs the event loop at most one
/// [`SEND_TIMEOUT`] per holdoff (a tenth of its time), never a watchdog interval.
const HOLDOFF: Duration = Duration::from_secs(5);

/// Log lines dropped because journald did not take them, since promd started: the metric
/// `promd_journal_lines_dropped_total`.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Count one log line dropped elsewhere: the journal thread's queue was full
/// (`runtime::journal`).
pub fn count_dropped_line() {
    DROPPED.fetch_add(1, Ordering::Relaxed);
}

/// Log lines dropped because journald did not take them in time (see [`init`]), or because
/// the journal thread's queue was full, since start.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Install the global subscriber. `PROMD_LOG` (EnvFilter syntax) sets the level; default info.
///
/// Under systemd, lines go to journald's native socket with their fields. A line waits for
/// journald at most [`SEND_TIMEOUT`]; when one waited that long, journald is taken to be
/// stalled and lines are dropped (and counted) for [`HOLDOFF`] before the next one waits
/// again. When journald takes lines again, one line on stderr (priority warning) says how many
/// were dropped. So a burst (hundreds of groups changing role at once) loses nothing, and a
/// stalled journald never stalls the event loop long enough for the watchdog to kill promd.
pub fn init() {
    let filter = EnvFilter::try_from_env("PROMD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if under_journald() {
        let socket_fd = next_fd();
        match tracing_journald::layer() {
            Ok(layer) => {
                // No prefix: MESSAGE_ID and PROMD_* must be the journal fields themselves.
                let layer = layer
                    .with_field_prefix(None)
                    .with_syslog_identifier("promd".into());
                if socket_fd.is_some_and(wait_at_most_for_journald) {
                    registry.with(Breaker::new(layer)).init();
                } else {
                    registry.with(layer).init();
                }
                return;
            }
            Err(e) => eprintln!("promd: journald unavailable ({e}); logging to stderr"),
        }
    }
    registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .init();
}

/// The number the next file descriptor opened will get (the lowest free one), if it can be
/// found: `/dev/null` opened and closed again.
fn next_fd() -> Option<i32> {
    use std::os::fd::AsRawFd;
    std::fs::File::open("/dev/null").ok().map(|f| f.as_raw_fd())
}

/// Give the journald layer's socket a send timeout of [`SEND_TIMEOUT`]: `fd`, the descriptor
/// the layer's socket got (the lowest free one when it was opened: `init` runs before any
/// other thread, and the layer opens exactly one), if it is a datagram socket. True when set.
///
/// tracing-journald sends on a blocking datagram socket, and the kernel queues at most
/// `net.unix.max_dgram_qlen` datagrams for journald (10 in a container whose `/proc/sys` is
/// read-only, 512 where systemd-sysctl set it): while journald does not read (stopped,
/// restarting, stalled on its disk), the next log line would block promd's event loop, the
/// watchdog would kill promd, and the role would move — seen in the packaging test, and
/// reproduced by stopping journald on an active host (tests/system_journald.rs). Not
/// non-blocking either: then a burst beyond the queue is lost while journald is busy but
/// well (seen with 200 groups electing at once: "won the election" missing for one).
fn wait_at_most_for_journald(fd: i32) -> bool {
    use std::os::fd::BorrowedFd;
    // SAFETY: `fd` is the layer's socket, open for the life of the process (the global
    // subscriber is never dropped; checked to be a datagram socket before anything else);
    // it is only borrowed here, to set its send timeout.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::net::sockopt::socket_type(fd) == Ok(rustix::net::SocketType::DGRAM)
        && rustix::net::sockopt::set_socket_timeout(
            fd,
            rustix::net::sockopt::Timeout::Send,
            Some(SEND_TIMEOUT),
        )
        .is_ok()
}

/// The journald layer behind a circuit breaker: events pass through while journald takes
/// them; after one waited [`SEND_TIMEOUT`] (the socket's send timeout ran out, the line is
/// lost), events are dropped and counted for [`HOLDOFF`]. Spans pass through always (they
/// only store fields in the registry).
struct Breaker<L> {
    inner: L,
    /// [`SEND_TIMEOUT`] and [`HOLDOFF`] (shorter in tests).
    timeout: Duration,
    holdoff: Duration,
    /// The instant the millisecond counts below are from.
    epoch: Instant,
    /// Until when (ms from `epoch`) events are dropped without trying; 0 when closed.
    open_until_ms: AtomicU64,
    /// When (ms from `epoch`, +1 so 0 means none) the first line of the current outage
    /// was lost.
    outage_since_ms: AtomicU64,
    /// Lines lost in the current outage, reported when journald takes one again.
    lost: AtomicU64,
}

impl<L> Breaker<L> {
    fn new(inner: L) -> Self {
        Breaker {
            inner,
            timeout: SEND_TIMEOUT,
            holdoff: HOLDOFF,
            epoch: Instant::now(),
            open_until_ms: AtomicU64::new(0),
            outage_since_ms: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn count_lost(&self, now_ms: u64) {
        self.lost.fetch_add(1, Ordering::Relaxed);
        DROPPED.fetch_add(1, Ordering::Relaxed);
        let _ = self.outage_since_ms.compare_exchange(
            0,
            now_ms.saturating_add(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

impl<S, L> Layer<S> for Breaker<L>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        self.inner.on_record(id, values, ctx);
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let now = self.now_ms();
        if now < self.open_until_ms.load(Ordering::Relaxed) {
            self.count_lost(now);
            return;
        }
        let began = Instant::now();
        self.inner.on_event(event, ctx);
        if began.elapsed() >= self.timeout {
            let now = self.now_ms();
            self.count_lost(now);
            let holdoff = u64::try_from(self.holdoff.as_millis()).unwrap_or(u64::MAX);
            self.open_until_ms
                .store(now.saturating_add(holdoff), Ordering::Relaxed);
        } else if self.lost.load(Ordering::Relaxed) > 0 {
            let lost = self.lost.swap(0, Ordering::Relaxed);
            let since = self.outage_since_ms.swap(0, Ordering::Relaxed);
            self.open_until_ms.store(0, Ordering::Relaxed);
            if lost > 0 {
                let secs = self.now_ms().saturating_sub(since.saturating_sub(1)) as f64 / 1e3;
                // stderr, not tracing: an event from inside a layer would not be dispatched.
                stderr_lines(
                    Priority::Warning,
                    &format!(
                        "journald did not take promd's log lines for {secs:.1} s: \
                         {lost} lines were dropped"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    /// A journald stand-in: counts the events it took, and takes `timeout` over each while
    /// `stalled` (as a send that runs into the socket's timeout does).
    #[derive(Clone, Default)]
    struct Journal {
        took: Arc<AtomicU64>,
        stalled: Arc<AtomicBool>,
    }

    impl<S: tracing::Subscriber> Layer<S> for Journal {
        fn on_event(&self, _: &tracing::Event<'_>, _: Context<'_, S>) {
            if self.stalled.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(30));
            } else {
                self.took.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn a_stalled_journal_costs_one_timeout_per_holdoff_and_the_losses_are_counted() {
        let journal = Journal::default();
        let mut breaker = Breaker::new(journal.clone());
        breaker.timeout = Duration::from_millis(30);
        breaker.holdoff = Duration::from_millis(300);
        let breaker = Arc::new(breaker);
        let subscriber = tracing_subscriber::registry().with(ArcLayer(breaker.clone()));
        tracing::subscriber::with_default(subscriber, || {
            // A burst while the journal reads: every line taken.
            for i in 0..100 {
                tracing::info!("line {i}");
            }
            assert_eq!(journal.took.load(Ordering::Relaxed), 100);

            // Stalled: the first line waits out the timeout, the rest of the holdoff drops.
            journal.stalled.store(true, Ordering::Relaxed);
            let began = Instant::now();
            for i in 0..50 {
                tracing::info!("lost {i}");
            }
            assert!(
                began.elapsed() < Duration::from_millis(200),
                "{:?}",
                began.elapsed()
            );
            assert_eq!(breaker.lost.load(Ordering::Relaxed), 50);

            // Reading again: after the holdoff a line is tried, taken, and the count reset.
            journal.stalled.store(false, Ordering::Relaxed);
            tracing::info!("still in the holdoff");
            assert_eq!(journal.took.load(Ordering::Relaxed), 100);
            std::thread::sleep(Duration::from_millis(300));
            tracing::info!("back");
            assert_eq!(journal.took.load(Ordering::Relaxed), 101);
            assert_eq!(breaker.lost.load(Ordering::Relaxed), 0);
            assert!(dropped_lines() >= 51);
        });
    }

    /// The breaker shared with the test, so its counters can be read.
    struct ArcLayer<L>(Arc<Breaker<L>>);

    impl<S, L> Layer<S> for ArcLayer<L>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
        L: Layer<S>,
    {
        fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
            self.0.on_event(event, ctx);
        }
    }
}
