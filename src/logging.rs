//! Logging: structured fields to journald under systemd, plain lines on stderr otherwise.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
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

/// Install the global subscriber. `PROMD_LOG` (EnvFilter syntax) sets the level; default info.
pub fn init() {
    let filter = EnvFilter::try_from_env("PROMD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if under_journald() {
        let socket_fd = next_fd();
        match tracing_journald::layer() {
            Ok(layer) => {
                if let Some(fd) = socket_fd {
                    never_block_on_journald(fd);
                }
                // No prefix: MESSAGE_ID and PROMD_* must be the journal fields themselves.
                let layer = layer
                    .with_field_prefix(None)
                    .with_syslog_identifier("promd".into());
                registry.with(layer).init();
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

/// Make the journald layer's socket non-blocking: `fd`, the descriptor the layer's socket got
/// (the lowest free one when it was opened: `init` runs before any other thread, and the
/// layer opens exactly one), if it is a datagram socket.
///
/// tracing-journald sends on a blocking datagram socket, and the kernel queues at most
/// `net.unix.max_dgram_qlen` datagrams for journald (10 in a container whose `/proc/sys` is
/// read-only, 512 where systemd-sysctl set it): while journald does not read (stopped,
/// restarting, stalled on its disk), the next log line would block promd's event loop, the
/// watchdog would kill promd, and the role would move — seen in the packaging test, and
/// reproduced by stopping journald on an active host (tests/system_journald.rs). Non-blocking,
/// a line journald cannot take now is dropped instead (tracing-journald ignores send errors).
fn never_block_on_journald(fd: i32) {
    use std::os::fd::BorrowedFd;
    // SAFETY: `fd` is the layer's socket, open for the life of the process (the global
    // subscriber is never dropped; checked to be a datagram socket before anything else);
    // it is only borrowed here, to read and set its flags.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    if rustix::net::sockopt::socket_type(fd) != Ok(rustix::net::SocketType::DGRAM) {
        return;
    }
    if let Ok(flags) = rustix::fs::fcntl_getfl(fd) {
        let _ = rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK);
    }
}
