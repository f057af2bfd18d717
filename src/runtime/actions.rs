//! Carrying out the machines' actions: store commands, unit kills and restarts, role changes.

use super::{Runtime, realtime_usec};
use crate::core::{Action, Role};
use crate::logging;
use crate::store::{
    LeaderRecord, MemberRecord, StoreCommand, SwitchoverRecord, record::FORMAT_VERSION,
};

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

    pub(super) fn role_changed(&mut self, i: usize, old: Role, new: Role, term: u64, reason: &str) {
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
}
