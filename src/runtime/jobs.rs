//! systemd work in tasks: starting and stopping the targets, killing and restarting units,
//! binding the role's closure to promd, following its units.
//!
//! Work that later work supersedes (a start of the active target, a restart in place, a kill
//! still waiting) runs in tasks whose handles the group keeps; [`Output::Cancel`] aborts them
//! by the core's rule ([`crate::core::Action::cancels`]) right before the stop, kill or start
//! that supersedes them, and the stop jobs (mode `replace`) cancel whatever of theirs systemd
//! had queued. What could still slip
//! through is caught afterwards: a stop succeeds only once systemd says every unit is down,
//! and a unit of the role that starts on a host without the role is stopped.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use super::Runtime;
#[cfg(doc)]
use crate::agent::Output;
use crate::agent::{GroupId, Input, JobDone, JobOrder, Level};
use crate::config::Address;
use crate::core::{Cancels, Job};
use crate::health::{self, HealthCheck};
use crate::sync::lock;
use crate::systemd::{Closure, Systemd, SystemdError};
use crate::watch::{self, Followed, WatchEvent};

/// How many times a group's first walk and binding is tried before it is left to the next
/// start or stop of the role (which walk again): 1 s doubling, about four minutes in all.
const BIND_TRIES: u32 = 8;

/// What the walk of a group's latest stop found, once it has: a kill during that stop kills
/// it (and the closure the agent knew) without walking again. At a fence of hundreds of
/// groups every kill's walk was two more calls per group ahead of the stop jobs in PID 1's
/// queue. A new stop starts with a new, empty slot.
#[derive(Debug, Clone, Default)]
pub(crate) struct StopWalk(std::sync::Arc<std::sync::Mutex<Option<Closure>>>);

impl StopWalk {
    fn found(&self, closure: &Closure) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(closure.clone());
        }
    }

    fn get(&self) -> Option<Closure> {
        self.0.lock().ok().and_then(|slot| slot.clone())
    }
}

/// A group's kills: one task at a time, and at most one more asked while it runs.
///
/// Why: the core asks a stop that outlives its kill to be killed again every
/// [`crate::core::Timing::rekill_interval`]. On a host too starved to answer in time, the
/// rounds of hundreds of groups piled up in the urgent gate (about 860 `KillUnit`s where 200
/// were enough), ahead of the walks that confirm each stop, and the watchdog took promd for
/// hung. A kill asked while one runs is kept, the latest only, and runs as soon as the
/// running one ends, so no kill is dropped and none waits behind a stale one.
#[derive(Debug, Default)]
pub(crate) struct Kills {
    /// The running task, to abort when the core cancels the kills.
    task: Option<tokio::task::AbortHandle>,
    /// Shared with the running task; replaced (not cleared) on a cancel, so an aborted task
    /// that has not yet been dropped cannot touch the kills asked after it.
    slot: std::sync::Arc<std::sync::Mutex<KillSlot>>,
}

/// One kill as asked: the closure the agent knew, the walk of the stop that was latest
/// then, and the kill's number (answered with [`Input::KillSent`]).
type KillRequest = (Closure, StopWalk, u64);

/// What the running kill task and the loop share.
#[derive(Debug)]
struct KillSlot<R = KillRequest> {
    running: bool,
    /// The next kill to carry out: the closure the agent knew and the walk of the stop
    /// that was latest when it was asked.
    next: Option<R>,
}

impl<R> Default for KillSlot<R> {
    fn default() -> Self {
        KillSlot {
            running: false,
            next: None,
        }
    }
}

impl<R> KillSlot<R> {
    /// A kill is asked: returned if it is to run now, in a task of its own; kept (replacing
    /// one kept before) if a task is running.
    fn ask(&mut self, request: R) -> Option<R> {
        if self.running {
            self.next = Some(request);
            None
        } else {
            self.running = true;
            Some(request)
        }
    }

    /// The running task finished a kill: the next one for it to run, if any; else the slot
    /// is free.
    fn finished(&mut self) -> Option<R> {
        let next = self.next.take();
        self.running = next.is_some();
        next
    }
}

impl Kills {
    /// Forget a finished task's handle (its memory, `Drivers::forget_finished`).
    pub(super) fn forget_finished(&mut self) {
        if self.task.as_ref().is_some_and(|t| t.is_finished()) {
            self.task = None;
        }
    }

    /// Abort the kill in flight and drop the one asked after it.
    fn cancel(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.slot = Default::default();
    }
}

/// Marks the slot free when the kill task ends, also when it is aborted.
struct KillDone(std::sync::Arc<std::sync::Mutex<KillSlot>>);

impl Drop for KillDone {
    fn drop(&mut self) {
        lock(&self.0).running = false;
    }
}

impl Runtime {
    /// Run a systemd job in a task; its result comes back as [`Input::Job`].
    pub(super) fn start_job(&mut self, id: GroupId, order: JobOrder) {
        let Some(group) = self.drivers.get(&id).map(|d| d.cfg.name.clone()) else {
            return;
        };
        // The term is kept on disk before the units can read it: a restarted promd, or a
        // store restored from an older snapshot, must never hand a unit a lower one. A start
        // whose term is not durable yet waits for the writer thread (terms.rs), which fails
        // it if the term cannot be kept.
        if !self.term_is_kept(id, &group, &order) {
            return;
        }
        let JobOrder {
            job,
            env,
            known,
            walked,
        } = order;
        let inputs = self.inputs_tx.clone();
        // The env file is written before the start is even queued, so the units read this term.
        if let Some(env) = env
            && !self.write_env(id, &env, Level::Error)
        {
            let _ = inputs.send(Input::Job(id, JobDone::failed(job)));
            return;
        }
        let Some(d) = self.drivers.get_mut(&id) else {
            return;
        };
        let systemd = self.systemd.clone();
        let group = d.cfg.name.clone();
        let active = d.cfg.active_target.clone();
        let addresses = d.cfg.addresses.clone();
        let passive = d.cfg.passive_target.clone();
        let watch = crate::systemd::address::watch_list(&group, &d.cfg.watch, &addresses);
        let stop_walk = StopWalk::default();
        // A start empties the slot too: a kill after it must not take an older stop's walk.
        if job != Job::StartPassive {
            d.stop_walk = stop_walk.clone();
        }
        let task = tokio::spawn(async move {
            let mut not_up = Vec::new();
            let result = match job {
                Job::StartActive => {
                    // The closure was bound at start-up, so the start need not wait for it;
                    // units the target gained since are bound alongside (the daemon-reload
                    // applies BindsTo= to running units too). Only a closure no walk has
                    // found yet is found and bound first; one found empty (a target without
                    // units) is not: walking it again before each start put two to three
                    // calls to systemd before every start of a take-over of hundreds.
                    let rebind = async {
                        let closure = bind_closure(&systemd, &group, &active, &addresses).await;
                        if let Some(c) = &closure {
                            let _ = inputs.send(Input::Closure(id, c.clone()));
                        }
                        closure
                    };
                    let (started, fresh) = if known.units.is_empty() && !walked {
                        let fresh = rebind.await;
                        (systemd.start(&active).await, fresh)
                    } else {
                        tokio::join!(systemd.start(&active), rebind)
                    };
                    // The role is what runs: a unit that failed in ExecStartPre=, or was
                    // skipped by a Condition, is a failure even though the target started.
                    if started.is_ok() {
                        let closure = fresh.unwrap_or(known);
                        not_up = systemd
                            .not_up_after_start(&closure.expected_up(&watch))
                            .await;
                    }
                    started
                }
                Job::StartPassive => match passive {
                    Some(unit) => systemd.start(&unit).await,
                    None => Ok(()),
                },
                Job::StopActive => {
                    // A fence's stop: its own gate, never behind start-up reads.
                    let systemd = systemd.urgent();
                    // The walk waits until the known units' stops are queued: PID 1 answers
                    // its bus before it runs jobs, so a fence of hundreds of groups whose walks
                    // went out beside the stops had its first stop run 400 ms late.
                    let (queued_tx, queued_rx) = tokio::sync::oneshot::channel::<()>();
                    let queued_tx = std::sync::Mutex::new(Some(queued_tx));
                    let stop = |units: Vec<String>, first: bool| {
                        let systemd = systemd.clone();
                        let tell = if first {
                            queued_tx.lock().ok().and_then(|mut t| t.take())
                        } else {
                            None
                        };
                        async move {
                            systemd
                                .stop_all_then(&units, move || {
                                    if let Some(tx) = tell {
                                        let _ = tx.send(());
                                    }
                                })
                                .await
                        }
                    };
                    // Only once the closure was walked: a stop before that (start-up's, of
                    // the units a previous run may have left) has nothing known to stop but
                    // the target, and its walk is what finds the rest.
                    let walk_after = async {
                        if walked {
                            // A stop that ended before it queued anything drops the sender.
                            let _ = queued_rx.await;
                        }
                    };
                    // A walk that failed leaves the units the target gained since unknown, so
                    // the stop cannot say that everything is down: it fails (the core kills,
                    // keeps the key and tries again after a backoff).
                    let (a, b) = known_then_fresh(
                        &systemd,
                        &known,
                        &active,
                        (id, &inputs),
                        (walk_after, Some(&stop_walk)),
                        stop,
                    )
                    .await;
                    a.and(b.and_then(|fresh| fresh))
                }
            };
            if let Err(e) = &result {
                tracing::error!(PROMD_GROUP = %group, "{job:?}: {e}");
            }
            let ok = result.is_ok();
            let _ = inputs.send(Input::Job(id, JobDone { job, ok, not_up }));
        });
        if job == Job::StartActive {
            d.start = Some(task.abort_handle());
        }
    }

    /// SIGKILL whatever of the active units still runs: the known closure at once, and what a
    /// fresh walk finds besides, or, once the latest stop's walk is done, what it found. A
    /// kill asked while the group's last one is still in flight runs right after it
    /// ([`Kills`]).
    pub(super) fn kill(&mut self, id: GroupId, known: Closure, kill: u64) {
        let Some(d) = self.drivers.get_mut(&id) else {
            return;
        };
        let slot = d.kills.slot.clone();
        // A poisoned lock is taken as it is: nothing that holds it can panic, and a kill
        // must not be dropped for it.
        let Some(request) = lock(&slot).ask((known, d.stop_walk.clone(), kill)) else {
            return;
        };
        let (systemd, target) = (self.systemd.urgent(), d.cfg.active_target.clone());
        let inputs = self.inputs_tx.clone();
        let task = tokio::spawn(async move {
            let _done = KillDone(slot.clone());
            let mut request = Some(request);
            while let Some((known, stop_walk, kill)) = request.take() {
                let walked = stop_walk.get();
                kill_once(&systemd, &target, (id, kill), &inputs, known, walked).await;
                // Taken under the lock that `kill` asks under: a kill asked from here on
                // finds the slot free and starts its own task.
                request = lock(&slot).finished();
            }
        });
        d.kills.task = Some(task.abort_handle());
    }

    /// Restart failed units in place; one that is not up afterwards is reported as stopped.
    pub(super) fn restart(&mut self, id: GroupId, units: Vec<String>) {
        let Some(d) = self.drivers.get_mut(&id) else {
            return;
        };
        let (systemd, group) = (self.systemd.clone(), d.cfg.name.clone());
        let watch_tx = self.watch_tx.clone();
        let task = tokio::spawn(async move {
            for unit in units {
                if let Err(e) = systemd.restart_failed(&unit).await {
                    tracing::error!(PROMD_GROUP = %group, "restarting {unit}: {e}");
                }
                // Skipped by a Condition or failed at once: still a failure, so the count
                // goes on towards a failover instead of stalling here.
                for (unit, state) in systemd.not_up(std::slice::from_ref(&unit)).await {
                    tracing::warn!(PROMD_GROUP = %group, "{unit} is {state} after its restart");
                    let _ = watch_tx.send((id, WatchEvent::Stopped { unit }));
                }
            }
        });
        d.restarts.retain(|t| !t.is_finished());
        d.restarts.push(task.abort_handle());
    }

    /// Abort the group's work in flight that the core says the next job or kill supersedes.
    pub(super) fn cancel(&mut self, id: GroupId, cancels: Cancels) {
        let Some(d) = self.drivers.get_mut(&id) else {
            return;
        };
        let Cancels {
            start,
            restarts,
            kills,
        } = cancels;
        if start && let Some(task) = d.start.take() {
            task.abort();
        }
        if start {
            self.terms.unpark(id);
        }
        if restarts {
            d.restarts.drain(..).for_each(|t| t.abort());
        }
        if kills {
            d.kills.cancel();
        }
    }

    /// Bind the role's closure to promd ahead of any promotion and start the health check;
    /// the closure comes back as [`Input::Closure`], and the units are followed from then on.
    pub(super) fn bind_units(&mut self, id: GroupId) {
        let Some(d) = self.drivers.get_mut(&id) else {
            return;
        };
        let (systemd, cfg, inputs) = (self.systemd.clone(), d.cfg.clone(), self.inputs_tx.clone());
        tokio::spawn(async move {
            // A walk that failed (PID 1 busy or away) is tried again, 1 s doubling, eight
            // times in all: until it is found, the agent counts the host's fence load as
            // unknown and begins every fence as early as a load may (fence_load.rs).
            let mut pause = Duration::from_secs(1);
            for _ in 0..BIND_TRIES {
                if let Some(closure) =
                    bind_closure(&systemd, &cfg.name, &cfg.active_target, &cfg.addresses).await
                {
                    let _ = inputs.send(Input::Closure(id, closure));
                    return;
                }
                if inputs.is_closed() {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2);
            }
        });
        self.start_health(id);
    }

    /// (Re)start the group's health check with its configuration as it is now (a reload may
    /// have changed it in place), replacing the one that ran; none without a command.
    pub(super) fn start_health(&mut self, id: GroupId) {
        let Some(d) = self.drivers.get_mut(&id) else {
            return;
        };
        if let Some(task) = d.health_task.take() {
            task.abort();
        }
        if let Some(command) = &d.cfg.health_command {
            let check = HealthCheck {
                command: command.clone(),
                interval: d.cfg.health_interval,
                timeout: d.cfg.health_timeout,
                env: vec![
                    ("PROMD_GROUP".into(), d.cfg.name.clone()),
                    ("PROMD_NODE".into(), self.node.clone()),
                ],
            };
            d.health_task = Some(health::spawn(id, check, self.health_tx.clone()));
        }
    }

    /// (Re)start following the group's units with these interests, plus the passive
    /// target's units.
    pub(super) fn follow_units(&mut self, id: GroupId, mut followed: Followed) {
        let Some(d) = self.drivers.get_mut(&id) else {
            return;
        };
        let (systemd, watch_tx, passive) = (
            self.systemd.clone(),
            self.watch_tx.clone(),
            d.cfg.passive_target.clone(),
        );
        if let Some(task) = d.watch_task.take() {
            task.abort();
        }
        let task = tokio::spawn(async move {
            if let Some(passive) = &passive {
                let mut units = systemd
                    .closure(passive)
                    .await
                    .map(|c| c.names())
                    .unwrap_or_default();
                units.push(passive.clone());
                for unit in units {
                    followed.entry(unit).or_default().passive = true;
                }
            }
            // Runs until the group leaves or its closure changes, which aborts this task.
            watch::watch_group(&systemd, id, &followed, watch_tx).await;
        });
        d.watch_task = Some(task.abort_handle());
    }
}

/// Act on the units known at once (the closure as last found, and the target: `act(units,
/// true)`) and, once `walk_after` is ready, on whatever a fresh walk finds besides (`act(units,
/// false)`; the target's contents may have changed); the fresh closure goes back to the
/// agent (`to`), and to `found` if given. Returns both results; the second is the walk's
/// error if it failed (and nothing beyond the known units was acted on).
async fn known_then_fresh<T, F, Fut>(
    systemd: &Systemd,
    known: &Closure,
    target: &str,
    (id, to): (GroupId, &UnboundedSender<Input>),
    (walk_after, found): (impl Future<Output = ()>, Option<&StopWalk>),
    act: F,
) -> (T, Result<T, SystemdError>)
where
    F: Fn(Vec<String>, bool) -> Fut,
    Fut: Future<Output = T>,
{
    let first = known.with_target(target);
    let extra = async {
        walk_after.await;
        let fresh = match systemd.closure(target).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reading the units of {target}: {e}");
                return Err(e);
            }
        };
        let mut units = fresh.names();
        units.retain(|u| !first.contains(u));
        if let Some(found) = found {
            found.found(&fresh);
        }
        let result = act(units, false).await;
        let _ = to.send(Input::Closure(id, fresh));
        Ok(result)
    };
    tokio::join!(act(first.clone(), true), extra)
}

/// Find the closure of `target` and bind it to promd; errors are logged.
pub(super) async fn bind_closure(
    systemd: &Systemd,
    group: &str,
    target: &str,
    addresses: &[Address],
) -> Option<Closure> {
    // Written (and systemd reloaded) first, so that the walk finds the address units.
    if let Err(e) = systemd.prepare_addresses(group, target, addresses).await {
        tracing::error!(PROMD_GROUP = %group, "writing the floating address units: {e}");
    }
    match systemd.closure(target).await {
        Ok(closure) => {
            if let Err(e) = systemd.bind_to_promd(group, target, &closure).await {
                tracing::error!(PROMD_GROUP = %group, "binding units to promd: {e}");
            }
            Some(closure)
        }
        Err(e) => {
            tracing::error!(PROMD_GROUP = %group, "reading the units of {target}: {e}");
            None
        }
    }
}

/// How one kill goes ([`kill_plan`]).
#[derive(Debug, PartialEq)]
enum KillPlan {
    /// These units are the whole role as PID 1 has it: killed together, then said sent.
    Whole(Vec<String>),
    /// The known units at once and what a fresh walk finds besides; said sent after the
    /// known part's kills (`early`) or after both.
    KnownThenFresh { known: Closure, early: bool },
}

/// Plan a kill of the role of `target` from the closure the agent knew, the stop's walk if
/// it is done (`walked`), and PID 1's count of foreign reloads now (`reloads`).
///
/// A closure covers the whole role only if PID 1 has not reloaded since it was walked
/// ([`Closure::reloads`]): a `daemon-reload` may have added a unit that only a fresh walk
/// finds. [`Input::KillSent`] lets the core's hang deadline move later, and a unit whose
/// kill is not out yet is left to `ExecStopPost=promd fence`, which needs the earlier one;
/// so it is said once the kills of every unit of the role are on the bus.
fn kill_plan(target: &str, mut known: Closure, walked: Option<Closure>, reloads: u64) -> KillPlan {
    let current = match walked {
        Some(found) if found.reloads == reloads => {
            let mut units = known.with_target(target);
            for unit in found.names() {
                if !units.contains(&unit) {
                    units.push(unit);
                }
            }
            return KillPlan::Whole(units);
        }
        // The stop's walk came before a reload: its units with the known ones at once.
        Some(found) => {
            known.units.extend(found.units);
            false
        }
        None => known.reloads == reloads,
    };
    // None with processes known (no walk yet): the fresh walk's kill is the only one.
    let known_kills = known
        .with_target(target)
        .iter()
        .any(|u| crate::systemd::killable(u));
    KillPlan::KnownThenFresh {
        known,
        early: current && known_kills,
    }
}

/// One kill of a group's active units, as [`kill_plan`] plans it; answered with
/// [`Input::KillSent`] once its kills are on the bus.
async fn kill_once(
    systemd: &Systemd,
    target: &str,
    (id, kill): (GroupId, u64),
    inputs: &tokio::sync::mpsc::UnboundedSender<Input>,
    known: Closure,
    walked: Option<Closure>,
) {
    let sent = |delivered: bool| {
        if delivered {
            let _ = inputs.send(Input::KillSent(id, kill));
        }
    };
    let (known, early) = match kill_plan(target, known, walked, systemd.foreign_reloads_now()) {
        KillPlan::Whole(units) => {
            sent(systemd.kill_all(&units).await);
            return;
        }
        KillPlan::KnownThenFresh { known, early } => (known, early),
    };
    let act = |units: Vec<String>, first: bool| {
        let systemd = systemd.clone();
        async move {
            let delivered = systemd.kill_all(&units).await;
            if first && early {
                sent(delivered);
            }
            delivered
        }
    };
    // A failed walk was logged; the known part is killed regardless.
    let now = (std::future::ready(()), None);
    let (first, fresh) = known_then_fresh(systemd, &known, target, (id, inputs), now, act).await;
    if !early {
        sent(first && fresh.unwrap_or(false));
    }
}

#[cfg(test)]
mod tests {
    use super::{KillPlan, KillSlot, kill_plan};
    use crate::systemd::{Closure, Reach};

    /// A closure of `units` (each pulled in), walked after `reloads` foreign reloads.
    fn walked(units: &[&str], reloads: u64) -> Closure {
        let mut closure = Closure {
            reloads,
            ..Closure::default()
        };
        for u in units {
            closure.units.insert((*u).to_string(), Reach::Pulled);
        }
        closure
    }

    #[test]
    fn a_kill_is_said_after_the_known_units_only_if_no_reload_came_since_their_walk() {
        let t = "web-active.target";
        let plan = kill_plan(t, walked(&["web.service"], 3), None, 3);
        assert!(
            matches!(plan, KillPlan::KnownThenFresh { early: true, .. }),
            "{plan:?}"
        );
        // `systemctl daemon-reload` since: a unit it added is only in the fresh walk.
        let plan = kill_plan(t, walked(&["web.service"], 3), None, 4);
        assert!(
            matches!(plan, KillPlan::KnownThenFresh { early: false, .. }),
            "{plan:?}"
        );
        // Nothing with processes known: the fresh walk's kill is the one.
        let plan = kill_plan(t, walked(&["web.timer"], 3), None, 3);
        assert!(
            matches!(plan, KillPlan::KnownThenFresh { early: false, .. }),
            "{plan:?}"
        );
    }

    #[test]
    fn the_stops_walk_is_the_whole_role_unless_a_reload_came_after_it() {
        let t = "web-active.target";
        let known = walked(&["web.service"], 3);
        let plan = kill_plan(t, known.clone(), Some(walked(&["db.service"], 4)), 4);
        let all = ["web.service", "web-active.target", "db.service"].map(String::from);
        assert_eq!(plan, KillPlan::Whole(all.to_vec()));
        let plan = kill_plan(t, known, Some(walked(&["db.service"], 4)), 5);
        let KillPlan::KnownThenFresh { known, early } = plan else {
            panic!("{plan:?}");
        };
        assert!(!early);
        assert_eq!(known.names(), ["db.service", "web.service"]);
    }

    #[test]
    fn a_kill_asked_while_one_runs_waits_and_only_the_latest_is_kept() {
        let mut slot: KillSlot<u32> = KillSlot::default();
        assert_eq!(slot.ask(1), Some(1), "a free slot runs the kill at once");
        assert_eq!(slot.ask(2), None, "one runs: kept");
        assert_eq!(slot.ask(3), None, "kept, replacing the one kept before");
        assert_eq!(
            slot.finished(),
            Some(3),
            "the running task goes on with the latest"
        );
        assert_eq!(slot.ask(4), None, "still running");
        assert_eq!(slot.finished(), Some(4));
        assert_eq!(slot.finished(), None, "nothing more: the slot is free");
        assert_eq!(
            slot.ask(5),
            Some(5),
            "a kill after that runs in a task of its own"
        );
    }

    #[test]
    fn an_aborted_kill_frees_its_slot() {
        let slot = std::sync::Arc::new(std::sync::Mutex::new(KillSlot::default()));
        assert!(
            super::lock(&slot)
                .ask((super::Closure::default(), super::StopWalk::default(), 1))
                .is_some()
        );
        drop(super::KillDone(slot.clone()));
        assert!(
            super::lock(&slot)
                .ask((super::Closure::default(), super::StopWalk::default(), 1))
                .is_some()
        );
    }
}
