//! sd_notify: readiness, status, stopping, and the systemd watchdog.

use std::time::Duration;

use sd_notify::NotifyState;

/// Talks to systemd's notify socket; does nothing when promd is not run by systemd. What to
/// say and when (a `STATUS=` only when it changed, the watchdog's fit to the leases) is the
/// agent's to decide ([`crate::agent::Notify`]).
#[derive(Debug, Clone)]
pub struct Notifier {
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier with the watchdog systemd set for this process (`WATCHDOG_USEC=` in its
    /// environment), if any.
    pub fn from_env() -> Notifier {
        Notifier {
            watchdog: sd_notify::watchdog_enabled(),
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
        let usec = u32::try_from(interval.as_micros()).unwrap_or(u32::MAX);
        send(&[NotifyState::WatchdogUsec(usec)]);
        self.watchdog = Some(interval);
    }

    /// `WATCHDOG=1`, if there is a watchdog.
    pub fn ping(&self) {
        if self.watchdog.is_some() {
            send(&[NotifyState::Watchdog]);
        }
    }
}

fn send(state: &[NotifyState]) {
    // Without a notify socket (not under systemd) this is a no-op; a failing socket is not a
    // reason to stop serving: the watchdog will notice if it matters.
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!("sd_notify: {e}");
    }
}
