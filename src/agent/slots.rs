//! Groups with `actives` above 1 (docs/slots.md): each slot is a group of the table of its
//! own (named `GROUP@k`, its own store keys, lease-bound record and term, its own active
//! target instance), and a [`Family`] ties the slots of one group together on this host:
//!
//! - the candidacy between them ([`crate::core::Arbiter`], the rule the slots model check
//!   covers), settled after every step of any slot's machine, so that this host holds at
//!   most one slot;
//! - the passive target, which is the host's and not a slot's: the slots' machines run
//!   without one, and the family starts it while the host holds no slot and is a standby
//!   (the best `standbys` of the hosts without a slot), and stops it on a spare;
//! - what is the group's and not a slot's: `maintenance` (slot 0's key, told to every
//!   slot), the env file (the slot this host holds writes it, with `PROMD_SLOT`), the units
//!   that several slots pull in (their events go to the one slot that may run them).

use super::output::{JobOrder, Level, Output, Record, SlotLine};
use super::{Agent, GroupId, Now};
use crate::config::GroupConfig;
use crate::core::{Action, Arbiter, Event, GroupMachine, Job, Role};
use crate::systemd::Closure;

/// The slots of one group on this host, slot k's group at `ids[k]`.
#[derive(Debug)]
pub(super) struct Family {
    pub(super) ids: Vec<GroupId>,
    pub(super) arbiter: Arbiter,
    passive: Passive,
    /// The slot this host held after the last settle: the env file is rewritten when it
    /// changes.
    held: Option<u32>,
    /// The group's `maintenance` (slot 0's key) as last read; `None` before.
    maintenance: Option<bool>,
    /// The group's configuration as the file gives it (what a reload compares).
    pub(super) cfg: GroupConfig,
}

/// Where this host stands in a group with slots ([`Agent::family_standing`]).
struct Standing {
    /// Every slot's machine is settled passive and none campaigns.
    settled: bool,
    /// This host holds a slot.
    held: bool,
    /// This host is among the best `standbys` hosts without a slot (always, without
    /// `standbys`).
    standby: bool,
}

/// The group's passive target on this host, as the family last asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Passive {
    /// Not asked for (or stopped): the host holds a slot, is a spare, or is not settled.
    Down,
    /// Its start is queued.
    Starting,
    /// Started.
    Up,
    /// Its start failed: asked again at the family's next settle.
    Failed,
}

impl Agent {
    /// Put a group of the file into the table: the group itself, or one group per slot
    /// ([`GroupConfig::slots`]) tied by a [`Family`]. The ids, slot k's at index k.
    pub(super) fn insert_configured(&mut self, cfg: GroupConfig, since_usec: u64) -> Vec<GroupId> {
        let slots = cfg.slots();
        let many = slots.iter().any(|s| s.slot.is_some());
        let ids: Vec<GroupId> = slots
            .into_iter()
            .map(|s| self.insert_group(s, since_usec))
            .collect();
        if many {
            self.families.insert(
                cfg.name.clone(),
                Family {
                    ids: ids.clone(),
                    arbiter: Arbiter::new(ids.len()),
                    passive: Passive::Down,
                    held: None,
                    maintenance: None,
                    cfg: cfg.clone(),
                },
            );
        }
        ids
    }

    /// A family's ids and its configuration as the file gives it.
    pub(super) fn family_config(&self, group: &str) -> Option<(Vec<GroupId>, GroupConfig)> {
        let f = self.families.get(group)?;
        Some((f.ids.clone(), f.cfg.clone()))
    }

    /// A reload changed the family's configuration in place.
    pub(super) fn set_family_config(&mut self, cfg: &GroupConfig) {
        if let Some(f) = self.families.get_mut(&cfg.name) {
            f.cfg = cfg.clone();
        }
    }

    /// Slot `id` of `group` has closed: the family goes once none of its slots is open; a
    /// reload's shrink drops its highest slots once they have closed (kept until then, so
    /// that the arbiter still sees a retired slot that may run units).
    pub(super) fn forget_family(&mut self, group: &str, id: GroupId) {
        let Some(f) = self.families.get_mut(group) else {
            return;
        };
        if !f.ids.contains(&id) {
            return;
        }
        while f.ids.last().is_some_and(|i| !self.groups.contains_key(i)) {
            f.ids.pop();
        }
        if f.ids.is_empty() {
            self.families.remove(group);
        } else {
            f.arbiter.resize(f.ids.len());
        }
    }

    /// A slot opened by a reload's grow joins its family (as its highest slot).
    pub(super) fn join_family(&mut self, group: &str, id: GroupId) {
        if let Some(f) = self.families.get_mut(group) {
            f.ids.push(id);
            f.arbiter.resize(f.ids.len());
        }
    }

    /// The group (its name in the file) and slot of a slot's group; `None` for a group with
    /// one active host.
    pub(super) fn slot_of(&self, id: GroupId) -> Option<(&str, u32)> {
        let s = self.groups.get(&id)?.cfg.slot.as_ref()?;
        Some((s.group.as_str(), s.index))
    }

    /// The slot this host holds in `group`: whose machine is promoting, active or demoting,
    /// or sees the key in this node's name (as [`crate::core::SlotGroup::held`]).
    pub(super) fn family_held(&self, group: &str) -> Option<u32> {
        let f = self.families.get(group)?;
        let k = f
            .ids
            .iter()
            .position(|id| self.groups.get(id).is_some_and(|g| g.machine.holds_role()))?;
        u32::try_from(k).ok()
    }

    /// The slot whose `STATUS=` clause speaks for `group`: its lowest slot still open (slot
    /// 0, except while the slots of a removed or restarted group close one by one).
    pub(super) fn family_owner(&self, group: &str) -> Option<GroupId> {
        let f = self.families.get(group)?;
        f.ids
            .iter()
            .copied()
            .find(|id| self.groups.contains_key(id))
    }

    /// Whether this host is a spare of `group` now: it holds no slot, every slot's machine is
    /// settled passive, and it is not among the best `standbys` hosts without a slot (so it
    /// runs neither target).
    pub(super) fn family_spare(&self, group: &str) -> bool {
        self.family_standing(group)
            .is_some_and(|s| s.settled && !s.held && !s.standby)
    }

    /// Where this host stands in `group` (a group with slots); `None` for another group.
    fn family_standing(&self, group: &str) -> Option<Standing> {
        let f = self.families.get(group)?;
        let g0 = f.ids.first().and_then(|id| self.groups.get(id))?;
        let machines: Vec<&GroupMachine> = f
            .ids
            .iter()
            .filter_map(|id| self.groups.get(id).map(|g| &g.machine))
            .collect();
        Some(Standing {
            // Not while a slot's machine campaigns: the active target it may start next
            // would cancel the passive target's start (`Conflicts=`).
            settled: machines.iter().all(|m| m.settled_passive() && !m.engaged()),
            held: self.family_held(group).is_some(),
            standby: is_standby(&machines, g0.cfg.standbys.map(|m| m.get()), &self.node),
        })
    }

    /// What a slot's group writes into the group's env file: `None` if it must not write it
    /// now (a slot this host does not hold, while it holds another, or any slot but 0 while
    /// it holds none).
    pub(super) fn env_slot(&self, id: GroupId) -> Option<SlotLine> {
        let Some((group, index)) = self.slot_of(id) else {
            return Some(SlotLine::Absent);
        };
        let slot = self.groups.get(&id).and_then(|g| g.cfg.slot.as_ref());
        match SlotLine::of(slot, self.family_held(group)) {
            SlotLine::Holds(k) if k != index => None,
            SlotLine::Without if index != 0 => None,
            line => Some(line),
        }
    }

    /// Whether a unit's start or failure, reported by the watch of group `id`, is for `id`'s
    /// machine: always for a group with one active host or a unit only its slot pulls in; a
    /// unit that several slots pull in (a plain active target, or one every instance wants)
    /// is the slot's that may run it ([`crate::core::SlotGroup::unit_owner`]): a machine of
    /// a slot this host does not hold would stop the units another slot runs.
    pub(super) fn unit_event_is_for(&self, id: GroupId, unit: &str) -> bool {
        let Some((group, _)) = self.slot_of(id) else {
            return true;
        };
        let Some(f) = self.families.get(group) else {
            return true;
        };
        let in_closure = |gid: &GroupId| {
            self.groups
                .get(gid)
                .is_some_and(|g| g.closure.units.contains_key(unit))
        };
        let shared = f.ids.iter().filter(|gid| in_closure(gid)).count() > 1;
        if !shared {
            return true;
        }
        let machines = f
            .ids
            .iter()
            .filter_map(|gid| self.groups.get(gid).map(|g| &g.machine));
        f.ids.get(f.arbiter.unit_owner(machines)) == Some(&id)
    }

    /// After a step of a slot's machine: settle the candidacy between the group's slots
    /// (each machine told `Blocked` steps, and its actions are carried), then the passive
    /// target and the env file. A no-op for a group with one active host, and while a
    /// settle is already under way (its own steps).
    pub(super) fn settle_family(&mut self, id: GroupId, now: Now, out: &mut Vec<Output>) {
        if self.arbitrating {
            return;
        }
        let Some(group) = self.slot_of(id).map(|(g, _)| g.to_owned()) else {
            return;
        };
        self.arbitrating = true;
        // The group's object shows the slot this host holds: it may change with any slot.
        if let (Some(touched), Some(f)) = (&mut self.touched, self.families.get(&group)) {
            touched.extend(f.ids.iter().copied());
        }
        // Each round's actions may change what the next round sees; the arbiter ends in a
        // few rounds (core::Arbiter::settle), the bound only guards against a bug.
        for _ in 0..4 {
            let Some(f) = self.families.get_mut(&group) else {
                break;
            };
            let ids = f.ids.clone();
            let mut table: std::collections::BTreeMap<GroupId, &mut GroupMachine> = self
                .groups
                .iter_mut()
                .filter(|(gid, _)| ids.contains(gid))
                .map(|(gid, g)| (*gid, &mut g.machine))
                .collect();
            let mut machines: Vec<&mut GroupMachine> =
                ids.iter().filter_map(|gid| table.remove(gid)).collect();
            if machines.len() != ids.len() {
                break;
            }
            let actions = f.arbiter.settle(&mut machines, now.mono);
            if actions.is_empty() {
                break;
            }
            self.carry_slot_actions(&ids, actions, now, out);
        }
        self.arbitrating = false;
        self.family_passive(&group, out);
        self.family_env(&group, out);
    }

    /// Carry the arbiter's actions, each with its slot, keeping their order (consecutive
    /// actions of one slot in one batch, as a step's).
    fn carry_slot_actions(
        &mut self,
        ids: &[GroupId],
        actions: Vec<(usize, Action)>,
        now: Now,
        out: &mut Vec<Output>,
    ) {
        let mut batch: Vec<Action> = Vec::new();
        let mut slot = None;
        let flush = |agent: &mut Agent,
                     slot: Option<usize>,
                     batch: &mut Vec<Action>,
                     out: &mut Vec<Output>| {
            if let Some(id) = slot.and_then(|k: usize| ids.get(k).copied()) {
                if let Some(touched) = &mut agent.touched {
                    touched.insert(id);
                }
                agent.refile(id);
                agent.carry_actions(id, std::mem::take(batch), now, out);
            }
        };
        for (k, action) in actions {
            if slot != Some(k) {
                flush(self, slot, &mut batch, out);
                slot = Some(k);
            }
            batch.push(action);
        }
        flush(self, slot, &mut batch, out);
    }

    /// Start the group's passive target while this host holds no slot, every slot's
    /// machine is settled passive and the host is a standby; stop it on a spare.
    fn family_passive(&mut self, group: &str, out: &mut Vec<Output>) {
        let Some(f) = self.families.get(group) else {
            return;
        };
        let Some(&first) = f.ids.first() else {
            return;
        };
        let Some(g0) = self.groups.get(&first) else {
            return;
        };
        if g0.cfg.passive_target.is_none() {
            return;
        }
        let Some(Standing {
            settled,
            held,
            standby,
        }) = self.family_standing(group)
        else {
            return;
        };
        let want = !self.stopping && !g0.retired && settled && !held && standby;
        let passive = f.passive;
        let (term, leader) = (
            g0.machine.term(),
            g0.machine.leader().unwrap_or("").to_owned(),
        );
        let spare = settled && !held && !standby;
        let next = match (want, passive) {
            (true, Passive::Down | Passive::Failed) => {
                out.push(Output::Job(
                    first,
                    JobOrder {
                        job: Job::StartPassive,
                        env: Some(super::EnvFile {
                            role: Role::Passive,
                            term,
                            leader,
                            slot: SlotLine::of(g0.cfg.slot.as_ref(), None),
                        }),
                        known: Closure::default(),
                        walked: true,
                    },
                ));
                Passive::Starting
            }
            (false, Passive::Up | Passive::Starting) if spare => {
                let text = format!(
                    "{group}: a spare (not among the best {} hosts without a slot): stopping \
                     the passive target",
                    g0.cfg.standbys.map_or(0, |m| m.get())
                );
                out.push(Output::Log(Record::plain(Level::Info, text)));
                out.push(Output::StopPassive(first));
                Passive::Down
            }
            // Taking a slot: the active target's `Conflicts=` stops the passive one.
            (false, Passive::Up | Passive::Starting) if held => Passive::Down,
            (_, p) => p,
        };
        if let Some(f) = self.families.get_mut(group) {
            f.passive = next;
        }
    }

    /// A start of the passive target that the family asked for is done (its machine never
    /// asks for one): `true` if `id`'s job was that, and it is now taken care of.
    pub(super) fn family_passive_done(
        &mut self,
        id: GroupId,
        job: Job,
        ok: bool,
        out: &mut Vec<Output>,
    ) -> bool {
        if job != Job::StartPassive {
            return false;
        }
        let Some(group) = self.slot_of(id).map(|(g, _)| g.to_owned()) else {
            return false;
        };
        let Some(f) = self.families.get_mut(&group) else {
            return false;
        };
        if f.passive == Passive::Starting {
            f.passive = if ok { Passive::Up } else { Passive::Failed };
        }
        // Canceled by the active target this host started meanwhile: nothing failed.
        let held = self.family_held(&group).is_some();
        if held && let Some(f) = self.families.get_mut(&group) {
            f.passive = Passive::Down;
        }
        if !ok
            && !held
            && let Some(g) = self.groups.get(&id)
        {
            let text = "the passive target failed to start: started again at the next change";
            out.push(Output::Log(g.record(Level::Warn, text)));
        }
        true
    }

    /// When the slot this host holds changed, slot 0's file is written again as a host
    /// without a slot says it (the slot it took writes its own before its start).
    fn family_env(&mut self, group: &str, out: &mut Vec<Output>) {
        let held = self.family_held(group);
        let Some(f) = self.families.get_mut(group) else {
            return;
        };
        if f.held == held {
            return;
        }
        f.held = held;
        let first = f.ids.first().copied();
        if held.is_none()
            && let Some(id) = first
        {
            if let Some(g) = self.groups.get_mut(&id) {
                g.env = None;
            }
            self.follow_leader(id, out);
        }
    }

    /// The group's `maintenance` as slot 0 last read it, for slot `id` (k ≥ 1) whose own
    /// session read its key; `None` until slot 0 has read it (it then tells every slot).
    pub(super) fn group_maintenance(&self, id: GroupId) -> Option<bool> {
        let (group, _) = self.slot_of(id)?;
        self.families.get(group)?.maintenance
    }

    /// The slot a call on the group's object acts in (docs/slots.md, "Promote and
    /// Demote"): Promote in the slot this host holds (a no-op) or else its candidate slot (a
    /// vacant one, or the lowest-ranked holder's, taken by switchover); Demote in the slot it
    /// holds. ResetFailed clears every slot (the others here, the group's own as the call).
    /// A call on a slot's own object (`GROUP@k`) acts in that slot.
    pub(super) fn route_call(
        &mut self,
        id: GroupId,
        call: super::Call,
        now: Now,
        out: &mut Vec<Output>,
    ) -> GroupId {
        let Some((group, 0)) = self.slot_of(id).map(|(g, k)| (g.to_owned(), k)) else {
            return id;
        };
        let held = self.family_held(&group);
        let Some(f) = self.families.get(&group) else {
            return id;
        };
        let slot = |k: Option<usize>| k.and_then(|k| f.ids.get(k).copied()).unwrap_or(id);
        let held = held.and_then(|k| usize::try_from(k).ok());
        match call {
            super::Call::Promote => slot(held.or(Some(f.arbiter.candidate()))),
            super::Call::Demote => slot(held),
            super::Call::ResetFailed => {
                for other in f.ids.clone().into_iter().skip(1) {
                    let Some(g) = self.groups.get_mut(&other) else {
                        continue;
                    };
                    // Refused only in maintenance, which the group's own call says.
                    if let Ok(actions) = g
                        .machine
                        .request(crate::core::Request::ResetFailed, now.mono)
                    {
                        self.carry_actions(other, actions, now, out);
                    }
                }
                id
            }
            super::Call::SetMaintenance(_) => id,
        }
    }

    /// The other slots of slot 0's group `id` (none for any other group).
    pub(super) fn other_slots(&self, id: GroupId) -> Vec<GroupId> {
        match self.slot_of(id) {
            Some((group, 0)) => self
                .families
                .get(group)
                .map(|f| f.ids.iter().skip(1).copied().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Slot 0's `maintenance` (the group's key) told to every other slot's machine, and
    /// kept for the slots whose sessions read their own (empty) key later.
    pub(super) fn family_maintenance(
        &mut self,
        id: GroupId,
        on: bool,
        now: Now,
        out: &mut Vec<Output>,
    ) {
        let Some((group, 0)) = self.slot_of(id).map(|(g, k)| (g.to_owned(), k)) else {
            return;
        };
        let Some(f) = self.families.get_mut(&group) else {
            return;
        };
        f.maintenance = Some(on);
        let others = self.other_slots(id);
        for other in others {
            self.feed(other, Event::Maintenance(on), now, out);
        }
    }
}

/// Whether this node is a standby of a group whose slot machines are `machines`: with no
/// limit (`standbys` `None`) always; else it ranks among the best `limit` of the members that
/// hold no slot and could take one (healthy, and eligible or standing by for another slot),
/// by priority, then name. The members are slot 0's records
/// (every host writes one in every slot), the holders every slot's leader.
pub(super) fn is_standby(machines: &[&GroupMachine], limit: Option<u32>, node: &str) -> bool {
    let Some(limit) = limit else {
        return true;
    };
    let Some(first) = machines.first() else {
        return true;
    };
    let holders: Vec<&str> = machines.iter().filter_map(|m| m.leader()).collect();
    let mut ranked: Vec<(i32, &str)> = first
        .members()
        .iter()
        .filter(|r| !holders.contains(&r.node.as_str()))
        .filter(|r| r.healthy && r.may_take_over())
        .map(|r| (r.priority, r.node.as_str()))
        .collect();
    // This node counts whatever its record says yet (it is the one asking).
    if !ranked.iter().any(|(_, n)| *n == node) {
        ranked.push((first.priority(), node));
    }
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    ranked
        .iter()
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .any(|(_, n)| *n == node)
}
