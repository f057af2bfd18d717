//! `systemctl reload promd`: groups added, removed or replaced without disturbing the rest.
//!
//! A group whose configuration is unchanged is not touched. A new group opens (passive
//! first). A removed group hands over, exits and closes. A changed group hands over and exits
//! like a removed one, then opens again under a new id with its new configuration. An invalid
//! file, or one that changes what only a restart may (`node`, `[store]`), is refused and the
//! running configuration stays.

use super::output::{Level, Notify, Output, Record};
use super::{Agent, GroupId, NewConfig, Now, watchdog_fit};
use crate::config::{Fixed, GroupConfig, restart_needed};
use crate::core::Event;
use crate::logging;

impl Agent {
    /// Apply a configuration file read on SIGHUP (`Err`: why it could not be read or is
    /// invalid), between `RELOADING=1` and `READY=1`.
    pub(super) fn reload(
        &mut self,
        file: Result<NewConfig, String>,
        now: Now,
        out: &mut Vec<Output>,
    ) {
        out.push(Output::Notify(Notify::Reloading));
        match self.try_reload(file, now, out) {
            Ok(summary) => out.push(Output::Log(Record::plain(
                Level::Info,
                format!(
                    "configuration reloaded from {}: {summary}",
                    self.config_origin
                ),
            ))),
            Err(problems) => {
                let refused = |text: &str| {
                    Output::Log(Record {
                        message_id: Some(logging::CONFIG_REFUSED),
                        ..Record::plain(Level::Error, text)
                    })
                };
                out.extend(problems.lines().map(refused));
                out.push(refused("reload refused: keeping the running configuration"));
            }
        }
        self.ready(now.mono, out);
    }

    /// The diff: returns a one-line summary, or every problem (one per line) of a file that
    /// is refused.
    fn try_reload(
        &mut self,
        file: Result<NewConfig, String>,
        now: Now,
        out: &mut Vec<Output>,
    ) -> Result<String, String> {
        let NewConfig { config: new, text } = file?;
        // `promd check-config --reload` (ExecReload=) refuses this already; the file may have
        // changed since, so this stays the last line of defence.
        if let Some(changes) =
            restart_needed(&Fixed::of(&self.config), &new, &text, &self.config_origin)
        {
            return Err(changes.to_string());
        }
        // Only ever lowered: the groups already running count on the interval in force.
        if let Some(fit) = watchdog_fit(&new, self.watchdog) {
            self.watchdog = Some(fit.new);
            out.push(Output::Log(Record::plain(Level::Info, fit.to_string())));
            out.push(Output::Notify(Notify::Watchdog(fit.new)));
        }
        // A group still handing over from an earlier reload restarts with what this file
        // says, or not at all if this file removed it: the latest file wins.
        self.replacing
            .retain(|r| new.groups.iter().any(|n| n.name == r.name));
        for r in &mut self.replacing {
            if let Some(n) = new.groups.iter().find(|n| n.name == r.name) {
                *r = n.clone();
            }
        }
        let (mut added, mut removed, mut changed, mut kept) =
            (Vec::new(), Vec::new(), Vec::new(), 0);
        let live: Vec<(GroupId, GroupConfig)> = self
            .groups
            .iter()
            .filter(|(_, g)| !g.retired)
            .map(|(id, g)| (*id, g.cfg.clone()))
            .collect();
        for (id, cfg) in live {
            match new.groups.iter().find(|n| n.name == cfg.name) {
                Some(n) if *n == cfg => kept += 1,
                Some(n) => {
                    changed.push(n.name.clone());
                    self.replacing.push(n.clone());
                    self.retire(id, "its configuration changed", now, out);
                }
                None => {
                    removed.push(cfg.name.clone());
                    self.retire(id, "removed from the configuration", now, out);
                }
            }
        }
        for n in &new.groups {
            let live = self
                .groups
                .values()
                .any(|g| !g.retired && g.cfg.name == n.name);
            let waiting = self.replacing.iter().any(|r| r.name == n.name);
            if !live && !waiting {
                added.push(n.name.clone());
                self.add_group(n.clone(), now, out);
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

    /// Hand the group over and stop it; it closes once its machine has exited.
    fn retire(&mut self, id: GroupId, why: &str, now: Now, out: &mut Vec<Output>) {
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        let text = format!("{why}: handing over and stopping this group");
        out.push(Output::Log(g.record(Level::Info, &text)));
        g.retired = true;
        // Its unit watchers and health check would only feed a group that is leaving.
        out.push(Output::Quiet(id));
        self.feed(id, Event::Terminate, now, out);
    }

    /// Close every retired group that has exited, and open its replacement if a reload
    /// changed it (unless promd is stopping: a replacement would never be told to stop).
    pub(super) fn close_exited(&mut self, now: Now, out: &mut Vec<Output>) {
        let exited: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| g.retired && g.machine.exited())
            .map(|(id, _)| *id)
            .collect();
        for id in exited {
            let Some(g) = self.groups.remove(&id) else {
                continue;
            };
            self.refile(id);
            self.touch_all();
            self.clauses.remove(&id);
            let name = g.cfg.name;
            match self.replacing.iter().position(|r| r.name == name) {
                Some(pos) if !self.stopping => {
                    let cfg = self.replacing.remove(pos);
                    out.push(Output::Close {
                        id,
                        name,
                        unbind: false,
                    });
                    self.add_group(cfg, now, out);
                }
                _ => {
                    self.replacing.retain(|r| r.name != name);
                    // Gone for good: its series leave /metrics.
                    self.metrics.remove_group(&name);
                    // Gone for good: its units are no longer promd's to bind.
                    out.push(Output::Close {
                        id,
                        name,
                        unbind: true,
                    });
                }
            }
        }
    }

    /// A group added by a reload: opened, served on D-Bus, started (passive first).
    fn add_group(&mut self, cfg: GroupConfig, now: Now, out: &mut Vec<Output>) {
        let id = self.open_group(cfg, now, out);
        if let Some(view) = self.view_of(id, now.mono) {
            out.push(Output::Serve(id, view));
        }
        self.feed(id, Event::Tick, now, out);
    }
}
