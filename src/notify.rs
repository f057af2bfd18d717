//! sd_notify: readiness, status, stopping, and the systemd watchdog.

use std::time::Duration;

use sd_notify::NotifyState;

/// Talks to systemd's notify socket; does nothing when promd is not run by systemd. What to
/// say and when (a `STATUS=` only when it changed, the watchdog's fit to the leases) is the
/// agent's to decide ([`crate::agent::Notify`]).
#[derive(Debug, Clone)]
pub struct Notifier {
    watchdog: Option<Duration>,
    /// The last ping armed the watchdog shorter than `watchdog` (`WATCHDOG_USEC=`).
    armed_short: bool,
}

impl Notifier {
    /// A notifier with the watchdog systemd set for this process (`WATCHDOG_USEC=` in its
    /// environment), if any.
    pub fn from_env() -> Notifier {
        Notifier {
            watchdog: sd_notify::watchdog_enabled(),
            armed_short: false,
        }
    }

    /// The watchdog interval in force: `WatchdogSec=` as systemd gave it to this process,
    /// or as [`Notifier::set_watchdog`] lowered it; `None` without a watchdog.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// How often to ping: a third of the interval, so one late turn of the loop is no kill.
    pub fn ping_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 3)
    }

    /// `READY=1` with `STATUS=`.
    pub fn ready(&mut self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STATUS=`.
    pub fn status(&mut self, status: &str) {
        send(&[NotifyState::Status(status)]);
    }

    /// `RELOADING=1`, with `STATUS=` saying so.
    pub fn reloading(&mut self) {
        send(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading the configuration"),
        ]);
    }

    /// `STOPPING=1`, with `STATUS=` saying so.
    pub fn stopping(&mut self) {
        send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: handing over"),
        ]);
    }

    /// Set the watchdog interval to `interval` (`WATCHDOG_USEC=`, in µs, at most u32::MAX);
    /// does nothing without a watchdog. The caller only ever lowers it
    /// ([`crate::agent::watchdog_fit`]).
    pub fn set_watchdog(&mut self, interval: Duration) {
        if self.watchdog.is_none() {
            return;
        }
        send_watchdog_usec(interval);
        self.watchdog = Some(interval);
        self.armed_short = false;
    }

    /// Ping the watchdog, if there is one: `WATCHDOG=1`; with `within`, `WATCHDOG_USEC=` that
    /// long instead, which systemd takes as a ping that fires `within` from now. The first
    /// plain ping after a short one sets the interval in force again.
    pub fn ping(&mut self, within: Option<Duration>) {
        let Some(interval) = self.watchdog else {
            return;
        };
        match within {
            Some(d) => {
                send_watchdog_usec(d);
                self.armed_short = true;
            }
            None if self.armed_short => {
                send_watchdog_usec(interval);
                self.armed_short = false;
            }
            None => send(&[NotifyState::Watchdog]),
        }
    }
}

/// `WATCHDOG_USEC=` (µs, at most u32::MAX, which is what the sd-notify crate takes: 71
/// minutes, far beyond any interval promd sets); systemd restarts the watchdog timer from now.
fn send_watchdog_usec(interval: Duration) {
    let usec = u32::try_from(interval.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::WatchdogUsec(usec)]);
}

fn send(state: &[NotifyState]) {
    // Without a notify socket (not under systemd) this is a no-op; a failing socket is not a
    // reason to stop serving: the watchdog will notice if it matters.
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!("sd_notify: {e}");
    }
}
