//! Local failures of the active units: counted, restarted in place, failed over past the limit.

use super::{Action, GroupMachine, Job, Life, Mono, Reason, Role, Timer};

impl GroupMachine {
    /// Local failure first: count it, restart in place, and fail over once there were more
    /// than `max-restarts` failures within `restart-window` and someone can take over.
    pub(super) fn unit_failed(
        &mut self,
        unit: String,
        restarted: bool,
        now: Mono,
        out: &mut Vec<Action>,
    ) {
        if self.role != Role::Active || self.job.is_some() {
            return; // units stop and start around promotions and demotions: not failures
        }
        if self.maintenance {
            // `promctl maintenance`: the units are worked on by hand; promd neither counts
            // nor restarts what they do (`maintenance_ended` looks at them again).
            out.push(Action::Note(format!(
                "{unit} failed: not counted, nor restarted, while maintenance mode is on"
            )));
            return;
        }
        // systemd restarts what it restarted; promd restarts what it left failed.
        let restart = if restarted {
            Restart::None
        } else {
            Restart::Unit(unit.clone())
        };
        let what = if restarted {
            format!("{unit} failed and was restarted by systemd")
        } else {
            format!("{unit} failed")
        };
        self.count_failure(what, restart, now, out);
    }

    pub(super) fn unit_failed_health(&mut self, now: Mono, out: &mut Vec<Action>) {
        // Under maintenance the check may well fail while the units are worked on.
        if self.role == Role::Active && self.job.is_none() && !self.maintenance {
            self.count_failure("the health check failed".into(), Restart::All, now, out);
        }
    }

    fn count_failure(&mut self, what: String, restart: Restart, now: Mono, out: &mut Vec<Action>) {
        if !self.failed_over(&what, now, out) {
            self.schedule_restart(restart, now);
        }
    }

    /// Count a failure; past `max-restarts` within the window, with an eligible standby and
    /// no maintenance, fail over (cooldown, switchover request, demotion) and return true.
    /// Otherwise note that the caller tries again in place, and return false.
    fn failed_over(&mut self, what: &str, now: Mono, out: &mut Vec<Action>) -> bool {
        self.failures.push_back(now);
        let since = now - self.p.restart_window;
        while self.failures.front().is_some_and(|t| *t <= since) {
            self.failures.pop_front();
        }
        let count = self.failures.len();
        let window = humantime::format_duration(self.p.restart_window);
        let again = if self.role == Role::Promoting {
            "starting the active target again in place"
        } else {
            "restarting in place"
        };
        if count <= self.p.max_restarts as usize {
            out.push(Action::Note(format!(
                "{what} ({count} of at most {} failures within {window}): {again}",
                self.p.max_restarts
            )));
            return false;
        }
        match self.best_standby() {
            Some(best) if !self.maintenance => {
                out.push(Action::Note(format!(
                    "{what}: {count} failures within {window}, more than {}: failing over to {best}",
                    self.p.max_restarts
                )));
                self.timers
                    .set(Timer::Cooldown, now + self.p.failure_cooldown);
                self.switchover_to = Some(best.clone());
                self.demote_reason = Some(Reason::FailingOver {
                    count,
                    window: self.p.restart_window,
                    to: best.clone(),
                });
                out.push(Action::RequestSwitchover { to: best });
                true
            }
            best => {
                let stay = if self.role == Role::Promoting {
                    "staying promoting"
                } else {
                    "staying active"
                };
                let why = if best.is_some() {
                    "maintenance mode is on"
                } else {
                    "no eligible standby"
                };
                out.push(Action::Note(format!(
                    "{what}: {count} failures within {window}, but {why}: {stay}, {again}"
                )));
                false
            }
        }
    }

    /// The active target started but left watched units down: a failed start, counted like
    /// a failure of a running unit. The role stays `promoting`; the start is tried again
    /// after the restart backoff, or the node fails over.
    pub(super) fn start_incomplete(
        &mut self,
        units: Vec<String>,
        now: Mono,
        out: &mut Vec<Action>,
    ) {
        if self.role != Role::Promoting {
            return;
        }
        let what = format!(
            "{} did not come up with the active target",
            units.join(", ")
        );
        if !self.failed_over(&what, now, out) {
            self.timers
                .set(Timer::StartRetry, now + self.p.restart_backoff);
        }
    }

    /// A start retry whose backoff has passed: start the active target again, if this node
    /// still holds the key and nothing else (a demotion, a fence, a stop) took over.
    pub(super) fn retry_start(&mut self, now: Mono, out: &mut Vec<Action>) {
        let Some(at) = self.timers.get(Timer::StartRetry) else {
            return;
        };
        if self.role != Role::Promoting
            || self.life != Life::Running
            || self.demote_reason.is_some()
            || self.key.held().is_none()
        {
            self.timers.clear(Timer::StartRetry);
            return;
        }
        // Not on the view from before a reconnection either (see `promote`).
        if now < at || self.job.is_some() || !self.unread.current() {
            return;
        }
        self.timers.clear(Timer::StartRetry);
        if let Some(term) = self.key.held() {
            self.units_may_start();
            self.job = Some(Job::StartActive);
            out.push(Action::Start(Job::StartActive, Some(term)));
        }
    }

    /// A unit systemd does not restart (or, for a failed health check, every watched unit)
    /// is restarted once the backoff has passed.
    fn schedule_restart(&mut self, restart: Restart, now: Mono) {
        let unit = match restart {
            Restart::None => return,
            Restart::Unit(u) => Some(u),
            Restart::All => None,
        };
        if !self.pending_restarts.iter().any(|r| r.0 == unit) {
            self.pending_restarts
                .push((unit, now + self.p.restart_backoff));
        }
    }

    pub(super) fn restart_due(&mut self, now: Mono, out: &mut Vec<Action>) {
        // Restarts asked before maintenance began are dropped with it: the units are the
        // operator's until it ends.
        if self.role != Role::Active || self.job.is_some() || self.maintenance {
            self.pending_restarts.clear();
            return;
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_restarts)
            .into_iter()
            .partition(|r| r.1 <= now);
        self.pending_restarts = later;
        out.extend(due.into_iter().map(|r| Action::RestartUnit(r.0)));
    }

    /// Active with more failures than allowed: it would have failed over, had there been an
    /// eligible standby.
    pub fn stranded(&self, now: Mono) -> bool {
        self.role == Role::Active && self.failures(now) > self.p.max_restarts
    }

    /// Whether restarts are pending (for STATUS=).
    pub fn restarting(&self) -> bool {
        !self.pending_restarts.is_empty()
    }
}

/// What a failure calls for in place.
enum Restart {
    /// systemd already restarts it.
    None,
    Unit(String),
    /// Every watched unit (a failed health check names none).
    All,
}
