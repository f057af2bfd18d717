//! Rules 3 and 4a: demotion (hand-over) and promotion.

use super::{Action, GroupMachine, Job, Life, Mono, Owed, Passive, Reason, Role, Timer};

impl GroupMachine {
    /// Rule 3a: hand over on a switchover request or a failed start.
    pub(super) fn demote(&mut self, now: Mono, out: &mut Vec<Action>) {
        if !self.runs_role() || !self.may_issue_stop(now) {
            return;
        }
        if let Some(reason) = self.demote_reason.take() {
            self.stop_active(reason, out);
            return;
        }
        if let Some(to) = self.switchover_to.clone()
            && !self.maintenance
            && to != self.p.node
            && self.role == Role::Active
        {
            if self
                .members
                .iter()
                .any(|m| m.node == to && m.may_take_over())
            {
                self.stop_active(Reason::Switchover { to }, out);
            } else {
                // Not a candidate: drop the request rather than hand over to nobody.
                self.switchover_to = None;
                out.push(Action::ClearSwitchover);
            }
        }
    }

    /// Rule 3b: after the units stopped, start the passive target, then release the key.
    ///
    /// Not both at once, though that would save a switchover the passive target's start
    /// (~6 ms): that start may pull in a unit of the active role (a dependency nobody meant,
    /// `a_unit_started_during_the_passive_start_supersedes_it_without_looping`), and such a
    /// unit must be found and stopped while this node still holds the key.
    pub(super) fn finish_demotion(&mut self, now: Mono, out: &mut Vec<Action>) {
        if self.units_may_run() || self.job.is_some() {
            return;
        }
        if !matches!(
            self.role,
            Role::Starting | Role::Demoting | Role::Passive | Role::Failed
        ) {
            return;
        }
        if self.passive == Passive::Down {
            if self.p.has_passive_target {
                self.job = Some(Job::StartPassive);
                out.push(Action::Start(Job::StartPassive, None));
                return;
            }
            self.passive = Passive::Up;
        }
        let stale_own_key = match self.holder() {
            Some((node, term)) if node == self.p.node && !self.campaigning() => Some(term),
            _ => None,
        };
        // A key this node will promote with is kept while the promotion waits.
        if let Some(term) = self.key.held().or(stale_own_key)
            && self.store_up
            && !self.lease_lost()
            && !self.releasing()
            && !self.waits_to_promote(now)
        {
            self.owed = Owed::Release { term };
            out.push(Action::Release { term });
            if self.key.held().is_none() {
                // An own key this node did not know it won (a campaign whose answer was
                // lost and that was carried out again): its claim may stand in the store
                // with it. The record is written again with the release, so that no claim
                // outlives the key.
                self.published = None;
            }
        }
        let settled = if self.timers.pending(Timer::Cooldown, now) {
            Role::Failed
        } else {
            Role::Passive
        };
        if self.role != settled {
            let reason = match self.role {
                Role::Starting if self.passive == Passive::Failed => Reason::StartedPassiveFailed,
                Role::Starting => Reason::StartedPassive,
                Role::Failed => Reason::CooldownOver,
                _ if settled == Role::Failed => Reason::FailedCooldown,
                _ => Reason::Demoted,
            };
            self.set_role(settled, self.term, reason, out);
        }
    }

    /// Rule 4a: a won key is turned into a started active target, once the store shows this
    /// node's record claiming the role at the key's term (rule 5 publishes it as soon as the
    /// key is won, [`Self::waits_to_promote`]) and no other member still claims it.
    ///
    /// Why wait for the record: a key deleted by hand (`etcdctl del`) leaves nothing in the
    /// store but its holder's record to say that the units may run. Were the units started
    /// before that record is written, a standby that never saw the key (a promd that just
    /// started) would find the key vacant and no claim, and start them too. The model check
    /// found it (`FaultKind::DelKey`). It costs a promotion one store round trip.
    ///
    /// After a reconnection nothing is promoted until the store has been read again: the key
    /// may have been deleted and won by another node meanwhile, and the claim seen before the
    /// outage may have been withdrawn since (a fresh review found a start on the old view).
    pub(super) fn promote(&mut self, now: Mono, out: &mut Vec<Action>) {
        let Some(term) = self.key.held() else { return };
        // Never under a term at or below one this host saw before it started (a won key is
        // above it already: `key_campaigned`; this says so where the units start).
        if term <= self.p.term_floor
            || !self.unread.current()
            || !self.waits_to_promote(now)
            || self.holder_standing()
            || !self.claim_written(term)
        {
            return;
        }
        if self.switchover_to.is_some() {
            self.switchover_to = None;
            out.push(Action::ClearSwitchover);
        }
        self.units_may_start();
        if self.passive == Passive::Up {
            self.passive = Passive::Down;
        }
        self.job = Some(Job::StartActive);
        self.set_role(Role::Promoting, term, Reason::WonElection, out);
        out.push(Action::Start(Job::StartActive, Some(term)));
    }

    /// This node holds the key and will promote with it: passive, eligible, under a lease
    /// renewed recently enough, nothing else under way. While it waits (for its claim to be
    /// written, for another holder to stand down) it keeps the key, and its record claims the
    /// role (`promoting`).
    pub(super) fn waits_to_promote(&self, now: Mono) -> bool {
        self.key.held().is_some()
            && self.role == Role::Passive
            && self.job.is_none()
            && !self.releasing()
            && !self.maintenance
            && self.life == Life::Running
            && self.eligible(now)
            && self.entitled_at().is_some_and(|f| now < f)
    }

    /// The store shows this node's record claiming the role at `term`.
    pub(super) fn claim_written(&self, term: u64) -> bool {
        self.members.iter().any(|m| {
            m.node == self.p.node
                && matches!(m.role, Role::Promoting | Role::Active)
                && m.term == Some(term)
        })
    }
}
