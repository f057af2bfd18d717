//! Operator requests (promote, demote, reset): carried out, or refused with the reason.

use super::{Action, GroupMachine, Ineligible, Life, Mono, Passive, Refusal, Request, Role, Timer};

impl GroupMachine {
    /// Carry out an operator's request, or say why not (and change nothing).
    pub fn request(&mut self, request: Request, now: Mono) -> Result<Vec<Action>, Refusal> {
        let mut out = Vec::new();
        match request {
            Request::Promote => {
                if matches!(self.role, Role::Active | Role::Promoting) {
                    return Ok(out);
                }
                if self.maintenance {
                    return Err(Refusal::Maintenance);
                }
                if let Some(why) = self.ineligibility(now) {
                    return Err(Refusal::NotEligible(why));
                }
                self.switchover_to = Some(self.p.node.clone());
                out.push(Action::RequestSwitchover {
                    to: self.p.node.clone(),
                });
            }
            Request::Demote => {
                if !matches!(self.role, Role::Active | Role::Promoting) {
                    return Ok(out);
                }
                if self.maintenance {
                    return Err(Refusal::Maintenance);
                }
                let Some(best) = self.best_standby() else {
                    return Err(Refusal::NoStandby);
                };
                self.switchover_to = Some(best.clone());
                out.push(Action::RequestSwitchover { to: best });
            }
            Request::ResetFailed => {
                self.timers.clear(Timer::Cooldown);
                self.failures.clear();
                // A passive target that failed to start is tried again now, not at its retry
                // (finish_demotion starts it once no job runs and the active units are down).
                self.retry_passive();
            }
        }
        self.step(now, &mut out);
        Ok(out)
    }

    /// Why this node cannot become active now, if it cannot.
    pub fn ineligibility(&self, now: Mono) -> Option<Ineligible> {
        let why = if self.life != Life::Running {
            Ineligible::Stopping
        } else if !self.is_member(&self.p.node) {
            Ineligible::NotMember
        } else if let Some(why) = self.blocked {
            why
        } else if self.timers.pending(Timer::Cooldown, now) {
            Ineligible::Cooldown
        } else if self.passive == Passive::Failed || !self.passive_units_ok {
            Ineligible::PassiveFailed
        } else if !self.healthy {
            Ineligible::Unhealthy
        } else if !self.store_up || self.lease_lost() {
            Ineligible::StoreUnreachable
        } else if self
            .renewed_sent()
            .is_none_or(|s| now >= self.p.timing.fence_at(s))
        {
            Ineligible::LeaseNotRenewed
        } else if self.role != Role::Passive || self.passive != Passive::Up {
            Ineligible::NotPassive
        } else {
            return None;
        };
        Some(why)
    }

    /// The eligible member, other than this node, that a hand-over goes to.
    pub(super) fn best_standby(&self) -> Option<String> {
        self.members
            .iter()
            .filter(|m| m.node != self.p.node && m.may_take_over() && self.is_member(&m.node))
            .min_by(|a, b| b.priority.cmp(&a.priority).then(a.node.cmp(&b.node)))
            .map(|m| m.node.clone())
    }
}
