//! `systemctl reload promd`: groups added, removed or replaced without disturbing the rest.
//!
//! A group whose configuration is unchanged is not touched. A new group opens (passive
//! first). A removed group hands over, exits and closes. A changed group is changed in place
//! when it can be ([`changes`]): priority, preempt, members that keep this node, the restart,
//! health and watch settings; its units keep running and its term stays. A change of
//! `active-target`, `passive-target` or `lease`, or members without this node, hands the
//! group over and exits it like a removed one, then opens it again under a new id with its
//! new configuration. The journal says which keys changed and what was done about them. An
//! invalid file, or one that changes what only a restart of promd may (`node`, `[store]`), is
//! refused and the running configuration stays.

use std::time::Duration;

use std::collections::BTreeMap;

use super::group::Group;
use super::output::{Level, Notify, Output, Record};
use super::{Agent, GroupId, NewConfig, Now, params, watchdog_fit};
use crate::config::{Fixed, GroupConfig, restart_needed};
use crate::core::Event;
use crate::logging;
use crate::systemd::Closure;

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
        let NewConfig {
            config: new,
            text,
            closures,
        } = file?;
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
        self.reload_closures = closures;
        let (mut added, mut removed, mut changed, mut in_place, mut kept) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0);
        for (ids, cfg) in self.live_configured() {
            let Some(&id) = ids.first() else {
                continue;
            };
            match new.groups.iter().find(|n| n.name == cfg.name) {
                Some(n) if *n == cfg => kept += 1,
                Some(n) => {
                    let mut c = changes(&cfg, n, &self.node);
                    // Slots of an earlier shrink still leaving: another change of `actives`
                    // restarts the group rather than number slots around them.
                    let leaving = ids.iter().any(|id| self.leaving(*id));
                    if leaving && n.actives != cfg.actives {
                        c.restart.push(format!(
                            "actives changed {} → {} while slots of an earlier change were \
                             still leaving",
                            cfg.actives, n.actives
                        ));
                    }
                    if c.restart.is_empty() {
                        in_place.push(n.name.clone());
                        // Each slot takes its own configuration of the new file.
                        for (id, slot) in ids.iter().zip(n.slots()) {
                            if !self.leaving(*id) {
                                self.retune(*id, slot, &c.in_place, now, out);
                            }
                        }
                        self.set_family_config(n);
                        self.reslot(&ids, n, now, out);
                    } else {
                        changed.push(n.name.clone());
                        let mut why = c.restart.join(", ");
                        if !c.in_place.is_empty() {
                            why.push_str(&format!(" (and {})", c.in_place.join(", ")));
                        }
                        if let Some(g) = self.groups.get(&id) {
                            out.push(Output::Log(Record {
                                text: format!(
                                    "restarting group {}: {why}; handing over, then starting \
                                     it again",
                                    n.name
                                ),
                                ..g.record(Level::Info, "")
                            }));
                        }
                        self.replacing.push(n.clone());
                        for id in ids {
                            if !self.leaving(id) {
                                self.retire(id, "its configuration changed", now, out);
                            }
                        }
                    }
                }
                None => {
                    removed.push(cfg.name.clone());
                    for id in ids {
                        if !self.leaving(id) {
                            self.retire(id, "removed from the configuration", now, out);
                        }
                    }
                }
            }
        }
        for n in &new.groups {
            let live = self
                .groups
                .values()
                .any(|g| !g.retired && g.cfg.group_name() == n.name);
            let waiting = self.replacing.iter().any(|r| r.name == n.name);
            if !live && !waiting {
                added.push(n.name.clone());
                // A group that shares a target, a unit or an address with one handing over
                // (a renamed group, an address moved here) starts once that one has stopped:
                // its start-up would otherwise kill the units the other is still draining.
                let before: Vec<&str> = self
                    .groups
                    .values()
                    .filter(|g| g.retired && shares(g, n, &self.reload_closures))
                    .map(|g| g.cfg.name.as_str())
                    .collect();
                if before.is_empty() {
                    self.add_group(n.clone(), now, out);
                } else {
                    out.push(Output::Log(Record::plain(
                        Level::Info,
                        format!(
                            "{}: starts once group {} has handed over (they share a target, a \
                             unit or an address, or its units could not be read)",
                            n.name,
                            before.join(", ")
                        ),
                    )));
                    self.replacing.push(n.clone());
                }
            }
        }
        self.config = new;
        Ok(format!(
            "{kept} unchanged, added [{}], removed [{}], changed in place [{}], changed (handed \
             over, then restarted) [{}]",
            added.join(" "),
            removed.join(" "),
            in_place.join(" "),
            changed.join(" ")
        ))
    }

    /// Apply a changed configuration to a running group in place (see [`changes`]): the
    /// machine is retuned (it publishes a changed priority, and applies the usual rules under
    /// the new values), the runtime takes the new settings (a changed health check restarts,
    /// a changed `watch` is followed anew). The units and the term stay.
    fn retune(
        &mut self,
        id: GroupId,
        new: GroupConfig,
        what: &[String],
        now: Now,
        out: &mut Vec<Output>,
    ) {
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        let text = format!("applied in place: {}", what.join(", "));
        out.push(Output::Log(g.record(Level::Info, &text)));
        let health = (&new.health_command, new.health_interval, new.health_timeout)
            != (
                &g.cfg.health_command,
                g.cfg.health_interval,
                g.cfg.health_timeout,
            );
        let watch = new.watch != g.cfg.watch;
        // A slot beyond 0 never has a check of its own: it is told slot 0's results.
        let no_check =
            new.health_command.is_none() && new.slot.as_ref().is_none_or(|s| s.index == 0);
        g.cfg = new.clone();
        out.push(Output::Retune {
            id,
            cfg: new,
            health,
        });
        if watch {
            out.push(Output::Follow(id, g.followed()));
        }
        let tunables = params(&self.node, &g.cfg, None, 0).tunables();
        let dropped_check = health && no_check && !g.health_ok;
        if dropped_check {
            // Without a check there is nothing left to fail: a node that the old command
            // held ineligible is healthy again.
            g.health_ok = true;
        }
        if tunables != g.machine.tunables() {
            self.feed(id, Event::Retune(tunables), now, out);
        }
        if dropped_check {
            self.feed(id, Event::Health { ok: true }, now, out);
        }
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
        self.feed(id, Event::Retire, now, out);
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
            let group = g.cfg.group_name().to_owned();
            // A group of several slots stops it with its last slot.
            let last = !self.groups.values().any(|o| o.cfg.group_name() == group);
            let stop_passive = g
                .cfg
                .passive_target
                .clone()
                .filter(|t| last && !self.starts_passive(t));
            let name = g.cfg.name;
            self.forget_family(&group, id);
            let replaced = !self.stopping && self.replacing.iter().any(|r| r.name == group);
            if !replaced {
                self.replacing.retain(|r| r.name != group);
                // Gone for good: its series leave /metrics.
                self.metrics.remove_group(&name);
            }
            // Replaced: its units stay bound, for the new version binds the same ones. Gone
            // for good: they are no longer promd's to bind.
            out.push(Output::Close {
                id,
                name,
                unbind: !replaced,
                stop_passive,
            });
            self.start_waiting(now, out);
        }
        // Its units no longer count: the others' fence may begin later again.
        self.refresh_fence_load(now, out);
    }

    /// Whether a group of the configuration in force starts `target` as its passive target:
    /// an open group that is not leaving, or a changed version still to open. (While promd
    /// stops, the versions still to open count too: a stopping promd leaves the passive
    /// targets of the configuration running, as it does for every other group.)
    fn starts_passive(&self, target: &str) -> bool {
        let mine = |t: &Option<String>| t.as_deref() == Some(target);
        self.groups
            .values()
            .any(|g| !g.retired && mine(&g.cfg.passive_target))
            || self.replacing.iter().any(|r| mine(&r.passive_target))
    }

    /// Open each group of a reload that waited (see [`shares`]) once no group it shares
    /// anything with is still handing over.
    fn start_waiting(&mut self, now: Now, out: &mut Vec<Output>) {
        if self.stopping {
            return;
        }
        let mut k = 0;
        while k < self.replacing.len() {
            let r = &self.replacing[k];
            let blocked = self
                .groups
                .values()
                .any(|g| g.retired && shares(g, r, &self.reload_closures));
            if blocked {
                k += 1;
            } else {
                let cfg = self.replacing.remove(k);
                self.add_group(cfg, now, out);
            }
        }
    }

    /// A group added by a reload: opened (each of its slots), served on D-Bus, started
    /// (passive first).
    fn add_group(&mut self, cfg: GroupConfig, now: Now, out: &mut Vec<Output>) {
        let ids = self.insert_configured(cfg, now.wall_usec);
        self.open_and_start(ids, now, out);
    }

    /// Groups just put in the table by a reload: every one's drivers opened before any takes
    /// a step (a slot's step steps its siblings), then each served on D-Bus and started.
    fn open_and_start(&mut self, ids: Vec<GroupId>, now: Now, out: &mut Vec<Output>) {
        for &id in &ids {
            if let Some(g) = self.groups.get(&id) {
                out.push(Output::Open(id, g.cfg.clone()));
            }
        }
        // Its closure is not known yet: every group's fence begins as early as its lease
        // allows until it is.
        self.refresh_fence_load(now, out);
        for id in ids {
            if let Some(view) = self.view_of(id, now.mono) {
                out.push(Output::Serve(id, view));
            }
            self.feed(id, Event::Tick, now, out);
        }
    }

    /// A family's `actives` changed in place: slots beyond the old count are opened (the
    /// running ones are not touched: no hand-over, no new term), slots beyond the new count
    /// are retired like a removed group (the holder stops their units and releases the key;
    /// they leave the family once closed). Then the family settles again (`standbys` too may
    /// have changed).
    fn reslot(&mut self, ids: &[GroupId], n: &GroupConfig, now: Now, out: &mut Vec<Output>) {
        let slots = n.slots();
        for (k, &id) in ids.iter().enumerate().skip(slots.len()) {
            let why = format!("slot {k} is beyond actives = {}", n.actives);
            self.retire(id, &why, now, out);
        }
        let mut grown = Vec::new();
        for cfg in slots.into_iter().skip(ids.len()) {
            let id = self.insert_group(cfg, now.wall_usec);
            self.join_family(&n.name, id);
            grown.push(id);
        }
        self.open_and_start(grown, now, out);
        if let Some(&first) = ids.first() {
            self.settle_family(first, now, out);
        }
    }

    /// The groups of the configuration in force that are not leaving, each with its ids
    /// (its slots', slot k's at index k) and its configuration as the file gives it.
    fn live_configured(&self) -> Vec<(Vec<GroupId>, GroupConfig)> {
        let mut live = Vec::new();
        for (id, g) in &self.groups {
            if g.retired {
                continue;
            }
            match &g.cfg.slot {
                None => live.push((vec![*id], g.cfg.clone())),
                Some(s) if s.index == 0 => {
                    if let Some((ids, cfg)) = self.family_config(&s.group) {
                        live.push((ids, cfg));
                    }
                }
                Some(_) => {}
            }
        }
        live
    }
}

/// Whether a group `b` of a reload must wait for `a` to hand over first: the same name (a
/// changed group's new version), or a target, a unit or a floating address in common (a
/// renamed group, perhaps with renamed targets that pull in the same services; an address
/// moved from one group to another). The address keys in the store keep the hosts apart;
/// this keeps the two groups of one host from acting on one unit at once. `b_units` is the
/// closure of `b`'s active target as walked at the reload; without it (the walk failed), or
/// without a closure of `a` (none found yet), `b` waits.
fn shares(a: &Group, b: &GroupConfig, walked: &BTreeMap<String, Closure>) -> bool {
    // A group with several slots: each slot's target instance and walked units.
    let slots = b.slots();
    let targets =
        |g: &GroupConfig| std::iter::once(g.active_target.clone()).chain(g.passive_target.clone());
    let units = slots.iter().any(|s| match walked.get(&s.name) {
        Some(c) if !a.closure.units.is_empty() => {
            c.units.keys().any(|u| a.closure.units.contains_key(u))
        }
        _ => true,
    });
    a.cfg.group_name() == b.name
        || slots
            .iter()
            .any(|s| targets(&a.cfg).any(|t| targets(s).any(|u| t == u)))
        || units
        || a.cfg
            .addresses
            .iter()
            .any(|x| b.addresses.iter().any(|y| x.ip == y.ip))
}

/// What a reload changes of one group, each change said as `key old → new`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Changes {
    /// What only a restart of the group (a hand-over) can apply.
    pub(super) restart: Vec<String>,
    /// What is applied to the running group.
    pub(super) in_place: Vec<String>,
}

/// Sort the differences between a group's running configuration and its new one. A restart
/// (hand over, exit, open again) for:
/// - `active-target`, `passive-target`: the units of the role are another set (their
///   closure, drop-ins, followers); the old ones must be stopped under the old role.
/// - `lease`: the store's lease the group's keys are bound to, and every deadline of the fence
///   and the watchdog derive from it; changing them under running units would let a fence
///   armed for the old lease meet a store expiry of the new one.
/// - `members` without this node: it may not hold the role any more.
/// - `actives`, `standbys`: only from or to a group of one active host without `standbys`
///   (whose machine starts the passive target itself); between two versions with slots
///   they are grown, shrunk and re-ranked in place (docs/slots.md, "Rebalancing").
///
/// Everything else in place.
pub(super) fn changes(old: &GroupConfig, new: &GroupConfig, node: &str) -> Changes {
    let mut c = Changes::default();
    let mut note = |restart: bool, key: &str, from: String, to: String| {
        if from != to {
            if restart {
                c.restart.push(format!("{key} changed {from} → {to}"));
            } else {
                c.in_place.push(format!("{key} {from} → {to}"));
            }
        }
    };
    let d = |d: Duration| humantime::format_duration(d).to_string();
    let list = |l: &Option<Vec<String>>, none: &str| match l {
        Some(l) => format!("[{}]", l.join(" ")),
        None => none.to_string(),
    };
    let unit = |u: &Option<String>| u.clone().unwrap_or_else(|| "none".into());
    let member = |m: &Option<Vec<String>>| m.as_ref().is_none_or(|m| m.iter().any(|n| n == node));
    note(
        true,
        "active-target",
        old.active_target.clone(),
        new.active_target.clone(),
    );
    note(
        true,
        "passive-target",
        unit(&old.passive_target),
        unit(&new.passive_target),
    );
    note(true, "lease", d(old.lease), d(new.lease));
    // The address units are part of the role's closure, walked and bound when the group
    // starts: a change is a restart of the group, like a change of its targets (their order
    // is no change: the configuration holds them sorted).
    let addresses = |a: &[crate::config::Address]| {
        let all: Vec<String> = a.iter().map(ToString::to_string).collect();
        format!("[{}]", all.join(", "))
    };
    note(
        true,
        "addresses",
        addresses(&old.addresses),
        addresses(&new.addresses),
    );
    // Slots: grown, shrunk and re-ranked in place between two versions that both run as a
    // family (docs/slots.md, "Rebalancing"); to or from a group of one active host and no
    // `standbys`, whose machine starts the passive target itself, a restart.
    let family = |g: &GroupConfig| g.actives > 1 || g.standbys.is_some();
    let reshaped = family(old) != family(new);
    note(
        reshaped,
        "actives",
        old.actives.to_string(),
        new.actives.to_string(),
    );
    let standbys = |m: Option<std::num::NonZeroU32>| m.map_or("no limit".into(), |m| m.to_string());
    note(
        reshaped,
        "standbys",
        standbys(old.standbys),
        standbys(new.standbys),
    );
    let leaves = member(&old.members) && !member(&new.members);
    let mut members = (
        list(&old.members, "any node"),
        list(&new.members, "any node"),
    );
    if leaves {
        members.1.push_str(&format!(", without this node ({node})"));
    }
    note(leaves, "members", members.0, members.1);
    note(
        false,
        "priority",
        old.priority.to_string(),
        new.priority.to_string(),
    );
    note(
        false,
        "preempt",
        old.preempt.to_string(),
        new.preempt.to_string(),
    );
    note(
        false,
        "max-restarts",
        old.max_restarts.to_string(),
        new.max_restarts.to_string(),
    );
    note(
        false,
        "restart-window",
        d(old.restart_window),
        d(new.restart_window),
    );
    note(
        false,
        "restart-backoff",
        d(old.restart_backoff),
        d(new.restart_backoff),
    );
    note(
        false,
        "failure-cooldown",
        d(old.failure_cooldown),
        d(new.failure_cooldown),
    );
    note(
        false,
        "watch",
        list(&old.watch, "the closure's units"),
        list(&new.watch, "the closure's units"),
    );
    note(
        false,
        "health-command",
        list(&old.health_command, "none"),
        list(&new.health_command, "none"),
    );
    note(
        false,
        "health-interval",
        d(old.health_interval),
        d(new.health_interval),
    );
    note(
        false,
        "health-timeout",
        d(old.health_timeout),
        d(new.health_timeout),
    );
    if c.restart.is_empty() && c.in_place.is_empty() && old != new {
        // A setting this list does not know yet: the safe way.
        c.restart.push("a setting changed".into());
    }
    c
}
