//! The event loop: driver events in, the agent's outputs out.
//!
//! Every decision is the [`Agent`]'s (pure, unit-tested); this module only turns what the
//! drivers report into [`Input`]s and carries out the agent's
//! [`Output`](crate::agent::Output)s (carry.rs, jobs.rs).
//!
//! One loop serves every group. After every step it publishes how long the watchdog may go
//! on being pinged ([`Agent::watchdog_horizon`]) to the thread that pings it
//! ([`crate::watchdog`]), so a hung or starved loop gets promd killed (taking the bound units
//! with it) before any lease its units run under can end, while a merely busy one does not. Slow work — systemd jobs, store requests — runs in
//! tasks that report back through channels; the loop itself never waits on I/O.
//!
//! The channels: each driver keeps its own, tagged with the [`GroupId`] it was opened for
//! (the store sessions, the unit watchers, the health checks), and the runtime's own tasks
//! (systemd jobs, closure walks) send [`Input`]s on one more. They are merged into one
//! [`Input`] at one place, the `select!` in [`Runtime::run`]: the drivers stay usable and
//! testable without the agent, a D-Bus call's reply handle never enters the pure agent, and
//! the order in which ready sources are served (deadlines first, then the store) stays what
//! it was.

mod carry;
mod jobs;
mod journal;
mod reloads;
mod terms;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Interval, MissedTickBehavior};

use crate::agent::{
    Agent, CallId, GroupId, Input, NewConfig, Now, STORE_CHECK_INTERVAL, Settings, Signal,
    watchdog_fit,
};
use crate::config::{Config, GroupConfig};
use crate::core::Mono;
use crate::dbus::{CallRequest, DbusService, PromdError};
use crate::health::HealthResult;
use crate::http::{HttpServer, Limits, StateFeed};
use crate::notify::{Notifier, StatusPace};
use crate::store::{GroupSession, HostId, Progress, Store, StoreEvent};
use crate::systemd::Systemd;
use crate::termfloor::{Kept, TermFloors};
use crate::watch::WatchEvent;
use crate::watchdog::Keeper;

pub(crate) use jobs::StopWalk;

/// promd's exit status when it refuses to go on at run time (another host uses its `node`):
/// `EX_CONFIG`, which `promd.service` lists in `RestartPreventExitStatus=`.
pub const EXIT_REFUSED: u8 = 78;

/// Where the units' environment files go.
pub const RUN_DIR: &str = "/run/promd";

/// A group's drivers and the tasks working for it.
struct Drivers {
    /// The group's configuration: its name, targets and lease fixed for the life of its id,
    /// the rest as a reload last changed it in place ([`crate::agent::Output::Retune`]).
    cfg: GroupConfig,
    session: GroupSession,
    /// Beaten by the store task: a stalled one holds back the watchdog's horizon.
    progress: Progress,
    /// The start of the active target in flight, if any ([`crate::core::Cancels::start`]).
    start: Option<tokio::task::AbortHandle>,
    /// Restarts in place in flight ([`crate::core::Cancels::restarts`]).
    restarts: Vec<tokio::task::AbortHandle>,
    /// Kills not yet carried out ([`crate::core::Cancels::kills`]), one at a time.
    kills: jobs::Kills,
    /// What the walk of the latest stop found, once it has ([`Runtime::kill`] kills it
    /// without walking again).
    stop_walk: StopWalk,
    health_task: Option<tokio::task::AbortHandle>,
    /// The task that follows the group's units; replaced when its closure changes, aborted
    /// when the group leaves.
    watch_task: Option<tokio::task::AbortHandle>,
}

impl Drivers {
    /// Drop the handles of finished starts, restarts and kills. A handle keeps its task's
    /// memory (4–8 KiB) alive however long ago it finished, and a group keeps them until the
    /// core cancels that kind of work: after start-up every group of 500 still held its
    /// start-up kills (heaptrack: 1,208 tasks, 4.2 MiB), and every active group its start.
    fn forget_finished(&mut self) {
        if self.start.as_ref().is_some_and(|t| t.is_finished()) {
            self.start = None;
        }
        self.restarts.retain(|t| !t.is_finished());
        self.kills.forget_finished();
    }
}

/// The event loop and the drivers it owns; see the module documentation.
pub struct Runtime {
    origin: Instant,
    agent: Agent,
    node: String,
    /// This host, written into our store records (see [`HostId`]).
    host: Option<HostId>,
    run_dir: PathBuf,
    /// The highest term of each group, kept on disk ([`crate::termfloor`]) by a thread.
    terms: terms::Terms,
    terms_rx: mpsc::UnboundedReceiver<Vec<Kept>>,
    config_path: PathBuf,
    /// A reload's walk of the closures of the groups it adds, still running
    /// ([`Runtime::reload`]).
    reload_walk: Option<tokio::task::AbortHandle>,
    drivers: BTreeMap<GroupId, Drivers>,
    /// Tasks of closed groups (store shutdown, passive target stop, drop-in removal): still
    /// awaited at exit. Finished ones are dropped at each close.
    leaving: Vec<tokio::task::JoinHandle<()>>,
    systemd: Systemd,
    store: Box<dyn Store>,
    notifier: Notifier,
    /// `STATUS=` at most four times a second.
    status: StatusPace,
    /// Pings the watchdog from its own thread, up to the horizon published after each step.
    keeper: Keeper,
    /// Writes the agent's journal records from its own thread: the loop never waits on
    /// journald.
    journal: journal::Journal,
    /// When to report the store tasks' ages ([`Input::StoreAges`]).
    store_check: Interval,
    /// Store checks so far (for [`Runtime::tidy_now_and_then`]).
    checks: u64,
    dbus: Option<DbusService>,
    /// The HTTP state endpoint's feed and server, when `[http] listen` names an address.
    http: Option<(StateFeed, HttpServer)>,
    calls_rx: Option<mpsc::UnboundedReceiver<CallRequest>>,
    /// Where the answer of each call the agent has not answered yet goes.
    replies: HashMap<CallId, oneshot::Sender<Result<(), PromdError>>>,
    next_call: u64,
    store_tx: mpsc::UnboundedSender<(GroupId, StoreEvent)>,
    store_rx: mpsc::UnboundedReceiver<(GroupId, StoreEvent)>,
    watch_tx: mpsc::UnboundedSender<(GroupId, WatchEvent)>,
    watch_rx: mpsc::UnboundedReceiver<(GroupId, WatchEvent)>,
    health_tx: mpsc::UnboundedSender<(GroupId, HealthResult)>,
    health_rx: mpsc::UnboundedReceiver<(GroupId, HealthResult)>,
    /// The runtime's own tasks: systemd jobs done, closures found.
    inputs_tx: mpsc::UnboundedSender<Input>,
    inputs_rx: mpsc::UnboundedReceiver<Input>,
    /// The walk after PID 1's reloads (`reloads.rs`) asks here for the groups open now.
    walk_asks_tx: mpsc::UnboundedSender<reloads::Ask>,
    walk_asks_rx: mpsc::UnboundedReceiver<reloads::Ask>,
}

impl Runtime {
    /// A runtime for `config` (read from `config_path`, which a reload reads again). Nothing
    /// is opened before [`Runtime::run`]; call it within a tokio runtime.
    pub fn new(
        config: Config,
        config_path: PathBuf,
        store: Box<dyn Store>,
        systemd: Systemd,
        notifier: Notifier,
    ) -> Runtime {
        let (store_tx, store_rx) = mpsc::unbounded_channel();
        let (watch_tx, watch_rx) = mpsc::unbounded_channel();
        let (health_tx, health_rx) = mpsc::unbounded_channel();
        let (inputs_tx, inputs_rx) = mpsc::unbounded_channel();
        let (walk_asks_tx, walk_asks_rx) = mpsc::unbounded_channel();
        let host = match HostId::of_this_host() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(
                    "no machine-id ({e}): another host configured with node {} would go undetected",
                    config.node
                );
                None
            }
        };
        let origin = Instant::now();
        let keeper = Keeper::start(&notifier, origin, Mono(crate::agent::LOOP_STALL_LIMIT))
            .unwrap_or_else(|e| {
                // No pings at all: systemd restarts promd within the interval, as for a hang.
                tracing::error!("cannot start the watchdog thread: {e}");
                Keeper::without_thread(Mono(crate::agent::LOOP_STALL_LIMIT))
            });
        let node = config.node.clone();
        let mut terms = TermFloors::new(&TermFloors::state_dir(), &node);
        let (term_floors, unreadable) = terms.load_all();
        for e in unreadable {
            tracing::error!("kept term not trusted, the group starts from the store's: {e}");
        }
        let (terms_tx, terms_rx) = mpsc::unbounded_channel();
        let terms = terms::Terms::new(terms, term_floors.clone(), terms_tx);
        let agent = Agent::new(Settings {
            config,
            config_origin: config_path.display().to_string(),
            host: host.clone(),
            watchdog: notifier.watchdog(),
            origin,
            wall_usec: realtime_usec(),
            term_floors,
        });
        Runtime {
            terms,
            terms_rx,
            origin,
            agent,
            node,
            host,
            run_dir: PathBuf::from(RUN_DIR),
            config_path,
            reload_walk: None,
            drivers: BTreeMap::new(),
            leaving: Vec::new(),
            systemd,
            store,
            keeper,
            journal: journal::Journal::start(),
            store_check: store_check_interval(),
            checks: 0,
            notifier,
            status: StatusPace::default(),
            dbus: None,
            http: None,
            calls_rx: None,
            replies: HashMap::new(),
            next_call: 0,
            store_tx,
            store_rx,
            watch_tx,
            watch_rx,
            health_tx,
            health_rx,
            inputs_tx,
            inputs_rx,
            walk_asks_tx,
            walk_asks_rx,
        }
    }

    /// Serve `org.promd1` on this connection. Without it promd still does its job; it only
    /// cannot be observed or steered over D-Bus.
    pub async fn serve_dbus(&mut self, conn: &zbus::Connection) -> zbus::Result<()> {
        let views = self.agent.views(self.now().mono);
        let (service, calls) = DbusService::start(conn, &self.node, views).await?;
        self.dbus = Some(service);
        self.calls_rx = Some(calls);
        Ok(())
    }

    /// Serve the HTTP state endpoint on `listen` ([`crate::http`]), from a thread of its own.
    /// Without it promd still does its job; addresses that cannot be bound yet are retried
    /// by that thread. Errors only if the thread cannot be started.
    pub fn serve_http(&mut self, listen: Vec<SocketAddr>) -> std::io::Result<()> {
        let views = self.agent.views(self.now().mono);
        let (feed, reader) = StateFeed::new(&self.node, views);
        let reader = reader.with_metrics(self.agent.metrics().clone());
        let server = HttpServer::start(listen, reader, Limits::default())?;
        self.http = Some((feed, server));
        Ok(())
    }

    fn now(&self) -> Now {
        Now {
            mono: Mono(self.origin.elapsed()),
            wall_usec: realtime_usec(),
        }
    }

    /// Serve until SIGTERM (or SIGINT) has been handled for every group. `Ok(Some(why))`:
    /// promd refused to go on (another host uses this `node`) and stopped every group; it
    /// must exit with [`EXIT_REFUSED`].
    pub async fn run(mut self) -> std::io::Result<Option<String>> {
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sighup = signal(SignalKind::hangup())?;
        self.step(Input::Start);
        // PID 1 keeps the groups' targets loaded (see dropin::keep_text). After the start:
        // PID 1 would read its READY=1 only once the daemon-reload this may cost is done. The
        // groups' first calls, spawned by the start, go out alongside.
        self.systemd.keep_loaded(
            self.drivers
                .values()
                .map(|d| (d.cfg.name.clone(), d.cfg.active_target.clone()))
                .collect(),
        );
        let mut calls = self.calls_rx.take();
        // From here on a reload promd did not cause walks every group again (reloads.rs).
        let follow_reloads = reloads::follow(
            self.systemd.clone(),
            self.walk_asks_tx.clone(),
            self.inputs_tx.clone(),
        );
        // With no groups (or all removed by reloads) promd idles; it ends only on SIGTERM.
        while !self.agent.done() {
            let now = self.now().mono;
            let deadline = self
                .agent
                .next_deadline()
                .map_or(Duration::from_secs(3600), |d| d.saturating_sub(now));
            let stopping = self.agent.stopping();
            let status_due = self.status.due();
            let input: Option<Input> = tokio::select! {
                // Deadlines first: the fence is one of them, and nothing may starve it. Then
                // the store check, which a flood of events must not starve either: it keeps an
                // idle loop's watchdog horizon moving.
                biased;
                _ = tokio::time::sleep(deadline) => Some(Input::Tick),
                _ = self.store_check.tick() => {
                    self.tidy_now_and_then();
                    Some(Input::StoreAges(self.store_ages()))
                }
                _ = sleep_until_due(status_due) => {
                    if let Some(status) = self.status.take_due(Instant::now()) {
                        self.notifier.status(&status);
                    }
                    None
                }
                Some((id, ev)) = self.store_rx.recv() => Some(self.store_batch(id, ev)),
                Some(input) = self.inputs_rx.recv() => Some(input),
                // Terms kept: the loop's own business, not the agent's.
                Some(kept) = self.terms_rx.recv() => {
                    self.terms_kept(kept);
                    None
                }
                Some((id, ev)) = self.watch_rx.recv() => Some(Input::Watch(id, ev)),
                Some((id, result)) = self.health_rx.recv() => Some(Input::Health(id, result)),
                Some(call) = recv_call(&mut calls) => Some(self.accept_call(call)),
                Some(ask) = self.walk_asks_rx.recv() => {
                    let _ = ask.send(self.roles_to_walk());
                    None
                }
                _ = sigterm.recv(), if !stopping => Some(Input::Signal(Signal::Terminate)),
                _ = sigint.recv(), if !stopping => Some(Input::Signal(Signal::Terminate)),
                _ = sighup.recv(), if !stopping => self.reload(),
            };
            if let Some(input) = input {
                self.step(input);
            }
        }
        follow_reloads.abort();
        self.finish_store_tasks().await;
        self.terms.finish();
        self.journal.finish(Duration::from_secs(2));
        Ok(self.agent.refused().map(str::to_string))
    }

    /// One input to the agent, the watchdog's horizon published, the outputs carried out,
    /// then the D-Bus views and the HTTP endpoint's snapshot refreshed. The horizon goes first: an output may start units,
    /// and their group's hang deadline must bound the pings before they can run.
    fn step(&mut self, input: Input) {
        let now = self.now();
        let outputs = self.agent.handle(input, now);
        self.keeper.publish(self.agent.watchdog_horizon());
        for output in outputs {
            self.carry(output);
        }
        let views = self.agent.take_views(now.mono);
        let store_connected = self.agent.store_connected();
        if let Some((feed, _)) = &mut self.http {
            feed.update(&views, store_connected, self.agent.stopping());
        }
        if let Some(d) = &mut self.dbus {
            d.update(views, store_connected);
        }
    }

    /// Every [`TRIM_EVERY`] store checks, drop the handles of the groups' finished tasks and
    /// give the heap's free pages back (see [`trim_heap`]).
    fn tidy_now_and_then(&mut self) {
        self.checks = self.checks.wrapping_add(1);
        if self.checks.is_multiple_of(TRIM_EVERY) {
            for d in self.drivers.values_mut() {
                d.forget_finished();
            }
            trim_heap();
        }
    }

    /// A D-Bus call: its reply handle kept here, the call itself for the agent.
    fn accept_call(&mut self, req: CallRequest) -> Input {
        let id = CallId(self.next_call);
        self.next_call = self.next_call.wrapping_add(1);
        self.replies.insert(id, req.reply);
        Input::Call(id, req.group, req.call)
    }

    /// The configuration file as it is now, for a reload.
    fn read_config(&self) -> Result<NewConfig, String> {
        crate::config::load_source(&self.config_path)
            .map(|(config, text)| NewConfig {
                config,
                text,
                closures: BTreeMap::new(),
            })
            .map_err(|e| e.to_string())
    }

    /// SIGHUP: the file read now, and the closures of the active targets of the groups it has
    /// and this promd does not (by name) walked in a task, which hands the reload to the agent
    /// ([`NewConfig::closures`]: a group added beside one handing over waits only if they share
    /// a unit). `None` while the walk runs. A later SIGHUP with a valid file aborts a walk
    /// still running, so the latest file is applied last; a refused file is answered at once.
    fn reload(&mut self) -> Option<Input> {
        let mut file = match self.read_config() {
            Ok(file) => file,
            Err(e) => return Some(Input::Signal(Signal::Reload(Err(e)))),
        };
        let running: std::collections::BTreeSet<&str> =
            self.drivers.values().map(|d| d.cfg.group_name()).collect();
        // Each slot of a group with several is walked on its own (its target instance).
        let added: Vec<(String, String)> = file
            .config
            .groups
            .iter()
            .filter(|g| !running.contains(g.name.as_str()))
            .flat_map(GroupConfig::slots)
            .map(|s| (s.name, s.active_target))
            .collect();
        if let Some(walk) = self.reload_walk.take() {
            walk.abort();
        }
        // Only a group that hands over (removed, renamed, or restarted by a change) can share
        // units with one added: with none, nothing waits, and nothing is walked twice.
        let slots: Vec<GroupConfig> = file
            .config
            .groups
            .iter()
            .flat_map(GroupConfig::slots)
            .collect();
        let hands_over = self.drivers.values().any(|d| !slots.contains(&d.cfg));
        if added.is_empty() || !hands_over {
            return Some(Input::Signal(Signal::Reload(Ok(file))));
        }
        let (systemd, inputs) = (self.systemd.clone(), self.inputs_tx.clone());
        let task = tokio::spawn(async move {
            let walks = futures_util::future::join_all(
                added.iter().map(|(_, target)| systemd.closure(target)),
            )
            .await;
            for ((name, target), walk) in added.into_iter().zip(walks) {
                match walk {
                    Ok(closure) => {
                        file.closures.insert(name, closure);
                    }
                    Err(e) => tracing::warn!(
                        "reload: reading the units of {target}: {e}; group {name} starts once \
                         every group handing over has stopped"
                    ),
                }
            }
            let _ = inputs.send(Input::Signal(Signal::Reload(Ok(file))));
        });
        self.reload_walk = Some(task.abort_handle());
        None
    }

    /// The groups to walk again after PID 1 reloaded: every open group but those leaving
    /// (so that no drop-in of a group on its way out is written anew); none once promd is
    /// stopping.
    fn roles_to_walk(&self) -> Vec<(GroupId, GroupConfig)> {
        if self.agent.stopping() {
            return Vec::new();
        }
        self.drivers
            .iter()
            .filter(|(id, _)| !self.agent.leaving(**id))
            .map(|(id, d)| (*id, d.cfg.clone()))
            .collect()
    }

    /// The store event just received, with those queued behind it (up to [`STORE_BATCH`]):
    /// one input for the agent ([`Input::Stores`]).
    fn store_batch(&mut self, id: GroupId, ev: StoreEvent) -> Input {
        let mut batch = vec![(id, ev)];
        while batch.len() < STORE_BATCH
            && let Ok(more) = self.store_rx.try_recv()
        {
            batch.push(more);
        }
        if batch.len() == 1 {
            let (id, ev) = batch.remove(0);
            return Input::Store(id, ev);
        }
        Input::Stores(batch)
    }

    /// How long ago each group's store task last turned.
    fn store_ages(&self) -> Vec<(GroupId, Option<Duration>)> {
        self.drivers
            .iter()
            .map(|(id, d)| (*id, d.progress.age()))
            .collect()
    }

    /// Wait for every store task to carry out its shutdown (release, revoke, member record),
    /// within [`Agent::shutdown_wait`].
    async fn finish_store_tasks(&mut self) {
        let limit = self.agent.shutdown_wait();
        let open = self.drivers.values_mut().map(|d| &mut d.session.task);
        let tasks = open.chain(self.leaving.iter_mut());
        if tokio::time::timeout(limit, futures_util::future::join_all(tasks))
            .await
            .is_err()
        {
            tracing::warn!("the store did not confirm the shutdown within {limit:?}; exiting");
        }
    }
}

/// How many store checks (seconds) apart the heap is trimmed.
const TRIM_EVERY: u64 = 10;

/// Give the free pages of glibc's heap back to the kernel (`malloc_trim(0)`). Starting
/// hundreds of groups, or taking over hundreds at once, allocates and frees far more than
/// an idle promd holds, and glibc keeps the freed memory: 500 groups left promd at
/// 37–40 MiB RSS. Costs a walk of the free lists, a fraction of a millisecond.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointer and only releases memory glibc's allocator holds
    // free; any thread may call it at any time.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

/// The most store events handled as one input: enough for a renewal of every group under a
/// shared lease, few enough that a step stays short (the fence's deadlines come first).
const STORE_BATCH: usize = 1024;

/// Sleeps until `due`, or for ever without one.
async fn sleep_until_due(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await,
        None => std::future::pending().await,
    }
}

/// The store check's ticks, every [`STORE_CHECK_INTERVAL`]; a late one is not made up for.
fn store_check_interval() -> Interval {
    let mut check = tokio::time::interval(STORE_CHECK_INTERVAL);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    check
}

async fn recv_call(
    calls: &mut Option<mpsc::UnboundedReceiver<CallRequest>>,
) -> Option<CallRequest> {
    match calls {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Fit the systemd watchdog to the configuration's shortest lease at start-up (see
/// [`watchdog_fit`]); a reload does the same through the agent.
pub fn fit_watchdog(config: &Config, notifier: &mut Notifier) {
    if let Some(fit) = watchdog_fit(config, notifier.watchdog()) {
        notifier.set_watchdog(fit.new);
        tracing::info!("{fit}");
    }
}

fn realtime_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
