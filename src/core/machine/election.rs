//! Rule 4b and preemption: campaigning for a vacant key, best candidate first, and asking a
//! lower-priority active node to hand over.
//!
//! **The first election.** A node that has not seen the leader key held since it started (a
//! cluster boot: every promd starts at once) ranks by priority the members that are still
//! starting too. Their records say `starting` and are not eligible, so by the ordinary rule
//! the host whose start-up happened to finish first would win, whatever its priority. Until
//! [`Timer::FirstElection`] ([`Timing::first_election_wait`](super::Timing::first_election_wait)
//! after the node first saw the key vacant), it does not campaign while a member that ranks
//! above it is `starting` (or `passive` but not yet eligible for a start-up reason:
//! [`still_starting`]), nor, with `members` configured, while a configured member has no
//! record at all (its priority is unknown: it may outrank this node). The grace periods count
//! from the moment the last of them stopped being waited for, or from the end of the wait.
//! Once the node has seen the key held, nothing of this applies: a member that restarts
//! never delays a failover. Only who wins depends on it, never safety (docs/safety.md).

use std::cmp::Reverse;
use std::time::Duration;

use super::{
    Action, GroupMachine, Ineligibility, Ineligible, Key, Member, Mono, Owed, Role, Timer,
};

/// Whether `m`'s record says it has not finished starting: `starting`, or `passive` but not
/// yet eligible for a reason that start-up clears by itself — its first lease renewal not yet
/// acknowledged, its store session not yet up, its passive target not yet up. Between its
/// `starting` record and its first eligible one a member may publish such a record: it turns
/// passive once its units are stopped and its passive target is up, whatever its lease
/// (`Lease::Unconfirmed` until the first renewal is answered). A lower-ranked node that read
/// it in that moment campaigned at once and won a cold boot in `system_boot`; waited for as
/// `starting`, it lets the member finish.
fn still_starting(m: &Member) -> bool {
    m.role == Role::Starting
        || (m.role == Role::Passive
            && !m.eligible
            && matches!(
                m.why,
                Some(Ineligibility::Checked(
                    Ineligible::LeaseNotRenewed
                        | Ineligible::StoreUnreachable
                        | Ineligible::NotPassive
                ))
            ))
}

/// Where a candidate ranks: a switchover target first, then the higher priority, then the lower
/// name. Smaller ranks higher.
type Rank<'a> = (bool, Reverse<i32>, &'a str);

impl GroupMachine {
    /// Rule 4b: campaign for a vacant key, best candidate first.
    pub(super) fn campaign(&mut self, now: Mono, out: &mut Vec<Action>) {
        self.first_election_due(now, out);
        if self.holder().is_some() || self.campaigning() {
            return;
        }
        if !self.unread.current() {
            return; // a fresh connection: the store's state is on its way
        }
        if self.maintenance {
            return;
        }
        if !self.eligible(now) || self.timers.pending(Timer::CampaignRetry, now) {
            return;
        }
        if self.holder_standing() {
            return;
        }
        let since = match self.key {
            Key::Vacant { since } => since,
            _ => {
                self.key = Key::Vacant { since: now };
                now
            }
        };
        if self.campaign_at(since, now).is_some_and(|at| now >= at) {
            // The record as it stands goes out first, written before the campaign: once the
            // campaign is in flight, nothing is published until its answer (rule 5).
            self.publish(now, out);
            let floor = self.known_floor();
            self.owed = Owed::Campaign { floor };
            // What rule 5 publishes once the key is won (`waits_to_promote`), at the term
            // the store hands out.
            let claim = Member {
                role: Role::Promoting,
                term: None,
                ..self.record(now)
            };
            self.claim = Some(claim.clone());
            out.push(Action::Campaign { floor, claim });
        }
    }

    /// The highest term this node knows to have been handed out in the group: its own
    /// ([`Self::term`], never below the kept floor) and every member record's. A campaign asks
    /// the store for a term above it, so that a store that lost its history (restored from an
    /// older snapshot, recreated) does not hand out a term a unit has already seen.
    pub(super) fn known_floor(&self) -> u64 {
        self.members
            .iter()
            .filter_map(|m| m.term)
            .fold(self.term(), u64::max)
    }

    /// Whether another member's record still says it may run the units (`promoting`,
    /// `active`, `demoting`) although the key is vacant, or won by this node. A key that
    /// expired or was released goes with its holder's standing: its member record shares the
    /// lease (gone with it) and a releasing holder has stopped its units. But a key deleted by
    /// hand (`etcdctl del`) vanishes while its holder still runs them; the holder kills them
    /// at once and publishes its new role, and a holder that cannot (dead, cut off) loses its
    /// record with its lease, at most a lease later. Campaigning before that, or starting the
    /// units with a key won meanwhile, would run them on two hosts.
    ///
    /// That a holder's record claims the role whenever its units may run is what
    /// [`Self::claim_written`] makes sure of: the units start only once the store shows it.
    pub(super) fn holder_standing(&self) -> bool {
        self.members.iter().any(|m| {
            m.node != self.p.node
                && matches!(m.role, Role::Promoting | Role::Active | Role::Demoting)
        })
    }

    /// When this node campaigns for the key vacant since `since`, as things stand at `now`:
    /// after [`Self::campaign_delay`], or not yet (`None`) while its first election waits for
    /// members that are still starting ([`Timer::FirstElection`] wakes it at the latest).
    pub(super) fn campaign_at(&self, since: Mono, now: Mono) -> Option<Mono> {
        if self.timers.pending(Timer::FirstElection, now) && !self.awaited().is_empty() {
            return None;
        }
        Some(since + self.campaign_delay())
    }

    /// How long this node lets better candidates try first: one grace period per candidate
    /// ranked above it (a switchover target first, then priority, then the lower name). A
    /// member that holds no slot of a group with several and stands by for another one is a
    /// candidate too: it goes for this slot once it sees it vacant, so a node deferring after
    /// a crash lets it go first.
    pub(super) fn campaign_delay(&self) -> Duration {
        let others: Vec<_> = self
            .members
            .iter()
            .filter(|m| m.node != self.p.node && m.may_take_over() && self.is_member(&m.node))
            .map(|m| self.rank(&m.node, m.priority))
            .collect();
        let mine = self.rank(&self.p.node, self.p.priority);
        let rank = if self.defer_once {
            others.len()
        } else {
            others.iter().filter(|k| **k < mine).count()
        };
        self.p.timing.grace() * u32::try_from(rank).unwrap_or(u32::MAX)
    }

    /// Where `node` at `priority` ranks among the candidates.
    fn rank<'a>(&self, node: &'a str, priority: i32) -> Rank<'a> {
        (
            self.switchover_to.as_deref() != Some(node),
            Reverse(priority),
            node,
        )
    }

    /// The members this node's first election waits for (while [`Timer::FirstElection`] is
    /// pending): those whose record says `starting` and that rank above this node, and, when
    /// `members` is configured, the configured members with no record at all.
    fn awaited(&self) -> Vec<&str> {
        let mine = self.rank(&self.p.node, self.p.priority);
        let starting = self
            .members
            .iter()
            .filter(|m| {
                m.node != self.p.node
                    && still_starting(m)
                    && self.is_member(&m.node)
                    && self.rank(&m.node, m.priority) < mine
            })
            .map(|m| m.node.as_str());
        let unpublished = self
            .p
            .members
            .iter()
            .flatten()
            .filter(|n| **n != self.p.node && !self.members.iter().any(|m| m.node == **n));
        starting.chain(unpublished.map(String::as_str)).collect()
    }

    /// [`Event::Members`](super::Event::Members) during the first election: when a member it
    /// waited for is no longer waited for (it finished starting, or published its record at
    /// last), the grace periods count from now. Counted from the vacancy instead, a node that
    /// waited longer than its grace periods would campaign the moment a better candidate
    /// became eligible, racing it.
    pub(super) fn members_read(&mut self, members: Vec<Member>, now: Mono) {
        let waiting = self.timers.pending(Timer::FirstElection, now);
        let before: Vec<String> = if waiting {
            self.awaited().into_iter().map(str::to_string).collect()
        } else {
            Vec::new()
        };
        self.members = members;
        if before.is_empty() {
            return;
        }
        let after = self.awaited();
        if before.iter().any(|n| !after.contains(&n.as_str()))
            && matches!(self.key, Key::Vacant { .. })
        {
            self.key = Key::Vacant { since: now };
        }
    }

    /// The key is first read vacant: the first election begins, and waits for members still
    /// starting at most [`Timing::first_election_wait`](super::Timing::first_election_wait).
    pub(super) fn first_election_begins(&mut self, now: Mono) {
        self.timers.set(
            Timer::FirstElection,
            now + self.p.timing.first_election_wait(),
        );
    }

    /// The key is seen held (or won): whatever comes later is not the first election.
    pub(super) fn first_election_over(&mut self) {
        self.timers.clear(Timer::FirstElection);
    }

    /// The first election's wait is up: campaign without the members still awaited, the grace
    /// periods counting from the end of the wait.
    fn first_election_due(&mut self, now: Mono, out: &mut Vec<Action>) {
        let Some(until) = self.timers.get(Timer::FirstElection) else {
            return;
        };
        if now < until {
            return;
        }
        self.timers.clear(Timer::FirstElection);
        let awaited = self.awaited().join(", ");
        if awaited.is_empty() {
            return;
        }
        if let Key::Vacant { since } = self.key {
            self.key = Key::Vacant {
                since: since.max(until),
            };
            out.push(Action::Note(format!(
                "first election: {awaited} still starting (or not yet in the store) after {} \
                 ms; no longer waiting for them",
                self.p.timing.first_election_wait().as_millis()
            )));
        }
    }

    /// Ask a lower-priority active node to hand over, if `preempt` is on.
    pub(super) fn preempt(&mut self, now: Mono, out: &mut Vec<Action>) {
        if !self.p.preempt
            || !self.eligible(now)
            || self.switchover_to.is_some()
            || self.maintenance
        {
            return;
        }
        let Some((leader, _)) = self.holder() else {
            return;
        };
        let leader_priority = self
            .members
            .iter()
            .find(|m| m.node == leader)
            .map(|m| m.priority);
        if leader_priority.is_none_or(|p| p >= self.p.priority) {
            return;
        }
        if self.timers.pending(Timer::SwitchoverRetry, now) {
            return;
        }
        self.timers
            .set(Timer::SwitchoverRetry, now + self.p.timing.lease);
        out.push(Action::RequestSwitchover {
            to: self.p.node.clone(),
        });
    }
}
