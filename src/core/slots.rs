//! Slots: a group with `actives = N` has N slots `0..N`, each elected and fenced exactly like
//! the single role of a group with one active host. A [`SlotGroup`] holds one unchanged
//! [`GroupMachine`] per slot for this node, and arbitrates between them so that the node holds
//! at most one slot of the group (docs/slots.md).
//!
//! **The rule.** Of a node's machines in one group, exactly one is its *candidate*; every
//! other is told [`Event::Blocked`] (ineligible: [`Ineligible::OtherSlot`], or
//! [`Ineligible::Cooldown`] while the node cools down from a failure in any slot), so it
//! neither campaigns, nor preempts, nor takes a Promote, and its member record tells the other
//! nodes not to wait for it. The candidacy moves to another slot only while the candidate's
//! machine is not [engaged](GroupMachine::engaged) (holding, claiming, campaigning for or
//! releasing the slot's key, running or stopping its units, starting up) and not in its
//! failure cooldown. When it is free to move, it goes to the lowest slot seen vacant; if none
//! is, to the slot whose holder ranks lowest, so that preemption and Promote aim at the weakest
//! holder.
//!
//! **Why a node never holds two slots.** Only the candidate can campaign (a blocked machine
//! is ineligible and does not campaign, [`GroupMachine::campaign`]'s rule), only a campaign
//! makes a key the machine's own, and only an own key starts the units. The candidacy leaves a
//! slot only when its machine is not engaged, so at the moment it moves no machine of the node
//! campaigns, holds a key, or may run units; the machine it leaves is blocked before the one
//! it reaches is unblocked, in the same call. So at any time at most one machine of a node is
//! engaged by a campaign or a key (start-up aside, when every machine is engaged in stopping
//! what an earlier run left, and none can campaign: none is passive yet).
//!
//! Nothing here does I/O or reads a clock: events come in with the time, and the actions go
//! out tagged with the slot whose machine asked for them.
//!
//! [`GroupMachine::campaign`]: GroupMachine

use thiserror::Error;

use super::{Action, Event, GroupMachine, GroupParams, Ineligible, Mono, Refusal, Request, Role};

/// A [`SlotGroup`] cannot be built or fed so.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SlotError {
    /// A group has at least one slot.
    #[error("a group has at least one slot")]
    NoSlots,
    /// Every slot's machine is this node's.
    #[error("slot {slot} is for node {found:?}, not {expected:?}: a slot group is one node's")]
    OtherNode {
        /// The slot whose parameters name another node.
        slot: usize,
        /// The node of slot 0.
        expected: String,
        /// The node this slot's parameters name.
        found: String,
    },
    /// An event for a slot the group does not have.
    #[error("slot {slot} does not exist: the group has {slots} slot(s)")]
    NoSuchSlot {
        /// The slot asked for.
        slot: usize,
        /// How many the group has.
        slots: usize,
    },
}

/// One node's machines of one group, one per slot, and the candidacy between them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlotGroup {
    machines: Vec<GroupMachine>,
    arbiter: Arbiter,
}

/// The candidacy of one node's machines in one group, kept apart from the machines so that
/// an owner that keeps them elsewhere (the agent keeps each slot's machine in a table of
/// its own, `src/agent/slots.rs`) applies the same rule as [`SlotGroup`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Arbiter {
    /// The one slot whose machine is not blocked.
    candidate: usize,
    /// What each machine was last told by [`Event::Blocked`] (`None` at birth: nothing).
    told: Vec<Option<Ineligible>>,
}

impl Arbiter {
    /// The arbiter of `slots` machines, none told anything yet, slot 0 the candidate.
    pub fn new(slots: usize) -> Arbiter {
        Arbiter {
            candidate: 0,
            told: vec![None; slots],
        }
    }

    /// The slot whose machine may become active now.
    pub fn candidate(&self) -> usize {
        self.candidate
    }

    /// [`SlotGroup::unit_owner`] over `machines`, slot k's at position k: the slot engaged
    /// past start-up, else the candidate.
    pub fn unit_owner<'a>(&self, machines: impl IntoIterator<Item = &'a GroupMachine>) -> usize {
        machines
            .into_iter()
            .position(|m| m.engaged() && m.role() != Role::Starting)
            .unwrap_or(self.candidate)
    }

    /// The group now has `slots` slots (a reload grew or shrank it): a new slot's machine has
    /// been told nothing yet (the next settle tells it), and a candidate beyond the last
    /// slot moves to the last one (the next settle moves it where the rule says).
    pub fn resize(&mut self, slots: usize) {
        self.told.resize(slots, None);
        self.candidate = self.candidate.min(slots.saturating_sub(1));
    }

    /// Arbitrate until nothing changes: block the slots the rule blocks (the one left
    /// first), then unblock the candidate, each machine stepping on what it is told
    /// (`machines[k]` is slot k's; as many as the arbiter was made for). A machine that
    /// becomes engaged on being unblocked (it campaigns at once) keeps the candidacy, so this
    /// ends after a few rounds; more than one per slot would be a bug, and stops the loop.
    /// The actions, each with its slot, in order.
    pub fn settle(
        &mut self,
        machines: &mut [&mut GroupMachine],
        now: Mono,
    ) -> Vec<(usize, Action)> {
        let mut out = Vec::new();
        if machines.len() < 2 || machines.len() != self.told.len() {
            return out; // one slot: today's group, never told anything
        }
        for _ in 0..=machines.len() {
            let views: Vec<SlotView> = machines.iter().map(|m| view(m, now)).collect();
            let decision = arbitrate(&views, self.candidate);
            self.candidate = decision.candidate;
            let changed: Vec<usize> = (0..machines.len())
                .filter(|&k| self.told[k] != decision.blocked[k])
                .collect();
            if changed.is_empty() {
                break;
            }
            // Blocks first, so that no moment has two unblocked machines.
            let (blocks, unblocks): (Vec<usize>, Vec<usize>) = changed
                .into_iter()
                .partition(|&k| decision.blocked[k].is_some());
            for k in blocks.into_iter().chain(unblocks) {
                let why = decision.blocked[k];
                self.told[k] = why;
                if let Some(m) = machines.get_mut(k) {
                    out.extend(
                        m.handle(Event::Blocked(why), now)
                            .into_iter()
                            .map(|a| (k, a)),
                    );
                }
            }
        }
        out
    }
}

/// What the arbiter sees of one slot's machine at `now`.
pub fn view(m: &GroupMachine, now: Mono) -> SlotView {
    let holder = m.leader().and_then(|node| {
        m.members()
            .iter()
            .find(|r| r.node == node)
            .map(|r| (r.priority, node.to_owned()))
    });
    SlotView {
        engaged: m.engaged(),
        failed: m.failed(now),
        vacant: m.leader().is_none(),
        holder,
    }
}

/// What [`SlotGroup::arbitrate`] needs to know of one slot's machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    /// [`GroupMachine::engaged`].
    pub engaged: bool,
    /// The node waits for its failure cooldown in this slot ([`GroupMachine::failed`]).
    pub failed: bool,
    /// Nobody holds the slot's key as this node last saw it (or it was not read yet).
    pub vacant: bool,
    /// The holder's rank when another node holds the key: its priority and name, as its
    /// record says (`None`: vacant, or no record seen).
    pub holder: Option<(i32, String)>,
}

/// Which slot is the candidate, and what every slot's machine is to be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arbitration {
    /// The slot whose machine may become active.
    pub candidate: usize,
    /// Per slot, the reason its machine may not become active (`None` for the candidate).
    pub blocked: Vec<Option<Ineligible>>,
}

/// The arbiter's rule, pure: the candidate stays while its machine is engaged or in its
/// cooldown; else the lowest engaged or cooling-down slot is the candidate (start-up, when
/// several are engaged at once); else the lowest vacant slot; else the slot whose holder ranks
/// lowest (lowest priority, then highest name); else it stays. Every other slot is blocked, by
/// [`Ineligible::Cooldown`] while any slot cools down, by [`Ineligible::OtherSlot`] while the
/// node is engaged in a slot, by [`Ineligible::StandbyElsewhere`] otherwise.
///
/// `current` is the candidate so far (clamped to the slots there are); `views` has one entry
/// per slot, at least one.
pub fn arbitrate(views: &[SlotView], current: usize) -> Arbitration {
    let current = current.min(views.len().saturating_sub(1));
    let busy = |v: &SlotView| v.engaged || v.failed;
    let candidate = if views.get(current).is_some_and(busy) {
        current
    } else if let Some(k) = views.iter().position(busy) {
        k
    } else if let Some(k) = views.iter().position(|v| v.vacant) {
        k
    } else {
        views
            .iter()
            .enumerate()
            .filter_map(|(k, v)| v.holder.as_ref().map(|(p, n)| (k, *p, n)))
            // Lowest priority first; among equals the highest name ranks lowest.
            .min_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(a.2)))
            .map_or(current, |(k, _, _)| k)
    };
    let why = if views.iter().any(|v| v.failed) {
        Ineligible::Cooldown
    } else if views.iter().any(|v| v.engaged) {
        Ineligible::OtherSlot
    } else {
        // Free: it takes this slot when this one falls vacant (the others count it).
        Ineligible::StandbyElsewhere
    };
    Arbitration {
        candidate,
        blocked: (0..views.len())
            .map(|k| (k != candidate).then_some(why))
            .collect(),
    }
}

impl SlotGroup {
    /// The machines of a new group, slot `k` from `params[k]`; at least one, all this node's.
    /// Nothing is blocked until the first event: with one slot, nothing ever is, and the group
    /// behaves exactly as its one machine.
    pub fn new(params: Vec<GroupParams>) -> Result<SlotGroup, SlotError> {
        let Some(first) = params.first() else {
            return Err(SlotError::NoSlots);
        };
        if let Some((slot, other)) = params
            .iter()
            .enumerate()
            .find(|(_, p)| p.node != first.node)
        {
            return Err(SlotError::OtherNode {
                slot,
                expected: first.node.clone(),
                found: other.node.clone(),
            });
        }
        Ok(SlotGroup {
            arbiter: Arbiter::new(params.len()),
            machines: params.into_iter().map(GroupMachine::new).collect(),
        })
    }

    /// How many slots the group has.
    pub fn len(&self) -> usize {
        self.machines.len()
    }

    /// Never: a slot group has at least one slot (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.machines.is_empty()
    }

    /// Slot `slot`'s machine.
    pub fn machine(&self, slot: usize) -> Option<&GroupMachine> {
        self.machines.get(slot)
    }

    /// Every slot's machine, by slot.
    pub fn machines(&self) -> &[GroupMachine] {
        &self.machines
    }

    /// The slot this node may become active in now (its machine is the only one not
    /// blocked).
    pub fn candidate(&self) -> usize {
        self.arbiter.candidate()
    }

    /// The slot this node holds: whose machine is `promoting`, `active` or `demoting`, or
    /// sees the key in this node's name. `None` when it holds none.
    pub fn held(&self) -> Option<usize> {
        self.machines.iter().position(GroupMachine::holds_role)
    }

    /// The slot whose machine should hear of this node's active units starting or failing,
    /// when the slots share their units (an active target that is no template): the one
    /// engaged past start-up (it may run them), else the candidate (which then stops them:
    /// this node holds no key).
    pub fn unit_owner(&self) -> usize {
        self.arbiter.unit_owner(self.machines.iter())
    }

    /// The earliest deadline of any slot's machine.
    pub fn next_deadline(&self) -> Option<Mono> {
        self.machines.iter().filter_map(|m| m.next_deadline()).min()
    }

    /// Terminate finished in every slot.
    pub fn exited(&self) -> bool {
        self.machines.iter().all(GroupMachine::exited)
    }

    /// Feed `event` to slot `slot`'s machine, then arbitrate. The actions, each with the slot
    /// whose machine asked for it, in order.
    pub fn handle(
        &mut self,
        slot: usize,
        event: Event,
        now: Mono,
    ) -> Result<Vec<(usize, Action)>, SlotError> {
        let slots = self.machines.len();
        let machine = self
            .machines
            .get_mut(slot)
            .ok_or(SlotError::NoSuchSlot { slot, slots })?;
        let mut out: Vec<(usize, Action)> = machine
            .handle(event, now)
            .into_iter()
            .map(|a| (slot, a))
            .collect();
        self.settle(now, &mut out);
        Ok(out)
    }

    /// Feed `event` to every slot's machine (what is the node's, not a slot's: health, the
    /// passive target's units, a tick, terminate), then arbitrate.
    pub fn broadcast(&mut self, event: &Event, now: Mono) -> Vec<(usize, Action)> {
        let mut out = Vec::new();
        for (slot, m) in self.machines.iter_mut().enumerate() {
            out.extend(m.handle(event.clone(), now).into_iter().map(|a| (slot, a)));
        }
        self.settle(now, &mut out);
        out
    }

    /// An operator's request: Promote goes to the candidate slot (a vacant slot, or the one of
    /// the lowest-ranked holder, taken by switchover), and is a no-op while this node holds a
    /// slot; Demote hands over the slot this node holds (a no-op if none); ResetFailed clears
    /// every slot. Refused as the machine refuses it; nothing changes then.
    pub fn request(
        &mut self,
        request: Request,
        now: Mono,
    ) -> Result<Vec<(usize, Action)>, Refusal> {
        let mut out = Vec::new();
        match request {
            Request::Promote => {
                if self.held().is_some() {
                    return Ok(out);
                }
                let slot = self.arbiter.candidate();
                if let Some(m) = self.machines.get_mut(slot) {
                    out.extend(m.request(request, now)?.into_iter().map(|a| (slot, a)));
                }
            }
            Request::Demote => {
                let Some(slot) = self.held() else {
                    return Ok(out);
                };
                if let Some(m) = self.machines.get_mut(slot) {
                    out.extend(m.request(request, now)?.into_iter().map(|a| (slot, a)));
                }
            }
            Request::ResetFailed => {
                for (slot, m) in self.machines.iter_mut().enumerate() {
                    out.extend(m.request(request, now)?.into_iter().map(|a| (slot, a)));
                }
            }
        }
        self.settle(now, &mut out);
        Ok(out)
    }

    /// What the arbiter sees of each slot's machine at `now`.
    pub fn views(&self, now: Mono) -> Vec<SlotView> {
        self.machines.iter().map(|m| view(m, now)).collect()
    }

    /// [`Arbiter::settle`] over this group's machines.
    fn settle(&mut self, now: Mono, out: &mut Vec<(usize, Action)>) {
        let mut machines: Vec<&mut GroupMachine> = self.machines.iter_mut().collect();
        out.extend(self.arbiter.settle(&mut machines, now));
    }
}

#[cfg(test)]
#[path = "slots_tests.rs"]
mod tests;
