//! Running the world without faults: the liveness check of the model, and [`Sim`], the
//! multi-node scenario helper (etcd-io/raft's `network`: cut, isolate, recover, crash).

use std::time::Duration;

use promd::core::{Mono, Refusal, Request, Role};

use super::step::{JobOutcome, Reply, Step};
use super::{Config, Proc, World};

impl World {
    /// The next step of a fair run without faults, among the steps `allowed` lets through (a
    /// scenario holds back what it wants to hang, such as a node's systemd jobs, or dead nodes'
    /// restarts): due deadlines first, then messages, jobs and the store, restarts of dead
    /// nodes (systemd restarts promd), the clock last. Paused nodes stay paused (the watchdog
    /// deals with them).
    pub fn fair_step(&self, cfg: &Config, allowed: impl Fn(&Step) -> bool) -> Option<Step> {
        let mut all = Vec::new();
        self.steps(cfg, &mut all);
        all.retain(|s| allowed(s));
        let rank = |s: &Step| -> Option<u8> {
            Some(match s {
                Step::Expire(_)
                | Step::WatchdogKill(_)
                | Step::KillLands(_)
                | Step::SendKill(_) => 0,
                Step::Tick(_) => 1,
                Step::Deliver(_) | Step::Answer(_) => 2,
                Step::UnitEvent(_) => 3,
                Step::JobDone {
                    outcome: JobOutcome::Ok,
                    ..
                } => 4,
                Step::Connect(_) => 5,
                Step::Apply {
                    reply: Reply::First,
                    ..
                } => 6,
                Step::Renew(_) => 7,
                Step::Restart(_) => 8,
                Step::Advance => 9,
                _ => return None,
            })
        };
        all.into_iter()
            .filter_map(|s| rank(&s).map(|r| (r, s)))
            .min_by_key(|(r, _)| *r)
            .map(|(_, s)| s)
    }

    /// Run fairly until `done` holds or `limit` of simulated time passed; true if `done`.
    pub fn run_until(
        &mut self,
        cfg: &Config,
        limit: Duration,
        restart: bool,
        done: impl Fn(&World) -> bool,
        log: Option<&mut Vec<String>>,
    ) -> bool {
        let allowed = |s: &Step| restart || !matches!(s, Step::Restart(_));
        let _ = self.run_fair(cfg, limit, |w| !done(w), allowed, |_| Ok(()), log);
        done(self)
    }

    /// The fair run both [`World::run_until`] and [`Sim`] use: fair steps among those
    /// `allowed` lets through (dead nodes restart unless it holds `Step::Restart` back),
    /// while `go_on` holds and at most `limit` of simulated time; `check` sees every state
    /// reached, and its error ends the run.
    pub fn run_fair(
        &mut self,
        cfg: &Config,
        limit: Duration,
        go_on: impl Fn(&World) -> bool,
        allowed: impl Fn(&Step) -> bool,
        check: impl Fn(&World) -> Result<(), String>,
        mut log: Option<&mut Vec<String>>,
    ) -> Result<(), String> {
        let end = self.now + limit;
        while go_on(self) && self.now <= end {
            let Some(step) = self.fair_step(cfg, &allowed) else {
                break;
            };
            self.step(cfg, &step, log.as_deref_mut());
            check(self)?;
        }
        Ok(())
    }

    /// Whether the cluster, once healed (paused nodes resumed, dead ones restarted, every
    /// connection allowed, no more faults), gets an active node with its units up within
    /// the failure cooldown plus 20 leases. Vacuously true when no node is healthy after
    /// that (a passive target failed on every node: that needs an operator).
    pub fn recovers(&self, cfg: &Config) -> Result<(), Vec<String>> {
        let mut w = self.clone();
        w.heal();
        let limit = cfg.failure_cooldown + cfg.lease * 20;
        if w.run_until(cfg, limit, true, settled_active, None) {
            return Ok(());
        }
        if !w.nodes.iter().any(|n| n.machine.healthy()) {
            return Ok(());
        }
        let mut w = self.clone();
        let mut log = vec!["-- healed: resumed, restarted, reconnected --".to_string()];
        w.heal();
        w.run_until(cfg, limit, true, settled_active, Some(&mut log));
        log.push(format!("no node active after {limit:?}: {}", w.summary()));
        Err(log)
    }

    fn heal(&mut self) {
        self.faults_left = 0;
        for n in &mut self.nodes {
            n.cut = false;
            if matches!(n.proc, Proc::Paused { .. }) {
                n.proc = Proc::Running;
            }
        }
    }

    /// Safety: at most one node's units may run; the term never goes back; nobody exited
    /// with units up.
    pub fn safe(&self) -> Result<(), String> {
        let up = self.units_up();
        if up.len() > 1 {
            let names: Vec<String> = up.iter().map(|&i| Config::name(i)).collect();
            return Err(format!("units may run on {} at once", names.join(" and ")));
        }
        if self.term_went_back {
            return Err("a start carried a term lower than an earlier start's".into());
        }
        if self.exited_with_units_up {
            return Err("promd exited with its units up".into());
        }
        Ok(())
    }
}

/// One node is active with its units up.
pub fn settled_active(w: &World) -> bool {
    w.active().is_some_and(|i| w.nodes[i].units_up)
}

/// A cluster for scenario tests, stepped fairly; every step is checked for safety, and a
/// failure prints the whole trace.
pub struct Sim {
    pub cfg: Config,
    pub world: World,
    pub log: Vec<String>,
    /// systemd restarts a dead promd (at once, in simulated time).
    pub restart_dead: bool,
    /// Nodes whose systemd jobs do not finish (a stop that drains longer than any lease)
    /// until taken out of here.
    pub held_jobs: Vec<usize>,
}

impl Sim {
    /// `nodes` nodes just started, lease 2 s.
    pub fn new(nodes: usize) -> Sim {
        Sim::with(Config::new(nodes, 0))
    }

    pub fn with(cfg: Config) -> Sim {
        let world = World::new(&cfg);
        Sim {
            cfg,
            world,
            log: Vec::new(),
            restart_dead: true,
            held_jobs: Vec::new(),
        }
    }

    fn fail(&self, why: &str) -> ! {
        panic!("{why}\n{}\n{}", self.log.join("\n"), self.world.summary());
    }

    /// Run for `d` of simulated time, restarting dead nodes.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.world.now + d;
        self.run_while(|w| w.now < end, d + Duration::from_secs(1));
    }

    /// Run until `done`, at most `limit` of simulated time; panics with the trace if it
    /// does not happen.
    pub fn run_until(&mut self, what: &str, limit: Duration, done: impl Fn(&World) -> bool) {
        self.run_while(|w| !done(w), limit);
        if !done(&self.world) {
            self.fail(&format!("not within {limit:?}: {what}"));
        }
    }

    /// Run to `at` of simulated time exactly (the clock otherwise moves only from deadline
    /// to deadline), e.g. to inject a fault at that instant.
    pub fn run_to(&mut self, at: Mono) {
        self.world.alarm = Some(at);
        let limit = at.saturating_sub(self.world.now) + Duration::from_secs(1);
        self.run_while(|w| w.now < at, limit);
        self.world.alarm = None;
    }

    fn run_while(&mut self, go_on: impl Fn(&World) -> bool, limit: Duration) {
        let (held, restart) = (&self.held_jobs, self.restart_dead);
        let run = self.world.run_fair(
            &self.cfg,
            limit,
            go_on,
            |s| match s {
                Step::JobDone { node, .. } => !held.contains(node),
                Step::Restart(_) => restart,
                _ => true,
            },
            World::safe,
            Some(&mut self.log),
        );
        if let Err(why) = run {
            self.fail(&why);
        }
    }

    /// Until one node is active with its units up.
    pub fn settle(&mut self) -> usize {
        let limit = self.cfg.failure_cooldown + self.cfg.lease * 20;
        self.run_until("a node is active", limit, settled_active);
        self.world
            .active()
            .unwrap_or_else(|| self.fail("no active node"))
    }

    /// Partition node `i` from the store: its connection drops and stays down.
    pub fn cut(&mut self, i: usize) {
        self.log
            .push(format!("-- cut {} off the store --", Config::name(i)));
        let n = &mut self.world.nodes[i];
        n.cut = true;
        if n.online {
            self.world
                .step(&self.cfg, &Step::Fault(super::Fault::Drop(i)), None);
        }
    }

    /// End node `i`'s partition.
    pub fn recover(&mut self, i: usize) {
        self.log.push(format!(
            "-- {} can reach the store again --",
            Config::name(i)
        ));
        self.world.nodes[i].cut = false;
    }

    pub fn crash(&mut self, i: usize) {
        self.world.step(
            &self.cfg,
            &Step::Fault(super::Fault::Crash(i)),
            Some(&mut self.log),
        );
    }

    pub fn pause(&mut self, i: usize) {
        self.world.step(
            &self.cfg,
            &Step::Fault(super::Fault::Pause(i)),
            Some(&mut self.log),
        );
    }

    /// Node `i`'s fence load goes from none to not known (its fence begins as early as the
    /// lease allows), or back.
    pub fn toggle_fence_load(&mut self, i: usize) {
        self.world.step(
            &self.cfg,
            &Step::Fault(super::Fault::FenceLoad(i)),
            Some(&mut self.log),
        );
    }

    /// An operator deletes the leader key by hand (`etcdctl del`).
    pub fn del_key(&mut self) {
        self.world.step(
            &self.cfg,
            &Step::Fault(super::Fault::DelKey),
            Some(&mut self.log),
        );
    }

    /// An operator's request to node `i`; a refusal changes nothing.
    pub fn request(&mut self, i: usize, r: Request) -> Result<(), Refusal> {
        let now = self.world.now;
        self.log
            .push(format!("-- operator asks {} to {r:?} --", Config::name(i)));
        self.world.nodes[i].machine.clone().request(r, now)?;
        self.world.step(
            &self.cfg,
            &Step::Fault(super::Fault::Request(i, r)),
            Some(&mut self.log),
        );
        Ok(())
    }

    pub fn role(&self, i: usize) -> Role {
        self.world.role(i)
    }

    /// The term of the leader key in the store.
    pub fn term(&self) -> Option<u64> {
        self.world.store.leader.map(|k| k.term)
    }
}
