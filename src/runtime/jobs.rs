//! systemd work in tasks: starting and stopping the targets, binding the role's closure to
//! promd, following its units.
//!
//! Work that a stop supersedes — a start of the active target, a restart in place — runs in
//! tasks whose handles the group keeps; a stop or a kill aborts them first, and the stop jobs
//! (mode `replace`) cancel whatever of theirs systemd had queued. What could still slip
//! through is caught afterwards: a stop succeeds only once systemd says every unit is down,
//! and a unit of the role that starts on a host without the role is stopped.

use tokio::sync::mpsc::UnboundedSender;

use super::{JobDone, Runtime};
use crate::core::{Job, Role};
use crate::health::{self, HealthCheck};
use crate::systemd::{Closure, Systemd, UnitEnv};
use crate::watch::{self, Followed};

impl Runtime {
    /// Run a systemd job in a task; its result comes back as `Event::Job`.
    pub(super) fn start_job(&mut self, i: usize, job: Job, term: Option<u64>) {
        if job == Job::StopActive {
            self.abort_superseded(i);
        }
        if job == Job::StartActive {
            // The machine starts the units only after a stop that brought them down: a kill
            // still waiting (for the closure, say) was meant for that earlier run of them, and
            // landing now it would kill the new one.
            for task in self.groups[i].kills.drain(..) {
                task.abort();
            }
        }
        let g = &self.groups[i];
        let systemd = self.systemd.clone();
        let (jobs, units_tx) = (self.job_tx.clone(), self.units_tx.clone());
        let active = g.cfg.active_target.clone();
        let passive = g.cfg.passive_target.clone();
        let known = g.closure.clone();
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
            let _ = jobs.send(JobDone::failed(i, job));
            return;
        }
        let group = g.cfg.name.clone();
        let watch = g.cfg.watch.clone();
        let task = tokio::spawn(async move {
            let mut not_up = Vec::new();
            let result = match job {
                Job::StartActive => {
                    // The closure was bound at start-up, so the start need not wait for it;
                    // units the target gained since are bound alongside (the daemon-reload
                    // applies BindsTo= to running units too).
                    let rebind = async {
                        let closure = bind_closure(&systemd, &group, &active).await;
                        if let Some(c) = &closure {
                            let _ = units_tx.send((i, c.clone()));
                        }
                        closure
                    };
                    let (started, fresh) = if known.units.is_empty() {
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
                    let stop = |units: Vec<String>| {
                        let systemd = systemd.clone();
                        async move { systemd.stop_all(&units).await }
                    };
                    let (a, b) =
                        known_then_fresh(&systemd, &known, &active, i, &units_tx, stop).await;
                    a.and(b)
                }
            };
            if let Err(e) = &result {
                tracing::error!(PROMD_GROUP = %group, "{job:?}: {e}");
            }
            let _ = jobs.send(JobDone {
                i,
                job,
                ok: result.is_ok(),
                not_up,
            });
        });
        if job == Job::StartActive {
            self.groups[i].superseded.push(task.abort_handle());
        }
    }

    /// Abort the work a stop supersedes: a start of the active target, restarts in place.
    pub(super) fn abort_superseded(&mut self, i: usize) {
        for task in self.groups[i].superseded.drain(..) {
            task.abort();
        }
    }

    /// Bind the role's closure to promd ahead of any promotion and start the health check;
    /// the closure comes back through `units_rx`, and the units are followed from then on.
    pub(super) fn bind_units(&mut self, i: usize) {
        let g = &self.groups[i];
        let (systemd, cfg, units_tx) = (self.systemd.clone(), g.cfg.clone(), self.units_tx.clone());
        tokio::spawn(async move {
            if let Some(closure) = bind_closure(&systemd, &cfg.name, &cfg.active_target).await {
                let _ = units_tx.send((i, closure));
            }
        });
        let g = &self.groups[i];
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

    /// A closure was found: keep it, say what it is when it changes, and follow its units.
    pub(super) fn on_closure(&mut self, i: usize, closure: Closure) {
        if closure == self.groups[i].closure {
            return;
        }
        if self.groups[i].retired {
            // Still what its last stop must cover, but a leaving group follows nothing.
            self.groups[i].closure = closure;
            return;
        }
        let first = self.groups[i].closure.units.is_empty();
        let mut said = format!(
            "the role's units (bound to promd, stopped on demotion, killed by the fence): {}",
            closure.names().join(" ")
        );
        for (what, units) in [
            ("not found, nothing to stop", &closure.missing),
            (
                "left to the system, which pulls them in too",
                &closure.shared,
            ),
        ] {
            if !units.is_empty() {
                let units: Vec<&str> = units.iter().map(String::as_str).collect();
                said.push_str(&format!("; {what}: {}", units.join(" ")));
            }
        }
        if first || closure.names() != self.groups[i].closure.names() {
            self.log(i, tracing::Level::INFO, &said);
        }
        self.groups[i].closure = closure;
        self.follow_units(i);
    }

    /// (Re)start following the group's units: the closure, the watched units and the
    /// passive target.
    fn follow_units(&mut self, i: usize) {
        let g = &self.groups[i];
        let mut followed = Followed::new();
        for unit in g.closure.units.keys() {
            followed.entry(unit.clone()).or_default().role = true;
        }
        let watched = match &g.cfg.watch {
            Some(w) => w.clone(),
            None => g.closure.watchable(),
        };
        for unit in watched {
            let steady = g.closure.expects_up(&unit);
            let e = followed.entry(unit).or_default();
            e.watched = true;
            e.steady = steady;
        }
        let (systemd, watch_tx, passive) = (
            self.systemd.clone(),
            self.watch_tx.clone(),
            g.cfg.passive_target.clone(),
        );
        if let Some(task) = self.groups[i].watch_task.take() {
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
            // Runs until the group is retired or its closure changes, which aborts this task.
            watch::watch_group(&systemd, i, &followed, watch_tx).await;
        });
        self.groups[i].watch_task = Some(task.abort_handle());
    }
}

/// Act on the units known at once (the closure as last found, and the target) and, at the
/// same time, on whatever a fresh walk finds besides (the target's contents may have
/// changed); the fresh closure goes back to the runtime. Returns both results.
pub(super) async fn known_then_fresh<T, F, Fut>(
    systemd: &Systemd,
    known: &Closure,
    target: &str,
    i: usize,
    units_tx: &UnboundedSender<(usize, Closure)>,
    act: F,
) -> (T, T)
where
    F: Fn(Vec<String>) -> Fut,
    Fut: Future<Output = T>,
{
    let first = known.with_target(target);
    let extra = async {
        let fresh = systemd.closure(target).await;
        let mut units = fresh.as_ref().map(Closure::names).unwrap_or_default();
        units.retain(|u| !first.contains(u));
        let result = act(units).await;
        if let Ok(c) = fresh {
            let _ = units_tx.send((i, c));
        }
        result
    };
    tokio::join!(act(first.clone()), extra)
}

/// Find the closure of `target` and bind it to promd; errors are logged.
async fn bind_closure(systemd: &Systemd, group: &str, target: &str) -> Option<Closure> {
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
