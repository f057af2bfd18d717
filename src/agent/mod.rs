//! The agent: every decision promd makes above the group machines, as pure code.
//!
//! [`Agent::handle`] takes one [`Input`] — a driver event tagged with its group's
//! [`GroupId`], a D-Bus call, a signal, a deadline — and the time, and returns the
//! [`Output`]s for the runtime to carry out, in order: store commands, systemd work, D-Bus
//! replies and signals, journal records, sd_notify. Like [`crate::core`] it reads no clock,
//! touches no file or socket and spawns nothing, so its tests drive it with a fake clock and
//! assert what an operator sees.
//!
//! What it decides: the group table; driver events as machine events and machine actions as
//! driver work, with what the journal says of each (events.rs, group.rs), including the
//! refusal to run beside another host's promd under the same `node`; the reload diff
//! (reload.rs); when D-Bus calls settle and with which error (calls.rs); `STATUS=` and the
//! D-Bus views (status.rs); the watchdog's fit to the leases and its gating on the store
//! tasks' progress; when promd may exit.

mod calls;
mod deadlines;
mod events;
mod fence_load;
mod group;
mod output;
mod reload;
mod slots;
mod status;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use calls::{Call, CallError, call_timeout};
pub use output::{EnvFile, Fields, JobOrder, Level, Notify, Output, Record, SlotLine};
#[cfg(test)]
pub(crate) use status::member_view;
pub use status::{GroupView, MemberView, STATUS_MAX, SlotState, WHY_DOWN};

use crate::config::{Config, GroupConfig};
use crate::core::{Event, GroupMachine, GroupParams, Job, Mono, Timing};
use crate::health::HealthResult;
use crate::metrics::Metrics;
use crate::store::{HostId, StoreEvent};
use crate::systemd::Closure;
use crate::watch::WatchEvent;
use calls::Pending;
use group::Group;

/// A group's identity while promd runs: given when the group opens (at start-up, or when a
/// reload adds or changes it) and never reused, so the late event of a group that a reload
/// replaced cannot reach its successor. Driver events and D-Bus objects carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u64);

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A D-Bus call waiting for its answer; the runtime numbers them and keeps the reply handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// The time an input is handled at: the monotonic clock for every decision, the wall clock
/// only to stamp role changes (D-Bus `Since`, CLOCK_REALTIME µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Time since [`Settings::origin`] on the monotonic clock.
    pub mono: Mono,
    /// CLOCK_REALTIME in µs since the epoch.
    pub wall_usec: u64,
}

/// Everything the agent reacts to.
#[derive(Debug, Clone)]
pub enum Input {
    /// promd starts serving: every group's drivers open and its machine takes a first step;
    /// then `READY=1`.
    Start,
    /// An event of the group's store session.
    Store(GroupId, StoreEvent),
    /// Store events of several groups that arrived together (a shared lease's renewal is one
    /// for every group under it): each is handled as [`Input::Store`], and what follows every
    /// input (`STATUS=`, the views, the watchdog's horizon) once for all of them, not once
    /// per group — 500 groups' renewals cost O(groups²) that way.
    Stores(Vec<(GroupId, StoreEvent)>),
    /// A systemd job of the group's finished.
    Job(GroupId, JobDone),
    /// The `KillUnit` calls of the group's kill with this number are on the bus
    /// ([`Output::Kill`]'s `kill`), or found nothing to kill: becomes
    /// [`Event::KillSent`] if no kill was asked since.
    KillSent(GroupId, u64),
    /// The closure of the group's active target, as a walk just found it.
    Closure(GroupId, Closure),
    /// The closures of several groups, walked again together after PID 1 reloaded (a unit
    /// added to a role by a drop-in and `systemctl daemon-reload`): each is handled as
    /// [`Input::Closure`], and the fence load and the check for units shared between groups
    /// are done once for all of them, not once per group.
    Closures(Vec<(GroupId, Closure)>),
    /// What the group's units did.
    Watch(GroupId, WatchEvent),
    /// The group's health command's latest result.
    Health(GroupId, HealthResult),
    /// A D-Bus method call on the group; answered by an [`Output::Reply`] with the same id.
    Call(CallId, GroupId, Call),
    /// A signal to promd.
    Signal(Signal),
    /// A deadline from [`Agent::next_deadline`] passed (or may have).
    Tick,
    /// How long ago each group's store task last turned its loop (`None`: never yet), sent
    /// every [`STORE_CHECK_INTERVAL`]: a stalled store task holds back
    /// [`Agent::watchdog_horizon`].
    StoreAges(Vec<(GroupId, Option<Duration>)>),
}

/// The signals promd acts on.
#[derive(Debug, Clone)]
pub enum Signal {
    /// SIGTERM or SIGINT: every group hands over and exits.
    Terminate,
    /// SIGHUP: the configuration file as read again (`Err`: why it is unreadable or invalid,
    /// one problem per line).
    Reload(Result<NewConfig, String>),
}

/// A configuration file read for a reload.
#[derive(Debug, Clone)]
pub struct NewConfig {
    /// The file, parsed and validated.
    pub config: Config,
    /// The file's text, to place messages about it.
    pub text: String,
    /// The closure of the active target of each group in the file that the running promd
    /// does not have by that name, as walked when the file was read: a group added (or
    /// renamed) starts at once only beside groups handing over whose units it does not share
    /// (see `reload::shares`). A group missing here (its walk failed) waits for every group
    /// that hands over. Keyed by the group's name, or by each slot's (`GROUP@k`, slot 0
    /// `GROUP`) for a group with several active hosts.
    pub closures: BTreeMap<String, Closure>,
}

/// A systemd job of a group's finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDone {
    /// The job, as the machine asked for it.
    pub job: Job,
    /// Whether it did what it should; for a stop, only once systemd says every unit of the
    /// closure is down (see [`Job::StopActive`]).
    pub ok: bool,
    /// After a start of the active target that succeeded: the watched units that are not up,
    /// with their state (failed in `ExecStartPre=`, skipped by a Condition, ...).
    pub not_up: Vec<(String, String)>,
}

impl JobDone {
    /// A job that failed before it could report anything else.
    pub fn failed(job: Job) -> JobDone {
        JobDone {
            job,
            ok: false,
            not_up: Vec::new(),
        }
    }
}

/// What the agent is started with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The configuration promd starts with; [`Signal::Reload`] replaces it.
    pub config: Config,
    /// The configuration file as named in messages (its path).
    pub config_origin: String,
    /// This host, written into our store records; `None` without a machine-id.
    pub host: Option<HostId>,
    /// The systemd watchdog interval in force (`None`: no watchdog).
    pub watchdog: Option<Duration>,
    /// The instant [`Now::mono`] counts from: store events carry [`Instant`]s.
    pub origin: Instant,
    /// CLOCK_REALTIME µs now: the start-up groups' D-Bus `Since` until their first role change.
    pub wall_usec: u64,
    /// The highest term this host kept on disk for each group, by name, from earlier runs
    /// ([`crate::termfloor`]): each group's machine starts from it.
    pub term_floors: BTreeMap<String, u64>,
}

/// The multi-group agent. See the module documentation.
#[derive(Debug)]
pub struct Agent {
    node: String,
    host: Option<HostId>,
    origin: Instant,
    /// The configuration in force (what a reload compares with).
    config: Config,
    config_origin: String,
    watchdog: Option<Duration>,
    groups: BTreeMap<GroupId, Group>,
    next_id: u64,
    /// The longest lease of any group opened: bounds the wait for the store at exit.
    longest_lease: Duration,
    pending: Vec<Pending>,
    /// Groups of a reload that wait for their old version to finish handing over.
    replacing: Vec<GroupConfig>,
    /// [`NewConfig::closures`] of the latest reload, for the groups in `replacing`.
    reload_closures: BTreeMap<String, Closure>,
    /// SIGTERM was handled (or promd refused to run): every group hands over and exits, and
    /// none is started.
    stopping: bool,
    /// Why promd refuses to go on (another host uses this `node`).
    refused: Option<String>,
    /// The groups with `actives` above 1, by name: their slots' ids and what ties them
    /// (slots.rs).
    families: BTreeMap<String, slots::Family>,
    /// A family's slots are being settled: the steps it causes do not settle again.
    arbitrating: bool,
    /// `STATUS=` as last sent.
    last_status: String,
    /// What PID 1 may have to stop at once on this host, as last given to the machines.
    fence_load: fence_load::FenceLoad,
    /// The highest term of each group (by name) asked to be kept on disk
    /// ([`Output::KeepTerm`]), or loaded from it: a machine of the group (a reload's new one
    /// too) starts from it.
    kept_terms: BTreeMap<String, u64>,
    /// Until when the loop counts as alive: [`LOOP_STALL_LIMIT`] after the last input handled
    /// while no store task was stalled.
    alive_until: Mono,
    /// A group whose store task has stalled, as the last [`Input::StoreAges`] found.
    store_stalled: Option<GroupId>,
    /// The groups the inputs since the last [`Agent::take_views`] may have changed; `None`:
    /// any (groups came or went, a signal, the periodic refresh). With hundreds of groups,
    /// a renewal of one must not rebuild every group's view and status clause.
    touched: Option<std::collections::BTreeSet<GroupId>>,
    /// Each group's `STATUS=` clause as last built, and whether it needs a look.
    clauses: BTreeMap<GroupId, status::Clause>,
    /// Each running machine's [`GroupMachine::next_deadline`], filed after its every step.
    next_due: deadlines::Deadlines,
    /// Each machine's [`GroupMachine::hang_deadline`], filed after its every step.
    hang: deadlines::Deadlines,
    /// What `/metrics` shows ([`crate::metrics`]): counted here, rendered by the HTTP thread.
    metrics: Metrics,
    /// The store's state after the last input, whether it was ever connected, and whether a
    /// group's session reported it unreachable since: a reconnection is counted once per
    /// agent, not once per group, and only after an outage (a group added or restarted by a
    /// reload connects too, with no outage to recover from).
    store_was_connected: bool,
    store_ever_connected: bool,
    store_outage: bool,
    /// The reason of the store outage last journalled for the whole agent: a group's own line
    /// says only the first reason of its outage, and a new reason (another endpoint tried,
    /// another error) is journalled once for all the groups, not once per group: at 500
    /// groups one outage of a shared connection wrote ~1,500 lines in a second.
    store_reason: Option<String>,
    /// The D-Bus method of each call not answered yet.
    call_methods: std::collections::HashMap<CallId, &'static str>,
}

/// What changed for the D-Bus views since the last [`Agent::take_views`].
#[derive(Debug, Clone, PartialEq)]
pub enum ViewUpdate {
    /// Every group's view: replace them all (groups may have come or gone).
    All(Vec<GroupView>),
    /// The views of the groups that may have changed; the others are as they were.
    Some(Vec<GroupView>),
}

/// How often the runtime reports the store tasks' ages ([`Input::StoreAges`]); it also keeps
/// an idle loop's [`Agent::watchdog_horizon`] moving.
pub const STORE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long the event loop may go without handling an input (or with a stalled store task)
/// before the watchdog restarts promd: a hang, not a busy spell. Safety does not rest on it:
/// while units may run, the groups' hang deadlines bound the horizon far sooner
/// (docs/safety.md, "The watchdog").
pub const LOOP_STALL_LIMIT: Duration = Duration::from_secs(5);

impl Agent {
    /// An agent with a machine for every configured group; nothing is opened before
    /// [`Input::Start`].
    pub fn new(s: Settings) -> Agent {
        let mut agent = Agent {
            node: s.config.node.clone(),
            host: s.host,
            origin: s.origin,
            config: s.config.clone(),
            config_origin: s.config_origin,
            watchdog: s.watchdog,
            groups: BTreeMap::new(),
            next_id: 0,
            longest_lease: Duration::ZERO,
            pending: Vec::new(),
            replacing: Vec::new(),
            reload_closures: BTreeMap::new(),
            stopping: false,
            refused: None,
            last_status: String::new(),
            fence_load: fence_load::FenceLoad::default(),
            kept_terms: s.term_floors,
            // Mono counts from `origin`, when the runtime was made.
            alive_until: Mono(LOOP_STALL_LIMIT),
            store_stalled: None,
            touched: None,
            families: BTreeMap::new(),
            arbitrating: false,
            clauses: BTreeMap::new(),
            next_due: deadlines::Deadlines::default(),
            hang: deadlines::Deadlines::default(),
            metrics: Metrics::new(s.origin),
            store_was_connected: false,
            store_ever_connected: false,
            store_outage: false,
            store_reason: None,
            call_methods: std::collections::HashMap::new(),
        };
        for cfg in s.config.groups {
            agent.insert_configured(cfg, s.wall_usec);
        }
        agent
    }

    /// Handle one input at `now`; returns what to carry out, in order. After every input,
    /// calls whose outcome is known are answered, groups that a reload retired and that have
    /// exited are closed (and their replacements opened), and `STATUS=` is sent if it changed.
    pub fn handle(&mut self, input: Input, now: Now) -> Vec<Output> {
        let mut out = Vec::new();
        match &input {
            Input::Start | Input::Signal(_) => self.touch_all(),
            Input::Store(id, _)
            | Input::Job(id, _)
            | Input::KillSent(id, _)
            | Input::Closure(id, _)
            | Input::Watch(id, _)
            | Input::Health(id, _)
            | Input::Call(_, id, _) => {
                // Its bookkeeping (store_down, health, closure) may change without a step of
                // its machine.
                if let Some(touched) = &mut self.touched {
                    touched.insert(*id);
                }
            }
            Input::Stores(events) => {
                if let Some(touched) = &mut self.touched {
                    touched.extend(events.iter().map(|(id, _)| *id));
                }
            }
            Input::Closures(closures) => {
                if let Some(touched) = &mut self.touched {
                    touched.extend(closures.iter().map(|(id, _)| *id));
                }
            }
            Input::Tick | Input::StoreAges(_) => {}
        }
        match input {
            Input::Start => {
                let ids: Vec<GroupId> = self.groups.keys().copied().collect();
                // Every group's drivers open before any group takes a step: a step of one
                // slot's machine steps its siblings too (slots.rs), whose work the runtime
                // would drop before their drivers exist.
                for &id in &ids {
                    if let Some(g) = self.groups.get(&id) {
                        out.push(Output::Open(id, g.cfg.clone()));
                    }
                }
                for id in ids {
                    self.feed(id, Event::Tick, now, &mut out);
                }
                self.ready(now.mono, &mut out);
            }
            Input::Store(id, ev) => self.on_store(id, ev, now, &mut out),
            Input::Stores(events) => {
                for (id, ev) in events {
                    self.on_store(id, ev, now, &mut out);
                }
            }
            Input::Job(id, done) => self.on_job(id, done, now, &mut out),
            Input::KillSent(id, kill) => {
                // The answer to a kill that a later one superseded says nothing of the units
                // that one was asked for (a unit started in between).
                if self.groups.get(&id).is_some_and(|g| g.kills_asked == kill) {
                    self.feed(id, Event::KillSent, now, &mut out);
                }
            }
            Input::Closure(id, closure) => self.on_closures([(id, closure)], now, &mut out),
            Input::Closures(closures) => self.on_closures(closures, now, &mut out),
            Input::Watch(id, ev) => self.on_watch(id, ev, now, &mut out),
            Input::Health(id, result) => self.on_health(id, result, now, &mut out),
            Input::Call(call_id, id, call) => {
                self.call_methods.insert(call_id, call.method());
                self.on_call(call_id, id, call, now, &mut out)
            }
            Input::Signal(Signal::Terminate) => {
                if !self.stopping {
                    let text = "SIGTERM: handing over every group and stopping";
                    out.push(Output::Log(Record::plain(Level::Info, text)));
                    self.stop_all(now, &mut out);
                }
            }
            Input::Signal(Signal::Reload(file)) => {
                if !self.stopping {
                    self.reload(file, now, &mut out);
                }
            }
            Input::Tick => {
                // Only the machines whose deadline has come: by GroupMachine::next_deadline's
                // contract a Tick before it changes nothing, and feeding every group at every
                // group's deadline cost O(groups²) per renewal interval.
                for id in self.next_due.due(now.mono) {
                    self.feed(id, Event::Tick, now, &mut out);
                }
            }
            Input::StoreAges(ages) => {
                // Once a second the views and clauses that time alone changed are rebuilt:
                // failures leave their window, cooldowns end, with no input of their own.
                self.refresh_aged(now.mono);
                self.check_stores(&ages, &mut out);
            }
        }
        self.settle_calls(now, &mut out);
        self.close_exited(now, &mut out);
        self.publish_status(now.mono, &mut out);
        self.count(&out);
        if self.store_stalled.is_none() {
            self.alive_until = self.alive_until.max(now.mono + LOOP_STALL_LIMIT);
        }
        out
    }

    /// The metrics this agent counts, for the HTTP endpoint's `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// After an input: count the D-Bus answers among its outputs, and a reconnection of the
    /// store (every group's session up again after one was down).
    fn count(&mut self, out: &[Output]) {
        if !self.call_methods.is_empty() {
            for o in out {
                if let Output::Reply(id, result) = o
                    && let Some(method) = self.call_methods.remove(id)
                {
                    let result = match result {
                        Ok(()) => "ok",
                        Err(e) => e.name(),
                    };
                    self.metrics
                        .agent()
                        .dbus_calls
                        .get_or_create(&[("method", method), ("result", result)])
                        .inc();
                }
            }
        }
        let connected = self.store_connected();
        if connected && !self.store_was_connected {
            if self.store_ever_connected && self.store_outage {
                self.metrics.agent().store_reconnects.inc();
            }
            self.store_ever_connected = true;
            self.store_outage = false;
        }
        self.store_was_connected = connected;
    }

    /// Until when the watchdog keeper may go on pinging if no further input is handled: the
    /// earliest of the loop's [`LOOP_STALL_LIMIT`] and every group's
    /// [`GroupMachine::hang_deadline`] (while its units may run). The runtime publishes it
    /// after every step, before carrying out the step's outputs; a starved or hung loop
    /// publishes nothing more, and systemd's watchdog fires by this instant (docs/safety.md).
    pub fn watchdog_horizon(&self) -> Mono {
        self.hang
            .first()
            .map_or(self.alive_until, |h| h.min(self.alive_until))
    }

    /// The earliest time at which [`Input::Tick`] is due: a machine's deadline or a call's
    /// timeout. It may lie in the past (a Tick is then due at once); `None`: nothing is due.
    pub fn next_deadline(&self) -> Option<Mono> {
        self.next_due
            .first()
            .into_iter()
            .chain(self.pending.iter().map(|p| p.deadline))
            .min()
    }

    /// Whether the filed deadlines are what a scan of every machine finds (tests).
    #[cfg(test)]
    fn deadlines_filed(&self) -> bool {
        let scan = |f: &dyn Fn(&GroupMachine) -> Option<Mono>| -> BTreeMap<GroupId, Mono> {
            self.groups
                .iter()
                .filter_map(|(id, g)| f(&g.machine).map(|at| (*id, at)))
                .collect()
        };
        let next = scan(&|m| (!m.exited()).then(|| m.next_deadline()).flatten());
        &next == self.next_due.all() && &scan(&|m| m.hang_deadline()) == self.hang.all()
    }

    /// File the group's deadlines again, after its machine stepped or the group came or
    /// went (see [`deadlines`]).
    fn refile(&mut self, id: GroupId) {
        let g = self.groups.get(&id);
        // An exited machine takes no step any more, so whatever deadline it still names
        // stays due forever: filed, it would wake the loop at once, again and again.
        let next = g
            .filter(|g| !g.machine.exited())
            .and_then(|g| g.machine.next_deadline());
        self.next_due.set(id, next);
        self.hang.set(id, g.and_then(|g| g.machine.hang_deadline()));
        if let Some(g) = g {
            g.metrics.set_fence_at(g.machine.fence_deadline());
        }
    }

    /// Every group hands over and exits (SIGTERM, or a refusal); no input starts one again.
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// promd may exit: it is stopping and every group has exited (its store session was told
    /// to shut down).
    pub fn done(&self) -> bool {
        self.stopping && self.groups.values().all(|g| g.machine.exited())
    }

    /// Why promd refused to go on, if it did (another host uses this `node`): it must exit
    /// with [`crate::runtime::EXIT_REFUSED`] once [`Agent::done`].
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// Whether the group is leaving: a reload retired it ([`Output::Quiet`] said so), and it
    /// closes once its machine has exited. Unknown groups are not leaving.
    pub fn leaving(&self, id: GroupId) -> bool {
        self.groups.get(&id).is_some_and(|g| g.retired)
    }

    /// How long promd waits at exit for the store tasks to carry out their shutdown (release,
    /// revoke, member record): the longest lease, within 1s..10s. An unreachable store must not
    /// hold up the exit: the lease then runs out on its own, and the units are down already.
    pub fn shutdown_wait(&self) -> Duration {
        self.longest_lease
            .clamp(Duration::from_secs(1), Duration::from_secs(10))
    }

    /// A journal record of a group with its fields as they are now, for what the runtime's
    /// own work has to say of it (`None` once the group has closed).
    pub fn group_record(&self, id: GroupId, level: Level, text: &str) -> Option<Record> {
        self.groups.get(&id).map(|g| g.record(level, text))
    }

    /// Every group may have changed (or groups came or went): the next views and status are
    /// rebuilt in full.
    fn touch_all(&mut self) {
        self.touched = None;
    }

    /// The D-Bus views that may have changed since the last call: all of them, or those of
    /// the groups the inputs since fed.
    pub fn take_views(&mut self, now: Mono) -> ViewUpdate {
        match self.touched.replace(std::collections::BTreeSet::new()) {
            None => ViewUpdate::All(self.views(now)),
            Some(ids) => {
                ViewUpdate::Some(ids.iter().filter_map(|id| self.view_of(*id, now)).collect())
            }
        }
    }

    /// A group's machine and bookkeeping under a new id; returns the id.
    fn insert_group(&mut self, cfg: GroupConfig, since_usec: u64) -> GroupId {
        self.touch_all();
        let id = GroupId(self.next_id);
        self.next_id = self.next_id.saturating_add(1);
        self.longest_lease = self.longest_lease.max(cfg.lease);
        let floor = self.kept_terms.get(&cfg.name).copied().unwrap_or(0);
        let mut p = params(&self.node, &cfg, self.watchdog, floor);
        // Its closure is not known yet ([`fence_load::UNKNOWN`]).
        p.timing = p.timing.with_fence_load(fence_load::UNKNOWN);
        let machine = GroupMachine::new(p);
        let metrics = self.metrics.group(&cfg.name);
        self.groups.insert(
            id,
            Group {
                cfg,
                machine,
                closure: Closure::default(),
                walked: false,
                store_down: None,
                health_ok: true,
                since_usec,
                record_since: None,
                retired: false,
                env: None,
                metrics,
                units_down: Vec::new(),
                kills_asked: 0,
            },
        );
        self.refile(id);
        id
    }

    /// Every group hands over and exits; nothing starts a group any more.
    fn stop_all(&mut self, now: Now, out: &mut Vec<Output>) {
        self.stopping = true;
        out.push(Output::Notify(Notify::Stopping));
        // `replacing` is kept (nothing opens it any more, see `start_waiting`): a group
        // closing now must still see that its next version starts the same passive target.
        let ids: Vec<GroupId> = self.groups.keys().copied().collect();
        for id in ids {
            self.feed(id, Event::Terminate, now, out);
        }
    }

    /// Note whether a store task has stalled: then [`Agent::watchdog_horizon`] stops moving
    /// and the watchdog restarts promd (a group that has exited no longer counts). Logged at
    /// every check while it lasts.
    fn check_stores(&mut self, ages: &[(GroupId, Option<Duration>)], out: &mut Vec<Output>) {
        self.store_stalled = ages.iter().find_map(|(id, age)| {
            let g = self.groups.get(id)?;
            let stalled = age.is_some_and(|a| a > store_stall_limit(g.cfg.lease));
            (stalled && !g.machine.exited()).then_some(*id)
        });
        if let Some(g) = self.store_stalled.and_then(|id| self.groups.get(&id)) {
            out.push(Output::Log(Record {
                fields: Fields {
                    group: Some(g.cfg.name.clone()),
                    ..Fields::default()
                },
                ..Record::plain(
                    Level::Error,
                    "store driver stalled: the watchdog will restart promd",
                )
            }));
        }
    }
}

/// A store task that has not turned its loop for this long is taken as hung: three renewal
/// intervals, at least 5s.
fn store_stall_limit(lease: Duration) -> Duration {
    (lease / 3 * 3).max(Duration::from_secs(5))
}

fn params(node: &str, cfg: &GroupConfig, watchdog: Option<Duration>, floor: u64) -> GroupParams {
    GroupParams {
        node: node.to_string(),
        timing: Timing::new(cfg.lease).with_watchdog(watchdog.unwrap_or_default()),
        priority: cfg.priority,
        preempt: cfg.preempt,
        members: cfg.members.clone(),
        // A slot's machine runs without: the passive target is the host's (slots.rs).
        has_passive_target: cfg.passive_target.is_some() && cfg.slot.is_none(),
        failure_cooldown: cfg.failure_cooldown,
        max_restarts: cfg.max_restarts,
        restart_window: cfg.restart_window,
        restart_backoff: cfg.restart_backoff,
        term_floor: floor,
    }
}

/// The watchdog lowered to fit a configuration's shortest lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogFit {
    /// The interval in force.
    pub old: Duration,
    /// The interval to use: the shortest lease's [`Timing::fitting_watchdog`].
    pub new: Duration,
    /// The group with that lease.
    pub group: String,
}

impl std::fmt::Display for WatchdogFit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "watchdog {} -> {} to fit group {}'s lease",
            humantime::format_duration(self.old),
            humantime::format_duration(self.new),
            self.group
        )
    }
}

/// Whether the watchdog in force (`current`, `None`: none) must be lowered for `config`: a
/// hung promd is only safe if the watchdog kills it (and the fence its units) within the
/// shortest lease's margin. Never raised: running groups count on the interval in force.
pub fn watchdog_fit(config: &Config, current: Option<Duration>) -> Option<WatchdogFit> {
    let old = current?;
    let (new, group) = config
        .groups
        .iter()
        .map(|g| (Timing::new(g.lease).fitting_watchdog(), g.name.as_str()))
        .min_by_key(|(d, _)| *d)?;
    (new < old).then(|| WatchdogFit {
        old,
        new,
        group: group.to_string(),
    })
}
