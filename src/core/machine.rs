//! The group state machine.
//!
//! It is level-triggered: an event only updates the machine's view of the world, then
//! [`GroupMachine::step`] derives what to do from the whole view. Every safety rule is
//! therefore checked after every event, whatever the order events arrive in.
//!
//! The rules, in the order `step` applies them:
//! 1. **Fence**: while the active units may be running and this node is not entitled to run
//!    them (it does not hold the leader key, or its lease may have expired elsewhere, or it
//!    does not have the role: a unit started behind its back), stop them; kill them if
//!    stopping is not finished by the kill deadline, which is at once unless the key is still
//!    held under a live lease. A failed stop is killed at once and retried after a backoff.
//! 2. **Terminate**: on SIGTERM, stop the units, release the key, then exit.
//! 3. **Demote** on a switchover request or a failed start; **promote** once the key is won;
//!    finish a demotion by starting the passive target and only then releasing the key.
//! 4. **Campaign** when the key is vacant and this node is
//!    the best eligible candidate (the others wait a grace period per rank; in the first
//!    election also for better members still starting, up to a lease: `election.rs`).
//! 5. **Publish** this node's member record whenever it changes.
//!
//! The view is a handful of small state types, each with its own module:
//! - the leader key, [`Key`] (`Unknown | Vacant { since } | Ours { term } | Theirs { node,
//!   term }`), and the request about it still in flight, [`Owed`] (`key.rs`);
//! - the lease, [`Lease`] (`Unconfirmed | Renewed { sent_at } | Lost`, `lease.rs`);
//! - the store facts still to read after a (re)connection, [`Unread`] (`reread.rs`);
//! - the active units, [`Units`] (`Down | MayRun { killed_at, kill_sent, stop_failures }`),
//!   and the passive target, [`Passive`] (`Down | Up | Failed`) (`units.rs`);
//! - the deadlines, by name, in one [`Timers`] table (`timers.rs`);
//! - why roles change and requests are refused, [`Reason`] and [`Refusal`] (`reason.rs`).

mod election;
mod failures;
mod fence;
mod handover;
mod io;
mod key;
mod lease;
mod reason;
mod requests;
mod reread;
mod slot;
mod timers;
mod units;

pub use io::{Action, Cancels, Event, GroupParams, Job, Member, Request, Tunables};
pub use reason::{Ineligibility, Ineligible, Reason, ReasonKind, Refusal};
pub use timers::{Timer, Timers};

#[cfg(test)]
use std::time::Duration; // machine_tests.rs uses it through `super::*`

use super::{Mono, Role, Timing};
use key::{Key, Owed};
use lease::Lease;
use reread::{Fact, Unread};
use units::{Passive, Units};

/// Clone, Eq and Hash let a model checker explore the machine's states (`tests/model_check.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupMachine {
    p: GroupParams,
    role: Role,

    // The store as last seen.
    store_up: bool,
    /// What is still to be read since the store was last (re)reached (see [`Unread`]).
    unread: Unread,
    /// Maintenance mode: nothing campaigns, promotes, hands over or preempts (the fence
    /// still applies: safety does not take a break).
    maintenance: bool,
    members: Vec<Member>,
    switchover_to: Option<String>,

    // This node's standing in the store.
    /// Unconfirmed, renewed (send time of the last acknowledged renewal), or lost: see
    /// [`Lease`].
    lease: Lease,
    /// The leader key as this node knows it: unknown, vacant since, ours at a term, or
    /// another's (see [`Key`]).
    key: Key,
    /// A campaign or release in flight.
    owed: Owed,
    /// An earlier incarnation of this node held the key: let the others go first once.
    defer_once: bool,

    // systemd.
    job: Option<Job>,
    /// Down, or may be running (from a start until a completed stop, and at birth, since a
    /// previous incarnation may have left them running): see [`Units`].
    units: Units,
    /// The passive target: down, up, or failed to start.
    passive: Passive,
    /// Failed starts of the passive target in a row, for its retry's backoff
    /// ([`Timer::PassiveRetry`]).
    passive_failures: u32,

    /// The health command's latest result.
    healthy: bool,
    /// No unit of the passive target is `failed`.
    passive_units_ok: bool,
    /// Failures of the active units, newest last, within the restart window.
    failures: std::collections::VecDeque<Mono>,
    /// Restarts in place waiting for their backoff.
    pending_restarts: Vec<(Option<String>, Mono)>,
    /// A demotion that the next step starts (a failed start, a fail-over), and why.
    demote_reason: Option<Reason>,
    /// Running, terminating (SIGTERM: stop, release, exit), or exited.
    life: Life,
    /// Why the units stop once `life` is no longer running: promd stopping, or a reload.
    leaving: Reason,
    /// The member record last published (rule 5 publishes only changes).
    published: Option<Member>,
    /// The claim sent with the campaign in flight ([`Action::Campaign`]): published once it
    /// is won.
    claim: Option<Member>,
    /// The owned deadlines ([`Timer`]): `StopRetry` (until then nothing issues another stop:
    /// the units were killed when it failed, and a systemd that keeps failing is not
    /// hammered), `CampaignRetry`, `Cooldown`, `StartRetry` (the role stays `promoting`
    /// meanwhile), `SwitchoverRetry`.
    timers: Timers,
    /// The term last reported in a role change: the fencing token the units saw.
    term: u64,
    /// The newest term of any leader key this node has seen held (by anyone) or won, kept
    /// when the key goes, and never below [`GroupParams::term_floor`]: [`Self::term`], and so
    /// the term in its member record.
    key_term_seen: u64,
    /// The time of the last step: every deadline up to it has been handled.
    stepped_at: Mono,
    /// [`Event::Blocked`]: the slot arbiter's reason this node may not become active in this
    /// machine's slot (a group with several slots only).
    blocked: Option<Ineligible>,
}

impl GroupMachine {
    /// A machine for a node that has just started; `handle` it events from now on.
    pub fn new(p: GroupParams) -> GroupMachine {
        GroupMachine {
            role: Role::Starting,
            store_up: false,
            unread: Unread::ALL,
            maintenance: false,
            members: Vec::new(),
            switchover_to: None,
            lease: Lease::Unconfirmed,
            key: Key::Unknown,
            owed: Owed::Nothing,
            defer_once: false,
            job: None,
            units: Units::BIRTH,
            passive: Passive::Down,
            passive_failures: 0,
            healthy: true,
            passive_units_ok: true,
            failures: std::collections::VecDeque::new(),
            pending_restarts: Vec::new(),
            demote_reason: None,
            life: Life::Running,
            leaving: Reason::PromdStopping,
            published: None,
            claim: None,
            timers: Timers::default(),
            term: 0,
            key_term_seen: p.term_floor,
            stepped_at: Mono::ZERO,
            blocked: None,
            p,
        }
    }

    /// This node's role in the group.
    pub fn role(&self) -> Role {
        self.role
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.p.node
    }

    /// The leader key's holder as last seen (possibly stale while the store is down).
    pub fn leader(&self) -> Option<&str> {
        self.holder().map(|(n, _)| n)
    }

    /// The newest term this node knows of: of any leader key it has seen or won (also once
    /// the key is gone), or the last one it acted on; never below
    /// [`GroupParams::term_floor`].
    pub fn term(&self) -> u64 {
        self.key_term_seen.max(self.term)
    }

    /// The group's member records as last read from the store.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The store is reachable and this node holds a lease there.
    pub fn store_up(&self) -> bool {
        self.store_up
    }

    /// This node could become active now: [`Self::ineligibility`] is `None`.
    pub fn is_eligible(&self, now: Mono) -> bool {
        self.eligible(now)
    }

    /// Terminate finished for this group ([`Action::Exit`] was returned); events are ignored.
    pub fn exited(&self) -> bool {
        self.life == Life::Exited
    }

    /// The group's maintenance mode as last read from the store.
    pub fn maintenance(&self) -> bool {
        self.maintenance
    }

    /// Healthy as published: the health check passes and the passive target did not fail.
    pub fn healthy(&self) -> bool {
        self.healthy && self.passive != Passive::Failed && self.passive_units_ok
    }

    /// Failures of the active units counted in the current restart window.
    pub fn failures(&self, now: Mono) -> u32 {
        let since = now - self.p.restart_window;
        u32::try_from(self.failures.iter().filter(|t| **t > since).count()).unwrap_or(u32::MAX)
    }

    /// This node failed over and waits for its cooldown (or `ResetFailed`).
    pub fn failed(&self, now: Mono) -> bool {
        self.timers.pending(Timer::Cooldown, now)
    }

    /// This node's configured priority.
    pub fn priority(&self) -> i32 {
        self.p.priority
    }

    /// The deadlines in force: the lease's, with the watchdog and the fence load
    /// ([`Event::FenceLoad`]).
    pub fn timing(&self) -> Timing {
        self.p.timing
    }

    /// The parameters in force that a reload may change in place ([`Event::Retune`]).
    pub fn tunables(&self) -> Tunables {
        self.p.tunables()
    }

    /// This node holds the role, or is on its way in or out of it: promoting, active or
    /// demoting, or the store shows the key in this node's name. What makes a slot the one a
    /// node holds (`core::slots`).
    pub fn holds_role(&self) -> bool {
        matches!(self.role, Role::Promoting | Role::Active | Role::Demoting)
            || self.leader() == Some(self.node())
    }

    /// This node holds no leader key and its active units are known to be stopped.
    pub fn settled_passive(&self) -> bool {
        matches!(self.role, Role::Passive | Role::Failed)
            && self.key.held().is_none()
            && !self.releasing()
            && !self.units_may_run()
    }

    /// The latest instant the systemd watchdog may kill a hung promd without the units
    /// outliving this node's lease, while the units may run under that lease; `None`
    /// otherwise (the units are down, or no renewal entitles them: then the fence kills them
    /// at once). Of the last acknowledged renewal: [`Timing::hang_deadline_before_kill`]
    /// until the fence's kill is on the bus ([`Event::KillSent`]: the watchdog's own
    /// kill must leave `ExecStopPost=promd fence` the host's fence load),
    /// [`Timing::hang_deadline`] after. Asking for the kill is not enough: the calls may
    /// still wait in promd (a task not yet run, or a kill of the group in flight) when promd
    /// hangs.
    ///
    /// The runtime arms the watchdog to fire by the earliest of these
    /// ([`Timing::watchdog_within`]); docs/safety.md tells why the fence needs it.
    pub fn hang_deadline(&self) -> Option<Mono> {
        if !self.units_may_run() || !self.under_own_lease() {
            return None;
        }
        let killed = self.kill_sent();
        self.renewed_sent().map(|s| {
            if killed {
                self.p.timing.hang_deadline(s)
            } else {
                self.p.timing.hang_deadline_before_kill(s)
            }
        })
    }

    /// When the fence would begin to demote ([`Timing::fence_at`] of the last acknowledged
    /// renewal), while units may run under this node's lease; `None` otherwise. A read-only
    /// view of what [`Self::hang_deadline`] also derives from, for the fence headroom that
    /// `/metrics` reports.
    pub fn fence_deadline(&self) -> Option<Mono> {
        if !self.units_may_run() || !self.under_own_lease() {
            return None;
        }
        self.renewed_sent().map(|s| self.p.timing.fence_at(s))
    }

    /// Whether units of this node that may run do so under its own lease: it holds or claims
    /// the key (won or campaigning for, being released, or a role that runs the units).
    /// Units that may run otherwise — left by an earlier run and being killed at start-up,
    /// or started by hand on a passive host — are not: no standby waits for this node's lease
    /// before it takes over, so a watchdog kill timed to that lease protects nothing. Timing
    /// it so anyway had a loaded host's promd killed again and again while its start-up
    /// kills of 200 groups were still being confirmed.
    fn under_own_lease(&self) -> bool {
        self.key.held().is_some()
            || self.campaigning()
            || self.releasing()
            || matches!(self.role, Role::Promoting | Role::Active | Role::Demoting)
    }

    /// The earliest time at which a `Tick` may change something that no step has handled
    /// yet. It can lie in the past, when the caller was late: a Tick is then due at once.
    /// (A deadline must never be dropped for being late: the fence is one of them.)
    ///
    /// The earliest entry of [`Self::timers`] later than the last step.
    pub fn next_deadline(&self) -> Option<Mono> {
        self.next_timer().map(|(_, at)| at)
    }

    /// Feed one event; returns what the drivers must do, in order.
    pub fn handle(&mut self, event: Event, now: Mono) -> Vec<Action> {
        let mut out = Vec::new();
        if self.life == Life::Exited {
            return out;
        }
        self.absorb(event, now, &mut out);
        self.step(now, &mut out);
        out
    }

    fn absorb(&mut self, event: Event, now: Mono, out: &mut Vec<Action>) {
        match event {
            Event::StoreUp => {
                self.store_up = true;
                self.forget_view();
            }
            Event::StoreDown => {
                self.store_up = false;
                self.key_store_down();
                self.forget_view();
            }
            Event::Renewed { sent_at } => {
                self.lease_renewed(sent_at);
            }
            Event::LeaseLost => {
                self.forget_view();
                self.lease = Lease::Lost;
                self.key_lease_lost();
            }
            Event::Leader(leader) => {
                self.unread.read(Fact::Leader);
                self.note_key_below_floor(leader.as_ref(), out);
                self.key_read(leader, now);
            }
            Event::Members(members) => {
                self.unread.read(Fact::Members);
                self.members_read(members, now);
                self.republish_if_behind();
            }
            Event::Switchover(to) => self.switchover_to = to,
            Event::Campaigned(result) => self.key_campaigned(result, now, out),
            Event::Released => self.key_released(now),
            Event::Job { job, ok } => {
                if self.job != Some(job) {
                    return; // superseded (a stop replaced a start)
                }
                self.job = None;
                match job {
                    Job::StopActive => {
                        if ok {
                            self.units = Units::Down;
                            self.timers.clear(Timer::StopRetry);
                        } else {
                            self.stop_failed(now, out);
                        }
                    }
                    Job::StartActive => {
                        if ok {
                            if self.role == Role::Promoting {
                                let term = self.key.held().unwrap_or(self.term);
                                self.set_role(Role::Active, term, Reason::ActiveStarted, out);
                            }
                        } else {
                            self.timers
                                .set(Timer::Cooldown, now + self.p.failure_cooldown);
                            self.demote_reason = Some(Reason::StartFailed);
                        }
                    }
                    Job::StartPassive => self.passive_started(ok, now, out),
                }
            }
            Event::Tick => {}
            Event::KillSent => self.set_kill_sent(),
            Event::Terminate => self.life = Life::Terminating,
            Event::Retire => {
                self.life = Life::Terminating;
                self.leaving = Reason::Retired;
            }
            Event::Maintenance(on) => {
                self.unread.read(Fact::Maintenance);
                self.maintenance = on;
            }
            Event::UnitFailed { unit, restarted } => self.unit_failed(unit, restarted, now, out),
            Event::Health { ok } => {
                if ok != self.healthy {
                    out.push(Action::Note(if ok {
                        "health check passes again".into()
                    } else {
                        "health check failed".into()
                    }));
                }
                self.healthy = ok;
                if !ok {
                    self.unit_failed_health(now, out);
                }
            }
            Event::PassiveUnits { ok } => {
                if ok != self.passive_units_ok {
                    out.push(Action::Note(if ok {
                        "the passive target's units recovered".into()
                    } else {
                        "a unit of the passive target failed: not eligible".into()
                    }));
                }
                self.passive_units_ok = ok;
                if ok {
                    // The units of a passive target that failed to start are fine now (an
                    // operator fixed them, or systemd restarted them): start the target again
                    // now rather than at its retry.
                    self.retry_passive();
                }
            }
            Event::UnitStarted { unit } => self.unit_started(&unit, out),
            Event::Retune(t) => self.p.retune(t),
            Event::FenceLoad(load) => self.p.timing = self.p.timing.with_fence_load(load),
            Event::StartIncomplete { units } => {
                if self.job != Some(Job::StartActive) {
                    return; // superseded (a stop replaced the start)
                }
                self.job = None;
                self.start_incomplete(units, now, out);
            }
            Event::Blocked(why) => self.blocked = why,
        }
    }

    fn step(&mut self, now: Mono, out: &mut Vec<Action>) {
        self.stepped_at = self.stepped_at.max(now);
        if self.timers.due(Timer::Cooldown, now) {
            self.timers.clear(Timer::Cooldown);
        }
        if self.timers.due(Timer::PassiveRetry, now) {
            self.retry_passive();
        }
        self.fence(now, out);
        self.restart_due(now, out);
        self.retry_start(now, out);
        if self.life != Life::Running {
            self.terminate(now, out);
            return;
        }
        self.demote(now, out);
        // Promotion gets first claim on a held key; whatever key is left unused after it is
        // released by finish_demotion.
        self.promote(now, out);
        self.finish_demotion(now, out);
        self.campaign(now, out);
        self.preempt(now, out);
        self.publish(now, out);
    }

    /// Rule 5: keep this node's member record current.
    fn publish(&mut self, now: Mono, out: &mut Vec<Action>) {
        // Not while a campaign with a claim is in flight: a record sent now would be written
        // after the claim and overwrite it (the watch often shows the won key, and so a new
        // term, before the campaign's answer comes), and the winner would wait for a claim
        // the store no longer holds. The answer settles what the store holds; from there
        // this rule writes whatever differs (the model check found it).
        if self.claim.is_some() {
            return;
        }
        let me = self.record(now);
        if self.published.as_ref() != Some(&me) {
            self.published = Some(me.clone());
            out.push(Action::Publish(me));
        }
    }

    /// This node's member record as it stands.
    pub(super) fn record(&self, now: Mono) -> Member {
        let why = self.why_ineligible(now);
        Member {
            node: self.p.node.clone(),
            priority: self.p.priority,
            eligible: why.is_none(),
            healthy: self.healthy(),
            // Holding the key to promote with: claim the role before the units start.
            role: if self.waits_to_promote(now) {
                Role::Promoting
            } else {
                self.role
            },
            term: Some(self.term()),
            why,
            failures: self.failures(now),
            since_usec: None,
        }
    }

    /// The store shows this node's record at a lower term than the one last published (a
    /// store restored from an older snapshot, say): write it again, so that campaigners
    /// count the term this node knows in their floor.
    fn republish_if_behind(&mut self) {
        let Some(term) = self.published.as_ref().and_then(|m| m.term) else {
            return;
        };
        let behind = self
            .members
            .iter()
            .any(|m| m.node == self.p.node && m.term.is_none_or(|t| t < term));
        if behind {
            self.published = None;
        }
    }

    /// A (re)connection re-reads the store: until then the old view is not evidence.
    fn forget_view(&mut self) {
        self.unread = Unread::ALL;
    }

    fn is_member(&self, node: &str) -> bool {
        self.p
            .members
            .as_ref()
            .is_none_or(|m| m.iter().any(|n| n == node))
    }

    /// Why this node's member record says it may not become active now:
    /// [`Self::ineligibility`], or, when that has nothing against it, that it just lost the
    /// role in a crash and lets the others go first once. `None`: eligible.
    pub fn why_ineligible(&self, now: Mono) -> Option<Ineligibility> {
        match self.ineligibility(now) {
            Some(i) => Some(Ineligibility::Checked(i)),
            None if self.defer_once => Some(Ineligibility::DeferOnce),
            None => None,
        }
    }

    fn eligible(&self, now: Mono) -> bool {
        self.ineligibility(now).is_none()
    }

    fn set_role(&mut self, new: Role, term: u64, reason: Reason, out: &mut Vec<Action>) {
        let old = self.role;
        if old == new {
            return;
        }
        self.role = new;
        self.term = self.term.max(term);
        out.push(Action::RoleChanged {
            old,
            new,
            term: self.term,
            reason,
        });
    }
}

/// Whether the agent is stopping this group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Life {
    /// Serving.
    Running,
    /// SIGTERM: stop the units, release the key, then exit (rule 2).
    Terminating,
    /// Terminate is complete ([`Action::Exit`] returned): events are ignored.
    Exited,
}

#[cfg(test)]
#[path = "machine_tests.rs"]
pub(super) mod tests;
