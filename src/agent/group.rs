//! One group in the agent's table, and how its machine's actions become driver work.

use std::collections::{BTreeMap, BTreeSet};

use super::output::{EnvFile, Fields, JobOrder, Level, Output, Record, SlotLine};
use super::{Agent, GroupId, Now};
use crate::config::GroupConfig;
use crate::core::{Action, Event, GroupMachine, Job, Reason, ReasonKind, Role};
use crate::logging;
use crate::store::{
    LeaderRecord, MemberRecord, StoreCommand, SwitchoverRecord, record::FORMAT_VERSION,
};
use crate::systemd::closure::has_processes;
use crate::systemd::{Closure, address};
use crate::watch::Followed;

/// What the agent keeps of one group besides its machine.
#[derive(Debug)]
pub(super) struct Group {
    pub(super) cfg: GroupConfig,
    pub(super) machine: GroupMachine,
    /// The closure of the active target, as last found: what a stop covers and a kill hits at
    /// once (while systemd is asked again for what the target holds now).
    pub(super) closure: Closure,
    /// Whether a walk found [`Group::closure`] (an empty one may be a target without units,
    /// or no walk yet).
    pub(super) walked: bool,
    /// Why the store is unreachable, as last said: said again only when it changes.
    pub(super) store_down: Option<String>,
    /// The last health result, to journal a failing check's reason once, not every interval.
    pub(super) health_ok: bool,
    /// CLOCK_REALTIME µs of the last role change (D-Bus `Since`).
    pub(super) since_usec: u64,
    /// The role of the member record last written, and since when (CLOCK_REALTIME µs) the
    /// record says it: the record's `since_usec`. The record may claim `promoting` before
    /// the machine's role changes, so it has its own stamp.
    pub(super) record_since: Option<(Role, u64)>,
    /// Removed or replaced by a reload: it hands over, exits, and is then closed.
    pub(super) retired: bool,
    /// What `/run/promd/GROUP.env` was last asked to say (with a start, or by
    /// [`Output::Env`]): rewritten only when that changes.
    pub(super) env: Option<EnvFile>,
    /// Its counters for `/metrics` (shared with the HTTP thread).
    pub(super) metrics: std::sync::Arc<crate::metrics::GroupMetrics>,
    /// The steady units (watched, expected up) that are down now, as the watch last said
    /// ([`crate::watch::WatchEvent::SteadyUnits`]); sorted. `/v1/groups/G/active` is 200
    /// only while this is empty.
    pub(super) units_down: Vec<String>,
    /// Kills asked so far ([`Output::Kill`]'s `kill` is the latest): only the answer to the
    /// latest becomes [`Event::KillSent`].
    pub(super) kills_asked: u64,
}

impl Group {
    /// A journal record of this group, with its `PROMD_GROUP`, `PROMD_ROLE`, `PROMD_TERM`
    /// and `PROMD_LEADER` as they are now; the text is prefixed with the group's name.
    pub(super) fn record(&self, level: Level, text: &str) -> Record {
        Record {
            level,
            message_id: None,
            text: format!("{}: {text}", self.cfg.name),
            fields: self.fields(),
        }
    }

    fn fields(&self) -> Fields {
        let m = &self.machine;
        Fields {
            // `journalctl PROMD_GROUP=sched` shows every slot's records.
            group: Some(self.cfg.group_name().to_owned()),
            slot: self.cfg.slot.as_ref().filter(|s| s.of > 1).map(|s| s.index),
            role: Some(m.role()),
            term: Some(m.term()),
            leader: Some(m.leader().unwrap_or("").to_string()),
            ..Fields::default()
        }
    }

    /// The units a group follows and what each is to it: the closure's units (their starts
    /// are reported), and the watched units (the configured `watch`, or the closure's
    /// watchable units; the address units always, [`address::watch_list`]), steady if the
    /// role expects them up.
    pub(super) fn followed(&self) -> Followed {
        let mut followed = Followed::new();
        for unit in self.closure.units.keys() {
            followed.entry(unit.clone()).or_default().role = true;
        }
        let watched =
            match address::watch_list(&self.cfg.name, &self.cfg.watch, &self.cfg.addresses) {
                Some(w) => w,
                None => self.closure.watchable(),
            };
        for unit in watched {
            let steady = self.closure.expects_up(&unit);
            let e = followed.entry(unit).or_default();
            e.watched = true;
            e.steady = steady;
        }
        followed
    }
}

/// The `MESSAGE_ID` of a role change follows the reason's kind: self-fencing has its own
/// catalogue entry.
pub(super) fn role_change_id(reason: &Reason) -> &'static str {
    match reason.kind() {
        ReasonKind::Fenced => logging::FENCED,
        ReasonKind::RoleChanged => logging::ROLE_CHANGED,
    }
}

impl Agent {
    /// Feed one event to a group's machine and carry out what it asks.
    pub(super) fn feed(&mut self, id: GroupId, event: Event, now: Now, out: &mut Vec<Output>) {
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        if let Some(touched) = &mut self.touched {
            touched.insert(id);
        }
        let actions = g.machine.handle(event, now.mono);
        self.refile(id);
        self.carry_actions(id, actions, now, out);
        self.settle_family(id, now, out);
    }

    pub(super) fn carry_actions(
        &mut self,
        id: GroupId,
        actions: Vec<Action>,
        now: Now,
        out: &mut Vec<Output>,
    ) {
        let from = out.len();
        for action in actions {
            self.carry(id, action, now, out);
        }
        retire_in_one_write(id, out, from);
        self.keep_term(id, out);
        self.follow_leader(id, out);
    }

    /// On a host that does not hold the role, keep the env file's `PROMD_LEADER` and
    /// `PROMD_TERM` those the machine knows now: rewritten only when they changed (a compare
    /// per step otherwise, so hundreds of groups' store events cost nothing), and after the
    /// step's outputs, so that never before a stop or a kill. A host with the role (promoting,
    /// active, demoting) keeps what its units were started with: the term of their start.
    /// A host still starting writes nothing yet: the file says what the last run said until
    /// the first role is known.
    pub(super) fn follow_leader(&mut self, id: GroupId, out: &mut Vec<Output>) {
        // A slot's file is its group's: written by the slot this host holds, or by slot 0.
        let Some(slot_line) = self.env_slot(id) else {
            return;
        };
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        let m = &g.machine;
        if g.retired || !matches!(m.role(), Role::Passive | Role::Failed) {
            return;
        }
        let (term, leader) = (m.term(), m.leader().unwrap_or(""));
        let same = g.env.as_ref().is_some_and(|e| {
            e.role == Role::Passive && e.term == term && e.leader == leader && e.slot == slot_line
        });
        if !same {
            let env = EnvFile {
                role: Role::Passive,
                term,
                leader: leader.to_string(),
                slot: slot_line,
            };
            g.env = Some(env.clone());
            out.push(Output::Env(id, env));
        }
    }

    /// Ask for the group's term to be kept on disk if it grew past what was kept: before a
    /// unit is handed it, and whenever the machine learns of a higher one (so that a restart,
    /// and a campaign after the store lost its history, start from it).
    fn keep_term(&mut self, id: GroupId, out: &mut Vec<Output>) {
        let Some(g) = self.groups.get(&id) else {
            return;
        };
        let term = g.machine.term();
        // Looked up before the entry is made: this runs after every step of every group, and
        // the entry's key is an owned name.
        if self
            .kept_terms
            .get(&g.cfg.name)
            .is_some_and(|&kept| kept >= term)
        {
            return;
        }
        self.kept_terms.insert(g.cfg.name.clone(), term);
        out.push(Output::KeepTerm {
            group: g.cfg.name.clone(),
            term,
        });
    }

    /// One machine action as driver work (and what the journal says of it).
    fn carry(&mut self, id: GroupId, action: Action, now: Now, out: &mut Vec<Output>) {
        let host = self.host.as_ref().map(|h| h.as_str().to_string());
        let node = self.node.clone();
        // The term is kept on disk before the units are handed it.
        if matches!(action, Action::Start(Job::StartActive, _)) {
            self.keep_term(id, out);
        }
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        let store = |cmd| Output::Store(id, cmd);
        let cancels = action.cancels();
        if !cancels.none() {
            out.push(Output::Cancel(id, cancels));
        }
        match action {
            Action::Start(job, term) => {
                let env = match job {
                    Job::StartActive => Some(EnvFile {
                        role: Role::Active,
                        term: term.unwrap_or(0),
                        leader: node,
                        // Starting its active target: this host holds the slot.
                        slot: SlotLine::of(
                            g.cfg.slot.as_ref(),
                            g.cfg.slot.as_ref().map(|s| s.index),
                        ),
                    }),
                    Job::StartPassive => Some(EnvFile {
                        role: Role::Passive,
                        term: g.machine.term(),
                        leader: g.machine.leader().unwrap_or("").to_string(),
                        slot: SlotLine::Absent,
                    }),
                    Job::StopActive => None,
                };
                if env.is_some() {
                    g.env = env.clone();
                }
                let known = g.closure.clone();
                let walked = g.walked;
                out.push(Output::Job(
                    id,
                    JobOrder {
                        job,
                        env,
                        known,
                        walked,
                    },
                ));
            }
            Action::KillActive => {
                let sweep = g.machine.role() == Role::Starting;
                out.push(Output::Log(if sweep {
                    // A previous run may have left them (killed while the fence was due): they
                    // are killed once the closure is known, not on an empty list.
                    g.record(
                        Level::Info,
                        "start-up: killing any unit of the role a previous run left",
                    )
                } else {
                    g.record(
                        Level::Warn,
                        "stopping did not finish in time: killing the role's units",
                    )
                }));
                let known = g.closure.clone();
                g.kills_asked += 1;
                let kill = g.kills_asked;
                out.push(Output::Kill { id, known, kill });
                // The start-up sweep runs at every start, most often with nothing to kill: a
                // counter of it would move at every restart and set off alerts on kills.
                if !sweep {
                    g.metrics.kills.inc();
                }
            }
            Action::Campaign { floor, claim } => out.push(store(StoreCommand::Campaign {
                record: LeaderRecord {
                    v: FORMAT_VERSION,
                    node,
                    priority: g.cfg.priority,
                    host: host.clone(),
                    term: None,
                },
                floor,
                // Its role changes the moment the key is won.
                claim: MemberRecord::of(claim, host, now.wall_usec),
            })),
            Action::Release { term } => out.push(store(StoreCommand::Release { term })),
            Action::Publish(m) => {
                let since = match g.record_since {
                    Some((role, since)) if role == m.role => since,
                    // A role change of this step (already carried) stamped `since_usec`.
                    _ if m.role == g.machine.role() => g.since_usec,
                    _ => now.wall_usec,
                };
                g.record_since = Some((m.role, since));
                let record = MemberRecord::of(m, host, since);
                out.push(store(StoreCommand::Publish(record)));
            }
            Action::RequestSwitchover { to } => {
                let text = format!("asking the active node to hand over to {to}");
                out.push(Output::Log(g.record(Level::Info, &text)));
                out.push(store(StoreCommand::RequestSwitchover(SwitchoverRecord {
                    v: FORMAT_VERSION,
                    to,
                    from: node,
                })));
            }
            Action::ClearSwitchover => out.push(store(StoreCommand::ClearSwitchover)),
            Action::RoleChanged {
                old,
                new,
                term,
                reason,
            } => {
                g.since_usec = now.wall_usec;
                if new == Role::Active {
                    g.metrics.promotions.inc();
                }
                if old == Role::Active {
                    g.metrics.demotions.inc();
                }
                if reason.kind() == ReasonKind::Fenced {
                    g.metrics.fences.inc();
                }
                let group = g.cfg.name.clone();
                let message_id = role_change_id(&reason);
                let reason = reason.to_string();
                out.push(Output::RoleSignal {
                    group: group.clone(),
                    old,
                    new,
                    term,
                    reason: reason.clone(),
                });
                out.push(Output::Log(Record {
                    level: Level::Info,
                    message_id: Some(message_id),
                    text: format!("{group}: {old} -> {new} (term {term}): {reason}"),
                    fields: Fields {
                        role: Some(new),
                        term: Some(term),
                        old_role: Some(old),
                        reason: Some(reason),
                        ..g.fields()
                    },
                }));
            }
            Action::RestartUnit(unit) => {
                // The whole role (a health check failed): its services, not its addresses.
                // Taking an address down and up again would only announce it anew, while
                // clients of a restarting service are refused by the kernel all the same; an
                // address unit that failed itself comes here by name.
                let units = match unit {
                    Some(u) => vec![u],
                    None => g
                        .cfg
                        .watch
                        .clone()
                        .unwrap_or_else(|| g.closure.steady.iter().cloned().collect())
                        .into_iter()
                        .filter(|u| !address::is_address_unit(u))
                        .collect(),
                };
                let text = format!("restarting {} in place", units.join(" "));
                out.push(Output::Log(g.record(Level::Warn, &text)));
                out.push(Output::Restart(id, units));
                g.metrics.unit_restarts.inc();
            }
            Action::Note(note) => out.push(Output::Log(g.record(Level::Warn, &note))),
            Action::Exit => out.push(store(StoreCommand::Shutdown)),
        }
    }

    /// A closure was found: keep it, say what it is when it changes, and follow its units.
    /// Returns whether its units changed (the caller then checks for units shared with other
    /// groups, [`Agent::say_shared_units`], once for every closure of its input).
    fn on_closure(&mut self, id: GroupId, closure: Closure, out: &mut Vec<Output>) -> bool {
        let Some(g) = self.groups.get_mut(&id) else {
            return false;
        };
        g.walked = true;
        if closure.same_role(&g.closure) {
            // Only which reload it was walked after: nothing to say or follow anew.
            g.closure.reloads = closure.reloads;
            return false;
        }
        if g.retired {
            // Still what its last stop must cover, but a leaving group follows nothing.
            g.closure = closure;
            return false;
        }
        let first = g.closure.units.is_empty();
        let changed = first || closure.names() != g.closure.names();
        if changed {
            out.push(Output::Log(g.record(Level::Info, &closure_said(&closure))));
        }
        g.closure = closure;
        out.push(Output::Follow(id, g.followed()));
        changed
    }

    /// Take walked closures ([`super::Input::Closure`], or [`super::Input::Closures`] after
    /// PID 1 reloaded): each as [`Agent::on_closure`], then the units shared between groups
    /// and the fence load once for all of them.
    pub(super) fn on_closures(
        &mut self,
        closures: impl IntoIterator<Item = (GroupId, Closure)>,
        now: Now,
        out: &mut Vec<Output>,
    ) {
        let mut changed = BTreeSet::new();
        for (id, closure) in closures {
            if self.on_closure(id, closure, out) {
                changed.insert(id);
            }
        }
        self.say_shared_units(&changed, out);
        self.refresh_fence_load(now, out);
    }

    /// Say, as an error, each unit with processes that the closure of one of `ids` shares
    /// with another group's. Each group elects its own host, so two groups active on two
    /// hosts would both run it: promd keeps one host per *group*, not per unit. A group a
    /// reload retired is left out (its replacement waits for it, `reload::shares`). One
    /// index of every closure's units, not a comparison of each group with every other: a
    /// walk of 500 groups after a reload changes them all at once.
    fn say_shared_units(&self, ids: &BTreeSet<GroupId>, out: &mut Vec<Output>) {
        if ids.is_empty() {
            return;
        }
        let mut holders: BTreeMap<&str, Vec<GroupId>> = BTreeMap::new();
        for (id, g) in self.groups.iter().filter(|(_, g)| !g.retired) {
            for unit in g.closure.units.keys().filter(|u| has_processes(u)) {
                holders.entry(unit.as_str()).or_default().push(*id);
            }
        }
        for id in ids {
            let Some(g) = self.groups.get(id).filter(|g| !g.retired) else {
                continue;
            };
            let mut shared: BTreeMap<GroupId, Vec<&str>> = BTreeMap::new();
            for unit in g.closure.units.keys() {
                for other in holders.get(unit.as_str()).into_iter().flatten() {
                    if other != id {
                        shared.entry(*other).or_default().push(unit.as_str());
                    }
                }
            }
            for (other, both) in shared {
                let Some(other) = self.groups.get(&other) else {
                    continue;
                };
                out.push(Output::Log(g.record(
                    Level::Error,
                    &format!(
                        "{} also in the role of group {}: each group elects its own host, so \
                         {} may run on two hosts at once; give each unit to one group's active \
                         target",
                        both.join(" "),
                        other.cfg.name,
                        if both.len() == 1 { "it" } else { "they" },
                    ),
                )));
            }
        }
    }
}

/// What the journal says of a group's closure when it is first found or changes.
fn closure_said(closure: &Closure) -> String {
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
    said
}

/// A release of the key and, later in the same step, the record this node publishes with it
/// (a demotion's `passive`) go to the store as one [`StoreCommand::Retire`] in place of the
/// release: the standbys wait for both, and one write is a round trip less on every
/// switchover. Only when no other store command of the group comes between them, so the store
/// sees the writes in the order the machine asked for. `from`: where this step's outputs
/// begin in `out`.
fn retire_in_one_write(id: GroupId, out: &mut Vec<Output>, from: usize) {
    let ours = |o: &Output| matches!(o, Output::Store(g, _) if *g == id);
    let Some(release) = (from..out.len())
        .find(|&i| matches!(&out[i], Output::Store(g, StoreCommand::Release { .. }) if *g == id))
    else {
        return;
    };
    let Some(publish) = (release + 1..out.len()).find(|&i| ours(&out[i])) else {
        return;
    };
    if !matches!(&out[publish], Output::Store(_, StoreCommand::Publish(_))) {
        return;
    }
    let Output::Store(_, StoreCommand::Publish(record)) = out.remove(publish) else {
        return;
    };
    if let Output::Store(_, cmd) = &mut out[release]
        && let StoreCommand::Release { term } = *cmd
    {
        *cmd = StoreCommand::Retire { term, record };
    }
}
