//! Rule 4b and preemption: campaigning for a vacant key, best candidate first, and asking a
//! lower-priority active node to hand over.

use std::time::Duration;

use super::{Action, GroupMachine, Key, Mono, Owed, Role, Timer};

impl GroupMachine {
    /// Rule 4b: campaign for a vacant key, best candidate first.
    pub(super) fn campaign(&mut self, now: Mono, out: &mut Vec<Action>) {
        if self.holder().is_some() || self.campaigning() {
            return;
        }
        if !self.unread.current() {
            return; // a fresh connection: the store's state is on its way
        }
        if self.maintenance {
            return;
        }
        if !self.eligible(now) || self.timers.pending(Timer::CampaignRetry, now) {
            return;
        }
        if self.holder_standing() {
            return;
        }
        let since = match self.key {
            Key::Vacant { since } => since,
            _ => {
                self.key = Key::Vacant { since: now };
                now
            }
        };
        if now >= since + self.campaign_delay() {
            let floor = self.known_floor();
            self.owed = Owed::Campaign { floor };
            out.push(Action::Campaign { floor });
        }
    }

    /// The highest term this node knows to have been handed out in the group: its own
    /// ([`Self::term`], never below the kept floor) and every member record's. A campaign asks
    /// the store for a term above it, so that a store that lost its history (restored from an
    /// older snapshot, recreated) does not hand out a term a unit has already seen.
    pub(super) fn known_floor(&self) -> u64 {
        self.members
            .iter()
            .filter_map(|m| m.term)
            .fold(self.term(), u64::max)
    }

    /// Whether another member's record still says it may run the units (`promoting`,
    /// `active`, `demoting`) although the key is vacant, or won by this node. A key that
    /// expired or was released goes with its holder's standing: its member record shares the
    /// lease (gone with it) and a releasing holder has stopped its units. But a key deleted by
    /// hand (`etcdctl del`) vanishes while its holder still runs them; the holder kills them
    /// at once and publishes its new role, and a holder that cannot (dead, cut off) loses its
    /// record with its lease, at most a lease later. Campaigning before that, or starting the
    /// units with a key won meanwhile, would run them on two hosts.
    ///
    /// That a holder's record claims the role whenever its units may run is what
    /// [`Self::claim_written`] makes sure of: the units start only once the store shows it.
    pub(super) fn holder_standing(&self) -> bool {
        self.members.iter().any(|m| {
            m.node != self.p.node
                && matches!(m.role, Role::Promoting | Role::Active | Role::Demoting)
        })
    }

    /// How long this node lets better candidates try first: one grace period per candidate
    /// ranked above it (a switchover target first, then priority, then the lower name).
    pub(super) fn campaign_delay(&self) -> Duration {
        let key = |node: &str, priority: i32| {
            (
                self.switchover_to.as_deref() != Some(node),
                std::cmp::Reverse(priority),
                node.to_string(),
            )
        };
        let others: Vec<_> = self
            .members
            .iter()
            .filter(|m| m.node != self.p.node && m.eligible && self.is_member(&m.node))
            .map(|m| key(&m.node, m.priority))
            .collect();
        let mine = key(&self.p.node, self.p.priority);
        let rank = if self.defer_once {
            others.len()
        } else {
            others.iter().filter(|k| **k < mine).count()
        };
        self.p.timing.grace() * u32::try_from(rank).unwrap_or(u32::MAX)
    }

    /// Ask a lower-priority active node to hand over, if `preempt` is on.
    pub(super) fn preempt(&mut self, now: Mono, out: &mut Vec<Action>) {
        if !self.p.preempt
            || !self.eligible(now)
            || self.switchover_to.is_some()
            || self.maintenance
        {
            return;
        }
        let Some((leader, _)) = self.holder() else {
            return;
        };
        let leader_priority = self
            .members
            .iter()
            .find(|m| m.node == leader)
            .map(|m| m.priority);
        if leader_priority.is_none_or(|p| p >= self.p.priority) {
            return;
        }
        if self.timers.pending(Timer::SwitchoverRetry, now) {
            return;
        }
        self.timers
            .set(Timer::SwitchoverRetry, now + self.p.timing.lease);
        out.push(Action::RequestSwitchover {
            to: self.p.node.clone(),
        });
    }
}
