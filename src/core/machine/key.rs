//! What this node knows of the group's leader key, and what it has asked of the store about
//! it: the states, and the store events that move them.

use super::{Action, GroupMachine, Member, Mono, Timer};

/// The leader key as this node knows it.
///
/// `Ours` is the only state in which this node may run the active units (and then only
/// under a live lease, see `fence::entitled_at`): a key that shows this node's name but was
/// not won by this incarnation's campaign is `Theirs`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Key {
    /// Not read since promd started.
    Unknown,
    /// Seen vacant since this time: the campaign's grace periods count from here.
    Vacant {
        /// When the key was first seen vacant.
        since: Mono,
    },
    /// This node won it at `term` (its campaign was answered), and the store has not said
    /// otherwise since.
    Ours {
        /// The term it was won at: the fencing token.
        term: u64,
    },
    /// Held at `term` by `node`: another node, or this node's name at a term this
    /// incarnation does not hold (an earlier incarnation's key, a campaign whose answer was
    /// lost, a key whose lease was lost).
    Theirs {
        /// The holder's name.
        node: String,
        /// The key's term.
        term: u64,
    },
}

impl Key {
    /// The term this node holds the key at.
    pub(super) fn held(&self) -> Option<u64> {
        match self {
            Key::Ours { term } => Some(*term),
            _ => None,
        }
    }
}

/// The request about the key that this node sent and the store has not answered yet.
/// (A campaign needs a vacant key, a release a held one: they never overlap.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Owed {
    /// Nothing in flight.
    Nothing,
    /// [`Action::Campaign`](super::Action::Campaign) sent,
    /// [`Event::Campaigned`](super::Event::Campaigned) not yet received.
    Campaign {
        /// The floor it carried: the store promised a term above it, and a win at or below
        /// it is not used. (Kept only while the campaign is in flight, so that settled states
        /// do not differ by it.)
        floor: u64,
    },
    /// [`Action::Release`](super::Action::Release) sent,
    /// [`Event::Released`](super::Event::Released) (or a vacant key) not yet seen.
    Release {
        /// The term of the key it asked to delete: the answer deletes that key only (the
        /// store deletes nothing when the key's term differs).
        term: u64,
    },
}

impl GroupMachine {
    /// The key's holder and term, if anyone holds it (this node included).
    pub(super) fn holder(&self) -> Option<(&str, u64)> {
        match &self.key {
            Key::Unknown | Key::Vacant { .. } => None,
            Key::Ours { term } => Some((&self.p.node, *term)),
            Key::Theirs { node, term } => Some((node, *term)),
        }
    }

    /// A campaign is in flight.
    pub(super) fn campaigning(&self) -> bool {
        matches!(self.owed, Owed::Campaign { .. })
    }

    /// A release is in flight.
    pub(super) fn releasing(&self) -> bool {
        matches!(self.owed, Owed::Release { .. })
    }

    /// A campaign or release that was in flight will not be answered (the store went down,
    /// or the lease with it): forget it.
    /// Only the kind of `what` counts, not its floor or term.
    fn settle(&mut self, what: Owed) {
        if std::mem::discriminant(&self.owed) == std::mem::discriminant(&what) {
            self.owed = Owed::Nothing;
            // A claim is kept only while its campaign is in flight (settled states must not
            // differ by it); a late answer finds none, and an own key it won is released
            // with the record written again (`finish_demotion`).
            self.claim = None;
        }
    }

    /// [`Event::StoreDown`](super::Event::StoreDown): a campaign in flight is lost.
    pub(super) fn key_store_down(&mut self) {
        self.settle(Owed::Campaign { floor: 0 });
    }

    /// [`Event::LeaseLost`](super::Event::LeaseLost): the key, if ours, went with the lease.
    pub(super) fn key_lease_lost(&mut self) {
        self.owed = Owed::Nothing;
        self.claim = None;
        if let Key::Ours { term } = self.key {
            self.key = Key::Theirs {
                node: self.p.node.clone(),
                term,
            };
        }
    }

    /// [`Event::Leader`](super::Event::Leader): the store's word on the key.
    pub(super) fn key_read(&mut self, leader: Option<(String, u64)>, now: Mono) {
        self.timers.clear(Timer::CampaignRetry);
        match leader {
            None => {
                if self.key == Key::Unknown {
                    self.first_election_begins(now);
                }
                // The key we held (if any) is gone: expired or deleted; so is a release.
                if !matches!(self.key, Key::Vacant { .. }) {
                    self.key = Key::Vacant { since: now };
                }
                self.settle(Owed::Release { term: 0 });
            }
            Some((node, term)) => {
                self.first_election_over();
                self.key_term_seen = self.key_term_seen.max(term);
                let held = self.key.held();
                if node != self.p.node {
                    self.defer_once = false;
                } else if held != Some(term) && !self.campaigning() {
                    // Our name, but not our key: an earlier incarnation's, or a campaign
                    // whose answer was lost. Either way nobody runs our units under it.
                    self.defer_once = true;
                }
                self.key = if node == self.p.node && held == Some(term) {
                    Key::Ours { term }
                } else {
                    Key::Theirs { node, term }
                };
            }
        }
    }

    /// [`Event::Campaigned`](super::Event::Campaigned): the campaign's answer.
    ///
    /// Only the answer to the campaign in flight counts. The store answers each campaign
    /// once and before the down or lease-lost edge that would settle it; an answer with no
    /// campaign owed is out of that contract (a late answer, under a lease that may be gone)
    /// and makes nothing ours: should the key be ours after all, the next read shows our name
    /// at a term we do not hold, and the passive side releases it (`handover`).
    ///
    /// The answer and the watch travel apart (etcd: a unary call and a watch stream), so the
    /// watch may already have shown the won key, or gone past it: deleted, or a newer key.
    /// A win counts only if the watch has not shown it yet (`term` above every term seen) or
    /// still shows it (our name at `term`); else the key has moved on, and the campaign counts
    /// as lost (a fresh review found a late win taken over a newer holder: nobody promoted).
    ///
    /// A win at or below the floor the campaign carried is not used either: the store broke
    /// its promise (it lost its history and does not know the floor, as a store written by an
    /// older promd may not), and a unit must never see a term it has seen before. The key,
    /// once the watch shows it, is an own key this node does not hold: released.
    pub(super) fn key_campaigned(&mut self, won: Option<u64>, now: Mono, out: &mut Vec<Action>) {
        // A won campaign wrote its claim at the won term, whether the key is used or not:
        // that is the record rule 5 compares with from now on.
        if let (Some(term), Some(claim)) = (won, self.claim.take()) {
            self.published = Some(Member {
                term: Some(term),
                ..claim
            });
        }
        if !self.campaigning() {
            if let Some(term) = won {
                self.key_term_seen = self.key_term_seen.max(term);
            }
            return;
        }
        let floor = match self.owed {
            Owed::Campaign { floor } => floor,
            _ => 0,
        };
        self.settle(Owed::Campaign { floor });
        let won = won.filter(|&term| {
            let above = term > floor;
            if !above {
                out.push(Action::Note(format!(
                    "the store handed out term {term}, not above term {floor} that was already \
                     handed out: the store lost its history (restored from an older snapshot?); \
                     not using the key"
                )));
            }
            above
        });
        let current = |term: u64| {
            term > self.key_term_seen
                || matches!(&self.key, Key::Theirs { node, term: t } if *node == self.p.node && *t == term)
        };
        let won = won.filter(|term| current(*term));
        match won {
            Some(term) => {
                self.first_election_over();
                self.key_term_seen = self.key_term_seen.max(term);
                self.key = Key::Ours { term };
            }
            None => self
                .timers
                .set(Timer::CampaignRetry, now + self.p.timing.grace()),
        }
    }

    /// A leader key newly seen at a term below the floor this host kept from earlier runs:
    /// the store has lost its history (restored from an older snapshot, recreated). Nothing
    /// else follows from it here (a key held by another node is never this node's to use, an
    /// own key it does not hold is released), but the operator should know.
    pub(super) fn note_key_below_floor(
        &self,
        leader: Option<&(String, u64)>,
        out: &mut Vec<Action>,
    ) {
        let Some((node, term)) = leader else { return };
        let seen = self.holder().is_some_and(|(n, t)| n == node && t == *term);
        if *term < self.p.term_floor && !seen {
            out.push(Action::Note(format!(
                "the leader key ({node}, term {term}) is below term {} that this host already \
                 saw: the store lost its history (restored from an older snapshot?)",
                self.p.term_floor
            )));
        }
    }

    /// [`Event::Released`](super::Event::Released): our key is deleted.
    ///
    /// Only the key it asked to delete, at the term it asked for, is gone: the store deletes
    /// nothing when the key's term differs. (A release of term 46 answered while the store,
    /// restored from an older snapshot, held this node's key at term 5 made the node forget
    /// that key; nobody deleted it, and no node became active: the restore system test found
    /// it.)
    pub(super) fn key_released(&mut self, now: Mono) {
        let Owed::Release { term: released } = self.owed else {
            return; // no release in flight: a stray answer deletes nothing we know of
        };
        self.settle(Owed::Release { term: released });
        let ours = match &self.key {
            Key::Ours { term } => *term == released,
            Key::Theirs { node, term } => *node == self.p.node && *term == released,
            _ => false,
        };
        if ours {
            // Don't act on our own deleted key again while the watch catches up.
            self.key = Key::Vacant { since: now };
        }
    }
}
