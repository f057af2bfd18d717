//! Time as the core sees it, and the deadlines derived from a group's lease.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point on the monotonic clock, as an offset from an origin the runtime chose.
/// The core never reads a clock; the runtime (or a test) passes `now` in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mono(pub Duration);

impl Mono {
    /// The runtime's origin.
    pub const ZERO: Mono = Mono(Duration::ZERO);

    /// `ms` milliseconds after the origin.
    pub fn from_millis(ms: u64) -> Mono {
        Mono(Duration::from_millis(ms))
    }

    /// How long after `other` this is; zero if it is not later.
    pub fn saturating_sub(self, other: Mono) -> Duration {
        self.0.saturating_sub(other.0)
    }
}

impl Add<Duration> for Mono {
    type Output = Mono;
    fn add(self, d: Duration) -> Mono {
        Mono(self.0 + d)
    }
}

impl Sub<Duration> for Mono {
    type Output = Mono;
    fn sub(self, d: Duration) -> Mono {
        Mono(self.0.saturating_sub(d))
    }
}

/// The deadlines of the timing argument (see `docs/safety.md`), all derived from the lease `L`.
///
/// With `s` the send time of the last acknowledged renewal, the store cannot expire the lease
/// before `s + L`. The active host starts stopping its units at `s + L - margin` and kills
/// whatever is still running at `s + L - kill_margin`, so its units are down before any standby
/// can see the key gone.
///
/// If promd hangs, only the systemd watchdog stops the units (`ExecStopPost=promd fence`
/// kills them once promd is dead), and systemd's watchdog timer may fire up to
/// [`WATCHDOG_ACCURACY`] after its deadline. So while its units may run, promd never lets the
/// watchdog's deadline reach past [`Timing::hang_deadline`], [`WATCHDOG_REACH`] before `s + L`
/// (and, until promd's kill is on the bus, past [`Timing::hang_deadline_before_kill`], earlier
/// by the fence load): the watchdog is armed to that deadline whenever it is nearer than the
/// interval `W` ([`Timing::watchdog_within`]), so a hang anywhere is caught by it. Without a
/// load, `W` fits before the fence (the margin leaves room for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timing {
    /// The store lease `L` (`lease` in promd.toml, at least 1 s).
    pub lease: Duration,
    /// promd's `WatchdogSec=` (zero without a watchdog).
    pub watchdog: Duration,
    /// How long PID 1 may take to stop everything this host fences at once, as the agent
    /// estimates it from the closures of all its groups (`Duration::MAX` while it does not
    /// know: the most the lease allows). The kill comes early enough to leave it that long
    /// before the hang deadline, and the fence at least [`STOP_ROOM`] before the kill, as far
    /// as the lease allows ([`Timing::kill_margin`], [`Timing::margin`]; docs/safety.md,
    /// "What is assumed about the host").
    pub fence_load: Duration,
}

/// How late systemd's watchdog may fire: PID 1 arms a service's watchdog timer with sd-event's
/// default accuracy, 250 ms (`sd_event_add_time(..., accuracy 0, ...)` in systemd's
/// `service_start_watchdog`), and sd-event coalesces wake-ups within it. A system test saw the
/// watchdog fire 18 ms past its deadline.
pub const WATCHDOG_ACCURACY: Duration = Duration::from_millis(250);

/// Scheduling delay and unit stop time allowed after the watchdog fires: systemd SIGKILLs
/// promd (`WatchdogSignal=SIGKILL`) and `ExecStopPost=promd fence` SIGKILLs its units.
pub const AFTER_WATCHDOG: Duration = Duration::from_millis(100);

/// A strict gap between the latest a hung promd's units can die and the lease's end, so the
/// two never coincide: the `sd_notify` message's transit, clock granularity. Without it a
/// watchdog fitted exactly to the margin killed the units at the very instant the lease could
/// expire (the model check found it, docs/safety.md).
pub const WATCHDOG_SLACK: Duration = Duration::from_millis(50);

/// From the watchdog's deadline to the units of a hung promd surely dead, with the slack:
/// `WATCHDOG_ACCURACY + AFTER_WATCHDOG + WATCHDOG_SLACK`, 400 ms.
pub const WATCHDOG_REACH: Duration = Duration::from_millis(400);

/// What [`Timing::fence_load_for`] counts per unit that can have processes (a service,
/// socket, mount, swap or scope), besides its stop commands: 6 ms. The fence's kill must
/// leave PID 1 the time for its whole stop, up to the last job's end reaching promd, not only
/// the units' processes gone. Measured on two busy cores with 200 services: with one stop
/// command (`ExecStopPost=`) their last stop job ended 1.5–1.8 s after the fence (7.6–9.1 ms
/// each); with two (`ExecStop=/bin/sleep 20`, killed, then `ExecStopPost=`) 2.57 s after
/// the kill (12.8 ms each) (docs/safety.md, "What is assumed about the host"). 6 ms a unit
/// and [`STOP_COST_PER_COMMAND`] a command count 12 and 18 ms; the rest is room for a host
/// busier than the test's.
pub const STOP_COST_PER_UNIT: Duration = Duration::from_millis(6);

/// What [`Timing::fence_load_for`] counts per command a unit's stop runs (`ExecStop=`,
/// `ExecStopPost=`; a socket's `ExecStopPre=`/`ExecStopPost=`; a mount's unmount): 6 ms, for
/// PID 1 forks and reaps each (see [`STOP_COST_PER_UNIT`]).
pub const STOP_COST_PER_COMMAND: Duration = Duration::from_millis(6);

/// What [`Timing::fence_load_for`] counts per group the host may fence at once whose role
/// has no unit with processes, beyond [`GROUPS_FREE`]: 2 ms, for PID 1 to stop its active
/// target and promd to have the stop confirmed (the job's end, a state check, the stop's
/// walk). A group with processes is counted by its units, whose 6 ms or more hold its
/// target too (PID 1 took 7.6–9.1 ms per such group, above). Measured with empty targets on
/// 2 cores shared by 3 hosts (the bench): 500 groups' stops confirmed 0.30–0.45 s after the
/// fence (0.6–0.9 ms each); a cut host with 776 groups (2026-12-05,
/// `PROMD_BENCH_GROUPS=1000`) had PID 1 stop their targets over 0.85 s after the fence
/// (1.1 ms each) and promd confirm only 41 of them before the hang deadline 1.1 s after it,
/// then its watchdog fired; that fence came 1.5 s before the lease's end, at 1 ms a group.
/// At 2 ms, 1,000 such groups ask for a 5 s lease.
pub const STOP_COST_PER_GROUP: Duration = Duration::from_millis(2);

/// The share of the groups' cost ([`STOP_COST_PER_GROUP`]) that every lease holds without a
/// load: from a fence's start to its hang deadline there are at least 100 ms (the 1 s
/// lease's margin, 500 ms, less [`WATCHDOG_REACH`]), and a group without processes is
/// confirmed from the fence's start, not from the kill. So a host of up to 50 groups adds
/// nothing, and a 1 s lease still holds a few groups without processes.
pub const GROUPS_FREE: Duration = Duration::from_millis(100);

/// Between the kill deadline and the hang deadline under a fence load: time for a promd that
/// is slow, not hung, to put its kill on the bus (`Event::KillSent`) before the watchdog
/// takes it for hung (the lease's own kill margin leaves as much from 1.1 s leases).
pub const KILL_ROOM: Duration = Duration::from_millis(100);

/// The least a fence leaves the units to stop by themselves before it kills them, when the
/// lease has no more room for a host's fence load: the stop is asked first, the kill follows.
pub const STOP_ROOM: Duration = Duration::from_millis(100);

/// [`Timing::fence_load_for`] moves in steps this long, so that a closure that gains or loses
/// a unit does not retune every group of the host each time.
pub const FENCE_LOAD_STEP: Duration = Duration::from_millis(100);

impl Timing {
    /// The fence load of a host that may have to stop, at once, `units` units with processes
    /// whose stops run `commands` commands in all, and `empty` groups whose roles have no unit
    /// with processes: `units` × [`STOP_COST_PER_UNIT`] + `commands` ×
    /// [`STOP_COST_PER_COMMAND`] + what `empty` × [`STOP_COST_PER_GROUP`] exceeds
    /// [`GROUPS_FREE`] by, rounded up to [`FENCE_LOAD_STEP`].
    pub fn fence_load_for(empty: usize, units: usize, commands: usize) -> Duration {
        let raw = Self::fence_cost_for(empty, units, commands);
        let steps = raw.as_nanos().div_ceil(FENCE_LOAD_STEP.as_nanos());
        FENCE_LOAD_STEP.saturating_mul(u32::try_from(steps).unwrap_or(u32::MAX))
    }

    /// [`Timing::fence_load_for`] before its rounding up to [`FENCE_LOAD_STEP`] (what
    /// `promd check-config` shows an operator).
    pub fn fence_cost_for(empty: usize, units: usize, commands: usize) -> Duration {
        let times =
            |cost: Duration, n: usize| cost.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
        times(STOP_COST_PER_UNIT, units)
            .saturating_add(times(STOP_COST_PER_COMMAND, commands))
            .saturating_add(times(STOP_COST_PER_GROUP, empty).saturating_sub(GROUPS_FREE))
    }

    /// The deadlines for a lease `L` without a systemd watchdog.
    pub fn new(lease: Duration) -> Timing {
        Timing {
            lease,
            watchdog: Duration::ZERO,
            fence_load: Duration::ZERO,
        }
    }

    /// The same lease under promd's `WatchdogSec=`: the margins grow to cover it.
    pub fn with_watchdog(self, watchdog: Duration) -> Timing {
        Timing { watchdog, ..self }
    }

    /// The margin the lease alone calls for: stopping the units, clock-rate drift, scheduling
    /// delay, and room for a watchdog of at least 100 ms plus [`WATCHDOG_REACH`]:
    /// `max(L/4, min(L/2, 700 ms))`. Under 2.8 s leases the floor rules (500 ms at 1 s, 700 ms
    /// from 1.4 s); it never comes before the next renewal is due (`L/3`) plus 150 ms.
    fn base_margin(&self) -> Duration {
        (self.lease / 4).max((self.lease / 2).min(Duration::from_millis(700)))
    }

    /// The same lease on a host whose PID 1 needs `load` to stop what it fences at once.
    pub fn with_fence_load(self, load: Duration) -> Timing {
        Timing {
            fence_load: load,
            ..self
        }
    }

    /// Time reserved before the lease can expire, the longest of: the base margin; enough
    /// for the watchdog to catch a promd that hangs just before fencing (`W +
    /// WATCHDOG_REACH`); and, for the host's fence load, the load's kill margin
    /// ([`Timing::kill_margin`]) plus [`STOP_ROOM`], but that one at most what a renewal
    /// through a silent etcd member needs the lease to leave (`load_cap`). A load first eats
    /// into the time the units drain before the kill; only where less than `STOP_ROOM` would
    /// be left does the fence begin earlier, which costs the tolerance of a silent etcd raft
    /// leader (docs/safety.md).
    pub fn margin(&self) -> Duration {
        let load = self.load_kill_margin().saturating_add(STOP_ROOM);
        self.base_margin()
            .max(self.watchdog + WATCHDOG_REACH)
            .max(load.min(self.load_cap()))
    }

    /// The kill margin a fence load asks for: the kill comes early enough for PID 1 to carry
    /// out the whole load before the hang deadline, and [`KILL_ROOM`] before it:
    /// `fence_load + WATCHDOG_REACH + KILL_ROOM`. Units that drain (a slow `ExecStop=`) leave
    /// PID 1 idle until the kill, so their whole stop runs after it: the kill, not the
    /// fence's start, must leave the load's time.
    fn load_kill_margin(&self) -> Duration {
        self.fence_load
            .saturating_add(WATCHDOG_REACH)
            .saturating_add(KILL_ROOM)
    }

    /// The most margin a fence load may take: half the lease, and no more than leaves a
    /// renewal sent through a silent etcd member time to be answered after the session
    /// moved on (`L/3` until it is sent, `min(L/6, 500 ms)` waiting for the answer, 300 ms
    /// to reconnect and renew; docs/safety.md, "Losing one etcd member is not a failover"):
    /// `min(L/2, 2L/3 - min(L/6, 500 ms) - 300 ms)`, in whole milliseconds: 1.866 s at 4 s,
    /// 3 s at 6 s; up to 2 s leases no more than the lease's own margin.
    fn load_cap(&self) -> Duration {
        let follower = (self.lease * 2 / 3)
            .saturating_sub((self.lease / 6).min(Duration::from_millis(500)))
            .saturating_sub(Duration::from_millis(300));
        let cap = (self.lease / 2).min(follower);
        Duration::from_millis(u64::try_from(cap.as_millis()).unwrap_or(u64::MAX))
    }

    /// The kill's window: from the kill deadline to the hang deadline, less [`KILL_ROOM`]:
    /// the time PID 1 has to kill and finish stopping whatever still runs of the role's units
    /// before the watchdog takes promd for hung. `kill_margin - WATCHDOG_REACH - KILL_ROOM`;
    /// at least the fence load where the lease allows it.
    pub fn kill_window(&self) -> Duration {
        self.kill_margin()
            .saturating_sub(WATCHDOG_REACH)
            .saturating_sub(KILL_ROOM)
    }

    /// The shortest lease, in whole seconds, whose kill window fits `load` with
    /// [`STOP_ROOM`] to drain before the kill: what to tell an operator whose lease is too
    /// short for the units the host fences at once. `None` beyond an hour.
    pub fn lease_for_fence_load(load: Duration) -> Option<Duration> {
        Self::lease_for_fence_load_in_steps(load, Duration::from_secs(1))
    }

    /// [`Timing::lease_for_fence_load`] in steps of `step` (from 1 s; a zero step is taken
    /// as 1 ms): what `promd check-config` names for a short lease, where a whole second
    /// would overstate it (one unit needs 1.4 s, not 2 s). `None` beyond an hour.
    pub fn lease_for_fence_load_in_steps(load: Duration, step: Duration) -> Option<Duration> {
        let step = step.max(Duration::from_millis(1));
        let hour = Duration::from_secs(3600);
        std::iter::successors(Some(Duration::from_secs(1)), |l| Some(*l + step))
            .take_while(|l| *l <= hour)
            .find(|&l| Timing::new(l).with_fence_load(load).holds_fence_load())
    }

    /// Whether this lease holds its fence load: the kill window gives PID 1 the whole load
    /// ([`Timing::kill_window`] `>= fence_load`) and [`STOP_ROOM`] is left to drain before
    /// the kill. The one rule behind both [`Timing::lease_for_fence_load`] and the agent's
    /// warning about short leases, so the lease a warning names always holds. No load: the
    /// lease's own deadlines, which every lease from 1 s holds.
    pub fn holds_fence_load(&self) -> bool {
        self.fence_load.is_zero()
            || (self.kill_window() >= self.fence_load
                && self.margin() >= self.kill_margin() + STOP_ROOM)
    }

    /// Time reserved for the kill, once stopping took too long: the lease's own
    /// ([`Timing::rekill_interval`]), or what the fence load asks for
    /// (`fence_load + WATCHDOG_REACH + KILL_ROOM`) if longer, but never so long that the kill
    /// comes less than [`STOP_ROOM`] after the fence began. It ends before the hang deadline
    /// ([`Timing::hang_deadline`]; 100 ms before from 1.1 s leases, 50 ms at 1 s), so a promd
    /// that is slow but not hung has that long to see its kill done before the watchdog takes
    /// it for hung.
    ///
    /// Why the load moves the kill: 200 services with `ExecStop=/bin/sleep 20` at a 6 s lease
    /// were killed at the lease's own kill margin (0.6 s before `s + L`), and PID 1 then took
    /// 2.3 s to kill them all and finish their stops: 131 of them outlived `s + L`, by up to
    /// 1.7 s.
    pub fn kill_margin(&self) -> Duration {
        let room = self.margin().saturating_sub(STOP_ROOM);
        self.base_kill_margin()
            .max(self.load_kill_margin().min(room))
    }

    /// The lease's own kill margin: `max(L/10, min(500 ms, base margin - 50 ms))`.
    fn base_kill_margin(&self) -> Duration {
        let floor = Duration::from_millis(500)
            .min(self.base_margin().saturating_sub(Duration::from_millis(50)));
        (self.lease / 10).max(floor)
    }

    /// How long after a kill a stop that still runs is killed again: the lease's own kill
    /// margin, whatever the load (`GroupMachine::kill_due`).
    pub fn rekill_interval(&self) -> Duration {
        self.base_kill_margin()
    }

    /// The latest deadline the systemd watchdog may have while promd's units may run under a
    /// lease last renewed at `renewed_sent` (`s`): `s + L - WATCHDOG_REACH`. The watchdog fires
    /// up to `WATCHDOG_ACCURACY` later, the units die `AFTER_WATCHDOG` after that, still
    /// `WATCHDOG_SLACK` before the lease can end.
    pub fn hang_deadline(&self, renewed_sent: super::Mono) -> super::Mono {
        renewed_sent + self.lease.saturating_sub(WATCHDOG_REACH)
    }

    /// The hang deadline until promd's kill is on the bus (`Event::KillSent`): earlier than
    /// [`Timing::hang_deadline`] by the fence load, as far as the kill's window holds it
    /// (`kill_at + KILL_ROOM` under a load; the same without one). A promd that hangs before
    /// its kill is on the bus leaves the kill to `ExecStopPost=promd fence`, which goes
    /// through PID 1 as well and needs the load's time too; once it is on the bus, PID 1
    /// carries it out whatever promd does, and the later deadline gives promd the time to
    /// see it done.
    pub fn hang_deadline_before_kill(&self, renewed_sent: super::Mono) -> super::Mono {
        let load = self.fence_load.min(self.kill_window());
        self.hang_deadline(renewed_sent) - load
    }

    /// How far off the watchdog's deadline must be if promd stops pinging now (at `now`),
    /// given the interval in force `W` and the earliest [`Timing::hang_deadline`] of the groups
    /// whose units may run (`None`: none): `None` if `W` stays (the deadline is `W` or more
    /// away), else the time left to it, at least 1 ms (`WATCHDOG_USEC=0` would turn the
    /// watchdog off).
    ///
    /// Without a fence load, `W` fits before the fence deadline (the margin leaves room for
    /// it); after it, or earlier under a load, a promd that hangs would otherwise be killed
    /// up to `W` after the hang, past the lease's end.
    pub fn watchdog_within(
        interval: Duration,
        hang_deadline: Option<super::Mono>,
        now: super::Mono,
    ) -> Option<Duration> {
        let left = hang_deadline?.saturating_sub(now);
        (left < interval).then(|| left.max(Duration::from_millis(1)))
    }

    /// How long a standby that is not the best candidate waits before it campaigns too,
    /// per rank below the best.
    pub fn grace(&self) -> Duration {
        (self.lease / 4).max(Duration::from_millis(250))
    }

    /// How long a node's first election may wait for members that are still starting and may
    /// outrank it, counted from the moment the node first saw the leader key vacant: one
    /// lease. A cold boot then costs at most what an unplanned failover already costs (the
    /// standbys wait out a lease there too), and a member that never finishes starting cannot
    /// hold the election up for longer (docs/safety.md, "The first election").
    pub fn first_election_wait(&self) -> Duration {
        self.lease
    }

    /// When the active host must begin to demote, given the last renewal's send time.
    /// Saturates at `renewed_sent` (fence at once) if a watchdog longer than
    /// [`Timing::max_watchdog`] leaves no time at all.
    pub fn fence_at(&self, renewed_sent: super::Mono) -> super::Mono {
        renewed_sent + self.lease.saturating_sub(self.margin())
    }

    /// When the active host kills its units if they are not stopped yet.
    pub fn kill_at(&self, renewed_sent: super::Mono) -> super::Mono {
        renewed_sent + self.lease.saturating_sub(self.kill_margin())
    }

    /// How long to wait before retrying a stop of the active units after `failures`
    /// consecutive failed stops (at least 1): 250 ms, doubling per failure, at most half the
    /// lease and at most 5 s.
    ///
    /// A failed stop is escalated to a kill at once, so the retry is not what makes the host
    /// safe; it is what finishes the demotion. Retrying at once would be a hot loop of D-Bus
    /// calls against a systemd that just said no; waiting longer than half a lease would leave
    /// a graceful switchover stuck for longer than the lease it hands over.
    pub fn stop_retry_backoff(&self, failures: u32) -> Duration {
        let cap = (self.lease / 2).min(Duration::from_secs(5));
        Duration::from_millis(250)
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
            .min(cap)
    }

    /// How long to wait before starting the passive target again after `failures` failed
    /// starts in a row (at least 1): 1 s, doubling per failure, at most 1 min.
    ///
    /// The node is ineligible meanwhile, so this bounds nothing about safety; it is what
    /// makes a passive start that failed for a passing reason (a D-Bus call systemd dropped
    /// under load, a unit that failed in `ExecStartPre=` while what it needs was not there
    /// yet) recover by itself, without hammering a unit that keeps failing.
    pub fn passive_retry_backoff(&self, failures: u32) -> Duration {
        Duration::from_secs(1)
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
            .min(Duration::from_secs(60))
    }

    /// The watchdog interval promd sets for itself (`WATCHDOG_USEC=`) when the unit's is
    /// longer: short enough that the margin stays the lease's own, so a hang costs no extra
    /// early fencing: the base margin minus [`WATCHDOG_REACH`], never under 100 ms (100 ms at
    /// a 1 s lease, 300 ms at 2 s, 600 ms at 4 s, 2.1 s at 10 s).
    pub fn fitting_watchdog(&self) -> Duration {
        self.base_margin()
            .saturating_sub(WATCHDOG_REACH)
            .max(Duration::from_millis(100))
    }

    /// The longest systemd watchdog interval that is safe with this lease: if promd hangs,
    /// the watchdog must kill it, and the units bound to it must stop, before `L - margin`.
    /// Half of that budget is left for the units' stop.
    pub fn max_watchdog(&self) -> Duration {
        (self.lease - self.base_margin()) / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reach_adds_up() {
        assert_eq!(
            WATCHDOG_REACH,
            WATCHDOG_ACCURACY + AFTER_WATCHDOG + WATCHDOG_SLACK
        );
    }

    #[test]
    fn deadlines_keep_their_order_for_every_lease() {
        for ms in [
            1000u64, 1100, 1500, 2000, 2800, 5000, 10_000, 60_000, 3_600_000,
        ] {
            let t = Timing::new(Duration::from_millis(ms));
            let s = Mono::from_millis(1234);
            assert!(t.fence_at(s) < t.kill_at(s), "lease {ms}");
            // A promd that is slow, not hung, has time to see its kill done before the
            // watchdog takes it for hung: 100 ms, 50 ms at the shortest leases.
            let room = if ms >= 1100 { 100 } else { 50 };
            assert!(
                t.kill_at(s) + Duration::from_millis(room) <= t.hang_deadline(s),
                "lease {ms}"
            );
            assert!(
                t.hang_deadline(s) + WATCHDOG_ACCURACY + AFTER_WATCHDOG < s + t.lease,
                "lease {ms}"
            );
            assert!(t.max_watchdog() > Duration::ZERO, "lease {ms}");
            assert!(t.max_watchdog() * 2 <= t.lease - t.margin(), "lease {ms}");
        }
    }

    #[test]
    fn the_stop_retry_backoff_doubles_up_to_half_the_lease_and_five_seconds() {
        let ms = |d: Duration| d.as_millis() as u64;
        let t = Timing::new(Duration::from_secs(2));
        let got: Vec<u64> = (1..=5).map(|n| ms(t.stop_retry_backoff(n))).collect();
        assert_eq!(got, vec![250, 500, 1000, 1000, 1000]);
        let t = Timing::new(Duration::from_secs(60));
        let got: Vec<u64> = (1..=7).map(|n| ms(t.stop_retry_backoff(n))).collect();
        assert_eq!(got, vec![250, 500, 1000, 2000, 4000, 5000, 5000]);
        // No overflow however long the failures go on.
        assert_eq!(ms(t.stop_retry_backoff(u32::MAX)), 5000);
    }

    #[test]
    fn the_fitting_watchdog_is_safe_and_keeps_the_lease_margin() {
        for ms in [1000u64, 1500, 2000, 4000, 5000, 10_000, 60_000] {
            let base = Timing::new(Duration::from_millis(ms));
            let w = base.fitting_watchdog();
            assert!(w <= base.max_watchdog(), "lease {ms}: {w:?}");
            assert!(w >= Duration::from_millis(100), "lease {ms}: {w:?}");
            let t = base.with_watchdog(w);
            assert_eq!(
                t.margin(),
                base.margin(),
                "lease {ms}: the margin is the lease's own"
            );
            // Strictly inside the margin: the watchdog's kill never ties with the lease's end,
            // however late within its accuracy systemd fires it.
            assert!(
                w + WATCHDOG_ACCURACY + AFTER_WATCHDOG < t.margin(),
                "lease {ms}: {w:?}"
            );
        }
        let w = |ms| Timing::new(Duration::from_millis(ms)).fitting_watchdog();
        assert_eq!(w(1000), Duration::from_millis(100));
        assert_eq!(w(2000), Duration::from_millis(300));
        assert_eq!(w(4000), Duration::from_millis(600));
        assert_eq!(w(10_000), Duration::from_millis(2100));
    }

    /// When the units of a promd that pinged last at `ping` are dead at the latest: the
    /// watchdog's deadline as that ping left it, systemd's accuracy, the kill.
    fn dead_by(t: &Timing, s: Mono, ping: Mono) -> Mono {
        let within = Timing::watchdog_within(t.watchdog, Some(t.hang_deadline(s)), ping);
        ping + within.unwrap_or(t.watchdog) + WATCHDOG_ACCURACY + AFTER_WATCHDOG
    }

    #[test]
    fn a_hang_anywhere_before_the_kill_is_caught_by_the_watchdog_before_the_lease_ends() {
        for ms in [1000u64, 1500, 2000, 5000, 10_000, 60_000] {
            let base = Timing::new(Duration::from_millis(ms));
            for w in [
                Duration::from_millis(100),
                base.fitting_watchdog(),
                base.max_watchdog() / 2,
                base.max_watchdog(),
            ] {
                let t = base.with_watchdog(w);
                let s = Mono::from_millis(1000);
                // The last ping anywhere from the renewal to the kill deadline (a hang before
                // the fence, or after it began while a drain outlasts the lease): the units
                // die strictly before `s + L`.
                let mut ping = s;
                while ping <= t.kill_at(s) {
                    assert!(
                        dead_by(&t, s, ping) < s + t.lease,
                        "lease {ms}, watchdog {w:?}, last ping at s + {:?}",
                        ping.saturating_sub(s)
                    );
                    ping = ping + Duration::from_millis(5);
                }
                // Before the fence deadline the watchdog keeps its interval: no early kill of
                // a promd that only drains.
                assert_eq!(
                    Timing::watchdog_within(w, Some(t.hang_deadline(s)), t.fence_at(s)),
                    None,
                    "lease {ms}, watchdog {w:?}"
                );
                // And, with the watchdog promd runs with (it lowers a longer one to the fitting
                // one), the fence still comes after the next renewal is due (every L/3).
                if w <= base.fitting_watchdog() {
                    assert!(
                        t.fence_at(s) > s + t.lease / 3 + Duration::from_millis(150),
                        "lease {ms}, watchdog {w:?}"
                    );
                }
                assert!(t.fence_at(s) < t.kill_at(s));
            }
        }
    }

    #[test]
    fn a_fence_load_moves_the_kill_and_the_fence_earlier_within_the_cap() {
        let s = Mono::from_millis(1000);
        let ms = Duration::from_millis;
        let t = Timing::new(Duration::from_secs(4)).with_watchdog(ms(600));
        assert_eq!(t.margin(), ms(1000));
        assert_eq!(t.kill_margin(), ms(500));
        // 1.2 s of stops: the kill comes 1.2 s + 500 ms before s + L, so PID 1 has the whole
        // load's time before the hang deadline even if every unit drains until the kill.
        let loaded = t.with_fence_load(ms(1200));
        assert_eq!(loaded.kill_margin(), ms(1700));
        assert_eq!(loaded.kill_window(), ms(1200));
        assert_eq!(loaded.kill_at(s), s + ms(2300));
        // The fence begins STOP_ROOM before it: the units drain 100 ms before the kill.
        assert_eq!(loaded.fence_at(s), s + ms(2200));
        assert_eq!(loaded.hang_deadline(s), t.hang_deadline(s));
        // More than the lease allows: the kill comes STOP_ROOM after the fence began, its
        // window falls short, and the lease that would do is named.
        let over = t.with_fence_load(Duration::from_secs(3));
        assert_eq!(over.fence_at(s), s + ms(2134));
        assert_eq!(over.kill_at(s), s + ms(2234));
        assert!(over.kill_window() < over.fence_load);
        let lease_for = |ms| Timing::lease_for_fence_load(Duration::from_millis(ms));
        assert_eq!(lease_for(1200), Some(Duration::from_secs(4)));
        assert_eq!(lease_for(3000), Some(Duration::from_secs(8)));
        // The figures docs/safety.md and promd.toml(5) give: 200 units ask for 6 s, 300 for
        // 9 s, 500 for 14 s, 1,000 for 26 s (services with one stop command each). With two,
        // 200 ask for 9 s; with none, 4 s.
        let for_units = |n, c| Timing::lease_for_fence_load(Timing::fence_load_for(0, n, n * c));
        assert_eq!(for_units(100, 1), Some(Duration::from_secs(4)));
        assert_eq!(for_units(200, 1), Some(Duration::from_secs(6)));
        assert_eq!(for_units(300, 1), Some(Duration::from_secs(9)));
        assert_eq!(for_units(500, 1), Some(Duration::from_secs(14)));
        assert_eq!(for_units(1000, 1), Some(Duration::from_secs(26)));
        assert_eq!(for_units(200, 2), Some(Duration::from_secs(9)));
        assert_eq!(for_units(200, 0), Some(Duration::from_secs(4)));
        assert_eq!(lease_for(0), Some(Duration::from_secs(1)));
        assert_eq!(lease_for(10_000_000), None);
        assert_eq!(Timing::fence_load_for(0, 0, 0), Duration::ZERO);
        assert_eq!(Timing::fence_load_for(0, 1, 0), ms(100));
        assert_eq!(Timing::fence_load_for(0, 200, 200), ms(2400));
        assert_eq!(Timing::fence_load_for(0, 200, 400), ms(3600));
        // Groups without processes: the first 50 are free, so a 1 s lease holds a few.
        assert_eq!(Timing::fence_load_for(50, 0, 0), Duration::ZERO);
        assert_eq!(Timing::fence_load_for(51, 0, 0), ms(100));
        assert_eq!(Timing::fence_load_for(500, 0, 0), ms(900));
        assert_eq!(Timing::fence_load_for(1000, 0, 0), ms(1900));
        assert_eq!(Timing::fence_load_for(100, 200, 200), ms(2500));
        let empty = |n| Timing::lease_for_fence_load(Timing::fence_load_for(n, 0, 0));
        assert_eq!(empty(3), Some(Duration::from_secs(1)));
        assert_eq!(empty(100), Some(Duration::from_secs(2)));
        // 500 hold the 4 s lease, their fence 500 ms earlier than with none; 1,000
        // ask for 5 s.
        assert_eq!(empty(500), Some(Duration::from_secs(4)));
        let five_hundred =
            Timing::new(Duration::from_secs(4)).with_fence_load(Timing::fence_load_for(500, 0, 0));
        assert_eq!(five_hundred.margin(), ms(1500));
        assert_eq!(empty(1000), Some(Duration::from_secs(5)));
        assert!(Timing::fence_load_for(usize::MAX, 0, 0) > Duration::from_secs(3600));
        assert!(Timing::fence_load_for(0, usize::MAX, 0) > Duration::from_secs(3600));
        assert!(
            Timing::fence_load_for(usize::MAX, usize::MAX, usize::MAX) > Duration::from_secs(3600)
        );
        // Not known yet: the most it may be.
        let unknown = t.with_fence_load(Duration::MAX);
        assert_eq!(unknown.fence_at(s), over.fence_at(s));
        assert_eq!(unknown.kill_at(s), over.kill_at(s));
        // The rekill keeps the lease's own pace.
        assert_eq!(loaded.rekill_interval(), t.kill_margin());
        for lease_ms in [1000u64, 1500, 2000, 2500, 3000, 4000, 6000, 10_000, 60_000] {
            let lease = Duration::from_millis(lease_ms);
            let bare = Timing::new(lease);
            for load_ms in [0u64, 100, 500, 1200, 2400, 3600, 6000, 12_000, u64::MAX] {
                let load = Duration::from_millis(load_ms);
                let t = bare.with_fence_load(load);
                let what = format!("lease {lease_ms} ms, load {load_ms} ms");
                // A load only ever moves the deadlines earlier, and keeps their order.
                assert!(t.fence_at(s) <= bare.fence_at(s), "{what}");
                assert!(t.kill_at(s) <= bare.kill_at(s), "{what}");
                assert!(t.fence_at(s) < t.kill_at(s), "{what}");
                assert_eq!(t.hang_deadline(s), bare.hang_deadline(s), "{what}");
                // Whatever the load, a renewal that waited for a silent etcd member and was
                // sent again on a new connection is answered before the fence (or the
                // lease's own margin already rules).
                let silent_member = lease / 3 + (lease / 6).min(ms(500)) + ms(300);
                assert!(
                    t.fence_at(s) >= s + silent_member || t.margin() == bare.margin(),
                    "{what}"
                );
                assert!(t.fence_at(s) >= s + lease / 2, "{what}");
                // Where the lease is long enough for the load, the kill leaves PID 1 the
                // whole load before the hang deadline, and the units STOP_ROOM to drain.
                // (No load: the lease's own deadlines, `deadlines_keep_their_order_...`.)
                if !load.is_zero() && Timing::lease_for_fence_load(load).is_some_and(|l| l <= lease)
                {
                    assert!(
                        t.kill_at(s) + load + KILL_ROOM <= t.hang_deadline(s),
                        "{what}"
                    );
                    assert!(t.fence_at(s) + STOP_ROOM <= t.kill_at(s), "{what}");
                }
            }
        }
        // A small load moves the kill by the load, and the fence not at all: it eats into the
        // time the units drain before the kill first.
        let light = t.with_fence_load(ms(100));
        assert_eq!(light.kill_at(s), t.kill_at(s) - ms(100));
        assert_eq!(light.fence_at(s), t.fence_at(s));
        let more = t.with_fence_load(ms(600));
        assert_eq!(more.fence_at(s), t.fence_at(s) - ms(200));
        assert_eq!(more.kill_at(s) - STOP_ROOM, more.fence_at(s));
    }

    #[test]
    fn the_lease_named_in_steps_holds_its_load_and_one_step_less_does_not() {
        let ms = Duration::from_millis;
        let step = ms(100);
        for load_ms in (50u64..=6000).step_by(50) {
            let load = ms(load_ms);
            let named = Timing::lease_for_fence_load_in_steps(load, step);
            let Some(named) = named else {
                panic!("load {load_ms} ms: no lease within an hour")
            };
            assert!(Timing::new(named).with_fence_load(load).holds_fence_load());
            if named > Duration::from_secs(1) {
                let less = named - step;
                let holds = Timing::new(less).with_fence_load(load).holds_fence_load();
                assert!(!holds, "load {load_ms} ms: {less:?} holds it too");
            }
            // Never longer than the whole-second answer.
            assert!(Timing::lease_for_fence_load(load).is_some_and(|l| named <= l));
        }
        // One unit's stop (what `promd check-config` notes for a 1 s lease).
        assert_eq!(
            Timing::lease_for_fence_load_in_steps(FENCE_LOAD_STEP, step),
            Some(ms(1400))
        );
    }

    #[test]
    fn a_lease_holds_its_load_exactly_from_the_lease_named_for_it() {
        // The agent warns when a lease does not hold its load and names
        // `lease_for_fence_load`; the two must agree for every lease and load, so that
        // the named lease silences the warning and every longer one does too.
        for load_ms in (0u64..=20_000).step_by(50).chain([u64::MAX]) {
            let load = Duration::from_millis(load_ms);
            let named = Timing::lease_for_fence_load(load);
            for lease_ms in (1000u64..=40_000).step_by(250) {
                let lease = Duration::from_millis(lease_ms);
                let holds = Timing::new(lease).with_fence_load(load).holds_fence_load();
                let whole_second_at_or_past = named.is_some_and(|l| l <= lease);
                assert!(
                    !whole_second_at_or_past || holds,
                    "load {load_ms} ms: lease {lease_ms} ms is at or past the named {named:?} but does not hold it"
                );
                if lease_ms % 1000 == 0 {
                    assert_eq!(
                        holds, whole_second_at_or_past,
                        "load {load_ms} ms, lease {lease_ms} ms"
                    );
                }
            }
        }
    }

    #[test]
    fn the_armed_watchdog_never_asks_for_zero() {
        let t = Timing::new(Duration::from_secs(2)).with_watchdog(Duration::from_millis(300));
        let s = Mono::from_millis(1000);
        let late = t.hang_deadline(s) + Duration::from_secs(1);
        assert_eq!(
            Timing::watchdog_within(t.watchdog, Some(t.hang_deadline(s)), late),
            Some(Duration::from_millis(1))
        );
        assert_eq!(Timing::watchdog_within(t.watchdog, None, late), None);
    }
}
