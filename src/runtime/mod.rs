//! The event loop: feeds driver events to the group machines and carries out their actions.
//!
//! One loop serves every group, so a hung loop stops the watchdog pings and systemd kills
//! promd (taking the bound units with it). Slow work — systemd jobs, store requests — runs in
//! tasks that report back through channels; the loop itself never waits on I/O.

mod actions;
mod calls;
mod events;
mod jobs;
mod reload;
mod view;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::{Config, GroupConfig};
use crate::core::{Event, GroupMachine, GroupParams, Job, Mono, Timing};
use crate::dbus::{CallRequest, DbusService};
use crate::health::HealthResult;
use crate::logging;
use crate::notify::Notifier;
use crate::store::{GroupSession, GroupSpec, HostId, Progress, Store, StoreEvent};
use crate::systemd::{Closure, Systemd};
use crate::watch::WatchEvent;
use calls::{Pending, recv_call};

/// promd's exit status when it refuses to go on at run time (another host uses its `node`):
/// `EX_CONFIG`, which `promd.service` lists in `RestartPreventExitStatus=`.
pub const EXIT_REFUSED: u8 = 78;

/// Where the units' environment files go.
pub const RUN_DIR: &str = "/run/promd";

/// A store task that has not turned its loop for this long is taken as hung.
fn store_stall_limit(lease: Duration) -> Duration {
    (lease / 3 * 3).max(Duration::from_secs(5))
}

struct Group {
    cfg: GroupConfig,
    machine: GroupMachine,
    session: GroupSession,
    progress: Progress,
    /// The closure of the active target, as last found (what is stopped and killed at once,
    /// while systemd is asked again for what it holds now).
    closure: Closure,
    /// Tasks a stop supersedes (a start of the active target, restarts in place).
    superseded: Vec<tokio::task::AbortHandle>,
    /// Kills not yet carried out; a start of the active target supersedes them.
    kills: Vec<tokio::task::AbortHandle>,
    store_down: Option<String>,
    /// The last health result, to log a failing check's reason once, not every interval.
    health_ok: bool,
    /// CLOCK_REALTIME µs of the last role change.
    since_usec: u64,
    /// Removed (or replaced) by a reload: it hands over and exits; its slot stays so that
    /// the driver tasks' indices stay valid.
    retired: bool,
    /// A retired group that has exited and was dropped from D-Bus.
    finished: bool,
    health_task: Option<tokio::task::AbortHandle>,
    /// The task that follows the group's units; aborted when the group retires or its
    /// closure changes.
    watch_task: Option<tokio::task::AbortHandle>,
}

pub struct Runtime {
    origin: Instant,
    node: String,
    /// This host, written into our store records: how a record under our `node` from
    /// another host is told from one of this host's earlier runs.
    host: Option<HostId>,
    /// Why promd refuses to go on (another host uses this `node`): it stops every group and
    /// exits with [`EXIT_REFUSED`].
    refused: Option<String>,
    run_dir: PathBuf,
    groups: Vec<Group>,
    systemd: Systemd,
    store_rx: mpsc::UnboundedReceiver<(usize, StoreEvent)>,
    job_tx: mpsc::UnboundedSender<JobDone>,
    job_rx: mpsc::UnboundedReceiver<JobDone>,
    units_tx: mpsc::UnboundedSender<(usize, Closure)>,
    units_rx: mpsc::UnboundedReceiver<(usize, Closure)>,
    watch_tx: mpsc::UnboundedSender<(usize, WatchEvent)>,
    watch_rx: mpsc::UnboundedReceiver<(usize, WatchEvent)>,
    health_tx: mpsc::UnboundedSender<(usize, HealthResult)>,
    health_rx: mpsc::UnboundedReceiver<(usize, HealthResult)>,
    notifier: Notifier,
    dbus: Option<DbusService>,
    calls_rx: Option<mpsc::UnboundedReceiver<CallRequest>>,
    pending: Vec<Pending>,
    store: Box<dyn Store>,
    store_tx: mpsc::UnboundedSender<(usize, StoreEvent)>,
    /// The configuration in force, and where it came from (for reloads).
    config: Config,
    config_path: PathBuf,
    /// Groups of a reload that wait for their old version to finish handing over.
    replacing: Vec<GroupConfig>,
    /// SIGTERM was handled: every group hands over and exits, and none is started.
    stopping: bool,
}

impl Runtime {
    pub fn new(
        config: Config,
        config_path: PathBuf,
        store: Box<dyn Store>,
        systemd: Systemd,
        notifier: Notifier,
    ) -> Runtime {
        let (store_tx, store_rx) = mpsc::unbounded_channel();
        let (job_tx, job_rx) = mpsc::unbounded_channel();
        let (units_tx, units_rx) = mpsc::unbounded_channel();
        let (watch_tx, watch_rx) = mpsc::unbounded_channel();
        let (health_tx, health_rx) = mpsc::unbounded_channel();
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
        let mut runtime = Runtime {
            origin: Instant::now(),
            node: config.node.clone(),
            host,
            refused: None,
            run_dir: PathBuf::from(RUN_DIR),
            groups: Vec::new(),
            systemd,
            store_rx,
            job_tx,
            job_rx,
            units_tx,
            units_rx,
            watch_tx,
            watch_rx,
            health_tx,
            health_rx,
            notifier,
            dbus: None,
            calls_rx: None,
            pending: Vec::new(),
            store,
            store_tx,
            config: config.clone(),
            config_path,
            replacing: Vec::new(),
            stopping: false,
        };
        for cfg in &config.groups {
            runtime.open_group(cfg);
        }
        runtime
    }

    /// A group's machine and store session, in a new slot; returns its index.
    fn open_group(&mut self, cfg: &GroupConfig) -> usize {
        let i = self.groups.len();
        let progress = Progress::default();
        let spec = GroupSpec {
            group: cfg.name.clone(),
            node: self.node.clone(),
            host: self.host.clone(),
            lease: cfg.lease,
            progress: progress.clone(),
        };
        self.groups.push(Group {
            machine: GroupMachine::new(params(&self.node, cfg, self.notifier.watchdog())),
            session: self.store.open_group(spec, i, self.store_tx.clone()),
            progress,
            closure: Closure::default(),
            superseded: Vec::new(),
            kills: Vec::new(),
            store_down: None,
            health_ok: true,
            since_usec: realtime_usec(),
            retired: false,
            finished: false,
            health_task: None,
            watch_task: None,
            cfg: cfg.clone(),
        });
        i
    }

    /// Serve `org.promd1` on this connection. Without it promd still does its job; it only
    /// cannot be observed or steered over D-Bus.
    pub async fn serve_dbus(&mut self, conn: &zbus::Connection) -> zbus::Result<()> {
        let views = self.views();
        let (service, calls) = DbusService::start(conn, &self.node, views).await?;
        self.dbus = Some(service);
        self.calls_rx = Some(calls);
        Ok(())
    }

    fn now(&self) -> Mono {
        Mono(self.origin.elapsed())
    }

    fn mono(&self, at: Instant) -> Mono {
        Mono(at.saturating_duration_since(self.origin))
    }

    /// Serve until SIGTERM (or SIGINT) has been handled for every group. `Ok(Some(why))`:
    /// promd refused to go on (another host uses this `node`) and stopped every group; it
    /// must exit with [`EXIT_REFUSED`].
    pub async fn run(mut self) -> std::io::Result<Option<String>> {
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sighup = signal(SignalKind::hangup())?;
        let ping_every = self
            .notifier
            .ping_interval()
            .unwrap_or(Duration::from_secs(3600));
        let mut ping = tokio::time::interval(ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        for i in 0..self.groups.len() {
            self.bind_units(i);
            self.feed(i, Event::Tick);
        }
        let status = self.status_line();
        self.notifier.ready(&status);

        let mut calls = self.calls_rx.take();
        // With no groups (or all removed by reloads) promd idles; it ends only on SIGTERM.
        while !(self.stopping && self.groups.iter().all(|g| g.machine.exited())) {
            let now = self.now();
            let deadline = self
                .groups
                .iter()
                .filter_map(|g| g.machine.next_deadline())
                .chain(self.pending.iter().map(|p| p.deadline))
                .min()
                .map_or(Duration::from_secs(3600), |d| d.saturating_sub(now));
            tokio::select! {
                // Deadlines first: the fence is one of them, and nothing may starve it.
                biased;
                _ = tokio::time::sleep(deadline) => {
                    for i in 0..self.groups.len() {
                        self.feed(i, Event::Tick);
                    }
                }
                Some((i, ev)) = self.store_rx.recv() => self.on_store(i, ev),
                Some(done) = self.job_rx.recv() => self.on_job(done),
                Some((i, closure)) = self.units_rx.recv() => self.on_closure(i, closure),
                Some((i, ev)) = self.watch_rx.recv() => self.on_watch(i, ev),
                Some((i, result)) = self.health_rx.recv() => self.on_health(i, result),
                Some(call) = recv_call(&mut calls) => self.on_call(call),
                _ = sigterm.recv(), if !self.stopping => self.terminate(),
                _ = sigint.recv(), if !self.stopping => self.terminate(),
                _ = sighup.recv(), if !self.stopping => {
                    self.reload();
                    // A reload may have lowered the watchdog to fit a shorter lease.
                    let every = self.notifier.ping_interval().unwrap_or(Duration::from_secs(3600));
                    if every != ping.period() {
                        ping = tokio::time::interval(every);
                        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                }
                _ = ping.tick() => self.ping_watchdog(),
            }
            self.settle_calls();
            self.retire_exited();
            self.publish();
        }
        self.finish_store_tasks().await;
        Ok(self.refused.take())
    }

    /// Wait for every store task to carry out its shutdown (release, revoke, member record),
    /// within a bound: an unreachable store must not hold up the exit (the lease then runs
    /// out on its own, and the units are down already).
    async fn finish_store_tasks(&mut self) {
        let limit = self
            .groups
            .iter()
            .map(|g| g.cfg.lease)
            .max()
            .unwrap_or_default()
            .clamp(Duration::from_secs(1), Duration::from_secs(10));
        let tasks = self.groups.iter_mut().map(|g| &mut g.session.task);
        if tokio::time::timeout(limit, futures_util::future::join_all(tasks))
            .await
            .is_err()
        {
            tracing::warn!("the store did not confirm the shutdown within {limit:?}; exiting");
        }
    }

    fn terminate(&mut self) {
        tracing::info!("SIGTERM: handing over every group and stopping");
        self.stop_all_groups();
    }

    /// Another host's promd uses this host's `node` (its record says so): two promd under one
    /// name would take each other's records for their own and release each other's keys.
    /// Refuse, loudly: stop every group as on SIGTERM, then exit [`EXIT_REFUSED`] (which the
    /// shipped unit does not restart). Whichever of the two finds the other first refuses.
    fn refuse_node_conflict(&mut self, i: usize, what: &str, other: &str) {
        if self.refused.is_some() {
            return;
        }
        let why = format!(
            "node {} is in use by another host: {what} was written by the promd on machine {other} \
             (this host is {}); each host needs its own `node` in promd.toml",
            self.node,
            self.host.as_ref().map_or("unknown", |h| h.as_str()),
        );
        tracing::error!(
            MESSAGE_ID = logging::NODE_CONFLICT,
            PROMD_NODE = %self.node,
            PROMD_GROUP = %self.groups[i].cfg.name,
            "refusing to run: {why}; stopping every group"
        );
        self.refused = Some(why);
        if !self.stopping {
            self.stop_all_groups();
        }
    }

    fn stop_all_groups(&mut self) {
        self.stopping = true;
        self.notifier.stopping();
        self.replacing.clear();
        for i in 0..self.groups.len() {
            self.feed(i, Event::Terminate);
        }
    }

    /// Ping only while every store task keeps turning; a hung driver means a restart.
    fn ping_watchdog(&self) {
        let stalled = self.groups.iter().find(|g| {
            g.progress
                .age()
                .is_some_and(|age| age > store_stall_limit(g.cfg.lease))
                && !g.machine.exited()
        });
        match stalled {
            None => self.notifier.ping(),
            Some(g) => {
                tracing::error!(PROMD_GROUP = %g.cfg.name, "store driver stalled: not pinging the watchdog")
            }
        }
    }

    fn feed(&mut self, i: usize, event: Event) {
        let now = self.now();
        let actions = self.groups[i].machine.handle(event, now);
        for action in actions {
            self.execute(i, action);
        }
    }

    /// A group event with the group's fields.
    fn log(&self, i: usize, level: tracing::Level, message: &str) {
        let g = &self.groups[i];
        let (group, role, term, leader) = (
            &g.cfg.name,
            g.machine.role(),
            g.machine.term(),
            g.machine.leader().unwrap_or(""),
        );
        macro_rules! ev {
            ($lvl:ident) => {
                tracing::$lvl!(PROMD_GROUP = %group, PROMD_ROLE = %role, PROMD_TERM = term, PROMD_LEADER = %leader, "{group}: {message}")
            };
        }
        match level {
            tracing::Level::ERROR => ev!(error),
            tracing::Level::WARN => ev!(warn),
            _ => ev!(info),
        }
    }
}

/// A systemd job of a group's finished.
struct JobDone {
    i: usize,
    job: Job,
    ok: bool,
    /// After a start of the active target: the watched units that are not up, with their
    /// state (failed in `ExecStartPre=`, skipped by a Condition, ...).
    not_up: Vec<(String, String)>,
}

impl JobDone {
    fn failed(i: usize, job: Job) -> JobDone {
        JobDone {
            i,
            job,
            ok: false,
            not_up: Vec::new(),
        }
    }
}

fn params(node: &str, cfg: &GroupConfig, watchdog: Option<Duration>) -> GroupParams {
    GroupParams {
        node: node.to_string(),
        timing: Timing::new(cfg.lease).with_watchdog(watchdog.unwrap_or_default()),
        priority: cfg.priority,
        preempt: cfg.preempt,
        members: cfg.members.clone(),
        has_passive_target: cfg.passive_target.is_some(),
        failure_cooldown: cfg.failure_cooldown,
        max_restarts: cfg.max_restarts,
        restart_window: cfg.restart_window,
        restart_backoff: cfg.restart_backoff,
    }
}

/// The watchdog interval the configuration calls for, and the group that sets it: the
/// shortest lease's [`Timing::fitting_watchdog`]. promd lowers its own watchdog to it when
/// the unit's `WatchdogSec=` is longer (see [`Notifier::fit_watchdog`]).
pub fn watchdog_limit(config: &Config) -> Option<(Duration, &str)> {
    config
        .groups
        .iter()
        .map(|g| (Timing::new(g.lease).fitting_watchdog(), g.name.as_str()))
        .min_by_key(|(d, _)| *d)
}

/// Fit the systemd watchdog to the configuration's shortest lease: a hung promd is only safe
/// if the watchdog kills it (and the fence its units) within that lease's margin.
pub fn fit_watchdog(config: &Config, notifier: &mut Notifier) {
    if let Some((limit, group)) = watchdog_limit(config)
        && let Some(old) = notifier.fit_watchdog(limit)
    {
        tracing::info!(
            "watchdog {} -> {} to fit group {group}'s lease",
            humantime::format_duration(old),
            humantime::format_duration(limit)
        );
    }
}

fn realtime_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
