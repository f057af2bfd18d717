//! Each group's next deadline and hang deadline, kept in order as the machines step.
//!
//! The loop asks for the earliest of each after every input (when to Tick, how far the
//! watchdog may be pinged). Scanning every machine for it cost O(groups) per input, and a
//! shared lease's renewal is one input per group: O(groups²) per renewal interval, most of
//! promd's idle CPU at 500 groups. A machine's deadlines change only when it steps
//! ([`GroupMachine::handle`](crate::core::GroupMachine::handle)), so the agent files them
//! again after each step of a machine, and when a group comes or goes.

use std::collections::{BTreeMap, BTreeSet};

use super::GroupId;
use crate::core::Mono;

/// One deadline per group, in time order.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    of: BTreeMap<GroupId, Mono>,
    order: BTreeSet<(Mono, GroupId)>,
}

impl Deadlines {
    /// File `id`'s deadline (`None`: it has none).
    pub(super) fn set(&mut self, id: GroupId, at: Option<Mono>) {
        if self.of.get(&id).copied() == at {
            return;
        }
        if let Some(old) = self.of.remove(&id) {
            self.order.remove(&(old, id));
        }
        if let Some(at) = at {
            self.of.insert(id, at);
            self.order.insert((at, id));
        }
    }

    /// The earliest deadline of any group.
    pub(super) fn first(&self) -> Option<Mono> {
        self.order.first().map(|(at, _)| *at)
    }

    /// The groups whose deadline is `now` or earlier, by id.
    pub(super) fn due(&self, now: Mono) -> Vec<GroupId> {
        let mut due: Vec<GroupId> = self
            .order
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect();
        due.sort_unstable();
        due
    }

    /// Every group's deadline, by id (for tests that compare with a scan).
    #[cfg(test)]
    pub(super) fn all(&self) -> &BTreeMap<GroupId, Mono> {
        &self.of
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(ms: u64) -> Mono {
        Mono(Duration::from_millis(ms))
    }

    #[test]
    fn the_earliest_deadline_and_the_due_groups_follow_every_change() {
        let mut d = Deadlines::default();
        assert_eq!(d.first(), None);
        d.set(GroupId(2), Some(at(30)));
        d.set(GroupId(1), Some(at(20)));
        d.set(GroupId(3), Some(at(10)));
        assert_eq!(d.first(), Some(at(10)));
        assert_eq!(d.due(at(20)), vec![GroupId(1), GroupId(3)]);
        d.set(GroupId(3), Some(at(40)));
        assert_eq!(d.first(), Some(at(20)));
        d.set(GroupId(1), None);
        assert_eq!(d.first(), Some(at(30)));
        assert_eq!(d.due(at(35)), vec![GroupId(2)]);
        d.set(GroupId(2), None);
        d.set(GroupId(3), None);
        assert_eq!(d.first(), None);
        assert!(d.all().is_empty());
    }

    #[test]
    fn groups_with_the_same_deadline_are_all_due() {
        let mut d = Deadlines::default();
        for id in 1..=3 {
            d.set(GroupId(id), Some(at(5)));
        }
        assert_eq!(d.due(at(5)), vec![GroupId(1), GroupId(2), GroupId(3)]);
        assert_eq!(d.due(at(4)), Vec::<GroupId>::new());
    }
}
