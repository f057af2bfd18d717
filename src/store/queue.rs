//! The queue of writes, once for both backends: what waits for the store, what is retried
//! after a reconnection, and what is answered at once because it cannot wait.
//!
//! - `Campaign` while the store is down is answered "not won" at once; a queued one is
//!   answered so when the store goes down or the lease is lost (nothing can be won then);
//! - `Release` waits for the store; it is answered `Released` when the lease is lost (the
//!   leader key went with it);
//! - `Publish` and `SetMaintenance`: only the newest matters. A newer member record takes the
//!   older one's place in the queue, so a record asked for before a campaign is written before
//!   it: a holder's record is in the store whenever its key is, and a standby that finds the
//!   record gone with the key knows the holder's lease went (`holder_standing` in the core).
//!   The member record is also kept apart, as the backend writes it again under every new
//!   lease; the newest maintenance change is kept until it is known written, so that a
//!   graceful shutdown writes it;
//! - a write whose outcome is unknown (the connection broke under it) is put back at the
//!   front, and carried out again after the reconnection.

use std::collections::VecDeque;

use super::record::{MaintenanceRecord, MemberRecord};
use super::{Op, StoreEvent};

/// Writes waiting for the store, in the order asked for.
#[derive(Debug, Default)]
pub(crate) struct OpQueue {
    ops: VecDeque<Op>,
    /// The last member record the runtime published: written again under every new lease.
    member: Option<MemberRecord>,
    /// The last maintenance change asked for and not yet known written.
    maintenance: Option<MaintenanceRecord>,
}

impl OpQueue {
    /// Queue a write; `online`: the store is up. The answer to give at once, if any.
    pub(crate) fn push(&mut self, op: Op, online: bool) -> Option<StoreEvent> {
        match op {
            // Nothing can be won while the store is down.
            Op::Campaign { .. } if !online => return Some(StoreEvent::Campaigned(None)),
            Op::Publish(ref rec) => {
                self.member = Some(rec.clone());
                if let Some(slot) = self.ops.iter_mut().find(|q| matches!(q, Op::Publish(_))) {
                    *slot = op;
                    return None;
                }
            }
            // The newest record: an older one still queued is written with it instead.
            Op::Retire { ref record, .. } => {
                self.member = Some(record.clone());
                self.ops.retain(|q| !matches!(q, Op::Publish(_)));
            }
            Op::SetMaintenance(ref rec) => {
                self.ops.retain(|op| !matches!(op, Op::SetMaintenance(_)));
                self.maintenance = Some(rec.clone());
            }
            _ => {}
        }
        self.ops.push_back(op);
        None
    }

    /// The next write to carry out.
    pub(crate) fn pop(&mut self) -> Option<Op> {
        self.ops.pop_front()
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The member record to write under a new lease.
    pub(crate) fn member(&self) -> Option<&MemberRecord> {
        self.member.as_ref()
    }

    /// `rec` was written with the lease (while connecting, or by a renewal): a queued
    /// `Publish` of the same record is done.
    pub(crate) fn published(&mut self, rec: &MemberRecord) {
        self.ops
            .retain(|op| !matches!(op, Op::Publish(queued) if queued == rec));
    }

    /// A campaign won at `term` wrote its claim ([`Op::Campaign`]): the record to write
    /// under a new lease, unless a newer one waits (asked for while the campaign was in
    /// flight; it is written next and replaces the claim).
    pub(crate) fn claimed(&mut self, op: &Op, term: u64) {
        let Op::Campaign { claim, .. } = op else {
            return;
        };
        if !self
            .ops
            .iter()
            .any(|q| matches!(q, Op::Publish(_) | Op::Retire { .. }))
        {
            self.member = Some(claim.with_term(term));
        }
    }

    /// `op` was carried out.
    pub(crate) fn done(&mut self, op: &Op) {
        if let Op::SetMaintenance(rec) = op
            && self.maintenance.as_ref() == Some(rec)
        {
            self.maintenance = None;
        }
    }

    /// Put back a write whose outcome is unknown, to be carried out first after the
    /// reconnection. [`Self::went_down`] and [`Self::lease_lost`] then answer what cannot wait.
    pub(crate) fn requeue(&mut self, op: Op) {
        match op {
            // Written from `member` under the next lease anyway.
            Op::Publish(_) => {}
            // A campaign is answered "not won" by the down or lease-lost edge that follows.
            // Should it have won after all, the key shows up as ours at the next read, and the
            // core releases an own key it does not hold.
            other => self.ops.push_front(other),
        }
    }

    /// The store went down: queued campaigns are not won.
    pub(crate) fn went_down(&mut self) -> Vec<StoreEvent> {
        self.answer(false)
    }

    /// The lease is gone and every key bound to it: queued campaigns are not won, and
    /// queued releases are done (the leader key went with the lease).
    pub(crate) fn lease_lost(&mut self) -> Vec<StoreEvent> {
        self.answer(true)
    }

    fn answer(&mut self, released: bool) -> Vec<StoreEvent> {
        let mut answers = Vec::new();
        self.ops.retain(|op| match op {
            Op::Campaign { .. } => {
                answers.push(StoreEvent::Campaigned(None));
                false
            }
            Op::Release { .. } | Op::Retire { .. } if released => {
                answers.push(StoreEvent::Released);
                false
            }
            _ => true,
        });
        answers
    }

    /// The maintenance change to write before a graceful shutdown leaves: the operator's,
    /// not this node's, so it must not go with the node.
    pub(crate) fn unwritten_maintenance(&self) -> Option<&MaintenanceRecord> {
        self.maintenance.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::LeaderRecord;

    fn campaign() -> Op {
        Op::Campaign {
            record: LeaderRecord {
                v: 1,
                node: "a".into(),
                priority: 1,
                host: None,
                term: None,
            },
            floor: 0,
            claim: member(9),
        }
    }

    fn member(priority: i32) -> MemberRecord {
        crate::store::record::passive_member("a", priority)
    }

    fn maintenance(on: bool) -> MaintenanceRecord {
        MaintenanceRecord {
            v: 1,
            on,
            by: "a".into(),
        }
    }

    fn kinds(q: &OpQueue) -> Vec<String> {
        q.ops
            .iter()
            .map(|op| {
                format!("{op:?}")
                    .split(['(', ' '])
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn a_won_claim_is_the_record_of_the_next_lease_unless_a_newer_one_waits() {
        let mut q = OpQueue::default();
        q.push(Op::Publish(member(1)), true);
        q.pop();
        let op = campaign();
        q.claimed(&op, 7);
        assert_eq!(q.member(), Some(&member(9).with_term(7)));

        // A record asked for while the campaign was in flight is newer than its claim.
        let mut q = OpQueue::default();
        q.push(Op::Publish(member(2)), true);
        q.claimed(&op, 7);
        assert_eq!(q.member(), Some(&member(2)));
    }

    #[test]
    fn a_campaign_while_down_is_answered_at_once() {
        let mut q = OpQueue::default();
        assert_eq!(
            q.push(campaign(), false),
            Some(StoreEvent::Campaigned(None))
        );
        assert!(q.is_empty());
        assert_eq!(q.push(campaign(), true), None);
        assert_eq!(
            q.pop().map(|op| matches!(op, Op::Campaign { .. })),
            Some(true)
        );
    }

    #[test]
    fn only_the_newest_record_and_maintenance_change_wait() {
        let mut q = OpQueue::default();
        q.push(Op::Publish(member(1)), true);
        q.push(Op::SetMaintenance(maintenance(true)), true);
        q.push(Op::ClearSwitchover, true);
        q.push(Op::Publish(member(2)), true);
        q.push(Op::SetMaintenance(maintenance(false)), true);
        // The newer record in the older one's place; the maintenance change at the back.
        assert_eq!(kinds(&q), ["Publish", "ClearSwitchover", "SetMaintenance"]);
        assert_eq!(q.member(), Some(&member(2)));
        // Written while connecting: the queued copy is done; an older one would not be.
        q.published(&member(1));
        assert_eq!(kinds(&q).len(), 3);
        q.published(&member(2));
        assert_eq!(kinds(&q), ["ClearSwitchover", "SetMaintenance"]);
    }

    #[test]
    fn a_record_asked_for_before_a_campaign_is_written_before_it_even_when_replaced() {
        let mut q = OpQueue::default();
        q.push(Op::Publish(member(1)), true);
        q.push(campaign(), true);
        q.push(Op::Publish(member(2)), true);
        assert_eq!(kinds(&q), ["Publish", "Campaign"]);
        assert!(matches!(q.pop(), Some(Op::Publish(rec)) if rec == member(2)));
        // Once the older record is out, a newer one waits behind what was queued since.
        q.push(Op::Publish(member(3)), true);
        assert_eq!(kinds(&q), ["Campaign", "Publish"]);
    }

    #[test]
    fn maintenance_stays_owed_until_its_newest_change_is_written() {
        let mut q = OpQueue::default();
        q.push(Op::SetMaintenance(maintenance(true)), true);
        let first = q.pop();
        q.push(Op::SetMaintenance(maintenance(false)), true);
        if let Some(op) = &first {
            q.done(op);
        }
        assert_eq!(q.unwritten_maintenance(), Some(&maintenance(false)));
        let second = q.pop();
        if let Some(op) = &second {
            q.done(op);
        }
        assert_eq!(q.unwritten_maintenance(), None);
    }

    #[test]
    fn edges_answer_what_cannot_wait_and_requeued_writes_go_first() {
        let mut q = OpQueue::default();
        q.push(campaign(), true);
        q.push(Op::Release { term: 3 }, true);
        q.push(Op::ClearSwitchover, true);
        q.requeue(Op::Publish(member(1)));
        q.requeue(Op::Release { term: 2 });
        assert_eq!(
            kinds(&q),
            ["Release", "Campaign", "Release", "ClearSwitchover"]
        );
        assert_eq!(q.went_down(), [StoreEvent::Campaigned(None)]);
        assert_eq!(q.lease_lost(), [StoreEvent::Released, StoreEvent::Released]);
        assert_eq!(kinds(&q), ["ClearSwitchover"]);
    }
}
