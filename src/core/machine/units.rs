//! Whether the active units may be running, and what the current stop has done about it.

use super::{Action, GroupMachine, Mono, Timer};

/// The active units (the active target's closure) as far as this node can tell.
///
/// Which systemd job runs is kept apart ([`Job`](super::Job)): a passive target may start
/// while a unit of the closure was started behind promd's back, so the two do not nest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Units {
    /// Down by systemd's word: the last stop succeeded (every unit of the closure `inactive`
    /// or `failed`), and nothing started since.
    Down,
    /// May be running: from birth (a previous incarnation may have left them running), from
    /// a start of the active target, or from a unit started behind promd's back; until a
    /// stop succeeds.
    MayRun {
        /// When the current stop last killed them (see `fence::kill_due`); `None` before the
        /// first kill of this stop attempt, or since a unit started after it.
        killed_at: Option<Mono>,
        /// The `KillUnit` calls of a kill reached the bus since `killed_at` last became
        /// `Some` ([`Event::KillSent`](super::Event::KillSent)): from then on PID 1 carries
        /// the kill out whatever promd does. Until then a hung promd leaves the kill to
        /// `ExecStopPost=promd fence`, and the hang deadline stays the earlier one
        /// (`GroupMachine::hang_deadline`).
        kill_sent: bool,
        /// Failed stops in a row, for the retry backoff (`Timing::stop_retry_backoff`).
        stop_failures: u32,
    },
}

impl Units {
    /// At birth: whatever a previous incarnation left may still run.
    pub(super) const BIRTH: Units = Units::MayRun {
        killed_at: None,
        kill_sent: false,
        stop_failures: 0,
    };
}

impl GroupMachine {
    /// The active units may be running.
    pub(super) fn units_may_run(&self) -> bool {
        matches!(self.units, Units::MayRun { .. })
    }

    /// When the current stop last killed the units.
    pub(super) fn killed_at(&self) -> Option<Mono> {
        match self.units {
            Units::MayRun { killed_at, .. } => killed_at,
            Units::Down => None,
        }
    }

    /// Record a kill (`Some`), or that the kill deadline applies afresh (`None`: no kill
    /// of the units as they are now was sent either). Only meaningful while the units may
    /// run (a stop or a kill of units known down is moot). A kill again (`Some` over `Some`)
    /// keeps `kill_sent`: the units the first one hit are dying whatever promd does.
    pub(super) fn set_killed_at(&mut self, at: Option<Mono>) {
        if let Units::MayRun {
            killed_at,
            kill_sent,
            ..
        } = &mut self.units
        {
            *killed_at = at;
            if at.is_none() {
                *kill_sent = false;
            }
        }
    }

    /// The kill asked last reached the bus ([`Event::KillSent`](super::Event::KillSent)).
    /// Moot unless a kill of the units as they are now was asked.
    pub(super) fn set_kill_sent(&mut self) {
        if let Units::MayRun {
            killed_at: Some(_),
            kill_sent,
            ..
        } = &mut self.units
        {
            *kill_sent = true;
        }
    }

    /// Whether a kill of the units as they are now reached the bus.
    pub(super) fn kill_sent(&self) -> bool {
        matches!(
            self.units,
            Units::MayRun {
                kill_sent: true,
                ..
            }
        )
    }

    /// Something (a start, or a unit started behind our back) may run the units now.
    pub(super) fn units_may_start(&mut self) {
        if self.units == Units::Down {
            self.units = Units::BIRTH;
        }
    }

    /// A stop failed: count it (for the backoff) and record the kill that follows it at
    /// `now`. Returns the failures in a row. (A stop job only runs while the units may run.)
    pub(super) fn units_stop_failed(&mut self, now: Mono) -> u32 {
        match &mut self.units {
            Units::MayRun {
                killed_at,
                stop_failures,
                ..
            } => {
                *stop_failures = stop_failures.saturating_add(1);
                *killed_at = Some(now);
                *stop_failures
            }
            Units::Down => 1,
        }
    }
}

/// The passive target, as far as this machine started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Passive {
    /// Not started since the active units last ran (or at birth).
    Down,
    /// Started (or there is none to start): the node may become eligible.
    Up,
    /// Its start failed: ineligible until its units recover or `promctl reset`.
    Failed,
}

impl GroupMachine {
    /// The passive target's start job ended. A failure leaves the node ineligible
    /// ([`Passive::Failed`]) and starts the target again after a backoff
    /// ([`Timer::PassiveRetry`]): a start that failed for a passing reason (systemd dropped
    /// the call under load) must not leave the node ineligible until an operator steps in.
    pub(super) fn passive_started(&mut self, ok: bool, now: Mono, out: &mut Vec<Action>) {
        if ok {
            self.passive = Passive::Up;
            self.passive_failures = 0;
            self.timers.clear(Timer::PassiveRetry);
            return;
        }
        self.passive = Passive::Failed;
        self.passive_failures = self.passive_failures.saturating_add(1);
        let backoff = self.p.timing.passive_retry_backoff(self.passive_failures);
        self.timers.set(Timer::PassiveRetry, now + backoff);
        out.push(Action::Note(format!(
            "starting the passive target failed ({} in a row): not eligible; trying again in {}",
            self.passive_failures,
            humantime::format_duration(backoff)
        )));
    }

    /// Start a passive target that failed again (its retry is due, its units recovered, or
    /// an operator reset it): `finish_demotion` starts it once no job runs and the active
    /// units are down.
    pub(super) fn retry_passive(&mut self) {
        self.timers.clear(Timer::PassiveRetry);
        if self.passive == Passive::Failed {
            self.passive = Passive::Down;
        }
    }
}
