//! sd_notify: readiness, status, stopping, and the systemd watchdog.

use std::time::Duration;

use sd_notify::NotifyState;

/// Talks to systemd's notify socket; does nothing when promd is not run by systemd.
#[derive(Debug, Clone)]
pub struct Notifier {
    watchdog: Option<Duration>,
    last_status: String,
}

impl Notifier {
    /// Reads the watchdog interval systemd set (`WATCHDOG_USEC=`, when `WATCHDOG_PID=` is this
    /// process or absent); leaves the environment as it is.
    pub fn from_env() -> Notifier {
        Notifier {
            watchdog: sd_notify::watchdog_enabled(),
            last_status: String::new(),
        }
    }

    /// The `WatchdogSec=` systemd gave this process, if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// How often to ping: a third of the interval, so one late turn of the loop is no kill.
    pub fn ping_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 3)
    }

    /// `READY=1` with `STATUS=status`: systemd's start job (Type=notify) completes.
    pub fn ready(&mut self, status: &str) {
        self.last_status = status.to_string();
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// Update `STATUS=` if it changed.
    pub fn status(&mut self, status: &str) {
        if self.last_status != status {
            self.last_status = status.to_string();
            send(&[NotifyState::Status(status)]);
        }
    }

    /// `RELOADING=1`: a reload has begun; [`Notifier::ready`] ends it.
    pub fn reloading(&mut self) {
        send(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading the configuration"),
        ]);
    }

    /// `STOPPING=1`: promd hands its roles over and exits.
    pub fn stopping(&mut self) {
        send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: handing over"),
        ]);
    }

    /// Lower the watchdog interval to `limit` if systemd's is longer (`WATCHDOG_USEC=`);
    /// returns the interval it replaced. Never raised: running groups' margins count on it.
    pub fn fit_watchdog(&mut self, limit: Duration) -> Option<Duration> {
        let old = self.watchdog?;
        if old <= limit {
            return None;
        }
        let usec = u32::try_from(limit.as_micros()).unwrap_or(u32::MAX);
        send(&[NotifyState::WatchdogUsec(usec)]);
        self.watchdog = Some(limit);
        Some(old)
    }

    /// `WATCHDOG=1`, if systemd runs a watchdog; due every [`Notifier::ping_interval`].
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
