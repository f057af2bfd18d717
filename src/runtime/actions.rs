//! Carrying out the machines' actions: store commands, unit kills and restarts, role changes.

use super::{Runtime, realtime_usec};
use crate::core::Reason;
use crate::core::{Action, ReasonKind, Role};
use crate::logging;
use crate::store::{
    LeaderRecord, MemberRecord, StoreCommand, SwitchoverRecord, record::FORMAT_VERSION,
};
use crate::watch::WatchEvent;

impl Runtime {
    pub(super) fn execute(&mut self, i: usize, action: Action) {
        let g = &self.groups[i];
        let send = |cmd: StoreCommand| {
            // A closed channel means the store task ended: only after Shutdown.
            let _ = g.session.commands.send(cmd);
        };
        match action {
            Action::Start(job, term) => self.start_job(i, job, term),
            Action::KillActive => {
                if g.machine.role() == Role::Starting {
                    // A previous run may have left them (killed while the fence was due):
                    // they are killed once the closure is known, not on an empty list.
                    self.log(
                        i,
                        tracing::Level::INFO,
                        "start-up: killing any unit of the role a previous run left",
                    );
                } else {
                    self.log(
                        i,
                        tracing::Level::WARN,
                        "stopping did not finish in time: killing the role's units",
                    );
                }
                let (systemd, known, target) = (
                    self.systemd.clone(),
                    g.closure.clone(),
                    g.cfg.active_target.clone(),
                );
                let units_tx = self.units_tx.clone();
                self.abort_superseded(i);
                let task = tokio::spawn(async move {
                    let kill = |units: Vec<String>| {
                        let systemd = systemd.clone();
                        async move { systemd.kill_all(&units).await }
                    };
                    super::jobs::known_then_fresh(&systemd, &known, &target, i, &units_tx, kill)
                        .await;
                });
                let kills = &mut self.groups[i].kills;
                kills.retain(|t| !t.is_finished());
                kills.push(task.abort_handle());
            }
            Action::Campaign => send(StoreCommand::Campaign(LeaderRecord {
                v: FORMAT_VERSION,
                node: self.node.clone(),
                priority: g.cfg.priority,
                host: self.host.as_ref().map(|h| h.as_str().to_string()),
            })),
            Action::Release { term } => send(StoreCommand::Release { term }),
            Action::Publish(m) => send(StoreCommand::Publish(MemberRecord {
                v: FORMAT_VERSION,
                node: m.node,
                priority: m.priority,
                eligible: m.eligible,
                healthy: m.healthy,
                role: m.role,
                host: self.host.as_ref().map(|h| h.as_str().to_string()),
            })),
            Action::RequestSwitchover { to } => {
                self.log(
                    i,
                    tracing::Level::INFO,
                    &format!("asking the active node to hand over to {to}"),
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
                    None => g
                        .cfg
                        .watch
                        .clone()
                        .unwrap_or_else(|| g.closure.steady.iter().cloned().collect()),
                };
                self.log(
                    i,
                    tracing::Level::WARN,
                    &format!("restarting {} in place", units.join(" ")),
                );
                let (systemd, group) = (self.systemd.clone(), g.cfg.name.clone());
                let watch_tx = self.watch_tx.clone();
                let task = tokio::spawn(async move {
                    for unit in units {
                        if let Err(e) = systemd.restart_failed(&unit).await {
                            tracing::error!(PROMD_GROUP = %group, "restarting {unit}: {e}");
                        }
                        // Skipped by a Condition or failed at once: still a failure, so the
                        // count goes on towards a failover instead of stalling here.
                        for (unit, state) in systemd.not_up(std::slice::from_ref(&unit)).await {
                            tracing::warn!(PROMD_GROUP = %group, "{unit} is {state} after its restart");
                            let _ = watch_tx.send((i, WatchEvent::Stopped { unit }));
                        }
                    }
                });
                // A stop or a fence aborts restarts still in flight: they must not land after.
                self.groups[i].superseded.retain(|t| !t.is_finished());
                self.groups[i].superseded.push(task.abort_handle());
            }
            Action::Note(note) => self.log(i, tracing::Level::WARN, &note),
            Action::Exit => send(StoreCommand::Shutdown),
        }
    }

    pub(super) fn role_changed(
        &mut self,
        i: usize,
        old: Role,
        new: Role,
        term: u64,
        reason: &Reason,
    ) {
        self.groups[i].since_usec = realtime_usec();
        let g = &self.groups[i];
        if let Some(d) = &self.dbus {
            d.role_changed(
                &g.cfg.name,
                old.as_str(),
                new.as_str(),
                term,
                &reason.to_string(),
            );
        }
        let leader = g.machine.leader().unwrap_or("");
        let message = format!("{}: {old} -> {new} (term {term}): {reason}", g.cfg.name);
        let fenced = reason.kind() == ReasonKind::Fenced;
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
}
