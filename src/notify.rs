//! sd_notify: readiness, status, stopping, and the systemd watchdog.

use std::time::{Duration, Instant};

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

/// How often `STATUS=` may go to PID 1: a take-over of hundreds of groups changed it on every
/// step, and PID 1 answers each with a `PropertiesChanged` signal of `StatusText` while it is
/// busiest starting the groups' units. Four a second is as fast as anyone reads it.
pub const STATUS_EVERY: Duration = Duration::from_millis(250);

/// `STATUS=` paced to one per [`STATUS_EVERY`]: a line offered sooner waits, replaced by any
/// newer one, and goes out when its time comes ([`StatusPace::due`]). No line is lost for
/// good: the last one offered is always sent, at most `STATUS_EVERY` late.
#[derive(Debug, Default)]
pub struct StatusPace {
    last_sent: Option<Instant>,
    pending: Option<String>,
}

impl StatusPace {
    /// A new line at `now`: returned if it may go out now, else kept until [`Self::due`].
    pub fn offer(&mut self, status: String, now: Instant) -> Option<String> {
        match self.last_sent {
            Some(at) if now.saturating_duration_since(at) < STATUS_EVERY => {
                self.pending = Some(status);
                None
            }
            _ => {
                self.pending = None;
                self.last_sent = Some(now);
                Some(status)
            }
        }
    }

    /// When the line kept back may go out; `None` if none is.
    pub fn due(&self) -> Option<Instant> {
        self.pending.as_ref()?;
        Some(
            self.last_sent
                .map_or_else(Instant::now, |at| at + STATUS_EVERY),
        )
    }

    /// The line kept back, if its time has come at `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<String> {
        if self.due().is_some_and(|due| now >= due) {
            self.last_sent = Some(now);
            return self.pending.take();
        }
        None
    }

    /// A `READY=1`, `RELOADING=1` or `STOPPING=1` carried its own `STATUS=` at `now`: a line
    /// kept back is older than it and is dropped.
    pub fn sent_with_state(&mut self, now: Instant) {
        self.pending = None;
        self.last_sent = Some(now);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_sends_the_first_line_then_the_last_one_when_due() {
        let t0 = Instant::now();
        let mut pace = StatusPace::default();
        assert_eq!(pace.offer("a".into(), t0), Some("a".into()));
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(pace.offer("b".into(), ms(10)), None);
        assert_eq!(pace.offer("c".into(), ms(20)), None);
        assert_eq!(pace.due(), Some(ms(250)));
        assert_eq!(pace.take_due(ms(249)), None);
        assert_eq!(pace.take_due(ms(250)), Some("c".into()));
        assert_eq!(pace.due(), None);
        // The next line waits for a whole interval after the flushed one.
        assert_eq!(pace.offer("d".into(), ms(400)), None);
        assert_eq!(pace.take_due(ms(500)), Some("d".into()));
        // After a quiet interval a line goes out at once.
        assert_eq!(pace.offer("e".into(), ms(800)), Some("e".into()));
    }

    #[test]
    fn a_state_with_its_own_status_drops_the_older_line_kept_back() {
        let t0 = Instant::now();
        let mut pace = StatusPace::default();
        assert_eq!(pace.offer("a".into(), t0), Some("a".into()));
        assert_eq!(pace.offer("b".into(), t0 + Duration::from_millis(5)), None);
        pace.sent_with_state(t0 + Duration::from_millis(6));
        assert_eq!(pace.due(), None);
        assert_eq!(pace.take_due(t0 + Duration::from_secs(1)), None);
    }
}
