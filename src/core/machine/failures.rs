//! Local failures of the active units: counted, restarted in place, failed over past the limit.

use super::{Action, GroupMachine, Mono, Role};

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
        if self.role == Role::Active && self.job.is_none() {
            self.count_failure("the health check failed".into(), Restart::All, now, out);
        }
    }

    fn count_failure(&mut self, what: String, restart: Restart, now: Mono, out: &mut Vec<Action>) {
        self.failures.push_back(now);
        let since = now - self.p.restart_window;
        while self.failures.front().is_some_and(|t| *t <= since) {
            self.failures.pop_front();
        }
        let count = self.failures.len();
        let window = humantime::format_duration(self.p.restart_window);
        if count <= self.p.max_restarts as usize {
            out.push(Action::Note(format!(
                "{what} ({count} of at most {} failures within {window}): restarting in place",
                self.p.max_restarts
            )));
            self.schedule_restart(restart, now);
            return;
        }
        match self.best_standby() {
            Some(best) if !self.maintenance => {
                out.push(Action::Note(format!(
                    "{what}: {count} failures within {window}, more than {}: failing over to {best}",
                    self.p.max_restarts
                )));
                self.failed_until = Some(now + self.p.failure_cooldown);
                self.switchover_to = Some(best.clone());
                self.demote_reason = Some(format!(
                    "{count} failures within {window}: failing over to {best}"
                ));
                out.push(Action::RequestSwitchover { to: best });
            }
            _ => {
                out.push(Action::Note(format!(
                    "{what}: {count} failures within {window}, but no eligible standby: staying active, restarting in place"
                )));
                self.schedule_restart(restart, now);
            }
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
        if self.role != Role::Active || self.job.is_some() {
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
