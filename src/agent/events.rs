//! Driver events (store, unit watches, systemd jobs, health checks) as machine events, with
//! what the journal says of them, and the refusal to run beside another host's promd under
//! the same `node`.

use super::output::{Fields, Level, Output, Record};
use super::{Agent, GroupId, JobDone, Now};
use crate::core::{Event, Job, Member, Mono, Role};
use crate::health::HealthResult;
use crate::logging;
use crate::store::{StoreEvent, other_host};
use crate::watch::WatchEvent;

impl Agent {
    pub(super) fn on_store(
        &mut self,
        id: GroupId,
        ev: StoreEvent,
        now: Now,
        out: &mut Vec<Output>,
    ) {
        let Some(g) = self.groups.get_mut(&id) else {
            return; // the late word of a group that has closed
        };
        let event = match ev {
            StoreEvent::Up => {
                self.store_reason = None;
                if let Some(reason) = g.store_down.take() {
                    let text = format!("store reachable again (was: {reason})");
                    out.push(Output::Log(g.record(Level::Info, &text)));
                }
                Event::StoreUp
            }
            StoreEvent::Down(reason) => {
                self.store_outage = true;
                let reason = reason.to_string();
                let text = format!("store unreachable: {reason}");
                match &g.store_down {
                    None => out.push(Output::Log(g.record(Level::Warn, &text))),
                    Some(was) if *was != reason && self.store_reason.as_ref() != Some(&reason) => {
                        out.push(Output::Log(Record::plain(Level::Warn, text)));
                    }
                    Some(_) => {}
                }
                self.store_reason = Some(reason.clone());
                g.store_down = Some(reason);
                Event::StoreDown
            }
            StoreEvent::Renewed { sent_at } => {
                let sent_at = Mono(sent_at.saturating_duration_since(self.origin));
                g.metrics.renewed(sent_at, now.mono);
                Event::Renewed { sent_at }
            }
            StoreEvent::LeaseLost => {
                out.push(Output::Log(g.record(Level::Warn, "store lease lost")));
                Event::LeaseLost
            }
            StoreEvent::Leader(l) => {
                if let Some(l) = &l {
                    g.metrics.leader_seen(l.term);
                }
                let leader = match l {
                    None => None,
                    Some(l) => match other_host(l.host.as_deref(), self.host.as_ref()) {
                        Some(other) if l.node == self.node => {
                            let other = other.to_string();
                            self.refuse_node_conflict(id, "the leader key", &other, now, out);
                            // Not ours, whatever the name says: never released as a key of
                            // ours from an earlier run.
                            Some((format!("{} (machine {other})", l.node), l.term))
                        }
                        _ => Some((l.node, l.term)),
                    },
                };
                Event::Leader(leader)
            }
            StoreEvent::Members(ms) => {
                let conflict = ms.iter().find_map(|m| {
                    other_host(m.host.as_deref(), self.host.as_ref())
                        .filter(|_| m.node == self.node)
                        .map(str::to_string)
                });
                if let Some(other) = conflict {
                    self.refuse_node_conflict(id, "this node's member record", &other, now, out);
                }
                Event::Members(ms.into_iter().map(Member::from).collect())
            }
            StoreEvent::Switchover(s) => Event::Switchover(s.map(|s| s.to)),
            StoreEvent::Campaigned(t) => Event::Campaigned(t),
            StoreEvent::Released => Event::Released,
            // A slot's own `maintenance` key is never written: the group's (slot 0's) is
            // every slot's, told to it once slot 0 has read it.
            StoreEvent::Maintenance(_) if g.cfg.slot.as_ref().is_some_and(|s| s.index > 0) => {
                if let Some(on) = self.group_maintenance(id) {
                    self.feed(id, Event::Maintenance(on), now, out);
                }
                return;
            }
            StoreEvent::Maintenance(m) => {
                let on = m.as_ref().is_some_and(|m| m.on);
                if on != g.machine.maintenance() {
                    let text = if on {
                        let by = m.map(|m| m.by).unwrap_or_default();
                        format!("maintenance mode on (set by {by})")
                    } else {
                        "maintenance mode off".into()
                    };
                    out.push(Output::Log(g.record(Level::Info, &text)));
                }
                Event::Maintenance(on)
            }
            StoreEvent::Corrupt { key, error } => {
                let text = format!("ignoring unreadable store value {key}: {error}");
                out.push(Output::Log(g.record(Level::Warn, &text)));
                return;
            }
        };
        let maintenance = match event {
            Event::Maintenance(on) => {
                let was = self
                    .groups
                    .get(&id)
                    .is_some_and(|g| g.machine.maintenance());
                Some((on, was))
            }
            _ => None,
        };
        self.feed(id, event, now, out);
        if let Some((on, was)) = maintenance {
            self.family_maintenance(id, on, now, out);
            if was && !on {
                self.maintenance_ended(id, out);
            }
        }
    }

    /// Maintenance mode went off: on a host that runs the role (every slot's, in a group
    /// with slots), the steady units that are down (stopped or failed by hand meanwhile)
    /// are started again, so that the role is whole when promd takes it back; neither a
    /// failure nor a restart of what runs.
    fn maintenance_ended(&mut self, id: GroupId, out: &mut Vec<Output>) {
        let mut ids = vec![id];
        ids.extend(self.other_slots(id));
        for id in ids {
            let Some(g) = self.groups.get(&id) else {
                continue;
            };
            if g.machine.role() != Role::Active || g.units_down.is_empty() {
                continue;
            }
            let units = g.units_down.clone();
            let text = format!(
                "maintenance mode off: starting {} again, down since",
                units.join(" ")
            );
            out.push(Output::Log(g.record(Level::Info, &text)));
            out.push(Output::Restart(id, units));
        }
    }

    pub(super) fn on_watch(
        &mut self,
        id: GroupId,
        ev: WatchEvent,
        now: Now,
        out: &mut Vec<Output>,
    ) {
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        let event = match ev {
            // Not the machine's business (a unit that stays down is a failure the other
            // events report): what the HTTP endpoint tells a balancer.
            // (The input touched the group: its view is published again.)
            WatchEvent::SteadyUnits { down } => {
                g.units_down = down;
                return;
            }
            WatchEvent::Failed { unit, restarted } => Event::UnitFailed { unit, restarted },
            WatchEvent::Stopped { unit } => {
                if g.machine.role() == Role::Active {
                    let maintenance = g.machine.maintenance();
                    let (level, what) = if maintenance {
                        (Level::Info, "left as it is while maintenance mode is on")
                    } else {
                        (Level::Warn, "counted as a failure")
                    };
                    let text = format!("{unit} is not running, though nobody failed it: {what}");
                    out.push(Output::Log(g.record(level, &text)));
                    if maintenance {
                        return;
                    }
                }
                Event::UnitFailed {
                    unit,
                    restarted: false,
                }
            }
            WatchEvent::Started { unit } => Event::UnitStarted { unit },
            WatchEvent::PassiveUnits { ok } => Event::PassiveUnits { ok },
        };
        let unit = match &event {
            Event::UnitFailed { unit, .. } | Event::UnitStarted { unit } => Some(unit.as_str()),
            _ => None,
        };
        if unit.is_some_and(|u| !self.unit_event_is_for(id, u)) {
            return;
        }
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        if matches!(event, Event::UnitFailed { .. }) && g.machine.role() == Role::Active {
            g.metrics.unit_failures.inc();
        }
        self.feed(id, event, now, out);
    }

    /// A systemd job finished. A start of the active target that left watched units down
    /// (only a start that succeeded is checked) is a failed start: `StartIncomplete`.
    pub(super) fn on_job(&mut self, id: GroupId, done: JobDone, now: Now, out: &mut Vec<Output>) {
        let JobDone { job, ok, not_up } = done;
        if self.family_passive_done(id, job, ok, out) {
            return;
        }
        let Some(g) = self.groups.get(&id) else {
            return;
        };
        // A stop confirmed past the group's hang deadline: the watchdog should have ended
        // promd by now, and the units may outlive the lease. PID 1 took longer than the lease
        // leaves for what this host stops at once (docs/safety.md, "What is assumed about
        // the host"): the operator sizes the lease for it.
        if job == Job::StopActive
            && ok
            && let Some(deadline) = g.machine.hang_deadline()
            && now.mono > deadline
        {
            let text = format!(
                "the role's units were confirmed stopped {} ms past the hang deadline \
                 (the lease can lapse {} ms after it): systemd took longer to stop them than \
                 the lease leaves; make `lease` longer for what this host stops at once \
                 (promd.toml(5), lease)",
                now.mono.saturating_sub(deadline).as_millis(),
                crate::core::WATCHDOG_REACH.as_millis()
            );
            out.push(Output::Log(g.record(Level::Warn, &text)));
        }
        if not_up.is_empty() {
            self.feed(id, Event::Job { job, ok }, now, out);
            return;
        }
        for (unit, state) in &not_up {
            let text = format!("{unit} is {state} after the active target started: a failed start");
            out.push(Output::Log(g.record(Level::Warn, &text)));
        }
        let units = not_up.into_iter().map(|(u, _)| u).collect();
        self.feed(id, Event::StartIncomplete { units }, now, out);
    }

    pub(super) fn on_health(
        &mut self,
        id: GroupId,
        result: HealthResult,
        now: Now,
        out: &mut Vec<Output>,
    ) {
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        if !result.ok && g.health_ok {
            let text = format!("health check failed: {}", result.detail);
            out.push(Output::Log(g.record(Level::Warn, &text)));
        }
        g.health_ok = result.ok;
        g.metrics.health(result.ok, result.duration);
        self.feed(id, Event::Health { ok: result.ok }, now, out);
        // A group of several slots: the host's check, run by slot 0, is every slot's.
        for other in self.other_slots(id) {
            if let Some(g) = self.groups.get_mut(&other) {
                g.health_ok = result.ok;
            }
            self.feed(other, Event::Health { ok: result.ok }, now, out);
        }
    }

    /// Another host's promd uses this host's `node` (its record says so): two promd under one
    /// name would take each other's records for their own and release each other's keys.
    /// Refuse, loudly: stop every group as on SIGTERM; promd then exits with
    /// [`crate::runtime::EXIT_REFUSED`] (which the shipped unit does not restart). Whichever of
    /// the two finds the other first refuses.
    fn refuse_node_conflict(
        &mut self,
        id: GroupId,
        what: &str,
        other: &str,
        now: Now,
        out: &mut Vec<Output>,
    ) {
        if self.refused.is_some() {
            return;
        }
        let why = format!(
            "node {} is in use by another host: {what} was written by the promd on machine {other} \
             (this host is {}); each host needs its own `node` in promd.toml",
            self.node,
            self.host.as_ref().map_or("unknown", |h| h.as_str()),
        );
        out.push(Output::Log(Record {
            level: Level::Error,
            message_id: Some(logging::NODE_CONFLICT),
            text: format!("refusing to run: {why}; stopping every group"),
            fields: Fields {
                node: Some(self.node.clone()),
                group: self.groups.get(&id).map(|g| g.cfg.name.clone()),
                ..Fields::default()
            },
        }));
        self.refused = Some(why);
        if !self.stopping {
            self.stop_all(now, out);
        }
    }
}
