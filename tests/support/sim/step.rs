//! The steps of the world: what may happen next, and what it does.

use std::fmt::Write as _;
use std::time::Duration;

use promd::core::{Action, Event, Job, Member, Mono, Request, Role, Timing};

use super::{
    AFTER_WATCHDOG, Config, FaultKind, JobRun, Key, Node, Op, Proc, UNIT, WATCHDOG_ACCURACY, Work,
    World,
};

/// One thing that happens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// The machine takes the next store event from its queue.
    Deliver(usize),
    /// The machine takes the answer to its last write, held back behind the watch.
    Answer(usize),
    /// The machine handles a deadline that is due.
    Tick(usize),
    /// The machine takes the next unit watch event.
    UnitEvent(usize),
    /// The `index`th job in flight finishes.
    JobDone {
        node: usize,
        index: usize,
        outcome: JobOutcome,
    },
    /// The store task reaches the store (a new session; the lease kept if it lives).
    Connect(usize),
    /// The store carries out the node's next queued write.
    Apply { node: usize, reply: Reply },
    /// The store task renews its lease.
    Renew(usize),
    /// A lease runs out.
    Expire(u64),
    /// A paused promd is killed by the watchdog; `ExecStopPost=` kills its units.
    WatchdogKill(usize),
    /// PID 1 has carried out a kill it was asked for [`Config::pid1_load`] ago.
    KillLands(usize),
    /// The node's promd sends the kill it asked for ([`Node::kill_unsent`]): PID 1 has it.
    SendKill(usize),
    /// A paused promd goes on.
    Resume(usize),
    /// systemd starts promd again.
    Restart(usize),
    /// The clock moves to the next deadline.
    Advance,
    /// Something goes wrong (spends one of the path's faults).
    Fault(Fault),
}

/// How a job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobOutcome {
    Ok,
    Failed,
    /// A start of the active target that left the watched unit down.
    Incomplete,
}

/// How the answer to a write travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reply {
    /// The answer before the watch event of the change.
    First,
    /// The watch event first, and the answer whenever [`Step::Answer`] brings it: after any
    /// number of later watch events (etcd sends the answer and the watch on separate streams),
    /// but before the down or lease-lost edge (the store task reports both, in order).
    AfterWatch,
}

/// A fault.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Fault {
    Drop(usize),
    /// The connection drops with the next write in flight: carried out by the store but
    /// its answer lost (`applied`), or lost on the way.
    LoseWrite {
        node: usize,
        applied: bool,
    },
    Crash(usize),
    Pause(usize),
    Terminate(usize),
    /// A watched unit fails.
    UnitFails(usize),
    Request(usize, Request),
    /// `etcdctl del` of the leader key.
    DelKey,
    /// A reload changes the node's priority (up or down by 100) and turns `preempt` on, in
    /// place.
    Retune(usize),
    /// The node's fence load goes from none to not known (the most the lease allows), or
    /// back.
    FenceLoad(usize),
}

impl World {
    /// What must happen before the clock may move: a running promd's due timers, a watchdog
    /// kill, a lease expiry; and when the world is `prompt`, a running promd's queued store
    /// events, queued writes and due renewal (the loop and the store task take
    /// milliseconds; a store that does not answer is a `Drop` fault).
    pub fn forced_due(&self) -> bool {
        self.nodes.iter().any(|n| match n.proc {
            Proc::Running => {
                n.machine.next_deadline().is_some_and(|t| t <= self.now)
                    || (self.prompt
                        && (!n.inbox.is_empty()
                            || n.late.is_some()
                            || (n.online && (!n.queue.is_empty() || n.next_renewal <= self.now))))
            }
            Proc::Paused { killed_at } => killed_at <= self.now,
            Proc::Dead => false,
        }) || self.store.leases.values().any(|t| *t <= self.now)
            || self
                .nodes
                .iter()
                .any(|n| n.kill_lands.is_some_and(|t| t <= self.now))
    }

    /// When the watchdog's kill of node `i`'s promd, pausing now, has taken effect (its units
    /// dead too): the worst case is a ping just before the pause, which armed the watchdog
    /// `W` ahead, or to the machine's hang deadline if that is nearer (as the agent's ping
    /// does, `Timing::watchdog_within`); systemd fires it up to `WATCHDOG_ACCURACY` late, and
    /// `AFTER_WATCHDOG` later the units are dead.
    fn watchdog_kill_at(&self, i: usize) -> Mono {
        let hang = self.nodes[i].machine.hang_deadline();
        let within = Timing::watchdog_within(self.watchdog, hang, self.now);
        self.now + within.unwrap_or(self.watchdog) + WATCHDOG_ACCURACY + AFTER_WATCHDOG
    }

    /// The next time the clock may move to, if any.
    fn next_time(&self) -> Option<Mono> {
        let mut at: Vec<Mono> = Vec::new();
        for n in &self.nodes {
            match n.proc {
                Proc::Running => {
                    at.extend(n.machine.next_deadline());
                    if n.online {
                        at.push(n.next_renewal);
                    }
                }
                Proc::Paused { killed_at } => at.push(killed_at),
                Proc::Dead => {}
            }
        }
        at.extend(self.store.leases.values().copied());
        at.extend(self.nodes.iter().filter_map(|n| n.kill_lands));
        at.extend(self.alarm);
        at.into_iter().filter(|t| *t > self.now).min()
    }

    /// Every step that may happen now.
    pub fn steps(&self, cfg: &Config, out: &mut Vec<Step>) {
        let now = self.now;
        for (i, n) in self.nodes.iter().enumerate() {
            if n.kill_lands.is_some_and(|t| t <= now) {
                out.push(Step::KillLands(i));
            }
            match n.proc {
                Proc::Dead => {
                    out.push(Step::Restart(i));
                    continue;
                }
                Proc::Paused { killed_at } => {
                    if killed_at <= now {
                        out.push(Step::WatchdogKill(i));
                    } else {
                        out.push(Step::Resume(i));
                    }
                    continue;
                }
                Proc::Running => {}
            }
            if !n.inbox.is_empty() {
                out.push(Step::Deliver(i));
            }
            if n.late.is_some() {
                out.push(Step::Answer(i));
            }
            if n.machine.next_deadline().is_some_and(|t| t <= now) {
                out.push(Step::Tick(i));
            }
            if !n.unit_events.is_empty() {
                out.push(Step::UnitEvent(i));
            }
            for (index, run) in n.jobs.iter().enumerate() {
                out.push(Step::JobDone {
                    node: i,
                    index,
                    outcome: JobOutcome::Ok,
                });
                let Work::Core(job) = run.job else { continue };
                if self.faults_left == 0 || run.superseded {
                    continue;
                }
                let failing = match job {
                    Job::StopActive => cfg.allows(FaultKind::StopFails),
                    Job::StartActive => cfg.allows(FaultKind::StartFails),
                    Job::StartPassive => cfg.allows(FaultKind::PassiveFails),
                };
                if failing {
                    out.push(Step::JobDone {
                        node: i,
                        index,
                        outcome: JobOutcome::Failed,
                    });
                }
                if job == Job::StartActive && cfg.allows(FaultKind::StartFails) {
                    out.push(Step::JobDone {
                        node: i,
                        index,
                        outcome: JobOutcome::Incomplete,
                    });
                }
            }
            if !n.online && !n.cut {
                out.push(Step::Connect(i));
            }
            if n.online {
                // The task writes one thing at a time: the next once the answer is in.
                if let Some(op) = n.queue.front().filter(|_| n.late.is_none()) {
                    out.push(Step::Apply {
                        node: i,
                        reply: Reply::First,
                    });
                    if matches!(op, Op::Campaign(_) | Op::Release { .. }) {
                        out.push(Step::Apply {
                            node: i,
                            reply: Reply::AfterWatch,
                        });
                    }
                }
                if n.next_renewal <= now {
                    out.push(Step::Renew(i));
                }
            }
            if self.faults_left > 0 {
                self.faults_of(cfg, i, out);
            }
        }
        if self.faults_left > 0 && self.store.leader.is_some() && cfg.allows(FaultKind::DelKey) {
            out.push(Step::Fault(Fault::DelKey));
        }
        for (&lease, &at) in &self.store.leases {
            if at <= now {
                out.push(Step::Expire(lease));
            }
        }
        if !self.forced_due() && self.next_time().is_some_and(|t| self.may_reach(cfg, t)) {
            out.push(Step::Advance);
        }
        // A kill's calls on their way to PID 1 wait for no one's decision: they are sent next,
        // unless the promd holding them hangs or crashes first (the window the hang deadline
        // guards). Letting every other step of the same instant go first adds states, not
        // behaviours (the exhaustive checks ran out of memory), and no worse than before,
        // when the kill landed with its ask.
        let unsent = (self.nodes.iter()).position(|n| n.kill_unsent && n.proc == Proc::Running);
        if let Some(node) = unsent {
            out.retain(|s| match s {
                Step::Fault(Fault::Pause(n) | Fault::Crash(n)) => *n == node,
                _ => false,
            });
            out.push(Step::SendKill(node));
        }
    }

    /// Whether the clock may move to `t`: not past [`Config::start_within`] of the boot while
    /// a start-up is unfinished on a path without a fault.
    fn may_reach(&self, cfg: &Config, t: Mono) -> bool {
        let Some(within) = cfg.start_within else {
            return true;
        };
        self.faults_left < cfg.faults || t <= super::BOOT + within || self.all_started()
    }

    fn faults_of(&self, cfg: &Config, i: usize, out: &mut Vec<Step>) {
        let n = &self.nodes[i];
        let role = n.machine.role();
        let mut add = |kind: FaultKind, f: Fault| {
            if cfg.allows(kind) {
                out.push(Step::Fault(f));
            }
        };
        if n.online {
            add(FaultKind::Drop, Fault::Drop(i));
            if !n.queue.is_empty() {
                for applied in [true, false] {
                    add(FaultKind::LoseWrite, Fault::LoseWrite { node: i, applied });
                }
            }
        }
        add(FaultKind::Crash, Fault::Crash(i));
        add(FaultKind::Pause, Fault::Pause(i));
        add(FaultKind::Terminate, Fault::Terminate(i));
        if role == Role::Active {
            add(FaultKind::UnitFails, Fault::UnitFails(i));
            add(FaultKind::Request, Fault::Request(i, Request::Demote));
        }
        if role == Role::Passive {
            add(FaultKind::Request, Fault::Request(i, Request::Promote));
        }
        add(FaultKind::Retune, Fault::Retune(i));
        add(FaultKind::FenceLoad, Fault::FenceLoad(i));
    }

    /// Carry out one step; `log` (if given) gets a line per thing that happened.
    pub fn step(&mut self, cfg: &Config, step: &Step, mut log: Option<&mut Vec<String>>) {
        if let Some(log) = log.as_deref_mut() {
            log.push(format!("{}: {}", self.now_ms(), describe(self, step)));
        }
        match *step {
            Step::Deliver(i) => {
                while let Some(ev) = self.nodes[i].inbox.pop_front() {
                    if let Some(log) = log.as_deref_mut() {
                        log.push(format!(
                            "           {} takes {}",
                            Config::name(i),
                            event_text(&ev)
                        ));
                    }
                    self.feed(i, ev, log.as_deref_mut());
                    if self.nodes[i].proc == Proc::Dead {
                        break;
                    }
                }
            }
            Step::Answer(i) => {
                if let Some(ev) = self.nodes[i].late.take() {
                    if let Some(log) = log.as_deref_mut() {
                        log.push(format!(
                            "           {} takes {}",
                            Config::name(i),
                            event_text(&ev)
                        ));
                    }
                    self.feed(i, ev, log);
                }
            }
            Step::Tick(i) => self.feed(i, Event::Tick, log),
            Step::UnitEvent(i) => {
                if let Some(ev) = self.nodes[i].unit_events.pop_front() {
                    self.feed(i, ev, log);
                }
            }
            Step::JobDone {
                node,
                index,
                outcome,
            } => self.job_done(node, index, outcome, log),
            Step::Connect(i) => self.connect(cfg, i),
            Step::Apply { node, reply } => self.apply(node, Some(reply)),
            Step::Renew(i) => self.renew(cfg, i),
            Step::Expire(lease) => self.expire(lease),
            Step::WatchdogKill(i) => self.kill_process(i),
            Step::KillLands(i) => {
                let n = &mut self.nodes[i];
                n.units_up = false;
                n.kill_lands = None;
            }
            Step::SendKill(i) => {
                let n = &mut self.nodes[i];
                n.kill_unsent = false;
                n.ask_kill(self.now, self.pid1_load);
                self.feed(i, Event::KillSent, log);
            }
            Step::Resume(i) => self.nodes[i].proc = Proc::Running,
            Step::Restart(i) => {
                // PID 1's state outlives promd: units still up under a kill it carries out.
                let old = &self.nodes[i];
                let (up, lands) = (old.units_up && old.kill_lands.is_some(), old.kill_lands);
                let mut fresh = Node::new(cfg, i, self.now);
                fresh.units_up = up;
                fresh.kill_lands = lands;
                self.nodes[i] = fresh;
            }
            Step::Advance => {
                if let Some(t) = self.next_time() {
                    self.now = t;
                }
            }
            Step::Fault(ref f) => {
                self.faults_left = self.faults_left.saturating_sub(1);
                self.fault(f, log);
            }
        }
    }

    fn now_ms(&self) -> String {
        format!("t={:>6}ms", self.now.0.as_millis())
    }

    fn fault(&mut self, f: &Fault, log: Option<&mut Vec<String>>) {
        match *f {
            Fault::Drop(i) => self.went_down(i),
            Fault::LoseWrite {
                node,
                applied: true,
            } => self.apply(node, None),
            Fault::LoseWrite {
                node,
                applied: false,
            } => {
                if let Some(op) = self.nodes[node].queue.pop_front() {
                    self.requeue(node, op);
                }
                self.went_down(node);
            }
            Fault::Crash(i) => self.kill_process(i),
            Fault::Pause(i) => {
                self.nodes[i].proc = Proc::Paused {
                    killed_at: self.watchdog_kill_at(i),
                };
            }
            Fault::Terminate(i) => self.feed(i, Event::Terminate, log),
            Fault::UnitFails(i) => self.feed(
                i,
                Event::UnitFailed {
                    unit: UNIT.into(),
                    restarted: false,
                },
                log,
            ),
            Fault::DelKey => {
                if self.store.leader.take().is_some() {
                    self.store.revision += 1;
                    self.broadcast(Some(Changed::Leader), None);
                }
            }
            Fault::Retune(i) => {
                let mut t = self.nodes[i].machine.tunables();
                t.priority = if t.priority >= 100 {
                    t.priority - 100
                } else {
                    t.priority + 100
                };
                t.preempt = true;
                self.feed(i, Event::Retune(t), log);
            }
            Fault::FenceLoad(i) => {
                // Known (PID 1's real load) or not known yet (the most a lease allows).
                let load = if self.nodes[i].machine.timing().fence_load == self.pid1_load {
                    Duration::MAX
                } else {
                    self.pid1_load
                };
                self.feed(i, Event::FenceLoad(load), log);
            }
            Fault::Request(i, req) => {
                let now = self.now;
                if let Ok(actions) = self.nodes[i].machine.request(req, now) {
                    self.carry_out(i, actions, log);
                }
            }
        }
    }

    /// Hand the machine one event and carry out what it asks for.
    fn feed(&mut self, i: usize, ev: Event, log: Option<&mut Vec<String>>) {
        let now = self.now;
        let actions = self.nodes[i].machine.handle(ev, now);
        self.carry_out(i, actions, log);
    }

    fn carry_out(&mut self, i: usize, actions: Vec<Action>, mut log: Option<&mut Vec<String>>) {
        for a in actions {
            if let Some(log) = log.as_deref_mut()
                && !matches!(a, Action::Publish(_))
            {
                log.push(format!(
                    "           {} -> {}",
                    Config::name(i),
                    action_text(&a)
                ));
            }
            self.carry_out_one(i, a);
        }
    }

    fn carry_out_one(&mut self, i: usize, a: Action) {
        let n = &mut self.nodes[i];
        // What the runtime aborts before the action runs, by the core's own rule.
        let cancels = a.cancels();
        if cancels.start {
            for run in &mut n.jobs {
                if run.job == Work::Core(Job::StartActive) {
                    run.superseded = true;
                }
            }
        }
        if cancels.restarts {
            n.jobs.retain(|r| r.job != Work::Restart);
        }
        if cancels.kills {
            n.kill_unsent = false;
        }
        match a {
            Action::Start(job, term) => {
                if job == Job::StartActive {
                    n.units_up = true;
                    // PID 1 runs the kill before this start, which brings the units back.
                    n.kill_lands = None;
                    n.unit_events
                        .push_back(Event::UnitStarted { unit: UNIT.into() });
                    let term = term.unwrap_or(0);
                    if term < self.max_term {
                        self.term_went_back = true;
                    }
                    self.max_term = self.max_term.max(term);
                }
                n.jobs.push(JobRun {
                    job: Work::Core(job),
                    superseded: false,
                });
            }
            Action::RestartUnit(_) => n.jobs.push(JobRun {
                job: Work::Restart,
                superseded: false,
            }),
            // Where no hang deadline rides on it (start-up's sweep, a host without the key),
            // the kill lands with its ask, as it did before the model held kills: the window
            // cannot matter there, and three booting nodes' sweeps pushed the first election
            // past the boot check's depth.
            Action::KillActive if n.machine.hang_deadline().is_none() => {
                n.ask_kill(self.now, self.pid1_load);
            }
            Action::KillActive => n.kill_unsent = true,
            // The model's store never loses its history: every floor is below its revision.
            Action::Campaign { claim, .. } => {
                if n.online {
                    n.queue.push_back(Op::Campaign(claim));
                } else {
                    n.inbox.push_back(Event::Campaigned(None));
                }
            }
            Action::Release { term } => n.queue.push_back(Op::Release { term }),
            Action::Publish(m) => {
                // Only the newest record matters, online or not (`OpQueue::push` in
                // `src/store/queue.rs`): a session writes it when it begins, and an older
                // one still queued would overwrite it after a reconnection. (Before the
                // store's one contract, the etcd task kept such a stale `Publish` when the
                // newer one came while it was offline: a record saying `demoting` stayed in
                // the store, and no standby would campaign again. This check found it.)
                // A newer record takes the older one's place, so a record asked for before a
                // campaign lands before it (the model check found a key deleted by hand whose
                // holder had won before any record of it was written).
                n.member = Some(m.clone());
                if let Some(slot) = n.queue.iter_mut().find(|op| matches!(op, Op::Publish(_))) {
                    *slot = Op::Publish(m);
                } else if n.online {
                    n.queue.push_back(Op::Publish(m));
                }
            }
            Action::RequestSwitchover { to } => n.queue.push_back(Op::PutSwitchover(to)),
            Action::ClearSwitchover => n.queue.push_back(Op::ClearSwitchover),
            Action::RoleChanged { new, .. } => {
                if new == Role::Active {
                    self.activations = (self.activations + 1).min(3);
                }
            }
            Action::Note(_) => {}
            Action::Exit => {
                if n.units_up {
                    self.exited_with_units_up = true;
                }
                self.shutdown(i);
            }
        }
    }

    fn job_done(
        &mut self,
        i: usize,
        index: usize,
        outcome: JobOutcome,
        log: Option<&mut Vec<String>>,
    ) {
        let n = &mut self.nodes[i];
        if index >= n.jobs.len() {
            return;
        }
        let run = n.jobs.remove(index);
        let job = match run.job {
            Work::Core(job) => job,
            Work::Restart => {
                n.units_up = true;
                n.unit_events
                    .push_back(Event::UnitStarted { unit: UNIT.into() });
                return;
            }
        };
        let ev = match (job, outcome) {
            (Job::StopActive, JobOutcome::Ok) => {
                n.units_up = false;
                // The starts it replaced were aborted with their tasks: no answer comes.
                n.jobs.retain(|r| !r.superseded);
                Event::Job { job, ok: true }
            }
            (Job::StartActive, JobOutcome::Incomplete) => Event::StartIncomplete {
                units: vec![UNIT.into()],
            },
            (job, outcome) => Event::Job {
                job,
                ok: outcome == JobOutcome::Ok,
            },
        };
        if outcome != JobOutcome::Ok {
            self.faults_left = self.faults_left.saturating_sub(1);
        }
        self.feed(i, ev, log);
    }

    /// A session: keep the lease if it lives (else a new one, and the task answers what the
    /// old one took along), write the member record again, then Up, Renewed and the whole
    /// view, in the order `StoreEvent` documents.
    fn connect(&mut self, cfg: &Config, i: usize) {
        let now = self.now;
        let alive = self.nodes[i]
            .lease
            .filter(|l| self.store.leases.contains_key(l));
        if self.nodes[i].lease.is_some() && alive.is_none() {
            self.lease_lost(i);
        }
        let lease = match alive {
            Some(l) => l,
            None => {
                self.store.next_lease += 1;
                self.store.next_lease
            }
        };
        self.store.leases.insert(lease, now + cfg.lease);
        let n = &mut self.nodes[i];
        n.lease = Some(lease);
        n.online = true;
        n.next_renewal = now + cfg.lease / 3;
        if let Some(m) = n.member.clone() {
            self.store.members.insert(i, (m, lease));
            self.broadcast_members(Some(i));
        }
        let leader = self.leader_view();
        let members = self.members_view();
        let switchover = self.store.switchover.clone();
        let n = &mut self.nodes[i];
        n.inbox.push_back(Event::StoreUp);
        n.inbox.push_back(Event::Renewed { sent_at: now });
        n.inbox.push_back(Event::Leader(leader));
        n.inbox.push_back(Event::Members(members));
        n.inbox.push_back(Event::Switchover(switchover));
        n.inbox.push_back(Event::Maintenance(false));
    }

    /// The connection dropped: `Down`, and a queued campaign cannot win.
    fn went_down(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.online = false;
        n.inbox.extend(n.late.take());
        n.inbox.push_back(Event::StoreDown);
        let before = n.queue.len();
        n.queue.retain(|op| !matches!(op, Op::Campaign(_)));
        for _ in n.queue.len()..before {
            n.inbox.push_back(Event::Campaigned(None));
        }
    }

    /// The task learns its lease is gone: so is every key bound to it.
    fn lease_lost(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.lease = None;
        n.inbox.extend(n.late.take());
        n.inbox.push_back(Event::LeaseLost);
        let mut kept = std::collections::VecDeque::new();
        for op in std::mem::take(&mut n.queue) {
            match op {
                Op::Campaign(_) => n.inbox.push_back(Event::Campaigned(None)),
                Op::Release { .. } => n.inbox.push_back(Event::Released),
                other => kept.push_back(other),
            }
        }
        n.queue = kept;
    }

    /// The next write reaches the store. `reply: None`: the connection drops before the
    /// answer comes back (the task queues the write again, as `online()` does).
    fn apply(&mut self, i: usize, reply: Option<Reply>) {
        let Some(op) = self.nodes[i].queue.pop_front() else {
            return;
        };
        let lease = self.nodes[i].lease;
        let Some(lease) = lease.filter(|l| self.store.leases.contains_key(l)) else {
            // etcd refuses a write under a dead lease: nothing changed.
            self.requeue(i, op);
            self.nodes[i].online = false;
            self.lease_lost(i);
            return;
        };
        let mut answer = None;
        let mut changed = None;
        match &op {
            Op::Campaign(claim) => {
                if self.store.leader.is_none() {
                    self.store.revision += 1;
                    let term = self.store.revision;
                    self.store.leader = Some(Key {
                        node: i,
                        term,
                        lease,
                    });
                    // The claim in the same transaction (`campaign` in
                    // `src/store/etcd/ops.rs`); the record of the next session, unless a
                    // newer one waits (`OpQueue::claimed`).
                    let claim = Member {
                        term: Some(term),
                        ..claim.clone()
                    };
                    self.store.members.insert(i, (claim.clone(), lease));
                    let n = &mut self.nodes[i];
                    if !n.queue.iter().any(|op| matches!(op, Op::Publish(_))) {
                        n.member = Some(claim);
                    }
                    answer = Some(Event::Campaigned(Some(term)));
                    changed = Some(Changed::LeaderAndMembers);
                } else {
                    answer = Some(Event::Campaigned(None));
                }
            }
            Op::Release { term } => {
                if self
                    .store
                    .leader
                    .is_some_and(|k| k.node == i && k.term == *term)
                {
                    self.store.leader = None;
                    self.store.revision += 1;
                    changed = Some(Changed::Leader);
                }
                answer = Some(Event::Released);
            }
            Op::Publish(m) => {
                self.store.members.insert(i, (m.clone(), lease));
                changed = Some(Changed::Members);
            }
            Op::PutSwitchover(to) => {
                self.store.switchover = Some(to.clone());
                changed = Some(Changed::Switchover);
            }
            Op::ClearSwitchover => {
                self.store.switchover = None;
                changed = Some(Changed::Switchover);
            }
        }
        match reply {
            None => {
                self.broadcast(changed, Some(i));
                self.requeue(i, op);
                self.went_down(i);
            }
            Some(Reply::First) => {
                self.nodes[i].inbox.extend(answer);
                self.broadcast(changed, None);
            }
            Some(Reply::AfterWatch) => {
                self.broadcast(changed, None);
                self.nodes[i].late = answer;
            }
        }
    }

    /// A write whose answer was lost is done again after the reconnection, but for a member
    /// record, which the next session writes from the newest one anyway (`requeue` in
    /// `src/store/etcd/ops.rs`).
    fn requeue(&mut self, i: usize, op: Op) {
        if !matches!(op, Op::Publish(_)) {
            self.nodes[i].queue.push_front(op);
        }
    }

    fn renew(&mut self, cfg: &Config, i: usize) {
        let now = self.now;
        let lease = self.nodes[i].lease;
        match lease.filter(|l| self.store.leases.contains_key(l)) {
            Some(l) => {
                self.store.leases.insert(l, now + cfg.lease);
                let n = &mut self.nodes[i];
                n.inbox.push_back(Event::Renewed { sent_at: now });
                n.next_renewal = now + cfg.lease / 3;
            }
            None => {
                // A keepalive answered with TTL 0: the task reconnects with a new lease.
                self.nodes[i].online = false;
                self.lease_lost(i);
            }
        }
    }

    fn expire(&mut self, lease: u64) {
        self.store.leases.remove(&lease);
        if self.store.leader.is_some_and(|k| k.lease == lease) {
            self.store.leader = None;
            self.store.revision += 1;
            self.broadcast(Some(Changed::Leader), None);
        }
        let before = self.store.members.len();
        self.store.members.retain(|_, (_, l)| *l != lease);
        if self.store.members.len() != before {
            self.broadcast(Some(Changed::Members), None);
        }
    }

    /// promd dies (crash, watchdog): `ExecStopPost=promd fence` kills its units; its lease
    /// lives on until it expires.
    fn kill_process(&mut self, i: usize) {
        self.nodes[i].ask_kill(self.now, self.pid1_load);
        self.end_process(i);
    }

    /// The process is gone, and with it its store session, its queues and the answers its
    /// tasks owed; its units are as they are (killed or stopped by the caller's rule).
    fn end_process(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.proc = Proc::Dead;
        n.online = false;
        n.inbox.clear();
        n.late = None;
        n.unit_events.clear();
        n.jobs.clear();
        n.queue.clear();
        n.kill_unsent = false;
    }

    /// promd exits after `Terminate`: the task deletes its member record and revokes its
    /// lease if it can reach the store.
    fn shutdown(&mut self, i: usize) {
        if self.nodes[i].online
            && let Some(lease) = self.nodes[i].lease
        {
            if self.store.members.get(&i).is_some_and(|(_, l)| *l == lease) {
                self.store.members.remove(&i);
                self.broadcast(Some(Changed::Members), Some(i));
            }
            self.expire(lease);
        }
        self.end_process(i);
    }

    fn broadcast(&mut self, changed: Option<Changed>, except: Option<usize>) {
        match changed {
            Some(Changed::Leader) => {
                let v = self.leader_view();
                self.send_all(Event::Leader(v), except);
            }
            Some(Changed::Members) => self.broadcast_members(except),
            // One revision: the watch delivers both, in the view's order.
            Some(Changed::LeaderAndMembers) => {
                let v = self.leader_view();
                self.send_all(Event::Leader(v), except);
                self.broadcast_members(except);
            }
            Some(Changed::Switchover) => {
                let v = self.store.switchover.clone();
                self.send_all(Event::Switchover(v), except);
            }
            None => {}
        }
    }

    fn broadcast_members(&mut self, except: Option<usize>) {
        let v = self.members_view();
        self.send_all(Event::Members(v), except);
    }

    fn send_all(&mut self, ev: Event, except: Option<usize>) {
        for (j, n) in self.nodes.iter_mut().enumerate() {
            if n.online && n.proc != Proc::Dead && Some(j) != except {
                n.inbox.push_back(ev.clone());
            }
        }
    }

    fn leader_view(&self) -> Option<(String, u64)> {
        self.store.leader.map(|k| (Config::name(k.node), k.term))
    }

    fn members_view(&self) -> Vec<Member> {
        self.store
            .members
            .values()
            .map(|(m, _)| m.clone())
            .collect()
    }
}

/// What a store change tells the watchers.
#[derive(Debug, Clone, Copy)]
enum Changed {
    Leader,
    Members,
    LeaderAndMembers,
    Switchover,
}

fn describe(w: &World, step: &Step) -> String {
    let name = Config::name;
    match step {
        Step::Deliver(i) => format!("{} takes its queued store events", name(*i)),
        Step::Answer(i) => format!("{} takes the answer to its write", name(*i)),
        Step::Tick(i) => format!("{} handles a deadline", name(*i)),
        Step::UnitEvent(i) => match w.nodes[*i].unit_events.front() {
            Some(ev) => format!("{} takes {}", name(*i), event_text(ev)),
            None => format!("{} takes nothing", name(*i)),
        },
        Step::JobDone {
            node,
            index,
            outcome,
        } => {
            let run = w.nodes[*node].jobs.get(*index);
            format!(
                "{}: job {:?}{} ends {:?}",
                name(*node),
                run.map(|r| r.job),
                if run.is_some_and(|r| r.superseded) {
                    " (superseded)"
                } else {
                    ""
                },
                outcome
            )
        }
        Step::Connect(i) => format!("{} connects to the store", name(*i)),
        Step::Apply { node, reply } => format!(
            "store carries out {}'s {:?} (answer {:?})",
            name(*node),
            w.nodes[*node].queue.front(),
            reply
        ),
        Step::Renew(i) => format!("{} renews its lease", name(*i)),
        Step::Expire(l) => format!("lease {l} expires"),
        Step::WatchdogKill(i) => format!("the watchdog kills {}'s promd (units killed)", name(*i)),
        Step::KillLands(i) => format!("PID 1 has killed {}'s units", name(*i)),
        Step::SendKill(i) => format!("{}'s promd sends its kill to PID 1", name(*i)),
        Step::Resume(i) => format!("{}'s promd resumes", name(*i)),
        Step::Restart(i) => format!("systemd starts {}'s promd again", name(*i)),
        Step::Advance => "the clock moves on".to_string(),
        Step::Fault(f) => match f {
            Fault::Drop(i) => format!("FAULT: {}'s store connection drops", name(*i)),
            Fault::LoseWrite { node, applied } => format!(
                "FAULT: {}'s connection drops with its {:?} in flight ({})",
                name(*node),
                w.nodes[*node].queue.front(),
                if *applied {
                    "carried out, the answer lost"
                } else {
                    "lost on the way"
                }
            ),
            Fault::Crash(i) => format!("FAULT: {}'s promd crashes (units killed)", name(*i)),
            Fault::Pause(i) => format!("FAULT: {}'s promd pauses", name(*i)),
            Fault::Terminate(i) => format!("FAULT: systemctl stop promd on {}", name(*i)),
            Fault::UnitFails(i) => format!("FAULT: {UNIT} fails on {}", name(*i)),
            Fault::Request(i, r) => format!("FAULT: operator asks {} to {:?}", name(*i), r),
            Fault::DelKey => "FAULT: operator deletes the leader key (etcdctl del)".to_string(),
            Fault::Retune(i) => format!(
                "FAULT: a reload changes {}'s priority in place (preempt on)",
                name(*i)
            ),
            Fault::FenceLoad(i) => format!(
                "FAULT: {}'s fence load changes (none <-> the most the lease allows)",
                name(*i)
            ),
        },
    }
}

fn event_text(ev: &Event) -> String {
    match ev {
        Event::Members(ms) => {
            let mut s = String::from("Members[");
            for m in ms {
                let _ = write!(
                    s,
                    " {}:{}{}",
                    m.node,
                    m.role,
                    if m.eligible { "" } else { "(ineligible)" }
                );
            }
            s.push_str(" ]");
            s
        }
        other => format!("{other:?}"),
    }
}

fn action_text(a: &Action) -> String {
    match a {
        Action::RoleChanged {
            old,
            new,
            term,
            reason,
        } => format!("ROLE {old} -> {new} (term {term}): {reason}"),
        other => format!("{other:?}"),
    }
}
