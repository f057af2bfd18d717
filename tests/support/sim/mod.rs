//! A world of N promd nodes around a model store, for the model check (`tests/model_check.rs`)
//! and for multi-node scenario tests (`tests/simulation.rs`).
//!
//! Each node runs the real [`GroupMachine`]. Everything around it is modelled, as small as
//! the machine's contract allows:
//! - **the store** (etcd's semantics): one leader key bound to a lease, whose term is the
//!   store's revision when it was created; member records bound to leases; a switchover key;
//!   leases that expire `L` after their last renewal reached the store;
//! - **each node's store task** (`src/store/etcd/task.rs`): a connection that drops and comes
//!   back (re-reading everything, keeping the lease if it still lives), a queue of writes
//!   carried out one at a time, renewals every `L/3`, the answers it owes when a connection
//!   or a lease is lost (a queued campaign is lost; a queued release is done, since the key
//!   went with the lease);
//! - **systemd**: jobs that finish when the world says so, ok or failed; a stop replaces a
//!   start still running (the start's answer may still come, before the stop's); units that
//!   run from the moment a start is issued until a stop finished or a kill; the watch's
//!   `UnitStarted` for every start, arriving whenever;
//! - **the process**: promd crashes (its units are killed by `ExecStopPost=promd fence`),
//!   pauses (the watchdog kills it `W` + 350 ms after the pause began, the last ping having
//!   been just before it and systemd firing 250 ms late, or by the machine's hang deadline +
//!   350 ms if the ping armed the watchdog shorter: `Timing::watchdog_within`), is stopped
//!   (`systemctl stop promd`), and restarts with a fresh machine;
//! - **the clock**: moves only to the next deadline of a node, a lease, a renewal or a
//!   watchdog, and only once every deadline already due was handled: a running promd is
//!   prompt (a hung one is the pause above).
//!
//! Messages travel in order per node (the task's channel to the runtime), except the answer
//! to a write, which may come after any number of later watch events (etcd's answer and
//! watch travel on separate streams), but before the down or lease-lost edge. Every actor
//! moves independently, so any interleaving of nodes, store, systemd and clock is explored.
//!
//! Simplifications: watch events reach every connected node the moment the store changes
//! (delays come from the node's queue), a renewal may be late by any amount (the store task
//! is slow), and lease expiry happens the moment it is due: each on the side of finding more.
//! Two are not: a kill takes effect at once, and a node takes its queued store events in one
//! step, so an interleaving *inside* such a burst (a start and its kill, say) is not seen;
//! unit tests in `src/core/machine_tests.rs` cover those found by hand. Not modelled: units
//! started behind promd's back, health checks, maintenance mode, preemption, passive units
//! that fail, two hosts under one node name (the system tests and the randomised machine
//! simulation cover them).

#![allow(dead_code, unused_imports)]

pub mod settle;
mod step;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use promd::core::{Event, GroupMachine, GroupParams, Job, Member, Mono, Role, Timing};

pub use settle::Sim;
pub use step::{Fault, JobOutcome, Reply, Step};

/// The one watched unit of the active target.
pub const UNIT: &str = "web.service";

pub use promd::core::{AFTER_WATCHDOG, WATCHDOG_ACCURACY};

/// Which faults the world may inject, and how many per path.
#[derive(Debug, Clone)]
pub struct Config {
    pub nodes: usize,
    pub lease: Duration,
    /// promd's watchdog interval `W`.
    pub watchdog: Duration,
    /// Priorities by node (missing: 0).
    pub priorities: Vec<i32>,
    pub preempt: bool,
    pub passive_target: bool,
    pub failure_cooldown: Duration,
    pub max_restarts: u32,
    /// Faults per path (each [`Step::Fault`] spends one).
    pub faults: u8,
    /// The kinds of fault the world injects.
    pub kinds: Vec<FaultKind>,
    /// The clock moves only once every running promd has taken its queued store events, and
    /// its store task has carried out its queued writes and due renewal: the loop and a
    /// store round trip take milliseconds, the deadlines hundreds of them. Off, a message
    /// may also wait across any number of deadlines (a much larger state space).
    pub prompt: bool,
    /// Every node is named in `members` (off: `members` is not configured).
    pub members: bool,
    /// A cold boot whose start-ups all finish in time: while no fault has been spent, the
    /// clock does not move past this long after [`World::new`]'s start while some node's
    /// record in the store is missing or says `starting`. The start-ups (store connections,
    /// stop and passive-target jobs, record writes) still finish in any order, at any time
    /// up to it. `None`: they may take any time.
    pub start_within: Option<Duration>,
    /// How long each host's PID 1 takes to carry out a kill of the role's units (its fence
    /// load, all units draining until the kill): a kill, promd's own or the watchdog's
    /// (`ExecStopPost=promd fence`), takes effect this long after it is asked. The nodes'
    /// estimate (`Event::FenceLoad`) is this from the start. Zero: kills are instant.
    pub pid1_load: Duration,
}

/// A kind of fault (see [`Fault`] for what each does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The connection to the store drops.
    Drop,
    /// The connection drops with a write in flight (carried out or not).
    LoseWrite,
    Crash,
    Pause,
    /// `systemctl stop promd`.
    Terminate,
    /// A stop job fails (a unit is left running).
    StopFails,
    /// A start of the active target fails, or leaves a unit down.
    StartFails,
    /// A start of the passive target fails.
    PassiveFails,
    /// A watched unit fails while active.
    UnitFails,
    /// An operator's promote or demote.
    Request,
    /// An operator deletes the leader key by hand (`etcdctl del`): its holder's lease and
    /// member record stay. (Revoking the holder's *lease* by hand is not modelled: it ends the
    /// lease before `s + L`, which no standby can tell from an expiry, so two hosts may run
    /// the units until the holder's next renewal; docs/safety.md says so.)
    DelKey,
    /// An operator's `systemctl reload promd` that changes the node's priority in place
    /// (`Event::Retune`): up or down by 100, with `preempt` on from then. Not in
    /// [`FaultKind::ALL`] (the exhaustive checks over every kind would outgrow the CI's
    /// memory); its own check, and the random one, take it.
    Retune,
    /// The agent's estimate of the node's fence load changes (`Event::FenceLoad`), between
    /// none and not known yet (the fence then begins as early as the lease allows). Not in
    /// [`FaultKind::ALL`]: the random check takes it, and `tests/simulation.rs` cuts a node
    /// whose load changes (an exhaustive check to depth 20 reached no lapsed lease after it).
    FenceLoad,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 11] = [
        FaultKind::Drop,
        FaultKind::LoseWrite,
        FaultKind::Crash,
        FaultKind::Pause,
        FaultKind::Terminate,
        FaultKind::StopFails,
        FaultKind::StartFails,
        FaultKind::PassiveFails,
        FaultKind::UnitFails,
        FaultKind::Request,
        FaultKind::DelKey,
    ];
}

impl Config {
    /// `nodes` nodes, lease 2 s, the watchdog promd fits to it (300 ms), every fault kind,
    /// `faults` faults per path.
    pub fn new(nodes: usize, faults: u8) -> Config {
        let lease = Duration::from_secs(2);
        Config {
            nodes,
            lease,
            watchdog: Timing::new(lease).fitting_watchdog(),
            priorities: Vec::new(),
            preempt: false,
            passive_target: true,
            failure_cooldown: Duration::from_secs(6),
            max_restarts: 1,
            faults,
            kinds: FaultKind::ALL.to_vec(),
            prompt: true,
            members: false,
            start_within: None,
            pid1_load: Duration::ZERO,
        }
    }

    pub fn allows(&self, kind: FaultKind) -> bool {
        self.kinds.contains(&kind)
    }

    pub fn name(i: usize) -> String {
        format!("n{}", i + 1)
    }

    pub fn params(&self, i: usize) -> GroupParams {
        GroupParams {
            node: Config::name(i),
            timing: Timing::new(self.lease)
                .with_watchdog(self.watchdog)
                .with_fence_load(self.pid1_load),
            priority: self.priorities.get(i).copied().unwrap_or(0),
            preempt: self.preempt,
            members: self
                .members
                .then(|| (0..self.nodes).map(Config::name).collect()),
            has_passive_target: self.passive_target,
            failure_cooldown: self.failure_cooldown,
            max_restarts: self.max_restarts,
            restart_window: Duration::from_secs(60),
            restart_backoff: Duration::from_millis(500),
            term_floor: 0,
        }
    }
}

/// A write a node's store task carries out (`src/store/mod.rs`'s `Op`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// With the record claiming the role, written with the key when it wins.
    Campaign(Member),
    Release {
        term: u64,
    },
    Publish(Member),
    PutSwitchover(String),
    ClearSwitchover,
}

/// The leader key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub node: usize,
    /// The store's revision when the key was created: the fencing token.
    pub term: u64,
    pub lease: u64,
}

/// The store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Store {
    pub revision: u64,
    pub leader: Option<Key>,
    /// Member records by node, with the lease each is bound to.
    pub members: BTreeMap<usize, (Member, u64)>,
    pub switchover: Option<String>,
    /// Live leases and when each expires.
    pub leases: BTreeMap<u64, Mono>,
    pub next_lease: u64,
}

/// The promd process of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proc {
    Running,
    /// Stopped (SIGSTOP, a hang); the watchdog's kill takes effect at `killed_at` (see
    /// `World::watchdog_kill_at`).
    Paused {
        killed_at: Mono,
    },
    /// Crashed, killed by the watchdog, or exited; systemd restarts it.
    Dead,
}

/// A systemd job in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobRun {
    pub job: Work,
    /// A stop was issued after this start: systemd replaced the start job.
    pub superseded: bool,
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Work {
    /// One the machine asked for and is told the end of.
    Core(Job),
    /// A restart in place (`Action::RestartUnit`): when it lands, the unit runs again, and the
    /// watch says so. A stop or a kill cancels it (`Action::cancels`, which the runtime
    /// carries out too): a restart must never land on a host that lost the role.
    Restart,
}

/// One node: its machine, its store task, its units.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    pub machine: GroupMachine,
    pub proc: Proc,
    /// The store task has a session.
    pub online: bool,
    /// A test's partition: the store cannot be reached (no reconnection).
    pub cut: bool,
    /// The lease the task holds (or held, until it learns it is gone).
    pub lease: Option<u64>,
    /// Writes waiting for the store, in order.
    pub queue: VecDeque<Op>,
    /// The last member record published: written again under every new lease.
    pub member: Option<Member>,
    pub next_renewal: Mono,
    /// Store task events on their way to the machine, in order.
    pub inbox: VecDeque<Event>,
    /// The answer to the last write, still on its way while the watch goes on
    /// ([`Reply::AfterWatch`](step::Reply::AfterWatch)); nothing else is written meanwhile.
    pub late: Option<Event>,
    pub jobs: Vec<JobRun>,
    /// Unit watch events on their way to the machine.
    pub unit_events: VecDeque<Event>,
    /// The truth, whatever the machine believes: the active target's units may be running.
    pub units_up: bool,
    /// A kill PID 1 is carrying out ([`Config::pid1_load`]): the units die then. It outlives
    /// the promd that asked for it.
    pub kill_lands: Option<Mono>,
    /// A kill (`Action::KillActive`) whose `KillUnit` calls have not reached PID 1 yet (they
    /// wait for their task, or a kill in flight): [`Step::SendKill`](step::Step::SendKill)
    /// gives it to PID 1 ([`Node::ask_kill`]) and tells the machine `Event::KillSent`. A promd
    /// that hangs or dies first never sends it. One at most: the runtime runs the latest kill
    /// asked.
    pub kill_unsent: bool,
}

/// The whole world: the state the model checker explores.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct World {
    pub now: Mono,
    /// promd's watchdog interval (the same on every node).
    pub watchdog: Duration,
    /// [`Config::pid1_load`].
    pub pid1_load: Duration,
    /// See [`Config::prompt`].
    pub prompt: bool,
    pub store: Store,
    pub nodes: Vec<Node>,
    pub faults_left: u8,
    /// The highest term any node started its units with (`PROMD_TERM`).
    pub max_term: u64,
    /// A start carried a term lower than one already started with.
    pub term_went_back: bool,
    /// A node exited (`systemctl stop promd`) with its units still running.
    pub exited_with_units_up: bool,
    /// Role changes to `active`, counted up to 3 (for "sometimes" properties).
    pub activations: u8,
    /// A scenario's wake-up: the clock stops here too (`Sim::run_to`); `None` in the model
    /// check.
    pub alarm: Option<Mono>,
}

/// When [`World::new`] starts every node.
pub const BOOT: Mono = Mono(Duration::from_millis(1000));

impl World {
    /// Every node just started, the store empty, at t = 1 s ([`BOOT`]).
    pub fn new(cfg: &Config) -> World {
        let now = BOOT;
        World {
            now,
            watchdog: cfg.watchdog,
            pid1_load: cfg.pid1_load,
            prompt: cfg.prompt,
            store: Store::default(),
            nodes: (0..cfg.nodes).map(|i| Node::new(cfg, i, now)).collect(),
            faults_left: cfg.faults,
            max_term: 0,
            term_went_back: false,
            exited_with_units_up: false,
            activations: 0,
            alarm: None,
        }
    }

    /// Every node's record is in the store and says it finished starting.
    pub fn all_started(&self) -> bool {
        (0..self.nodes.len()).all(|i| {
            self.store
                .members
                .get(&i)
                .is_some_and(|(m, _)| m.role != Role::Starting)
        })
    }

    /// Nodes whose active units may be running now.
    pub fn units_up(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].units_up)
            .collect()
    }

    /// The node whose machine says `active`, if exactly one does.
    pub fn active(&self) -> Option<usize> {
        let act: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].proc != Proc::Dead && self.role(i) == Role::Active)
            .collect();
        (act.len() == 1).then(|| act[0])
    }

    pub fn role(&self, i: usize) -> Role {
        self.nodes[i].machine.role()
    }

    /// One line: time, roles, units, key.
    pub fn summary(&self) -> String {
        let mut s = format!("t={}ms", self.now.0.as_millis());
        for (i, n) in self.nodes.iter().enumerate() {
            let proc = match n.proc {
                Proc::Running => "",
                Proc::Paused { .. } => " paused",
                Proc::Dead => " dead",
            };
            let _ = write!(
                s,
                " | {}: {}{}{}{}",
                Config::name(i),
                n.machine.role(),
                proc,
                if n.units_up { ", units up" } else { "" },
                if n.online { "" } else { ", offline" },
            );
        }
        match self.store.leader {
            Some(k) => {
                let _ = write!(s, " | key: {} term {}", Config::name(k.node), k.term);
            }
            None => s.push_str(" | key: vacant"),
        }
        s
    }
}

impl Node {
    fn new(cfg: &Config, i: usize, now: Mono) -> Node {
        Node {
            machine: GroupMachine::new(cfg.params(i)),
            proc: Proc::Running,
            online: false,
            cut: false,
            lease: None,
            queue: VecDeque::new(),
            member: None,
            next_renewal: now,
            inbox: VecDeque::new(),
            late: None,
            jobs: Vec::new(),
            unit_events: VecDeque::new(),
            // A node that starts may find units left running by an earlier run: the machine
            // assumes so too. None are, here, which the model is free to assume.
            units_up: false,
            kill_lands: None,
            kill_unsent: false,
        }
    }

    /// A kill of the active target's units is asked at `now` (by promd, or by
    /// `ExecStopPost=promd fence`): with a busy PID 1 ([`Config::pid1_load`]) it lands `load`
    /// later, or at an earlier kill still under way; with none, at once.
    pub(super) fn ask_kill(&mut self, now: Mono, load: Duration) {
        if load.is_zero() {
            self.units_up = false;
        } else if self.units_up {
            let lands = now + load;
            self.kill_lands = Some(self.kill_lands.map_or(lands, |t| t.min(lands)));
        }
    }
}
