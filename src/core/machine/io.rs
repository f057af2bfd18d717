//! The machine's inputs and outputs: its fixed parameters, the events the runtime feeds it,
//! the operator's requests, and the actions it returns.

use std::time::Duration;

use super::{Ineligibility, Mono, Reason, Role, Timing};

/// What the machine needs to know about its group and node; fixed for its lifetime but for
/// the [`Tunables`], which [`Event::Retune`] replaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupParams {
    /// This node's name (`node` in promd.toml), as written to the store.
    pub node: String,
    /// The lease and the deadlines derived from it (docs/safety.md).
    pub timing: Timing,
    /// `priority`: the highest eligible node wins; ties go to the lowest name.
    pub priority: i32,
    /// `preempt`: ask a healthy lower-priority active node to hand over to this one.
    pub preempt: bool,
    /// The configured `members`: only these may be active. `None`: anyone may.
    pub members: Option<Vec<String>>,
    /// A `passive-target` is configured: it is started once the active units are down.
    pub has_passive_target: bool,
    /// `failure-cooldown`: a node that failed over stays ineligible this long.
    pub failure_cooldown: Duration,
    /// More failures than this within `restart_window` fail the node over.
    pub max_restarts: u32,
    /// `restart-window`: how far back failures count towards `max_restarts`.
    pub restart_window: Duration,
    /// Wait this long before restarting a failed unit that systemd does not restart itself.
    pub restart_backoff: Duration,
    /// The highest term this host has seen or handed out in the group before this machine
    /// started (kept on disk by the runtime across restarts; 0 if none). The machine never
    /// reports a lower term ([`GroupMachine::term`](super::GroupMachine::term)), its campaigns
    /// ask the store for a higher one, and a key won at or below it is never used: the store
    /// that handed it out has lost its history (docs/safety.md, "The term never goes back").
    pub term_floor: u64,
}

/// The parameters a reload may change in place (`systemctl reload promd`, see
/// `src/agent/reload.rs`): [`GroupParams`] less the node, the timing (the lease: the store's
/// lease and every deadline of the fence derive from it), the passive target and the term
/// floor, which only a restart of the group changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tunables {
    /// [`GroupParams::priority`].
    pub priority: i32,
    /// [`GroupParams::preempt`].
    pub preempt: bool,
    /// [`GroupParams::members`]. The agent restarts a group rather than retune it out of its
    /// own members; a machine retuned so anyway stays safe (it only stops being eligible).
    pub members: Option<Vec<String>>,
    /// [`GroupParams::failure_cooldown`]; a cooldown already running keeps its end.
    pub failure_cooldown: Duration,
    /// [`GroupParams::max_restarts`]; counts from the next failure on.
    pub max_restarts: u32,
    /// [`GroupParams::restart_window`].
    pub restart_window: Duration,
    /// [`GroupParams::restart_backoff`]; restarts already waiting keep their time.
    pub restart_backoff: Duration,
}

impl GroupParams {
    /// The part of these parameters a reload may change in place.
    pub fn tunables(&self) -> Tunables {
        Tunables {
            priority: self.priority,
            preempt: self.preempt,
            members: self.members.clone(),
            failure_cooldown: self.failure_cooldown,
            max_restarts: self.max_restarts,
            restart_window: self.restart_window,
            restart_backoff: self.restart_backoff,
        }
    }

    /// Take `t` in place of the tunable part.
    pub fn retune(&mut self, t: Tunables) {
        let Tunables {
            priority,
            preempt,
            members,
            failure_cooldown,
            max_restarts,
            restart_window,
            restart_backoff,
        } = t;
        self.priority = priority;
        self.preempt = preempt;
        self.members = members;
        self.failure_cooldown = failure_cooldown;
        self.max_restarts = max_restarts;
        self.restart_window = restart_window;
        self.restart_backoff = restart_backoff;
    }
}

/// A member of the group as the store shows it (or as this node publishes itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    /// The member's node name.
    pub node: String,
    /// Its configured `priority`.
    pub priority: i32,
    /// It may become active now (see
    /// [`GroupMachine::ineligibility`](super::GroupMachine::ineligibility)), and does not defer to
    /// the others after a crash.
    pub eligible: bool,
    /// Its health command passes and its passive target did not fail.
    pub healthy: bool,
    /// Its role in the group.
    pub role: Role,
    /// The newest term the member knew when it wrote the record (`None`: written by a promd
    /// that did not say). A node that won the key starts the units only once the store shows
    /// its own record claiming the role at the key's term (`claim_written` in
    /// `handover.rs`): an older record of it would not be its claim.
    pub term: Option<u64>,
    /// Why it may not become active now; `None` exactly when `eligible`. Elections go by
    /// `eligible`; only the first election reads the reason, to wait for a member whose
    /// start-up has not cleared it yet (`still_starting` in `election.rs`).
    pub why: Option<Ineligibility>,
    /// Its watched-unit failures within its `restart-window` (0 in records of promd versions
    /// before it).
    pub failures: u32,
    /// CLOCK_REALTIME microseconds since the epoch of its record's last role change. The
    /// machine has no wall clock: it publishes `None` and never reads the value; the agent
    /// stamps it when it writes the record. `None` also in records of older promd versions.
    pub since_usec: Option<u64>,
}

impl Member {
    /// Whether the member may take the role over: eligible, or, in a group with several
    /// slots, holding none and standing by for another slot ([`Ineligible::StandbyElsewhere`]:
    /// it goes for this slot as soon as this slot falls vacant). What a hand-over's target and
    /// a campaign's rivals are chosen among.
    ///
    /// [`Ineligible::StandbyElsewhere`]: super::Ineligible::StandbyElsewhere
    pub fn may_take_over(&self) -> bool {
        self.eligible
            || self.why
                == Some(super::Ineligibility::Checked(
                    super::Ineligible::StandbyElsewhere,
                ))
    }
}

/// The systemd operations the machine asks for; each is answered by [`Event::Job`].
///
/// The machine trusts `ok: true` for [`Job::StopActive`] to mean the units are down (it then
/// starts the passive target and releases the key, so another host may start them): the
/// runtime reports a stop ok only when every unit of the active target's closure is
/// `inactive` or `failed` by systemd's own word, not merely when the stop job finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Job {
    /// Stop every unit the active target pulled in, then the target. Answered `ok` only once
    /// every unit of the closure is `inactive` or `failed` as systemd reports it; anything
    /// else is a failed stop, which the machine escalates to [`Action::KillActive`] and
    /// retries after a backoff.
    StopActive,
    /// Write the group's env file, then start the active target.
    StartActive,
    /// Start the passive target (only with a `passive-target`), once the active units are
    /// down.
    StartPassive,
}

/// What the runtime tells the machine: store news, systemd answers, timer ticks, signals.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    /// The store is reachable and this node holds a live lease.
    StoreUp,
    /// The store cannot be reached (the lease may still be alive).
    StoreDown,
    /// A renewal of this node's lease, sent at this time, was acknowledged.
    Renewed {
        /// When the acknowledged renewal was sent: the lease lives at least until
        /// `sent_at + lease` (docs/safety.md).
        sent_at: Mono,
    },
    /// The lease is gone, and every key bound to it.
    LeaseLost,
    /// The leader key: holder and term.
    Leader(Option<(String, u64)>),
    /// Every member record in the store.
    Members(Vec<Member>),
    /// The target of a pending switchover request.
    Switchover(Option<String>),
    /// Answer to [`Action::Campaign`]: the term if this node now holds the key.
    Campaigned(Option<u64>),
    /// Answer to [`Action::Release`].
    Released,
    /// A systemd operation finished.
    Job {
        /// Which operation.
        job: Job,
        /// It succeeded (for [`Job::StopActive`]: every unit of the closure is down).
        ok: bool,
    },
    /// The runtime's answer to [`Action::KillActive`]: the `KillUnit` call of every unit
    /// known when the kill was asked is on the bus (sent expecting no reply: PID 1 carries it
    /// out whatever promd does from here on). Only for the kill asked last: the agent drops
    /// the answer to one a later kill superseded. Moves
    /// [`GroupMachine::hang_deadline`](super::GroupMachine::hang_deadline) to the later of
    /// its two values.
    KillSent,
    /// A deadline from [`GroupMachine::next_deadline`](super::GroupMachine::next_deadline)
    /// passed.
    Tick,
    /// The agent is stopping: hand over and exit.
    Terminate,
    /// A reload takes this group out of this promd (removed from the configuration, or
    /// changed so that it restarts): as [`Event::Terminate`], said with its own reason.
    Retire,
    /// The group's cluster-wide maintenance mode (from the store).
    Maintenance(bool),
    /// A watched unit failed: it entered `failed` (`restarted: false`), or systemd restarted
    /// it (`NRestarts` grew, including watchdog restarts).
    UnitFailed {
        /// The unit's name, e.g. `web.service`.
        unit: String,
        /// systemd restarted it itself (promd does not).
        restarted: bool,
    },
    /// The health command's latest result.
    Health {
        /// The command exited 0 within `health-timeout`.
        ok: bool,
    },
    /// Whether every unit of the passive target is free of failure.
    PassiveUnits {
        /// No unit of the passive target is `failed`.
        ok: bool,
    },
    /// A unit of the active target's closure became `active` or `activating`. On a host that
    /// does not have the role (an operator's `systemctl start`, a dependency, a timer), the
    /// units are stopped (and killed unless the key is held): only the active host may run
    /// them.
    UnitStarted {
        /// The unit's name.
        unit: String,
    },
    /// In place of `Job { StartActive, ok: true }`: the start job of the active target ended,
    /// but these watched units are not up (failed in `ExecStartPre=`, skipped by a Condition,
    /// timed out waiting for `READY=1`). A failed start: the role stays `promoting` (never
    /// `active` with nothing running) while the start is retried in place, then fails over,
    /// under the same `max-restarts` / `restart-window` as failures of a running unit.
    StartIncomplete {
        /// The watched units that are not up.
        units: Vec<String>,
    },
    /// A reload changed what may change in place (priority, preempt, members, the restart
    /// settings). Nothing else changes: the units keep running, the key and term stay; the
    /// next step publishes the new record (a new priority ranks this node anew everywhere)
    /// and applies the usual rules under the new values (a peer may now preempt, a standby
    /// may now campaign first).
    Retune(Tunables),
    /// The agent's estimate of how long PID 1 takes to stop everything this host fences at
    /// once changed ([`Timing::fence_load`](crate::core::Timing::fence_load)). Only the
    /// fence's deadline moves (earlier with more units, within the cap of `Timing::margin`); the next step
    /// applies it, so a fence the new deadline says is due begins at once.
    FenceLoad(std::time::Duration),
    /// The slot arbiter's word for a group with several slots ([`crate::core::SlotGroup`]):
    /// this node may not become active in this machine's slot, and why (`None`: nothing
    /// against it). Checked right after membership ([`Ineligible::OtherSlot`], or the
    /// node's [`Ineligible::Cooldown`] in another slot), so the record says so, the
    /// machine does not campaign, preempt or take a Promote, and other nodes do not wait
    /// for it. Nothing else changes: a blocked machine that runs the units goes on running
    /// them (the arbiter never blocks one that is engaged, [`GroupMachine::engaged`]). A
    /// group with one slot never sends it.
    ///
    /// [`GroupMachine::engaged`]: super::GroupMachine::engaged
    /// [`Ineligible::OtherSlot`]: super::Ineligible::OtherSlot
    /// [`Ineligible::Cooldown`]: super::Ineligible::Cooldown
    Blocked(Option<super::Ineligible>),
}

/// What an operator asks of this node (D-Bus / promctl).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// Become active: a switchover through the store.
    Promote,
    /// Hand the role to the best eligible other member.
    Demote,
    /// Clear this node's failed state.
    ResetFailed,
}

/// What the machine asks the runtime to do, in order; answers come back as [`Event`]s.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run a systemd operation, with the term (the fencing token, `PROMD_TERM`) to write to
    /// the env file for [`Job::StartActive`]; answered by [`Event::Job`].
    Start(Job, Option<u64>),
    /// SIGKILL whatever of the active units is still running.
    KillActive,
    /// Try to create the leader key under this node's lease, at a term above `floor`;
    /// answered by [`Event::Campaigned`].
    Campaign {
        /// The highest term this node knows to have been handed out: its own (the kept
        /// floor, every key it saw) and every member record's. The store hands out a term
        /// above it even if it has lost its own history.
        floor: u64,
        /// This node's record claiming the role (`promoting`, its term `None`: the store
        /// fills in the won term), written with the key when the campaign wins: what rule 5
        /// would publish next, one store round trip sooner ([`GroupMachine::claim_written`]).
        ///
        /// [`GroupMachine::claim_written`]: super::GroupMachine
        claim: Member,
    },
    /// Delete the leader key if it still is this node's at `term`; answered by
    /// [`Event::Released`].
    Release {
        /// The term of the key to delete.
        term: u64,
    },
    /// Write this node's member record (bound to its lease).
    Publish(Member),
    /// Write the group's switchover request.
    RequestSwitchover {
        /// The node that should become active.
        to: String,
    },
    /// Delete the group's switchover request.
    ClearSwitchover,
    /// The role changed: tell journald (MESSAGE_ID by [`Reason::kind`]), D-Bus and the env
    /// file.
    RoleChanged {
        /// The role before.
        old: Role,
        /// The role now.
        new: Role,
        /// The newest term the node acted on (the units' `PROMD_TERM`).
        term: u64,
        /// Why.
        reason: Reason,
    },
    /// Restart a failed active unit in place (`None`: every watched unit, for a failed
    /// health check).
    RestartUnit(Option<String>),
    /// Something the operator should read in the journal (failures, escalation).
    Note(String),
    /// Terminate is complete for this group: its units are stopped and its key released.
    Exit,
}

/// The work still in flight that an action cancels before it runs. The rule is the core's
/// (the runtime aborts the tasks, the model check and the simulation drop the work, all by
/// this one function), because it is part of the fence: work that lands after a stop could
/// bring the active units back on a host that is giving up the role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Cancels {
    /// A start of the active target (its answer never comes: the stop's does).
    pub start: bool,
    /// Restarts in place of failed active units.
    pub restarts: bool,
    /// Kills still waiting (for the closure, say): they were meant for an earlier run of the
    /// units, and landing now they would kill the new one.
    pub kills: bool,
}

impl Cancels {
    /// Nothing to cancel.
    pub fn none(self) -> bool {
        self == Cancels::default()
    }
}

impl Action {
    /// What this action cancels of the work in flight, before it runs: a stop or a kill
    /// cancels the start and the restarts in place (they must not land after it); a start of
    /// the active target, the kills (the machine starts only after a stop that brought the
    /// units down).
    pub fn cancels(&self) -> Cancels {
        match self {
            Action::Start(Job::StopActive, _) | Action::KillActive => Cancels {
                start: true,
                restarts: true,
                kills: false,
            },
            Action::Start(Job::StartActive, _) => Cancels {
                kills: true,
                ..Cancels::default()
            },
            _ => Cancels::default(),
        }
    }
}
