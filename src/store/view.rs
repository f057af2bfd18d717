//! The view: the group as the runtime is told it, and which events tell it.
//!
//! After every (re)connection the runtime is told everything, in this order: `Leader`,
//! `Members`, `Switchover`, `Maintenance`. After that, only what changed, in the same order,
//! each change once. Unreadable values come first, each reported once until it changes or
//! the backend reconnects.

use std::collections::BTreeMap;

use super::error::ValueError;
use super::record::{MaintenanceRecord, MemberRecord, SwitchoverRecord};
use super::{Leader, StoreEvent};

/// The group as the runtime is told it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct View {
    pub(crate) leader: Option<Leader>,
    /// Every trusted member record, sorted by node.
    pub(crate) members: Vec<MemberRecord>,
    pub(crate) switchover: Option<SwitchoverRecord>,
    pub(crate) maintenance: Option<MaintenanceRecord>,
}

/// Unreadable values: key (an etcd key, or a file path) → why.
pub(crate) type Findings = BTreeMap<String, ValueError>;

/// What the runtime was told of the view, so that it is told only changes.
#[derive(Debug, Default)]
pub(crate) struct Told {
    /// `None` until the first report after a (re)connection: then everything is news.
    view: Option<View>,
    corrupt: Findings,
}

impl Told {
    /// Forget what was told: the next report tells everything (after a (re)connection).
    pub(crate) fn forget(&mut self) {
        *self = Told::default();
    }

    /// The events that bring the runtime from what it was told to `view`: `Corrupt` for each
    /// new or changed finding, then the parts of the view that changed, in the contract's order.
    pub(crate) fn changes(&mut self, view: View, corrupt: Findings) -> Vec<StoreEvent> {
        let mut events = Vec::new();
        for (key, error) in &corrupt {
            if self.corrupt.get(key) != Some(error) {
                events.push(StoreEvent::Corrupt {
                    key: key.clone(),
                    error: error.clone(),
                });
            }
        }
        self.corrupt = corrupt;
        let last = self.view.as_ref();
        if last.is_none_or(|l| l.leader != view.leader) {
            events.push(StoreEvent::Leader(view.leader.clone()));
        }
        if last.is_none_or(|l| l.members != view.members) {
            events.push(StoreEvent::Members(view.members.clone()));
        }
        if last.is_none_or(|l| l.switchover != view.switchover) {
            events.push(StoreEvent::Switchover(view.switchover.clone()));
        }
        if last.is_none_or(|l| l.maintenance != view.maintenance) {
            events.push(StoreEvent::Maintenance(view.maintenance.clone()));
        }
        self.view = Some(view);
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::RecordError;

    fn kinds(events: &[StoreEvent]) -> Vec<&'static str> {
        events.iter().map(StoreEvent::kind).collect()
    }

    fn leader(node: &str, term: u64) -> Option<Leader> {
        Some(Leader {
            node: node.into(),
            term,
            host: None,
        })
    }

    #[test]
    fn everything_after_a_reconnection_then_only_changes() {
        let mut told = Told::default();
        let view = View::default();
        assert_eq!(
            kinds(&told.changes(view.clone(), Findings::new())),
            ["Leader", "Members", "Switchover", "Maintenance"]
        );
        assert!(told.changes(view.clone(), Findings::new()).is_empty());
        let held = View {
            leader: leader("a", 3),
            ..view.clone()
        };
        assert_eq!(
            told.changes(held.clone(), Findings::new()),
            [StoreEvent::Leader(leader("a", 3))]
        );
        told.forget();
        assert_eq!(kinds(&told.changes(held, Findings::new())).len(), 4);
    }

    #[test]
    fn a_finding_is_reported_once_until_it_changes_or_goes() {
        let mut told = Told::default();
        let found = |why: &str| {
            Findings::from([(
                "k".to_string(),
                ValueError::Record(RecordError::Json(why.into())),
            )])
        };
        let first = told.changes(View::default(), found("x"));
        assert_eq!(kinds(&first)[0], "Corrupt");
        assert!(told.changes(View::default(), found("x")).is_empty());
        assert_eq!(
            kinds(&told.changes(View::default(), found("y"))),
            ["Corrupt"]
        );
        assert!(told.changes(View::default(), Findings::new()).is_empty());
        assert_eq!(
            kinds(&told.changes(View::default(), found("y"))),
            ["Corrupt"]
        );
    }
}
