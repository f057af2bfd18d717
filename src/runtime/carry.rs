//! Carrying out the agent's outputs: drivers opened and closed, store commands, D-Bus
//! replies and signals, journal records, sd_notify. The systemd work is in jobs.rs.

use super::{Drivers, Runtime, StopWalk};
use crate::agent::{EnvFile, GroupId, Level, Notify, Output};
use crate::config::GroupConfig;
use crate::dbus::PromdError;
use crate::store::{GroupSpec, Progress};

impl Runtime {
    pub(super) fn carry(&mut self, output: Output) {
        match output {
            Output::Open(id, cfg) => self.open(id, cfg),
            Output::Serve(_, view) => {
                if let Some(d) = &mut self.dbus {
                    d.add_group(view);
                }
            }
            Output::Quiet(id) => {
                if let Some(d) = self.drivers.get_mut(&id) {
                    for task in [d.health_task.take(), d.watch_task.take()]
                        .into_iter()
                        .flatten()
                    {
                        task.abort();
                    }
                }
            }
            Output::Close {
                id,
                name,
                unbind,
                stop_passive,
            } => self.close(id, name, unbind, stop_passive),
            Output::Retune { id, cfg, health } => {
                if let Some(d) = self.drivers.get_mut(&id) {
                    d.cfg = cfg;
                }
                if health {
                    self.start_health(id);
                }
            }
            Output::Env(id, env) => {
                self.write_env(id, &env, Level::Warn);
            }
            Output::Store(id, cmd) => {
                if let Some(d) = self.drivers.get(&id) {
                    // A closed channel means the store task ended: only after Shutdown.
                    let _ = d.session.send(cmd);
                }
            }
            Output::Cancel(id, cancels) => self.cancel(id, cancels),
            Output::KeepTerm { group, term } => self.terms.keep(&group, term),
            Output::Job(id, order) => self.start_job(id, order),
            Output::Kill { id, known, kill } => self.kill(id, known, kill),
            Output::Restart(id, units) => self.restart(id, units),
            Output::StopPassive(id) => {
                if let Some(d) = self.drivers.get(&id)
                    && let Some(target) = d.cfg.passive_target.clone()
                {
                    let name = d.cfg.group_name().to_owned();
                    self.stop_passive(target, name, "this host is a spare");
                }
            }
            Output::Follow(id, followed) => self.follow_units(id, followed),
            Output::Reply(call, result) => {
                if let Some(reply) = self.replies.remove(&call) {
                    // The caller may have gone; nothing to do about it.
                    let _ = reply.send(result.map_err(PromdError::from));
                }
            }
            Output::RoleSignal {
                group,
                old,
                new,
                term,
                reason,
            } => {
                if let Some(d) = &self.dbus {
                    d.role_changed(&group, old.as_str(), new.as_str(), term, &reason);
                }
            }
            Output::Log(record) => self.journal.send(record),
            Output::Notify(n) => {
                let now = std::time::Instant::now();
                match n {
                    Notify::Ready(status) => {
                        self.status.sent_with_state(now);
                        self.notifier.ready(&status);
                    }
                    Notify::Status(status) => {
                        if let Some(status) = self.status.offer(status, now) {
                            self.notifier.status(&status);
                        }
                    }
                    Notify::Reloading => {
                        self.status.sent_with_state(now);
                        self.notifier.reloading();
                    }
                    Notify::Stopping => {
                        self.status.sent_with_state(now);
                        self.notifier.stopping();
                    }
                    Notify::Watchdog(interval) => self.keeper.set_interval(interval),
                }
            }
        }
    }

    /// A group's drivers: its store session, the binding of its closure, its health check.
    fn open(&mut self, id: GroupId, cfg: GroupConfig) {
        let progress = Progress::default();
        let spec = GroupSpec {
            group: cfg.name.clone(),
            node: self.node.clone(),
            host: self.host.clone(),
            lease: cfg.lease,
            addresses: cfg.addresses.iter().map(|a| a.ip).collect(),
            progress: progress.clone(),
        };
        let session = self.store.open_group(spec, id, self.store_tx.clone());
        self.drivers.insert(
            id,
            Drivers {
                cfg,
                session,
                progress,
                start: None,
                restarts: Vec::new(),
                kills: Default::default(),
                stop_walk: StopWalk::default(),
                health_task: None,
                watch_task: None,
            },
        );
        self.bind_units(id);
    }

    /// Write the group's env file (before a start, or for units that follow the leader),
    /// synchronously: one small file on `/run` (tmpfs). A failure goes to the journal at
    /// `level`; `false` then.
    pub(super) fn write_env(&mut self, id: GroupId, env: &EnvFile, level: Level) -> bool {
        let Some(d) = self.drivers.get(&id) else {
            return false;
        };
        let slot = env.slot.value();
        // A slot's file is its group's: one file per group, which says the slot it holds.
        let written = crate::systemd::UnitEnv {
            group: d.cfg.group_name(),
            node: &self.node,
            role: env.role.as_str(),
            term: env.term,
            leader: &env.leader,
            slot: slot.as_deref(),
        }
        .write(&self.run_dir);
        if let Err(e) = &written {
            let text = format!("cannot write the unit environment: {e}");
            if let Some(r) = self.agent.group_record(id, level, &text) {
                self.journal.send(r);
            }
        }
        written.is_ok()
    }

    /// A group that has exited: off D-Bus, its drivers dropped (the store task's shutdown is
    /// awaited at exit), and its drop-ins removed if it is gone for good.
    fn close(&mut self, id: GroupId, name: String, unbind: bool, stop_passive: Option<String>) {
        if let Some(d) = &self.dbus {
            d.remove_group(&name);
        }
        self.leaving.retain(|t| !t.is_finished());
        if let Some(d) = self.drivers.remove(&id) {
            self.leaving.push(d.session.task);
        }
        self.terms.unpark(id);
        if let Some(target) = stop_passive {
            self.stop_passive(
                target,
                name.clone(),
                "no group of the configuration starts it any more",
            );
        }
        if unbind {
            let systemd = self.systemd.clone();
            self.leaving.push(tokio::spawn(async move {
                if let Err(e) = systemd.unbind(&name).await {
                    tracing::warn!(PROMD_GROUP = %name, "removing the group's drop-ins: {e}");
                }
            }));
        }
    }

    /// Stop a group's passive target, and say why; awaited at exit with the store tasks, so
    /// a stop asked for just before promd exits is still carried out.
    fn stop_passive(&mut self, target: String, group: String, why: &'static str) {
        let systemd = self.systemd.clone();
        self.leaving.retain(|t| !t.is_finished());
        self.leaving.push(tokio::spawn(async move {
            match systemd.stop(&target).await {
                Ok(()) => tracing::info!(
                    PROMD_GROUP = %group,
                    "{group}: its passive target {target} stopped: {why}"
                ),
                Err(e) => tracing::warn!(
                    PROMD_GROUP = %group,
                    "{group}: stopping its passive target {target} ({why}): {e}"
                ),
            }
        }));
    }
}
