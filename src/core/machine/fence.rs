//! Rules 1 and 2: fence the active units when this node is not entitled to run them, and
//! terminate (stop, release, exit). Also the handling of stops that fail and of units that
//! start on a host without the role, since both end up in the fence.

use super::{Action, GroupMachine, Job, Life, Mono, Owed, Passive, Reason, Role, Timer};

impl GroupMachine {
    /// Rule 1: units must not run unless this node holds the key under a live lease, and has
    /// the role (promoting or active).
    pub(super) fn fence(&mut self, now: Mono, out: &mut Vec<Action>) {
        if !self.units_may_run() {
            return;
        }
        let lost = match self.entitled_at() {
            None => Some(self.not_entitled_reason()),
            Some(fence_at) if now >= fence_at => Some(Reason::LeaseNotRenewed),
            // Holding the key does not entitle a host that is demoting, or that never took
            // the role, to run the units: a unit started behind its back, or a stop failed.
            Some(_) if !self.runs_role() => Some(Reason::NotActive),
            Some(_) => None,
        };
        if let Some(reason) = lost
            && self.may_issue_stop(now)
        {
            self.stop_active(reason, out);
        }
        if self.stopping() && now >= self.kill_deadline() && self.kill_due(now) {
            self.set_killed_at(Some(now));
            out.push(Action::KillActive);
        }
    }

    /// Whether a kill is due now that the kill deadline has passed: the first one, or, while
    /// the stop still runs, another one a rekill interval after the last. systemd runs a service's
    /// `ExecStop=` even when its main process was killed, so a kill that lands before the stop
    /// job began (the key vanished: stop and kill are issued together) leaves a drain such as
    /// `ExecStop=/bin/sleep 3` to run in full; killing again catches what started since.
    fn kill_due(&self, now: Mono) -> bool {
        match self.killed_at() {
            None => true,
            Some(t) => self.rekills() && now >= t + self.p.timing.rekill_interval(),
        }
    }

    /// A stop job runs after its kill, past start-up (where the kill waits for the closure
    /// anyway, and nothing was started behind it).
    fn rekills(&self) -> bool {
        self.job == Some(Job::StopActive) && self.role != Role::Starting
    }

    /// When the fence kills (again), if a stop is under way: see [`Self::kill_due`].
    pub(super) fn next_kill(&self) -> Option<Mono> {
        if !self.stopping() {
            return None;
        }
        match self.killed_at() {
            None => Some(self.kill_deadline()),
            Some(t) if self.rekills() => Some(t + self.p.timing.rekill_interval()),
            Some(_) => None,
        }
    }

    /// A stop runs, or a failed one waits for its retry: either way the units are on their
    /// way down, and a unit that starts meanwhile is killed by the kill deadline.
    pub(super) fn stopping(&self) -> bool {
        self.job == Some(Job::StopActive) || self.timers.get(Timer::StopRetry).is_some()
    }

    /// The fence deadline if this node may run the active units at all.
    pub(super) fn entitled_at(&self) -> Option<Mono> {
        self.key.held()?;
        if self.lease_lost() {
            return None;
        }
        self.renewed_sent().map(|s| self.p.timing.fence_at(s))
    }

    pub(super) fn not_entitled_reason(&self) -> Reason {
        match self.holder() {
            _ if self.role == Role::Starting => Reason::Starting,
            _ if self.lease_lost() => Reason::LeaseLost,
            Some((node, _)) if node != self.p.node => Reason::HeldBy {
                node: node.to_string(),
            },
            None => Reason::KeyGone,
            _ => Reason::NotHolding,
        }
    }

    /// When to SIGKILL units whose stop has not finished.
    ///
    /// Draining until shortly before the lease can expire is only allowed while this node
    /// still holds the key under a live lease (a graceful demotion, or a fence before expiry):
    /// nobody else can take the role before then. In every other case (the key vanished or is
    /// another's, the lease is lost, a release of the key is under way, or at start-up, when
    /// nobody can say when the previous incarnation last renewed) another host may be
    /// starting the units already: now.
    pub(super) fn kill_deadline(&self) -> Mono {
        match self.renewed_sent() {
            Some(s)
                if self.role != Role::Starting
                    && !self.releasing()
                    && self.entitled_at().is_some() =>
            {
                self.p.timing.kill_at(s)
            }
            _ => Mono::ZERO,
        }
    }

    /// The role is this node's to run: the units are meant to run here (if the key allows).
    pub(super) fn runs_role(&self) -> bool {
        matches!(self.role, Role::Promoting | Role::Active)
    }

    /// A new stop may be issued: none runs, and no failed one waits for its retry (it was
    /// killed when it failed; asking systemd again at once would only fail again, in a loop).
    pub(super) fn may_issue_stop(&self, now: Mono) -> bool {
        self.job != Some(Job::StopActive) && !self.timers.pending(Timer::StopRetry, now)
    }

    /// A stop did not bring every unit down: kill what is left now, and let the fence issue
    /// the stop again after a backoff (doubling per failure in a row). The role does not
    /// change: a demotion stays a demotion and finishes once a stop succeeds.
    pub(super) fn stop_failed(&mut self, now: Mono, out: &mut Vec<Action>) {
        let failures = self.units_stop_failed(now);
        let backoff = self.p.timing.stop_retry_backoff(failures);
        self.timers.set(Timer::StopRetry, now + backoff);
        out.push(Action::KillActive);
        out.push(Action::Note(format!(
            "stopping the active units failed ({} in a row): killed what is left, retrying in {}",
            failures,
            humantime::format_duration(backoff)
        )));
    }

    /// A unit of the active target's closure started. Unless this node has the role (or a
    /// stop is already under way), that is a unit running where it must not: mark the units
    /// as running so that the fence stops them (and kills them, the key not being held).
    /// Any kill sent so far predates this unit: the kill deadline applies to it afresh.
    pub(super) fn unit_started(&mut self, unit: &str, out: &mut Vec<Action>) {
        if self.job == Some(Job::StopActive) {
            // The stop answers for it (it fails if the unit is still up).
            self.set_killed_at(None);
            return;
        }
        if self.runs_role() {
            return;
        }
        self.units_may_start();
        // While a failed stop waits for its retry, no new stop is issued: the kill is what
        // keeps the newcomer from running where it must not.
        self.set_killed_at(None);
        out.push(Action::Note(format!(
            "{unit} started on a host that does not hold the role: stopping it"
        )));
    }

    pub(super) fn stop_active(&mut self, reason: Reason, out: &mut Vec<Action>) {
        self.pending_restarts.clear();
        self.job = Some(Job::StopActive);
        // Each attempt gets its own kill deadline (a retry may find units restarted).
        self.set_killed_at(None);
        self.timers.clear(Timer::StopRetry);
        if self.passive == Passive::Up {
            self.passive = Passive::Down;
        }
        out.push(Action::Start(Job::StopActive, None));
        if self.runs_role() {
            let term = self.term;
            self.set_role(Role::Demoting, term, reason, out);
        }
    }

    /// Rule 2: stop the units, release the key, exit.
    pub(super) fn terminate(&mut self, now: Mono, out: &mut Vec<Action>) {
        if self.job == Some(Job::StartActive) {
            self.stop_active(self.leaving.clone(), out);
            return;
        }
        if self.job.is_some() {
            return;
        }
        if self.units_may_run() {
            if self.may_issue_stop(now) {
                self.stop_active(self.leaving.clone(), out);
            }
            return;
        }
        if let Some(term) = self.key.held()
            && self.store_up
        {
            if !self.releasing() {
                self.owed = Owed::Release { term };
                out.push(Action::Release { term });
            }
            return;
        }
        // Unreachable store: the key expires with the lease; the units are down already.
        self.life = Life::Exited;
        out.push(Action::Exit);
    }
}
