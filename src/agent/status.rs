//! What promd shows of itself: `STATUS=` and the D-Bus view of each group.

use super::group::Group;
use super::output::{Notify, Output};
use super::{Agent, GroupId};
use crate::core::{Ineligibility, Mono, Role};

/// What D-Bus shows of one group (`org.promd1.Group`'s properties, see
/// `dbus/org.promd1.Group.xml`); the runtime hands every view to the D-Bus service after each
/// input, which signals what changed.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupView {
    /// The group this is a view of: its object serves this id's view.
    pub id: GroupId,
    /// The group's name from promd.toml (property `Name`).
    pub name: String,
    /// This host's role: `starting`, `passive`, `promoting`, `active`, `demoting`, `failed`
    /// or `maintenance` (property `Role`).
    pub role: String,
    /// The node that holds the leader key, empty when none does or it is not known yet
    /// (property `Leader`).
    pub leader: String,
    /// The fencing term: the leader key's create revision (etcd) or counter (dir store);
    /// only grows (property `Term`).
    pub term: u64,
    /// This host's priority in the group (property `Priority`).
    pub priority: i32,
    /// Whether this host's health check and passive target are fine (property `Healthy`).
    pub healthy: bool,
    /// Whether the group is in maintenance mode, cluster-wide (property `Maintenance`).
    pub maintenance: bool,
    /// Watched-unit failures within the restart window (property `Failures`).
    pub failures: u32,
    /// CLOCK_REALTIME of this host's last role change (of its start before the first), in
    /// microseconds since the epoch (property `Since`).
    pub since_usec: u64,
    /// Every member, sorted by node; this host's entry from its live state, the others' from
    /// their store records; members listed in promd.toml that the store does not show appear
    /// with role `down` (properties `Members` and `MemberStates`).
    pub members: Vec<MemberView>,
    /// Removed or replaced by a reload and still handing over: not listed, not addressable
    /// by name; the group leaves the views once it has exited.
    pub retired: bool,
    /// Whether this host could become active now (property `Eligible`).
    pub eligible: bool,
    /// Why not, as a word ([`Ineligibility::word`], e.g. `unhealthy`); empty when eligible
    /// (property `Ineligible`).
    pub why: String,
    /// The steady units of the role (watched, expected to stay up) that are not up on this
    /// host now, sorted; empty when all are. Not a D-Bus property: what the HTTP endpoint's
    /// `/v1/groups/G/active` looks at besides the role.
    pub units_down: Vec<String>,
    /// The group's slots as this host sees them (property `Slots`): one for a group with
    /// one active host (and for a slot's own object), every slot for the object of a group
    /// with several (docs/slots.md).
    pub slots: Vec<SlotState>,
    /// The group's floating addresses (property `Addresses`, `a(sb)`): each as configured
    /// (`192.0.2.10/24 dev eth0`), and whether this host holds it now (active, its address
    /// unit up).
    pub addresses: Vec<(String, bool)>,
}

/// One slot of a group: an element of `Slots` (`a(usts)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    /// The slot, `0..actives`.
    pub slot: u32,
    /// The node holding the slot's leader key; empty when none does or it is not known.
    pub holder: String,
    /// The slot's term, its fencing token, as this host knows it.
    pub term: u64,
    /// This host's role in the slot.
    pub role: String,
}

/// One member of a group as this host sees it: an element of `MemberStates`
/// (`a(ssibbsutt)`), of which `Members` (`a(ssib)`) is the first four fields.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemberView {
    /// The member's node name.
    pub node: String,
    /// Its role as its record says (this host's: as it is now), or `down` without a record.
    pub role: String,
    /// Its priority (0 when `down`).
    pub priority: i32,
    /// Whether it reports itself healthy (false when `down`).
    pub healthy: bool,
    /// Whether it may become active now (false when `down`).
    pub eligible: bool,
    /// Why not: an [`Ineligibility::word`], or [`WHY_DOWN`] without a record; empty when
    /// eligible.
    pub why: String,
    /// Its watched-unit failures within its restart window (0 when not said).
    pub failures: u32,
    /// CLOCK_REALTIME µs of its last role change (0 when not said).
    pub since_usec: u64,
    /// The newest term it knew when it wrote its record (this host's: its term now; 0 when
    /// not said).
    pub term: u64,
}

/// The `why` of a configured member the store shows no record of (role `down`).
pub const WHY_DOWN: &str = "down";

impl MemberView {
    /// `Members`' element: (node, role, priority, healthy).
    pub fn summary(&self) -> (String, String, i32, bool) {
        (
            self.node.clone(),
            self.role.clone(),
            self.priority,
            self.healthy,
        )
    }

    /// `MemberStates`' element: (node, role, priority, healthy, eligible, why, failures,
    /// since, term).
    #[allow(clippy::type_complexity)]
    pub fn state(&self) -> (String, String, i32, bool, bool, String, u32, u64, u64) {
        (
            self.node.clone(),
            self.role.clone(),
            self.priority,
            self.healthy,
            self.eligible,
            self.why.clone(),
            self.failures,
            self.since_usec,
            self.term,
        )
    }

    /// A member from its (node, …, term) tuple as `MemberStates` carries it.
    #[allow(clippy::type_complexity)]
    pub fn of_state(s: (String, String, i32, bool, bool, String, u32, u64, u64)) -> MemberView {
        let (node, role, priority, healthy, eligible, why, failures, since_usec, term) = s;
        MemberView {
            node,
            role,
            priority,
            healthy,
            eligible,
            why,
            failures,
            since_usec,
            term,
        }
    }
}

/// An eligible member with no failures, term or stamp: a fixture of the views' tests.
#[cfg(test)]
pub(crate) fn member_view(node: &str, role: &str, priority: i32, healthy: bool) -> MemberView {
    MemberView {
        node: node.into(),
        role: role.into(),
        priority,
        healthy,
        eligible: true,
        why: String::new(),
        failures: 0,
        since_usec: 0,
        term: 0,
    }
}

/// The word of `why` for the views: empty when eligible.
fn why_word(why: Option<Ineligibility>) -> String {
    why.map(|w| w.word().to_string()).unwrap_or_default()
}

impl Agent {
    /// `STATUS=`: one clause per group, in the order the groups were opened; `no groups
    /// configured` without any. A group with several slots has one clause, which names the
    /// slot this host holds and every other slot's holder ([`Agent::clause_of`]). When the
    /// clauses would make the line longer than [`STATUS_MAX`] bytes (a few dozen groups), a
    /// summary instead: the count of groups in each role, then the clauses of the groups that
    /// need a look (store down, failures, maintenance, unhealthy, between roles) as far as
    /// they fit. systemd ignores a whole notify message over 4 KiB, `READY=1` included: at 200
    /// groups promd never became ready.
    pub fn status_line(&self, now: Mono) -> String {
        let clauses: Vec<Clause> = self
            .groups
            .keys()
            .filter_map(|id| self.clause_of(*id, now))
            .collect();
        self.line_of(&clauses)
    }

    /// [`Agent::status_line`] from the clauses kept by [`Agent::publish_status`].
    fn line_of_clauses(&self) -> String {
        let clauses: Vec<Clause> = self
            .groups
            .keys()
            .filter_map(|id| self.clauses.get(id))
            .cloned()
            .collect();
        self.line_of(&clauses)
    }

    /// The clause that carries group `id`'s part of `STATUS=`, built now: its own, or for a
    /// group with several slots, the clause of the whole group from its lowest slot still
    /// open ([`Agent::family_owner`], slot 0 but while a removed group's slots close) and an
    /// empty one for every other slot (which only keeps its [`Aging`]).
    fn clause_of(&self, id: GroupId, now: Mono) -> Option<Clause> {
        let g = self.groups.get(&id)?;
        let aging = Aging::of(g, now);
        // The group's `actives` as configured, not its slots still open: a removed group's
        // last slot keeps the group's form.
        let family = self.slot_of(id).and_then(|(group, _)| {
            let f = self.families.get(group)?;
            Some((group, self.family_owner(group) == Some(id), f.cfg.actives))
        });
        Some(match family {
            Some((_, false, _)) => Clause {
                text: String::new(),
                look: false,
                role: String::new(),
                aging,
            },
            Some((group, true, n)) if n > 1 => {
                let (text, look, role) = self.family_clause(group, now)?;
                Clause {
                    text,
                    look,
                    role,
                    aging,
                }
            }
            _ => {
                let mut text = status_clause(g, now);
                if let Some((group, _, _)) = family
                    && self.family_spare(group)
                {
                    text.push_str(", spare");
                }
                Clause {
                    text,
                    look: needs_a_look(g, now),
                    role: g.machine.role().to_string(),
                    aging,
                }
            }
        })
    }

    /// The clause of a group with several slots, e.g. `sched: active in slot 1 (term 5),
    /// slot 0 n1 (term 7)` or `sched: passive, slot 0 n1 (term 7), slot 1 vacant, spare`:
    /// the slot this host holds (its role and term), then every other slot's holder and term
    /// as this host knows them, then the host's failures and health as
    /// [`status_clause`] says them. With its text: whether a slot needs a look, and the role
    /// shown.
    fn family_clause(&self, group: &str, now: Mono) -> Option<(String, bool, String)> {
        let f = self.families.get(group)?;
        let slots: Vec<(u32, &Group)> = f
            .ids
            .iter()
            .zip(0u32..)
            .filter_map(|(id, k)| Some((k, self.groups.get(id)?)))
            .collect();
        let held = self.family_held(group);
        // The held slot; without one, a slot with failures (a failure escalated in slot 1
        // leaves slot 1's machine failed; one restarted in place counts in its window), else
        // the lowest.
        let trouble = |g: &Group| {
            let m = &g.machine;
            m.failed(now) || m.stranded(now) || m.failures(now) > 0
        };
        let &(k, shown) = slots
            .iter()
            .find(|(k, _)| Some(*k) == held)
            .or_else(|| slots.iter().find(|(_, g)| trouble(g)))
            .or(slots.first())?;
        let m = &shown.machine;
        let role = m.role();
        let mut s = match held {
            Some(_) => format!("{group}: {role} in slot {k} (term {})", m.term()),
            None => format!("{group}: {role}"),
        };
        // The shown slot's reason first: the one the host's role depends on.
        let store_down = slots
            .iter()
            .filter(|(_, g)| !g.machine.store_up())
            .min_by_key(|(j, _)| *j != k);
        match store_down.map(|(_, g)| &g.store_down) {
            Some(Some(reason)) => s.push_str(&format!(", waiting for the store ({reason})")),
            Some(None) => s.push_str(", waiting for the store"),
            None => {}
        }
        // Without the store, who holds what is not known.
        if store_down.is_none() {
            for (j, g) in slots.iter().filter(|(j, _)| Some(*j) != held) {
                match g.machine.leader() {
                    Some(l) => s.push_str(&format!(", slot {j} {l} (term {})", g.machine.term())),
                    None => s.push_str(&format!(", slot {j} vacant")),
                }
            }
        }
        push_flags(&mut s, shown, now);
        if self.family_spare(group) {
            s.push_str(", spare");
        }
        let look = slots.iter().any(|(_, g)| needs_a_look(g, now));
        Some((s, look, role.to_string()))
    }

    /// The line from the clauses of the groups (in the groups' order; the empty ones of
    /// slots other than 0 left out).
    fn line_of(&self, clauses: &[Clause]) -> String {
        if self.groups.is_empty() {
            return "no groups configured".into();
        }
        let clauses: Vec<&Clause> = clauses.iter().filter(|c| !c.text.is_empty()).collect();
        let full_len = clauses.iter().map(|c| c.text.len() + 2).sum::<usize>();
        if full_len <= STATUS_MAX + 2 {
            let parts: Vec<&str> = clauses.iter().map(|c| c.text.as_str()).collect();
            return parts.join("; ");
        }
        let mut roles: Vec<(String, usize)> = Vec::new();
        for c in &clauses {
            match roles.iter_mut().find(|(r, _)| *r == c.role) {
                Some((_, n)) => *n += 1,
                None => roles.push((c.role.clone(), 1)),
            }
        }
        roles.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let counts: Vec<String> = roles.iter().map(|(r, n)| format!("{n} {r}")).collect();
        let n = clauses.len();
        let plural = if n == 1 { "group" } else { "groups" };
        let mut line = format!("{n} {plural}: {}", counts.join(", "));
        let notable: Vec<&String> = clauses.iter().filter(|c| c.look).map(|c| &c.text).collect();
        let mut shown = 0;
        for clause in &notable {
            // Room for this clause and for the "and N more" tail.
            let room = STATUS_MAX.saturating_sub(line.len() + 2 + 64);
            if clause.len() > room {
                if shown == 0 && room > 0 {
                    // One long clause (a store error naming many endpoints): its start.
                    let mut cut = room.saturating_sub(3);
                    while !clause.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    line.push_str("; ");
                    line.push_str(&clause[..cut]);
                    line.push_str("...");
                    shown = 1;
                }
                break;
            }
            line.push_str("; ");
            line.push_str(clause);
            shown += 1;
        }
        if shown < notable.len() {
            line.push_str(&format!(
                "; and {} more that need a look (promctl status)",
                notable.len() - shown
            ));
        }
        line
    }

    /// Every group's D-Bus view (groups leaving after a reload included, marked `retired`).
    pub fn views(&self, now: Mono) -> Vec<GroupView> {
        self.groups
            .keys()
            .filter_map(|id| self.view_of(*id, now))
            .collect()
    }

    /// D-Bus `StoreConnected`: every group's store session is up.
    pub fn store_connected(&self) -> bool {
        self.groups.values().all(|g| g.machine.store_up())
    }

    /// Group `id`'s view. The object of a group with several active hosts (its slot 0's id)
    /// shows this host's own slot, so that `Role` and `/v1/groups/G/active` say whether this
    /// host runs the group's active target in any slot (docs/slots.md, "Promote and
    /// Demote"); each slot's own object (`GROUP@k`) shows that slot.
    pub(super) fn view_of(&self, id: GroupId, now: Mono) -> Option<GroupView> {
        let g = self.groups.get(&id)?;
        let shown = match self.slot_of(id) {
            Some((group, 0)) => self
                .family_held(group)
                .and_then(|k| {
                    let ids = &self.families.get(group)?.ids;
                    ids.get(usize::try_from(k).ok()?).copied()
                })
                .and_then(|held| self.groups.get(&held))
                .unwrap_or(g),
            _ => g,
        };
        let mut v = view(id, shown, now);
        v.name = g.cfg.name.clone();
        if let Some((group, 0)) = self.slot_of(id)
            && let Some(f) = self.families.get(group)
        {
            v.slots = f
                .ids
                .iter()
                .filter_map(|id| self.groups.get(id).map(slot_state))
                .collect();
        }
        Some(v)
    }

    /// `READY=1` with the status as it is now.
    pub(super) fn ready(&mut self, now: Mono, out: &mut Vec<Output>) {
        let status = self.status_line(now);
        self.last_status = status.clone();
        out.push(Output::Notify(Notify::Ready(status)));
    }

    /// `STATUS=`, if it changed since it was last sent. Only the clauses of the groups this
    /// input touched are rebuilt (all of them after [`Agent::touch_all`]); the line only if
    /// one of them changed.
    pub(super) fn publish_status(&mut self, now: Mono, out: &mut Vec<Output>) {
        let ids: Vec<GroupId> = match &self.touched {
            None => self.groups.keys().copied().collect(),
            Some(ids) => ids.iter().copied().collect(),
        };
        let mut changed = self.touched.is_none();
        // A slot's change shows in its group's clause (slot 0's): rebuild that one too.
        let mut ids: Vec<GroupId> = ids
            .into_iter()
            .flat_map(|id| {
                let first = self
                    .slot_of(id)
                    .and_then(|(group, _)| self.family_owner(group));
                [Some(id), first.filter(|f| *f != id)]
            })
            .flatten()
            .collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            let Some(clause) = self.clause_of(id, now) else {
                continue;
            };
            if self.clauses.get(&id) != Some(&clause) {
                self.clauses.insert(id, clause);
                changed = true;
            }
        }
        if !changed {
            return;
        }
        let status = self.line_of_clauses();
        if status != self.last_status {
            self.last_status = status.clone();
            out.push(Output::Notify(Notify::Status(status)));
        }
    }
}

/// A group's `STATUS=` clause as last built ([`Agent::publish_status`]).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Clause {
    /// Empty for a slot other than 0 of a group with several: slot 0's clause says it.
    pub(super) text: String,
    /// Whether the clause says more than "fine in its role" ([`needs_a_look`]).
    pub(super) look: bool,
    /// The role the clause shows (a summary counts the groups by it).
    pub(super) role: String,
    /// What of the group's view and clause time alone was changing, when they were built.
    pub(super) aging: Aging,
}

/// What of a group's D-Bus view and `STATUS=` clause changes with time alone, no input
/// fed: failures leave their window, a cooldown ends, a lease not renewed makes the host
/// ineligible. Every other field changes only by an input, which rebuilds the group's view.
/// Without an input each of these moves one way only (failures fall, a cooldown ends, a
/// lease ages), so an equal `Aging` now and when the view was built means an equal view;
/// [`Agent::refresh_aged`] rebuilds only the groups whose `Aging` moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Aging {
    why: Option<Ineligibility>,
    failures: u32,
    failed: bool,
}

impl Aging {
    pub(super) fn of(g: &Group, now: Mono) -> Aging {
        let m = &g.machine;
        Aging {
            why: m.why_ineligible(now),
            failures: m.failures(now),
            failed: m.failed(now),
        }
    }
}

impl Agent {
    /// Marks as touched the groups whose [`Aging`] moved since their view and clause were
    /// last built: once a second, instead of rebuilding all of them (with hundreds of idle
    /// groups that rebuild was most of promd's idle CPU).
    pub(super) fn refresh_aged(&mut self, now: Mono) {
        let Some(touched) = &mut self.touched else {
            return;
        };
        for (id, g) in &self.groups {
            let built = self.clauses.get(id).map(|c| c.aging);
            if built != Some(Aging::of(g, now)) {
                touched.insert(*id);
            }
        }
    }
}

/// A group's addresses as configured, each with whether this host holds it: the role active
/// here and the address's unit not among the steady units down.
fn addresses(g: &Group) -> Vec<(String, bool)> {
    let active = g.machine.role() == Role::Active;
    g.cfg
        .addresses
        .iter()
        .map(|a| {
            let unit = crate::systemd::address::unit_name(&g.cfg.name, a);
            (a.to_string(), active && !g.units_down.contains(&unit))
        })
        .collect()
}

/// The D-Bus view of a group: its machine, plus the configured members the store does not
/// know (shown as down).
fn view(id: GroupId, g: &Group, now: Mono) -> GroupView {
    let m = &g.machine;
    // This host as it is now (its record in the store may lag, or the store be unreachable).
    let why = m.why_ineligible(now);
    let me = MemberView {
        node: m.node().to_string(),
        role: m.role().as_str().to_string(),
        priority: m.priority(),
        healthy: m.healthy(),
        eligible: why.is_none(),
        why: why_word(why),
        failures: m.failures(now),
        since_usec: g.since_usec,
        term: m.term(),
    };
    let mut members: Vec<MemberView> = m
        .members()
        .iter()
        .filter(|x| x.node != m.node())
        .map(|x| MemberView {
            node: x.node.clone(),
            role: x.role.as_str().to_string(),
            priority: x.priority,
            healthy: x.healthy,
            eligible: x.eligible,
            why: why_word(x.why),
            failures: x.failures,
            since_usec: x.since_usec.unwrap_or(0),
            term: x.term.unwrap_or(0),
        })
        .collect();
    let (eligible, why) = (me.eligible, me.why.clone());
    members.push(me);
    for node in g.cfg.members.iter().flatten() {
        if !members.iter().any(|x| &x.node == node) {
            members.push(MemberView {
                node: node.clone(),
                role: "down".into(),
                priority: 0,
                healthy: false,
                eligible: false,
                why: WHY_DOWN.into(),
                failures: 0,
                since_usec: 0,
                term: 0,
            });
        }
    }
    members.sort();
    GroupView {
        id,
        name: g.cfg.name.clone(),
        role: m.role().as_str().to_string(),
        leader: m.leader().unwrap_or("").to_string(),
        term: m.term(),
        priority: m.priority(),
        healthy: m.healthy(),
        maintenance: m.maintenance(),
        failures: m.failures(now),
        retired: g.retired,
        units_down: g.units_down.clone(),
        slots: vec![slot_state(g)],
        addresses: addresses(g),
        since_usec: g.since_usec,
        members,
        eligible,
        why,
    }
}

/// One group's part of `STATUS=`, e.g. `web: active (term 42)`,
/// `web: passive, leader db-b (term 42)`, `web: passive, waiting for the store (...)`.
/// The longest `STATUS=` promd sends, in bytes: systemd drops a notify message over 4 KiB
/// whole, and `systemctl status` shows the line in one piece.
pub const STATUS_MAX: usize = 1024;

/// Whether a group's clause says more than "fine in its role": a summary lists these.
fn needs_a_look(g: &Group, now: Mono) -> bool {
    let m = &g.machine;
    !m.store_up()
        || !matches!(m.role(), Role::Active | Role::Passive)
        || m.maintenance()
        || m.failures(now) > 0
        || m.stranded(now)
        || m.failed(now)
        || !m.healthy()
}

fn status_clause(g: &Group, now: Mono) -> String {
    let m = &g.machine;
    let role = m.role();
    let mut s = match (&g.store_down, m.leader()) {
        (Some(reason), _) if !m.store_up() => {
            format!("{}: {role}, waiting for the store ({reason})", g.cfg.name)
        }
        (_, None) if !m.store_up() => format!("{}: {role}, waiting for the store", g.cfg.name),
        (_, Some(l)) if role != Role::Active => {
            format!("{}: {role}, leader {l} (term {})", g.cfg.name, m.term())
        }
        _ => format!("{}: {role} (term {})", g.cfg.name, m.term()),
    };
    push_flags(&mut s, g, now);
    s
}

/// The end of a clause: maintenance, failures in the window, and why the host cannot take
/// over (stranded, failed, unhealthy).
fn push_flags(s: &mut String, g: &Group, now: Mono) {
    let m = &g.machine;
    if m.maintenance() {
        s.push_str(", maintenance");
    }
    let failures = m.failures(now);
    if failures > 0 {
        s.push_str(&format!(
            ", {failures} failure{} in the window",
            if failures == 1 { "" } else { "s" }
        ));
    }
    if m.stranded(now) {
        s.push_str(", no eligible standby: restarting in place");
    } else if m.failed(now) {
        s.push_str(", failed: ineligible until the cooldown ends (promctl reset clears it)");
    } else if !m.healthy() {
        s.push_str(", unhealthy");
    }
}

/// What `Slots` says of the slot group `g` is.
fn slot_state(g: &Group) -> SlotState {
    let m = &g.machine;
    SlotState {
        slot: g.cfg.slot.as_ref().map_or(0, |s| s.index),
        holder: m.leader().unwrap_or("").to_string(),
        term: m.term(),
        role: m.role().as_str().to_string(),
    }
}
