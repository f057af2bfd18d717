//! The event loop: feeds driver events to the group machines and carries out their actions.
//!
//! One loop serves every group, so a hung loop stops the watchdog pings and systemd kills
//! promd (taking the bound units with it). Slow work — systemd jobs, store requests — runs in
//! tasks that report back through channels; the loop itself never waits on I/O.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::{Config, GroupConfig};
use crate::core::{
    Action, Event, GroupMachine, GroupParams, Job, Member, Mono, Refusal, Request, Role, Timing,
};
use crate::dbus::{Call, CallRequest, DbusService, GroupView, PromdError};
use crate::health::{self, HealthCheck, HealthResult};
use crate::logging;
use crate::notify::Notifier;
use crate::store::{
    GroupSession, GroupSpec, LeaderRecord, MaintenanceRecord, MemberRecord, Progress, Store,
    StoreCommand, StoreEvent, SwitchoverRecord, record::FORMAT_VERSION,
};
use crate::systemd::{Systemd, UnitEnv};
use crate::watch::{self, WatchEvent};

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
    /// The units the active target pulled in, as last seen (the fallback if systemd cannot
    /// be asked again when they must be stopped or killed).
    units: Vec<String>,
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
}

/// A D-Bus call that completes when the group gets there (or times out).
struct Pending {
    group: usize,
    call: Call,
    deadline: Mono,
    reply: tokio::sync::oneshot::Sender<Result<(), PromdError>>,
}

pub struct Runtime {
    origin: Instant,
    node: String,
    run_dir: PathBuf,
    groups: Vec<Group>,
    systemd: Systemd,
    store_rx: mpsc::UnboundedReceiver<(usize, StoreEvent)>,
    job_tx: mpsc::UnboundedSender<(usize, Job, bool)>,
    job_rx: mpsc::UnboundedReceiver<(usize, Job, bool)>,
    units_tx: mpsc::UnboundedSender<(usize, Vec<String>)>,
    units_rx: mpsc::UnboundedReceiver<(usize, Vec<String>)>,
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
        let mut runtime = Runtime {
            origin: Instant::now(),
            node: config.node.clone(),
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
            lease: cfg.lease,
            progress: progress.clone(),
        };
        self.groups.push(Group {
            machine: GroupMachine::new(params(&self.node, cfg)),
            session: self.store.open_group(spec, i, self.store_tx.clone()),
            progress,
            units: Vec::new(),
            store_down: None,
            health_ok: true,
            since_usec: realtime_usec(),
            retired: false,
            finished: false,
            health_task: None,
            cfg: cfg.clone(),
        });
        i
    }

    /// A group added by a reload: opened, served on D-Bus, started (passive first).
    fn add_group(&mut self, cfg: &GroupConfig) {
        let i = self.open_group(cfg);
        if self.dbus.is_some() {
            let v = view(&self.groups[i], self.now());
            if let Some(d) = &mut self.dbus {
                d.add_group(i, v);
            }
        }
        self.bind_units(i);
        self.feed(i, Event::Tick);
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

    /// Serve until SIGTERM (or SIGINT) has been handled for every group.
    pub async fn run(mut self) -> std::io::Result<()> {
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
        let mut stopping = false;

        let mut calls = self.calls_rx.take();
        // With no groups (or all removed by reloads) promd idles; it ends only on SIGTERM.
        while !(stopping && self.groups.iter().all(|g| g.machine.exited())) {
            let now = self.now();
            let deadline = self
                .groups
                .iter()
                .filter_map(|g| g.machine.next_deadline(now))
                .chain(self.pending.iter().map(|p| p.deadline))
                .min()
                .map_or(Duration::from_secs(3600), |d| d.saturating_sub(now));
            tokio::select! {
                biased;
                Some((i, ev)) = self.store_rx.recv() => self.on_store(i, ev),
                Some((i, job, ok)) = self.job_rx.recv() => self.feed(i, Event::Job { job, ok }),
                Some((i, units)) = self.units_rx.recv() => self.groups[i].units = units,
                Some((i, ev)) = self.watch_rx.recv() => self.on_watch(i, ev),
                Some((i, result)) = self.health_rx.recv() => self.on_health(i, result),
                Some(call) = recv_call(&mut calls) => self.on_call(call),
                _ = sigterm.recv(), if !stopping => stopping = self.terminate(),
                _ = sigint.recv(), if !stopping => stopping = self.terminate(),
                _ = sighup.recv(), if !stopping => self.reload(),
                _ = ping.tick() => self.ping_watchdog(),
                _ = tokio::time::sleep(deadline) => {
                    for i in 0..self.groups.len() {
                        self.feed(i, Event::Tick);
                    }
                }
            }
            self.settle_calls();
            self.retire_exited();
            self.publish();
        }
        Ok(())
    }

    /// `systemctl reload promd`: apply a valid new configuration without disturbing the
    /// groups that did not change; keep the running one if the new one is invalid.
    fn reload(&mut self) {
        self.notifier.reloading();
        match self.try_reload() {
            Ok(summary) => tracing::info!(
                "configuration reloaded from {}: {summary}",
                self.config_path.display()
            ),
            Err(problems) => {
                for line in problems.lines() {
                    tracing::error!(MESSAGE_ID = logging::CONFIG_REFUSED, "{line}");
                }
                tracing::error!(
                    MESSAGE_ID = logging::CONFIG_REFUSED,
                    "reload refused: keeping the running configuration"
                );
            }
        }
        let status = self.status_line();
        self.notifier.ready(&status);
    }

    fn try_reload(&mut self) -> Result<String, String> {
        let new = crate::config::load(&self.config_path).map_err(|e| e.to_string())?;
        if new.node != self.config.node || new.store != self.config.store {
            return Err(
                "changing `node` or `[store]` needs a restart: systemctl restart promd".into(),
            );
        }
        check_watchdog(&new, self.notifier.watchdog())?;
        let (mut added, mut removed, mut changed, mut kept) =
            (Vec::new(), Vec::new(), Vec::new(), 0);
        for i in 0..self.groups.len() {
            let g = &self.groups[i];
            if g.retired {
                continue;
            }
            match new.groups.iter().find(|n| n.name == g.cfg.name) {
                Some(n) if *n == g.cfg => kept += 1,
                Some(n) => {
                    changed.push(n.name.clone());
                    self.replacing.push(n.clone());
                    self.retire(i, "its configuration changed");
                }
                None => {
                    removed.push(g.cfg.name.clone());
                    self.retire(i, "removed from the configuration");
                }
            }
        }
        for n in &new.groups {
            let live = self
                .groups
                .iter()
                .any(|g| !g.retired && g.cfg.name == n.name);
            let waiting = self.replacing.iter().any(|r| r.name == n.name);
            if !live && !waiting {
                added.push(n.name.clone());
                self.add_group(n);
            }
        }
        self.config = new;
        Ok(format!(
            "{kept} unchanged, added [{}], removed [{}], changed (handed over, then restarted) [{}]",
            added.join(" "),
            removed.join(" "),
            changed.join(" ")
        ))
    }

    /// Hand the group over and stop it.
    fn retire(&mut self, i: usize, why: &str) {
        self.log(
            i,
            tracing::Level::INFO,
            &format!("{why}: handing over and stopping this group"),
        );
        self.groups[i].retired = true;
        if let Some(task) = self.groups[i].health_task.take() {
            task.abort();
        }
        self.feed(i, Event::Terminate);
    }

    /// Once a retired group has finished, drop it from D-Bus and start its replacement.
    fn retire_exited(&mut self) {
        for i in 0..self.groups.len() {
            let g = &self.groups[i];
            if !g.retired || g.finished || !g.machine.exited() {
                continue;
            }
            let name = g.cfg.name.clone();
            if let Some(d) = &self.dbus {
                d.remove_group(&name);
            }
            self.groups[i].finished = true;
            if let Some(pos) = self.replacing.iter().position(|r| r.name == name) {
                let cfg = self.replacing.remove(pos);
                self.add_group(&cfg);
            }
        }
    }

    /// STATUS= and the D-Bus view, after every turn of the loop.
    fn publish(&mut self) {
        let status = self.status_line();
        self.notifier.status(&status);
        if self.dbus.is_some() {
            let views = self.views();
            let connected = self.groups.iter().all(|g| g.machine.store_up());
            if let Some(d) = &mut self.dbus {
                d.update(views, connected);
            }
        }
    }

    fn views(&self) -> Vec<GroupView> {
        let now = self.now();
        self.groups.iter().map(|g| view(g, now)).collect()
    }

    fn on_call(&mut self, req: CallRequest) {
        let CallRequest {
            group: i,
            call,
            reply,
        } = req;
        let now = self.now();
        let g = &mut self.groups[i];
        let timeout = call_timeout(g.cfg.lease);
        let outcome = match call {
            Call::Promote => g.machine.request(Request::Promote, now),
            Call::Demote => g.machine.request(Request::Demote, now),
            Call::ResetFailed => g.machine.request(Request::ResetFailed, now),
            Call::SetMaintenance(on) => {
                if g.machine.maintenance() != on {
                    if !g.machine.store_up() {
                        let _ =
                            reply.send(Err(PromdError::Failed("the store is unreachable".into())));
                        return;
                    }
                    let rec = MaintenanceRecord {
                        v: FORMAT_VERSION,
                        on,
                        by: self.node.clone(),
                    };
                    let _ = g.session.commands.send(StoreCommand::SetMaintenance(rec));
                }
                Ok(Vec::new())
            }
        };
        match outcome {
            Err(refusal) => {
                let _ = reply.send(Err(match refusal {
                    Refusal::NotEligible(m) => PromdError::NotEligible(m),
                    Refusal::NoStandby(m) => PromdError::NoStandby(m),
                    Refusal::Maintenance(m) => PromdError::Maintenance(m),
                }));
            }
            Ok(actions) => {
                let what = match call {
                    Call::Promote => "promote requested".to_string(),
                    Call::Demote => "demote requested".to_string(),
                    Call::ResetFailed => "failed state reset".to_string(),
                    Call::SetMaintenance(on) => {
                        format!("maintenance {} requested", if on { "on" } else { "off" })
                    }
                };
                self.log(i, tracing::Level::INFO, &what);
                for action in actions {
                    self.execute(i, action);
                }
                self.pending.push(Pending {
                    group: i,
                    call,
                    deadline: now + timeout,
                    reply,
                });
            }
        }
    }

    /// Answer the calls whose outcome is now known.
    fn settle_calls(&mut self) {
        let now = self.now();
        let mut still = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            let m = &self.groups[p.group].machine;
            let done = match p.call {
                Call::Promote => match m.role() {
                    Role::Active => Some(Ok(())),
                    Role::Failed => Some(Err(PromdError::NotEligible(
                        "this host failed while taking over".into(),
                    ))),
                    _ if m.maintenance() => Some(Err(PromdError::Maintenance(
                        "maintenance mode is on".into(),
                    ))),
                    _ => None,
                },
                Call::Demote => m.settled_passive().then_some(Ok(())),
                Call::SetMaintenance(on) => (m.maintenance() == on).then_some(Ok(())),
                Call::ResetFailed => Some(Ok(())),
            };
            let done = done.or_else(|| {
                (now >= p.deadline).then(|| {
                    Err(PromdError::Timeout(format!(
                        "{:?} did not complete in time",
                        p.call
                    )))
                })
            });
            match done {
                Some(result) => {
                    let _ = p.reply.send(result);
                }
                None => still.push(p),
            }
        }
        self.pending = still;
    }

    fn terminate(&mut self) -> bool {
        tracing::info!("SIGTERM: handing over every group and stopping");
        self.notifier.stopping();
        for i in 0..self.groups.len() {
            self.feed(i, Event::Terminate);
        }
        true
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

    fn on_store(&mut self, i: usize, ev: StoreEvent) {
        let event = match ev {
            StoreEvent::Up => {
                if let Some(reason) = self.groups[i].store_down.take() {
                    self.log(
                        i,
                        tracing::Level::INFO,
                        &format!("store reachable again (was: {reason})"),
                    );
                }
                Event::StoreUp
            }
            StoreEvent::Down(reason) => {
                let g = &mut self.groups[i];
                if g.store_down.as_deref() != Some(&reason) {
                    g.store_down = Some(reason.clone());
                    self.log(
                        i,
                        tracing::Level::WARN,
                        &format!("store unreachable: {reason}"),
                    );
                }
                Event::StoreDown
            }
            StoreEvent::Renewed { sent_at } => Event::Renewed {
                sent_at: self.mono(sent_at),
            },
            StoreEvent::LeaseLost => {
                self.log(i, tracing::Level::WARN, "store lease lost");
                Event::LeaseLost
            }
            StoreEvent::Leader(l) => Event::Leader(l.map(|l| (l.node, l.term))),
            StoreEvent::Members(ms) => Event::Members(
                ms.into_iter()
                    .map(|m| Member {
                        node: m.node,
                        priority: m.priority,
                        eligible: m.eligible,
                        healthy: m.healthy,
                        role: m.role,
                    })
                    .collect(),
            ),
            StoreEvent::Switchover(s) => Event::Switchover(s.map(|s| s.to)),
            StoreEvent::Campaigned(t) => Event::Campaigned(t),
            StoreEvent::Released => Event::Released,
            StoreEvent::Maintenance(m) => {
                let on = m.as_ref().is_some_and(|m| m.on);
                if on != self.groups[i].machine.maintenance() {
                    let by = m.map(|m| m.by).unwrap_or_default();
                    let msg = if on {
                        format!("maintenance mode on (set by {by})")
                    } else {
                        "maintenance mode off".into()
                    };
                    self.log(i, tracing::Level::INFO, &msg);
                }
                Event::Maintenance(on)
            }
            StoreEvent::Corrupt { key, error } => {
                self.log(
                    i,
                    tracing::Level::WARN,
                    &format!("ignoring unreadable store value {key}: {error}"),
                );
                return;
            }
        };
        self.feed(i, event);
    }

    fn feed(&mut self, i: usize, event: Event) {
        let now = self.now();
        let actions = self.groups[i].machine.handle(event, now);
        for action in actions {
            self.execute(i, action);
        }
    }

    fn execute(&mut self, i: usize, action: Action) {
        let g = &self.groups[i];
        let send = |cmd: StoreCommand| {
            // A closed channel means the store task ended: only after Shutdown.
            let _ = g.session.commands.send(cmd);
        };
        match action {
            Action::Start(job, term) => self.start_job(i, job, term),
            Action::KillActive => {
                if g.machine.role() == Role::Starting {
                    // Nothing should be running (the units are bound to promd); this makes sure.
                    self.log(
                        i,
                        tracing::Level::INFO,
                        "start-up: killing any active unit a previous run left",
                    );
                } else {
                    self.log(
                        i,
                        tracing::Level::WARN,
                        "stopping took too long: killing the active units",
                    );
                }
                let (systemd, units) = (self.systemd.clone(), g.units.clone());
                tokio::spawn(async move {
                    for unit in units {
                        if let Err(e) = systemd.kill(&unit).await {
                            tracing::error!("killing {unit}: {e}");
                        }
                    }
                });
            }
            Action::Campaign => send(StoreCommand::Campaign(LeaderRecord {
                v: FORMAT_VERSION,
                node: self.node.clone(),
                priority: g.cfg.priority,
            })),
            Action::Release { term } => send(StoreCommand::Release { term }),
            Action::Publish(m) => send(StoreCommand::Publish(MemberRecord {
                v: FORMAT_VERSION,
                node: m.node,
                priority: m.priority,
                eligible: m.eligible,
                healthy: m.healthy,
                role: m.role,
            })),
            Action::RequestSwitchover { to } => {
                self.log(
                    i,
                    tracing::Level::INFO,
                    &format!("asking the active node to hand over to {to} (preempt)"),
                );
                send(StoreCommand::RequestSwitchover(SwitchoverRecord {
                    v: FORMAT_VERSION,
                    to,
                    from: self.node.clone(),
                }))
            }
            Action::ClearSwitchover => send(StoreCommand::ClearSwitchover),
            Action::RoleChanged {
                old,
                new,
                term,
                reason,
            } => self.role_changed(i, old, new, term, &reason),
            Action::RestartUnit(unit) => {
                let units = match unit {
                    Some(u) => vec![u],
                    None => g.cfg.watch.clone().unwrap_or_else(|| g.units.clone()),
                };
                self.log(
                    i,
                    tracing::Level::WARN,
                    &format!("restarting {} in place", units.join(" ")),
                );
                let (systemd, group) = (self.systemd.clone(), g.cfg.name.clone());
                tokio::spawn(async move {
                    for unit in units {
                        if let Err(e) = systemd.restart_failed(&unit).await {
                            tracing::error!(PROMD_GROUP = %group, "restarting {unit}: {e}");
                        }
                    }
                });
            }
            Action::Note(note) => self.log(i, tracing::Level::WARN, &note),
            Action::Exit => send(StoreCommand::Shutdown),
        }
    }

    /// Run a systemd job in a task; its result comes back as `Event::Job`.
    fn start_job(&self, i: usize, job: Job, term: Option<u64>) {
        let g = &self.groups[i];
        let systemd = self.systemd.clone();
        let (jobs, units_tx) = (self.job_tx.clone(), self.units_tx.clone());
        let active = g.cfg.active_target.clone();
        let passive = g.cfg.passive_target.clone();
        let known_units = g.units.clone();
        let leader = g.machine.leader().unwrap_or("").to_string();
        let env = |role: Role, term: u64, leader: &str| {
            UnitEnv {
                group: &g.cfg.name,
                node: &self.node,
                role: role.as_str(),
                term,
                leader,
            }
            .write(&self.run_dir)
        };
        // The env file is written before the start is even queued, so the units read this term.
        let env_written = match job {
            Job::StartActive => env(Role::Active, term.unwrap_or(0), &self.node),
            Job::StartPassive => env(Role::Passive, g.machine.term(), &leader),
            Job::StopActive => Ok(()),
        };
        if let Err(e) = env_written {
            self.log(
                i,
                tracing::Level::ERROR,
                &format!("cannot write the unit environment: {e}"),
            );
            let _ = jobs.send((i, job, false));
            return;
        }
        let group = g.cfg.name.clone();
        tokio::spawn(async move {
            let result = match job {
                Job::StartActive => {
                    // The units were bound to promd at start-up, so the start need not wait;
                    // units the target gained since are bound alongside (the daemon-reload
                    // applies BindsTo= to running units too).
                    let rebind = async {
                        if let Ok(units) = systemd.pulled_in(&active).await {
                            if let Err(e) = systemd.bind_to_promd(&group, &units).await {
                                tracing::error!(PROMD_GROUP = %group, "binding units to promd: {e}");
                            }
                            let _ = units_tx.send((i, units));
                        }
                    };
                    if known_units.is_empty() {
                        rebind.await;
                        systemd.start(&active).await
                    } else {
                        let (started, ()) = tokio::join!(systemd.start(&active), rebind);
                        started
                    }
                }
                Job::StartPassive => match passive {
                    Some(unit) => systemd.start(&unit).await,
                    None => Ok(()),
                },
                Job::StopActive => {
                    // Stop what is known at once; whatever the target pulls in besides (its
                    // contents may have changed) is stopped as soon as systemd says so.
                    let mut first = known_units.clone();
                    first.push(active.clone());
                    let known = stop_all(&systemd, &first);
                    let extra = async {
                        let mut units = systemd.pulled_in(&active).await.unwrap_or_default();
                        units.retain(|u| !known_units.contains(u));
                        let result = stop_all(&systemd, &units).await;
                        units.extend(known_units.iter().cloned());
                        units.sort();
                        let _ = units_tx.send((i, units));
                        result
                    };
                    let (a, b) = tokio::join!(known, extra);
                    a.and(b)
                }
            };
            if let Err(e) = &result {
                tracing::error!(PROMD_GROUP = %group, "{job:?}: {e}");
            }
            let _ = jobs.send((i, job, result.is_ok()));
        });
    }

    /// Bind the active target's units to promd ahead of any promotion.
    /// Bind the active target's units to promd ahead of any promotion, follow the watched
    /// units and the passive target's, and start the health check.
    fn bind_units(&mut self, i: usize) {
        let g = &self.groups[i];
        let (systemd, cfg, units_tx, watch_tx) = (
            self.systemd.clone(),
            g.cfg.clone(),
            self.units_tx.clone(),
            self.watch_tx.clone(),
        );
        tokio::spawn(async move {
            let group = &cfg.name;
            match systemd.pulled_in(&cfg.active_target).await {
                Ok(units) => {
                    if let Err(e) = systemd.bind_to_promd(group, &units).await {
                        tracing::error!(PROMD_GROUP = %group, "binding units to promd: {e}");
                    }
                    let watched = cfg.watch.clone().unwrap_or_else(|| units.clone());
                    watch::watch_active(&systemd, i, &watched, watch_tx.clone());
                    let _ = units_tx.send((i, units));
                }
                Err(e) => {
                    tracing::error!(PROMD_GROUP = %group, "reading {}: {e}", cfg.active_target)
                }
            }
            if let Some(passive) = &cfg.passive_target {
                let mut units = systemd.pulled_in(passive).await.unwrap_or_default();
                units.push(passive.clone());
                watch::watch_passive(&systemd, i, &units, watch_tx);
            }
        });
        if let Some(command) = &g.cfg.health_command {
            let check = HealthCheck {
                command: command.clone(),
                interval: g.cfg.health_interval,
                timeout: g.cfg.health_timeout,
                env: vec![
                    ("PROMD_GROUP".into(), g.cfg.name.clone()),
                    ("PROMD_NODE".into(), self.node.clone()),
                ],
            };
            let task = health::spawn(i, check, self.health_tx.clone());
            self.groups[i].health_task = Some(task);
        }
    }

    fn on_watch(&mut self, i: usize, ev: WatchEvent) {
        let event = match ev {
            WatchEvent::Failed { unit, restarted } => Event::UnitFailed { unit, restarted },
            WatchEvent::PassiveUnits { ok } => Event::PassiveUnits { ok },
        };
        self.feed(i, event);
    }

    fn on_health(&mut self, i: usize, result: HealthResult) {
        if !result.ok && self.groups[i].health_ok {
            self.log(
                i,
                tracing::Level::WARN,
                &format!("health check failed: {}", result.detail),
            );
        }
        self.groups[i].health_ok = result.ok;
        self.feed(i, Event::Health { ok: result.ok });
    }

    fn role_changed(&mut self, i: usize, old: Role, new: Role, term: u64, reason: &str) {
        self.groups[i].since_usec = realtime_usec();
        let g = &self.groups[i];
        if let Some(d) = &self.dbus {
            d.role_changed(&g.cfg.name, old.as_str(), new.as_str(), term, reason);
        }
        let leader = g.machine.leader().unwrap_or("");
        let message = format!("{}: {old} -> {new} (term {term}): {reason}", g.cfg.name);
        let fenced = reason.contains("lease not renewed");
        let id = if fenced {
            logging::FENCED
        } else {
            logging::ROLE_CHANGED
        };
        tracing::info!(
            MESSAGE_ID = id,
            PROMD_GROUP = %g.cfg.name,
            PROMD_ROLE = %new,
            PROMD_OLD_ROLE = %old,
            PROMD_TERM = term,
            PROMD_LEADER = %leader,
            PROMD_REASON = %reason,
            "{message}"
        );
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

    /// `STATUS=`: one clause per group.
    fn status_line(&self) -> String {
        let now = self.now();
        let parts: Vec<String> = self.groups.iter().map(|g| status_clause(g, now)).collect();
        if parts.is_empty() {
            "no groups configured".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Stop every unit; all jobs are queued at once and all awaited.
async fn stop_all(systemd: &Systemd, units: &[String]) -> Result<(), crate::systemd::SystemdError> {
    let mut jobs = Vec::new();
    for unit in units {
        let systemd = systemd.clone();
        let unit = unit.to_string();
        jobs.push(tokio::spawn(async move { systemd.stop(&unit).await }));
    }
    let mut result = Ok(());
    for job in jobs {
        match job.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(crate::systemd::SystemdError::SignalsGone),
        }
    }
    result
}

fn params(node: &str, cfg: &GroupConfig) -> GroupParams {
    GroupParams {
        node: node.to_string(),
        timing: Timing::new(cfg.lease),
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

/// The longest `WatchdogSec=` the configuration allows, and the group that sets the bound.
pub fn watchdog_limit(config: &Config) -> Option<(Duration, &str)> {
    config
        .groups
        .iter()
        .map(|g| (Timing::new(g.lease).max_watchdog(), g.name.as_str()))
        .min_by_key(|(d, _)| *d)
}

/// A hung promd is only safe if the watchdog kills it (and its units) within the lease:
/// refuse a configuration whose leases are too short for `WatchdogSec=`.
pub fn check_watchdog(config: &Config, watchdog: Option<Duration>) -> Result<(), String> {
    match (watchdog, watchdog_limit(config)) {
        (Some(w), Some((limit, group))) if w > limit => Err(format!(
            "WatchdogSec={} is too long for group {group}'s lease: at most {} (set WatchdogSec= in a drop-in for promd.service, or lengthen the lease)",
            humantime::format_duration(w),
            humantime::format_duration(Duration::from_millis(limit.as_millis() as u64))
        )),
        _ => Ok(()),
    }
}

/// How long a Promote or Demote may take: a hand-over stops units, so give it a few leases.
fn call_timeout(lease: Duration) -> Duration {
    (lease * 3).max(Duration::from_secs(30))
}

async fn recv_call(
    calls: &mut Option<mpsc::UnboundedReceiver<CallRequest>>,
) -> Option<CallRequest> {
    match calls {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn realtime_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The D-Bus view of a group: its machine, plus the configured members the store does not
/// know (shown as down).
fn view(g: &Group, now: Mono) -> GroupView {
    let m = &g.machine;
    let mut members: Vec<(String, String, i32, bool)> = m
        .members()
        .iter()
        .map(|x| {
            (
                x.node.clone(),
                x.role.as_str().to_string(),
                x.priority,
                x.healthy,
            )
        })
        .collect();
    // This host as it is now (its record in the store may lag, or the store be unreachable).
    members.retain(|x| x.0 != m.node());
    members.push((
        m.node().to_string(),
        m.role().as_str().to_string(),
        m.priority(),
        m.healthy(),
    ));
    for node in g.cfg.members.iter().flatten() {
        if !members.iter().any(|x| &x.0 == node) {
            members.push((node.clone(), "down".into(), 0, false));
        }
    }
    members.sort();
    GroupView {
        name: g.cfg.name.clone(),
        role: m.role().as_str().to_string(),
        leader: m.leader().unwrap_or("").to_string(),
        term: m.term(),
        priority: m.priority(),
        healthy: m.healthy(),
        maintenance: m.maintenance(),
        failures: m.failures(now),
        retired: g.retired,
        since_usec: g.since_usec,
        members,
    }
}

/// One group's part of `STATUS=`, e.g. `web: active (term 42)`,
/// `web: passive, leader db-b (term 42)`, `web: passive, waiting for the store (...)`.
fn status_clause(g: &Group, now: Mono) -> String {
    let m = &g.machine;
    let role = m.role();
    let mut s = match (&g.store_down, m.leader()) {
        (Some(reason), _) if !m.store_up() => {
            format!("{}: {role}, waiting for the store ({reason})", g.cfg.name)
        }
        (_, None) if !m.store_up() => format!("{}: {role}, waiting for the store", g.cfg.name),
        (_, Some(l)) if role != Role::Active => {
            format!("{}: {role}, leader {l} (term {})", g.cfg.name, m.term())
        }
        _ => format!("{}: {role} (term {})", g.cfg.name, m.term()),
    };
    if m.maintenance() {
        s.push_str(", maintenance");
    }
    let failures = m.failures(now);
    if failures > 0 {
        s.push_str(&format!(
            ", {failures} failure{} in the window",
            if failures == 1 { "" } else { "s" }
        ));
    }
    if m.stranded(now) {
        s.push_str(", no eligible standby: restarting in place");
    } else if m.failed(now) {
        s.push_str(", failed: ineligible until the cooldown ends (promctl reset clears it)");
    } else if !m.healthy() {
        s.push_str(", unhealthy");
    }
    s
}
