//! Operator requests (promote, demote, reset): carried out, or refused with the reason.

use super::{Action, GroupMachine, Mono, Refusal, Request, Role};

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
                    return Err(Refusal::Maintenance("maintenance mode is on".into()));
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
                    return Err(Refusal::Maintenance("maintenance mode is on".into()));
                }
                let Some(best) = self.best_standby() else {
                    return Err(Refusal::NoStandby(
                        "no other member is eligible to take over".into(),
                    ));
                };
                self.switchover_to = Some(best.clone());
                out.push(Action::RequestSwitchover { to: best });
            }
            Request::ResetFailed => {
                self.failed_until = None;
                self.failures.clear();
                // A passive target that failed to start is tried again (finish_demotion starts
                // it once no job runs and the active units are down): without this, the node
                // would stay ineligible until promd restarts.
                self.passive_failed = false;
            }
        }
        self.step(now, &mut out);
        Ok(out)
    }

    /// Why this node cannot become active now, if it cannot.
    pub fn ineligibility(&self, now: Mono) -> Option<String> {
        let why = if self.terminating {
            "promd is stopping"
        } else if !self.is_member(&self.p.node) {
            "this node is not in the group's members"
        } else if self.failed_until.is_some_and(|t| now < t) {
            "this node failed and is in its failure cooldown (promctl reset clears it)"
        } else if self.passive_failed || !self.passive_units_ok {
            "the passive target failed"
        } else if !self.healthy {
            "the health check fails"
        } else if !self.store_up || self.lease_lost {
            "the store is unreachable"
        } else if self
            .renewed_sent
            .is_none_or(|s| now >= self.p.timing.fence_at(s))
        {
            "the store lease is not renewed"
        } else if self.role != Role::Passive || !self.passive_ready {
            "this node is not passive yet"
        } else {
            return None;
        };
        Some(why.into())
    }

    /// The eligible member, other than this node, that a hand-over goes to.
    pub(super) fn best_standby(&self) -> Option<String> {
        self.members
            .iter()
            .filter(|m| m.node != self.p.node && m.eligible && self.is_member(&m.node))
            .min_by(|a, b| b.priority.cmp(&a.priority).then(a.node.cmp(&b.node)))
            .map(|m| m.node.clone())
    }
}
