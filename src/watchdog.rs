//! The watchdog keeper: systemd's watchdog is pinged from a thread of its own, up to a
//! horizon that the event loop moves after every step.
//!
//! Pinging from the event loop made the watchdog a measure of the loop's latency: with many
//! groups starting at once, or a busy machine, a loop that was late by a third of a 300 ms
//! interval got promd killed, and its units with it, although every lease was fine. What the
//! watchdog must guarantee is narrower (docs/safety.md, "The watchdog"): a promd that stops
//! making progress dies, and its units with it, before any lease its units run under can end.
//! So the loop publishes [`crate::agent::Agent::watchdog_horizon`] — the earliest hang
//! deadline of the groups whose units may run, and a few seconds of plain liveness — before it
//! carries out a step's outputs, and this thread pings until that instant and no longer: a
//! plain `WATCHDOG=1` while the horizon is a whole interval away, then `WATCHDOG_USEC=` armed
//! to fire at the horizon. Group work cannot starve the thread (it shares no executor with
//! it), and a starved loop moves no horizon.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crate::core::{Mono, Timing};
use crate::notify::Notifier;

/// What one turn of the keeper sends to systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ping {
    /// `WATCHDOG=1` (or the interval in force restored after an armed ping).
    Plain,
    /// `WATCHDOG_USEC=`: fire this long from now unless a ping follows; the horizon is
    /// nearer than one interval.
    Within(Duration),
    /// Nothing: the horizon has passed, and the last ping already made systemd fire by it.
    Withhold,
}

/// The ping due at `now` with the loop's last published `horizon` and the interval in force:
/// [`Ping::Withhold`] once `now` reaches the horizon, [`Ping::Within`] the time left when
/// that is under `interval` ([`Timing::watchdog_within`]), else [`Ping::Plain`].
pub fn ping_due(now: Mono, horizon: Mono, interval: Duration) -> Ping {
    if now >= horizon {
        return Ping::Withhold;
    }
    match Timing::watchdog_within(interval, Some(horizon), now) {
        Some(left) => Ping::Within(left),
        None => Ping::Plain,
    }
}

/// State the event loop shares with the keeper thread: nanoseconds since the runtime's
/// origin (the horizon), and the interval in force (0: no change asked).
#[derive(Debug)]
struct Shared {
    horizon_ns: AtomicU64,
    interval_ns: AtomicU64,
    /// The keeper's last ping armed the watchdog to fire at the horizon it saw
    /// ([`Ping::Within`]).
    armed: AtomicBool,
}

/// Whether a new horizon must wake the keeper now rather than at its next turn: one nearer
/// than before, so that it arms the watchdog for it; or any other while the watchdog is armed
/// to fire at the old one, which may be nearer than the keeper's next turn. (A fence's kill
/// moves the horizon later by the host's fence load, 100 ms before the old one would fire;
/// the keeper turns every third of the interval, 533 ms at an 8 s lease.)
pub fn wakes_keeper(old: Mono, new: Mono, armed: bool) -> bool {
    new < old || (new != old && armed)
}

/// The handle the event loop keeps; without a watchdog (promd not run by systemd with
/// `WatchdogSec=`) there is no thread and every call does nothing.
#[derive(Debug)]
pub struct Keeper {
    shared: Arc<Shared>,
    thread: Option<(Thread, JoinHandle<()>)>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Keeper {
    /// Start the keeper for `notifier`'s watchdog, with times counted from `origin` and
    /// `horizon` as the first bound. Fails only if the OS refuses a thread.
    pub fn start(notifier: &Notifier, origin: Instant, horizon: Mono) -> std::io::Result<Keeper> {
        let shared = Arc::new(Shared {
            horizon_ns: AtomicU64::new(nanos(horizon.0)),
            interval_ns: AtomicU64::new(0),
            armed: AtomicBool::new(false),
        });
        let Some(interval) = notifier.watchdog() else {
            return Ok(Keeper {
                shared,
                thread: None,
            });
        };
        let mut notifier = notifier.clone();
        let theirs = shared.clone();
        let handle = std::thread::Builder::new()
            .name("promd-watchdog".into())
            .spawn(move || keep(&mut notifier, interval, origin, &theirs))?;
        Ok(Keeper {
            shared,
            thread: Some((handle.thread().clone(), handle)),
        })
    }

    /// A keeper that pings nothing: systemd restarts promd within its watchdog interval.
    pub fn without_thread(horizon: Mono) -> Keeper {
        Keeper {
            shared: Arc::new(Shared {
                horizon_ns: AtomicU64::new(nanos(horizon.0)),
                interval_ns: AtomicU64::new(0),
                armed: AtomicBool::new(false),
            }),
            thread: None,
        }
    }

    /// Ping up to `horizon` and no further. A horizon that [`wakes_keeper`] wakes the
    /// thread, so that it pings for it now rather than at its next turn.
    pub fn publish(&self, horizon: Mono) {
        let new = nanos(horizon.0);
        let old = self.shared.horizon_ns.swap(new, Ordering::SeqCst);
        let armed = self.shared.armed.load(Ordering::SeqCst);
        let at = |ns| Mono(Duration::from_nanos(ns));
        if wakes_keeper(at(old), at(new), armed)
            && let Some((thread, _)) = &self.thread
        {
            thread.unpark();
        }
    }

    /// Lower the watchdog interval to `interval` (`WATCHDOG_USEC=`, sent by the thread at
    /// once); see [`crate::agent::watchdog_fit`].
    pub fn set_interval(&self, interval: Duration) {
        self.shared
            .interval_ns
            .store(nanos(interval).max(1), Ordering::SeqCst);
        if let Some((thread, _)) = &self.thread {
            thread.unpark();
        }
    }
}

/// The thread: every third of the interval (or at once when woken), send what [`ping_due`]
/// says. A panic here ends only this thread; systemd then restarts promd, as for a hang.
fn keep(notifier: &mut Notifier, mut interval: Duration, origin: Instant, shared: &Shared) {
    loop {
        let asked = shared.interval_ns.swap(0, Ordering::SeqCst);
        if asked != 0 {
            interval = Duration::from_nanos(asked);
            // WATCHDOG_USEC= is also a ping that fires one new interval from now; the ping
            // below re-arms it shorter if the horizon is nearer.
            notifier.set_watchdog(interval);
        }
        let horizon = Mono(Duration::from_nanos(
            shared.horizon_ns.load(Ordering::SeqCst),
        ));
        let ping = ping_due(Mono(origin.elapsed()), horizon, interval);
        match ping {
            Ping::Plain => {
                notifier.ping(None);
                shared.armed.store(false, Ordering::SeqCst);
            }
            Ping::Within(left) => {
                // Armed before the ping: a horizon published meanwhile still wakes us.
                shared.armed.store(true, Ordering::SeqCst);
                notifier.ping(Some(left));
            }
            Ping::Withhold => {}
        }
        // A horizon published while this turn armed the watchdog (before `armed` was set)
        // may not have woken us: look again at once.
        if matches!(ping, Ping::Within(_))
            && shared.horizon_ns.load(Ordering::SeqCst) != nanos(horizon.0)
        {
            continue;
        }
        std::thread::park_timeout(interval / 3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_millis(300);

    fn at(ms: u64) -> Mono {
        Mono(Duration::from_millis(ms))
    }

    #[test]
    fn plain_while_the_horizon_is_an_interval_away() {
        assert_eq!(ping_due(at(1000), at(1300), W), Ping::Plain);
        assert_eq!(ping_due(at(1000), at(6000), W), Ping::Plain);
    }

    #[test]
    fn armed_to_fire_at_the_horizon_when_it_is_nearer() {
        assert_eq!(
            ping_due(at(1000), at(1200), W),
            Ping::Within(Duration::from_millis(200))
        );
        // Never WATCHDOG_USEC=0, which would turn the watchdog off.
        assert_eq!(
            ping_due(Mono(Duration::from_micros(1_199_999_500)), at(1_200_000), W),
            Ping::Within(Duration::from_millis(1))
        );
    }

    /// A fence's kill moves the horizon later while the watchdog is armed to fire at the old
    /// one, 100 ms away: the keeper must ping at once, not at its next turn.
    #[test]
    fn a_later_horizon_wakes_the_keeper_only_while_the_watchdog_is_armed() {
        assert!(wakes_keeper(at(2000), at(1500), false), "nearer: always");
        assert!(wakes_keeper(at(2000), at(1500), true));
        assert!(wakes_keeper(at(1500), at(4000), true), "later, armed");
        assert!(
            !wakes_keeper(at(1500), at(4000), false),
            "later, plain pings"
        );
        assert!(!wakes_keeper(at(1500), at(1500), true), "unchanged");
    }

    #[test]
    fn nothing_once_the_horizon_has_passed() {
        assert_eq!(ping_due(at(1200), at(1200), W), Ping::Withhold);
        assert_eq!(ping_due(at(5000), at(1200), W), Ping::Withhold);
    }

    /// The keeper never lets systemd's deadline pass the horizon: whatever the phase of its
    /// turns, each ping's fire time (now + interval, or now + within) is at or before it.
    #[test]
    fn no_ping_sets_the_fire_time_past_the_horizon() {
        let horizon = at(10_000);
        for now_ms in (0..12_000).step_by(7) {
            let now = at(now_ms);
            let fires = match ping_due(now, horizon, W) {
                Ping::Plain => Some(now + W),
                Ping::Within(d) => Some(now + d),
                Ping::Withhold => None,
            };
            assert!(fires.is_none_or(|f| f <= horizon), "{now:?}: {fires:?}");
        }
    }
}
