//! The host's fence load: how long PID 1 may need to stop everything this host fences at
//! once, estimated from the closures of all its groups.
//!
//! A lost lease (a cut, a store outage) fences every group of the host in the same instant,
//! and PID 1 runs those stops one after another: spawning each `ExecStop=`/`ExecStopPost=`,
//! answering few D-Bus calls meanwhile. Measured on two busy cores, 7.6–9.1 ms per unit
//! whose stop runs one command, 12.8 ms per unit with two; counted at 6 ms a unit and 6 ms a
//! command ([`crate::core::STOP_COST_PER_UNIT`], [`crate::core::STOP_COST_PER_COMMAND`];
//! docs/safety.md, "What is assumed about the host"). Units that drain leave PID 1 idle
//! until the fence's kill, so the kill's window (from the kill to the hang deadline) must
//! hold that; the agent therefore gives every machine the estimate ([`Event::FenceLoad`])
//! and the machine kills, and if need be begins its fence, early enough, as far as its lease
//! allows ([`Timing::kill_margin`], [`Timing::margin`]: at most half the lease, and never so
//! early that a renewal through a silent etcd member comes too late). Where the lease does
//! not allow enough, the journal says so, with the lease that would. The estimate is
//! journalled whenever it changes.
//!
//! A group whose role has no unit with processes still has its target stopped and the stop
//! confirmed: beyond the first 50 such groups, which every fence's own room holds, each counts
//! 2 ms ([`crate::core::STOP_COST_PER_GROUP`], [`crate::core::GROUPS_FREE`]).
//!
//! The closures are walked when a group opens, at every start and stop of its role, and
//! after every reload of PID 1 that promd did not cause (a unit added to a role by a
//! drop-in and `systemctl daemon-reload`: `src/runtime/reloads.rs`), which hands every
//! group's closure over in one input and so counts the load once.
//!
//! Until every group's closure has been found (start-up, a reload that adds groups), the
//! load is not known and taken as the most a lease allows. Otherwise a host that won a group
//! in its first seconds would fence with the lease's own window whatever its other groups
//! run.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Agent, GroupId, Level, Now, Output, Record};
use crate::core::{Event, Timing};
use crate::systemd::closure::has_processes;

/// The load while some closure is not known yet: more than any lease leaves (the margin
/// stops at the cap, `Timing::margin`).
pub(super) const UNKNOWN: Duration = Duration::MAX;

/// The fence load as last given to the machines.
#[derive(Debug)]
pub(super) struct FenceLoad {
    /// The groups whose roles have no unit with processes, the units with processes and
    /// their stop commands; `None` while some group's closure is not known yet.
    units: Option<(usize, usize, usize)>,
    /// The estimate ([`Timing::fence_load_for`]), or [`UNKNOWN`].
    pub(super) load: Duration,
    /// The leases the journal said were too short for the load, with the load it said it for.
    warned: BTreeMap<Duration, Duration>,
}

impl Default for FenceLoad {
    fn default() -> FenceLoad {
        FenceLoad {
            units: None,
            load: UNKNOWN,
            warned: BTreeMap::new(),
        }
    }
}

impl Agent {
    /// Count the units every group's closure may have running, and give the machines whose
    /// fence deadline that moves the new estimate. Said in the journal, as a warning, when a
    /// lease is too short for it.
    pub(super) fn refresh_fence_load(&mut self, now: Now, out: &mut Vec<Output>) {
        let known = self.groups.values().all(|g| g.walked || g.retired);
        let count = known.then(|| {
            // Each unit once, with the most commands any walk found for it.
            let mut units: BTreeMap<&str, usize> = BTreeMap::new();
            for g in self.groups.values() {
                for u in g.closure.units.keys().filter(|u| has_processes(u)) {
                    let commands = g.closure.stop_commands.get(u).copied().unwrap_or(0);
                    let e = units.entry(u.as_str()).or_default();
                    *e = (*e).max(commands);
                }
            }
            // Groups whose roles run no process: counted by the group, not by unit.
            let empty = self
                .groups
                .values()
                .filter(|g| !g.closure.units.keys().any(|u| has_processes(u)))
                .count();
            (empty, units.len(), units.values().sum::<usize>())
        });
        if count == self.fence_load.units {
            return;
        }
        self.fence_load.units = count;
        let load = count.map_or(UNKNOWN, |(empty, units, commands)| {
            Timing::fence_load_for(empty, units, commands)
        });
        let old = std::mem::replace(&mut self.fence_load.load, load);
        if old != load {
            // Every machine, not only those whose fence moves: a load moves the kill and the
            // hang deadline before it long before it moves the fence (a reviewer found a
            // load grown from 100 to 900 ms at 6 s left every kill 800 ms late).
            let ids: Vec<GroupId> = self
                .groups
                .iter()
                .filter(|(_, g)| g.machine.timing().fence_load != load)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                self.feed(id, Event::FenceLoad(load), now, out);
            }
        }
        // Said at every new count, also one within the same step of the estimate: the line
        // must not name a count the host no longer has.
        if let Some((empty, count, commands)) = count {
            // Groups without processes are said only where they count (past GROUPS_FREE).
            let groups_count = !Timing::fence_load_for(empty, 0, 0).is_zero();
            let units = counted(count, "unit");
            let what = match (count, groups_count) {
                (_, false) => units.clone(),
                (0, true) => format!("{} without processes", counted(empty, "group")),
                (_, true) => format!("{units} and {} without processes", counted(empty, "group")),
            };
            let and_groups = if groups_count {
                format!(
                    ", and for promd to confirm the stops of the {} whose roles run no process",
                    counted(empty, "group")
                )
            } else {
                String::new()
            };
            out.push(Output::Log(Record::plain(
                Level::Info,
                format!(
                    "fence load: {units} with processes in the roles of all groups, {} among \
                     them, about {} for PID 1 to stop at once{and_groups}; each fence kills \
                     early enough for it, as far as its lease allows",
                    counted(commands, "stop command"),
                    humantime::format_duration(load)
                ),
            )));
            self.warn_short_leases(&what, out);
        }
    }

    /// One warning per lease too short for the load (again only if the load grew since).
    fn warn_short_leases(&mut self, what: &str, out: &mut Vec<Output>) {
        let load = self.fence_load.load;
        let mut short: BTreeMap<Duration, Timing> = BTreeMap::new();
        for g in self.groups.values() {
            let t = g.machine.timing().with_fence_load(load);
            if !t.holds_fence_load() {
                short.insert(t.lease, t);
            }
        }
        self.fence_load
            .warned
            .retain(|lease, _| short.contains_key(lease));
        for (lease, t) in short {
            if self
                .fence_load
                .warned
                .get(&lease)
                .is_some_and(|w| *w >= load)
            {
                continue;
            }
            self.fence_load.warned.insert(lease, load);
            let fmt = |d: Duration| humantime::format_duration(d).to_string();
            out.push(Output::Log(Record::plain(
                Level::Warn,
                format!(
                    "lease {} is too short for the {what} this host may have to stop at \
                     once: PID 1 may need about {} to stop them, and the fence's kill leaves it {}; \
                     make lease at least {} (docs/safety.md, \"What is assumed about the host\")",
                    fmt(lease),
                    fmt(load),
                    fmt(t.kill_window()),
                    Timing::lease_for_fence_load(load).map_or("an hour".into(), fmt),
                ),
            )));
        }
    }
}

/// `n` and the noun, plural but for one: "1 unit", "2 units", "0 units".
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
