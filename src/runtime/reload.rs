//! `systemctl reload promd`: groups added, removed or replaced without disturbing the rest.

use super::view::view;
use super::{Runtime, fit_watchdog};
use crate::config::{Fixed, GroupConfig, restart_needed};
use crate::core::Event;
use crate::logging;

impl Runtime {
    /// `systemctl reload promd`: apply a valid new configuration without disturbing the
    /// groups that did not change; keep the running one if the new one is invalid.
    pub(super) fn reload(&mut self) {
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

    pub(super) fn try_reload(&mut self) -> Result<String, String> {
        let (new, text) =
            crate::config::load_source(&self.config_path).map_err(|e| e.to_string())?;
        // `promd check-config --reload` (ExecReload=) refuses this already; the file may have
        // changed since, so this stays the last line of defence.
        let origin = self.config_path.display().to_string();
        if let Some(changes) = restart_needed(&Fixed::of(&self.config), &new, &text, &origin) {
            return Err(changes.to_string());
        }
        // Only ever lowered: the groups already running count on the interval in force.
        fit_watchdog(&new, &mut self.notifier);
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
    pub(super) fn retire(&mut self, i: usize, why: &str) {
        self.log(
            i,
            tracing::Level::INFO,
            &format!("{why}: handing over and stopping this group"),
        );
        self.groups[i].retired = true;
        // Its unit watchers and health check would only feed a group that is leaving.
        let g = &mut self.groups[i];
        for task in [g.health_task.take(), g.watch_task.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        self.feed(i, Event::Terminate);
    }

    /// Once a retired group has finished, drop it from D-Bus and start its replacement.
    pub(super) fn retire_exited(&mut self) {
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
            match self.replacing.iter().position(|r| r.name == name) {
                // promd is stopping: a replacement would never be told to stop too.
                Some(pos) if !self.stopping => {
                    let cfg = self.replacing.remove(pos);
                    self.add_group(&cfg);
                }
                _ => {
                    self.replacing.retain(|r| r.name != name);
                    // Gone for good: its units are no longer promd's to bind.
                    let systemd = self.systemd.clone();
                    tokio::spawn(async move {
                        if let Err(e) = systemd.unbind(&name).await {
                            tracing::warn!(PROMD_GROUP = %name, "removing the group's drop-ins: {e}");
                        }
                    });
                }
            }
        }
    }

    /// A group added by a reload: opened, served on D-Bus, started (passive first).
    pub(super) fn add_group(&mut self, cfg: &GroupConfig) {
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
}
