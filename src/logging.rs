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
        match tracing_journald::layer() {
            Ok(layer) => {
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
