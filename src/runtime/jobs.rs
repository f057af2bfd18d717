//! systemd work in tasks: starting and stopping the targets, binding units to promd.

use super::Runtime;
use crate::core::{Job, Role};
use crate::health::{self, HealthCheck};
use crate::systemd::{Systemd, UnitEnv};
use crate::watch;

impl Runtime {
    /// Run a systemd job in a task; its result comes back as `Event::Job`.
    pub(super) fn start_job(&self, i: usize, job: Job, term: Option<u64>) {
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

    /// Bind the active target's units to promd ahead of any promotion, follow the watched
    /// units and the passive target's, and start the health check.
    pub(super) fn bind_units(&mut self, i: usize) {
        let g = &self.groups[i];
        let (systemd, cfg, units_tx, watch_tx) = (
            self.systemd.clone(),
            g.cfg.clone(),
            self.units_tx.clone(),
            self.watch_tx.clone(),
        );
        let task = tokio::spawn(async move {
            let group = &cfg.name;
            let mut watched = Vec::new();
            match systemd.pulled_in(&cfg.active_target).await {
                Ok(units) => {
                    if let Err(e) = systemd.bind_to_promd(group, &units).await {
                        tracing::error!(PROMD_GROUP = %group, "binding units to promd: {e}");
                    }
                    watched = cfg.watch.clone().unwrap_or_else(|| units.clone());
                    let _ = units_tx.send((i, units));
                }
                Err(e) => {
                    tracing::error!(PROMD_GROUP = %group, "reading {}: {e}", cfg.active_target)
                }
            }
            let mut passive_units = Vec::new();
            if let Some(passive) = &cfg.passive_target {
                passive_units = systemd.pulled_in(passive).await.unwrap_or_default();
                passive_units.push(passive.clone());
            }
            // Both run until the group is retired, which aborts this task.
            tokio::join!(
                watch::watch_active(&systemd, i, &watched, watch_tx.clone()),
                watch::watch_passive(&systemd, i, &passive_units, watch_tx),
            );
        });
        self.groups[i].watch_task = Some(task.abort_handle());
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
}

/// Stop every unit; all jobs are queued at once and all awaited.
pub(super) async fn stop_all(
    systemd: &Systemd,
    units: &[String],
) -> Result<(), crate::systemd::SystemdError> {
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
