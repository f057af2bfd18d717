//! A bounded model check of slots (docs/slots.md): 3 nodes, a group with 2 slots, each node
//! running the real `SlotGroup` (two real `GroupMachine`s and the arbiter between them)
//! around a small model store. Every interleaving to a stated depth (depth-first, states
//! told apart by a 64-bit fingerprint), then random paths much deeper.
//!
//! Properties, checked in every state reached:
//! - **never two nodes in one slot**: at most one node runs a slot's units;
//! - **never one node in two slots**: no node runs the units of two slots, is promoting,
//!   active or demoting in two slots, or holds two slots' keys in the store;
//! - **per-slot terms only grow**: every start of a slot's units carries a term above every
//!   earlier start's in that slot;
//! - and, so that the check is not vacuous, some path has both slots running at once.
//!
//! The exhaustive part starts after a cold boot carried out in one fixed order (both slots
//! filled), and explores every interleaving of what follows: a crash of any node and its
//! restart, grace periods passing, the refill of a slot, each node's store writes, watch
//! events and jobs in any order. The random paths start from the cold boot itself.
//!
//! The world is much smaller than `tests/model_check.rs`'s (its simplifications are the
//! price of staying well under a gigabyte): the store answers in order on one queue per node
//! (watch events and answers in one FIFO), leases never expire but with a crash (which
//! revokes the node's lease at once: its keys and records go, its units are killed), every
//! systemd job succeeds, the clock moves a grace period at a time with every node renewing.
//! Faults: at most one crash (and restart) per path. The single-slot machine's own safety
//! under store faults is `tests/model_check.rs`'s; this checks what slots add.
//!
//! Knobs: `PROMD_SLOTS_DEPTH` (exhaustive depth after the boot, 12), `PROMD_SLOTS_PATHS` (random paths,
//! 3000), `PROMD_SLOTS_PATH_LEN` (160).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use promd::core::{Action, Event, GroupParams, Job, Member, Mono, Role, SlotGroup, Timing};

const NODES: usize = 3;
const SLOTS: usize = 2;
const LEASE: Duration = Duration::from_secs(2);
const MAX_TICKS: u8 = 8;
const MAX_CRASHES: u8 = 1;

fn name(i: usize) -> String {
    ["a", "b", "c"][i].to_string()
}

fn params(i: usize) -> GroupParams {
    GroupParams {
        node: name(i),
        timing: Timing::new(LEASE),
        // Distinct priorities: a is best, so the ranking and its grace periods are exercised.
        priority: 100 - i32::try_from(i).unwrap_or(0),
        preempt: false,
        members: None,
        has_passive_target: false,
        failure_cooldown: Duration::from_secs(600),
        max_restarts: 3,
        restart_window: Duration::from_secs(300),
        restart_backoff: Duration::from_secs(1),
        term_floor: 0,
    }
}

/// A message to a node: for one slot's machine, or for all of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Msg {
    All(Event),
    Slot(usize, Event),
}

/// A write queued for the store (the store-bound [`Action`]s, in a hashable form).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Write {
    Campaign { floor: u64, claim: Member },
    Release { term: u64 },
    Publish(Member),
    Switchover(Option<String>),
}

/// One slot's keys in the model store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct SlotKeys {
    leader: Option<(usize, u64)>,
    counter: u64,
    members: BTreeMap<usize, Member>,
    switchover: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Node {
    g: SlotGroup,
    inbox: VecDeque<Msg>,
    writes: VecDeque<(usize, Write)>,
    jobs: VecDeque<(usize, Job)>,
    units: [bool; SLOTS],
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct World {
    now: Mono,
    nodes: Vec<Node>,
    store: Vec<SlotKeys>,
    /// Per slot, the highest term a start carried.
    started: [u64; SLOTS],
    ticks: u8,
    crashes: u8,
    /// A property failed: what.
    broken: Option<String>,
    /// Both slots' units ran at once somewhere on this path.
    both_ran: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Deliver(usize),
    Write(usize),
    Job(usize),
    Tick,
    Crash(usize),
}

impl World {
    fn new() -> World {
        let store = vec![SlotKeys::default(); SLOTS];
        let nodes = (0..NODES).map(|i| Node::boot(i, &store)).collect();
        World {
            now: Mono::from_millis(10_000),
            nodes,
            store,
            started: [0; SLOTS],
            ticks: 0,
            crashes: 0,
            broken: None,
            both_ran: false,
        }
    }

    /// A cold boot carried out in one fixed order (every message, write and job in turn, the
    /// clock still) until nothing is left to do: where the exhaustive search starts, so that
    /// its depth goes to what follows an election (crashes, refills, grace periods) rather
    /// than to the orders in which three boots can interleave (the random paths cover those).
    fn settled() -> World {
        let mut w = World::new();
        for _ in 0..10_000 {
            let Some(step) = w
                .steps()
                .into_iter()
                .find(|s| !matches!(s, Step::Tick | Step::Crash(_)))
            else {
                break;
            };
            w.step(step);
        }
        if let Some(broken) = &w.broken {
            panic!("the fixed boot: {broken}");
        }
        w
    }

    fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }

    fn steps(&self) -> Vec<Step> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.inbox.is_empty() {
                out.push(Step::Deliver(i));
            }
            if !n.writes.is_empty() {
                out.push(Step::Write(i));
            }
            if !n.jobs.is_empty() {
                out.push(Step::Job(i));
            }
            if self.crashes < MAX_CRASHES {
                out.push(Step::Crash(i));
            }
        }
        if self.ticks < MAX_TICKS {
            out.push(Step::Tick);
        }
        out
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Deliver(i) => {
                let Some(msg) = self.nodes[i].inbox.pop_front() else {
                    return;
                };
                let now = self.now;
                let out = match msg {
                    Msg::All(e) => self.nodes[i].g.broadcast(&e, now),
                    Msg::Slot(k, e) => match self.nodes[i].g.handle(k, e, now) {
                        Ok(out) => out,
                        Err(e) => panic!("{e}"),
                    },
                };
                self.carry(i, out);
            }
            Step::Write(i) => {
                if let Some((k, write)) = self.nodes[i].writes.pop_front() {
                    self.write(i, k, write);
                }
            }
            Step::Job(i) => {
                let Some((k, job)) = self.nodes[i].jobs.pop_front() else {
                    return;
                };
                if job == Job::StopActive {
                    self.nodes[i].units[k] = false;
                }
                self.nodes[i]
                    .inbox
                    .push_back(Msg::Slot(k, Event::Job { job, ok: true }));
            }
            Step::Tick => {
                self.ticks += 1;
                self.now = self.now + Timing::new(LEASE).grace();
                let now = self.now;
                for i in 0..NODES {
                    let mut out = self.nodes[i]
                        .g
                        .broadcast(&Event::Renewed { sent_at: now }, now);
                    out.extend(self.nodes[i].g.broadcast(&Event::Tick, now));
                    self.carry(i, out);
                }
            }
            Step::Crash(i) => {
                self.crashes += 1;
                // ExecStopPost=promd fence kills the units; the lease is revoked with the
                // process (the quickest a lease can go: the side of finding more).
                self.nodes[i].units = [false; SLOTS];
                for k in 0..SLOTS {
                    if self.store[k].leader.is_some_and(|(n, _)| n == i) {
                        self.store[k].leader = None;
                        self.announce_leader(k);
                    }
                    if self.store[k].members.remove(&i).is_some() {
                        self.announce_members(k);
                    }
                }
                self.nodes[i] = Node::boot(i, &self.store);
            }
        }
        self.check();
    }

    /// Carry out node `i`'s actions.
    fn carry(&mut self, i: usize, out: Vec<(usize, Action)>) {
        for (k, action) in out {
            match action {
                Action::Start(Job::StartActive, term) => {
                    let term = term.unwrap_or(0);
                    if term <= self.started[k] {
                        self.broken.get_or_insert(format!(
                            "slot {k}: {} starts at term {term}, not above {}",
                            name(i),
                            self.started[k]
                        ));
                    }
                    self.started[k] = self.started[k].max(term);
                    self.nodes[i].units[k] = true;
                    self.nodes[i].jobs.push_back((k, Job::StartActive));
                }
                Action::Start(Job::StopActive, _) => {
                    // A stop replaces a start still running.
                    self.nodes[i]
                        .jobs
                        .retain(|(s, j)| !(*s == k && *j == Job::StartActive));
                    self.nodes[i].jobs.push_back((k, Job::StopActive));
                }
                Action::Start(job, _) => self.nodes[i].jobs.push_back((k, job)),
                Action::KillActive => self.nodes[i].units[k] = false,
                Action::Campaign { floor, claim } => {
                    self.nodes[i]
                        .writes
                        .push_back((k, Write::Campaign { floor, claim }));
                }
                Action::Release { term } => {
                    self.nodes[i].writes.push_back((k, Write::Release { term }));
                }
                Action::Publish(m) => self.nodes[i].writes.push_back((k, Write::Publish(m))),
                Action::RequestSwitchover { to } => {
                    self.nodes[i]
                        .writes
                        .push_back((k, Write::Switchover(Some(to))));
                }
                Action::ClearSwitchover => {
                    self.nodes[i].writes.push_back((k, Write::Switchover(None)));
                }
                _ => {}
            }
        }
    }

    /// The store carries out node `i`'s write for slot `k`.
    fn write(&mut self, i: usize, k: usize, write: Write) {
        let answer = match write {
            Write::Campaign { floor, claim } => {
                if self.store[k].leader.is_none() {
                    let term = self.store[k].counter.max(floor) + 1;
                    self.store[k].counter = term;
                    self.store[k].leader = Some((i, term));
                    self.store[k].members.insert(
                        i,
                        Member {
                            term: Some(term),
                            ..claim
                        },
                    );
                    self.announce_leader(k);
                    self.announce_members(k);
                    Some(Event::Campaigned(Some(term)))
                } else {
                    Some(Event::Campaigned(None))
                }
            }
            Write::Release { term } => {
                if self.store[k].leader == Some((i, term)) {
                    self.store[k].leader = None;
                    self.announce_leader(k);
                }
                Some(Event::Released)
            }
            Write::Publish(m) => {
                self.store[k].members.insert(i, m);
                self.announce_members(k);
                None
            }
            Write::Switchover(to) => {
                self.store[k].switchover = to;
                self.announce(k, |s| Event::Switchover(s.switchover.clone()));
                None
            }
        };
        if let Some(e) = answer {
            self.nodes[i].inbox.push_back(Msg::Slot(k, e));
        }
    }

    fn announce(&mut self, k: usize, event: impl Fn(&SlotKeys) -> Event) {
        let e = event(&self.store[k]);
        for n in &mut self.nodes {
            n.inbox.push_back(Msg::Slot(k, e.clone()));
        }
    }

    fn announce_leader(&mut self, k: usize) {
        self.announce(k, leader_event);
    }

    fn announce_members(&mut self, k: usize) {
        self.announce(k, members_event);
    }

    fn check(&mut self) {
        for k in 0..SLOTS {
            let running: Vec<usize> = (0..NODES).filter(|&i| self.nodes[i].units[k]).collect();
            if running.len() > 1 {
                self.broken
                    .get_or_insert(format!("slot {k}: units run on nodes {running:?}"));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let running = n.units.iter().filter(|u| **u).count();
            let roles =
                n.g.machines()
                    .iter()
                    .filter(|m| matches!(m.role(), Role::Promoting | Role::Active | Role::Demoting))
                    .count();
            let keys = self
                .store
                .iter()
                .filter(|s| s.leader.is_some_and(|(h, _)| h == i))
                .count();
            if running > 1 || roles > 1 || keys > 1 {
                self.broken.get_or_insert(format!(
                    "{} is in two slots: units {running}, roles {roles}, keys {keys}",
                    name(i)
                ));
            }
        }
        if (0..SLOTS).all(|k| self.nodes.iter().any(|n| n.units[k])) {
            self.both_ran = true;
        }
    }
}

fn leader_event(s: &SlotKeys) -> Event {
    Event::Leader(s.leader.map(|(n, t)| (name(n), t)))
}

fn members_event(s: &SlotKeys) -> Event {
    Event::Members(s.members.values().cloned().collect())
}

impl Node {
    /// A promd that starts: it reads every slot's keys once its store is up.
    fn boot(i: usize, store: &[SlotKeys]) -> Node {
        let g = match SlotGroup::new(vec![params(i); SLOTS]) {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        };
        let mut inbox = VecDeque::from([
            Msg::All(Event::Tick),
            Msg::All(Event::StoreUp),
            Msg::All(Event::Renewed {
                sent_at: Mono::from_millis(10_000),
            }),
        ]);
        for (k, s) in store.iter().enumerate() {
            inbox.push_back(Msg::Slot(k, leader_event(s)));
            inbox.push_back(Msg::Slot(k, members_event(s)));
            inbox.push_back(Msg::Slot(k, Event::Maintenance(false)));
        }
        Node {
            g,
            inbox,
            writes: VecDeque::new(),
            jobs: VecDeque::new(),
            units: [false; SLOTS],
        }
    }
}

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every interleaving to `depth` steps, depth-first; returns the states visited and whether
/// a path ran both slots.
fn exhaustive(from: World, depth: usize) -> (usize, bool) {
    let mut seen: HashSet<u64> = HashSet::new();
    let mut both = false;
    let mut stack: Vec<(World, usize, Vec<Step>)> = vec![(from, 0, Vec::new())];
    while let Some((w, d, path)) = stack.pop() {
        if let Some(broken) = &w.broken {
            panic!("{broken}\npath: {path:?}");
        }
        both |= w.both_ran;
        if d == depth || !seen.insert(w.fingerprint()) {
            continue;
        }
        for step in w.steps() {
            let mut next = w.clone();
            next.step(step);
            let mut p = path.clone();
            p.push(step);
            stack.push((next, d + 1, p));
        }
    }
    (seen.len(), both)
}

#[test]
fn slots_hold_their_invariants_in_every_interleaving_to_a_depth() {
    let depth = knob("PROMD_SLOTS_DEPTH", 12);
    let start = World::settled();
    // The fixed boot fills both slots, each on a node of its own: what follows explores
    // losing and refilling them.
    let holders: Vec<Option<(usize, u64)>> = start.store.iter().map(|s| s.leader).collect();
    assert!(start.both_ran, "the boot filled {holders:?}");
    let (states, _) = exhaustive(start, depth);
    eprintln!("slots model check: {states} states to depth {depth} after a boot");
    assert!(states > 1000, "the check explored only {states} states");
}

#[test]
fn slots_hold_their_invariants_on_long_random_paths() {
    let paths = knob("PROMD_SLOTS_PATHS", 3000);
    let len = knob("PROMD_SLOTS_PATH_LEN", 160);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut both = 0;
    for p in 0..paths {
        let mut w = World::new();
        let mut path = Vec::new();
        for _ in 0..len {
            let steps = w.steps();
            if steps.is_empty() {
                break;
            }
            // xorshift64: deterministic, so a failure replays.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let step = steps[usize::try_from(seed % steps.len() as u64).unwrap_or(0)];
            w.step(step);
            path.push(step);
            if let Some(broken) = &w.broken {
                panic!("path {p}: {broken}\nsteps: {path:?}");
            }
        }
        both += usize::from(w.both_ran);
    }
    eprintln!("slots model check: {both} of {paths} random paths ran both slots at once");
    assert!(
        both > 0,
        "no path ran both slots: the check would be vacuous"
    );
}
