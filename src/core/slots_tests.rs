//! The slot arbiter: the pure rule, then real machines of one node in a group of two or
//! three slots, with a fake clock and the store views the tests feed.

use std::time::Duration;

use super::*;
use crate::core::machine::tests as machine_tests;
use crate::core::{Ineligibility, Job, Member};
use machine_tests::member;

fn params(node: &str) -> GroupParams {
    GroupParams {
        // The passive target is the node's, not a slot's (docs/slots.md).
        has_passive_target: false,
        ..machine_tests::params(node)
    }
}

// --- the rule, pure -----------------------------------------------------------------------------

fn view(engaged: bool, failed: bool, holder: Option<(i32, &str)>) -> SlotView {
    SlotView {
        engaged,
        failed,
        vacant: holder.is_none(),
        holder: holder.map(|(p, n)| (p, n.to_owned())),
    }
}

const FREE: SlotView = SlotView {
    engaged: false,
    failed: false,
    vacant: true,
    holder: None,
};

#[test]
fn the_lowest_vacant_slot_is_the_candidate_and_every_other_is_blocked() {
    let held = view(false, false, Some((100, "b")));
    let a = arbitrate(&[held.clone(), FREE, FREE], 0);
    assert_eq!(a.candidate, 1);
    // Free of every slot: standing by for slot 1, the others count it as a rival.
    assert_eq!(
        a.blocked,
        [
            Some(Ineligible::StandbyElsewhere),
            None,
            Some(Ineligible::StandbyElsewhere)
        ]
    );
    // From a higher slot too, as soon as it is free to move.
    assert_eq!(arbitrate(&[FREE, held, FREE], 2).candidate, 0);
}

#[test]
fn an_engaged_candidate_keeps_the_candidacy_whatever_else_falls_vacant() {
    let campaigning = view(true, false, None);
    let a = arbitrate(&[FREE, FREE, campaigning.clone()], 2);
    assert_eq!(a.candidate, 2);
    assert_eq!(
        a.blocked,
        [
            Some(Ineligible::OtherSlot),
            Some(Ineligible::OtherSlot),
            None
        ]
    );
    // A candidate that is not engaged moves to the lowest vacant slot.
    assert_eq!(arbitrate(&[FREE, FREE, FREE], 2).candidate, 0);
    // Another slot engaged while the candidate is free (start-up): the lowest engaged.
    assert_eq!(
        arbitrate(&[FREE, campaigning.clone(), campaigning], 0).candidate,
        1
    );
}

#[test]
fn a_cooldown_in_any_slot_keeps_the_candidacy_there_and_blocks_the_rest_as_cooldown() {
    let cooling = view(false, true, None);
    let a = arbitrate(&[FREE, cooling, FREE], 0);
    assert_eq!(a.candidate, 1);
    assert_eq!(
        a.blocked,
        [Some(Ineligible::Cooldown), None, Some(Ineligible::Cooldown)]
    );
}

#[test]
fn with_every_slot_held_the_candidate_is_the_slot_of_the_lowest_ranked_holder() {
    let views = [
        view(false, false, Some((100, "b"))),
        view(false, false, Some((50, "c"))),
        view(false, false, Some((50, "d"))),
    ];
    // Priority 50 ranks below 100, and "d" below "c" (ties go to the lowest name).
    assert_eq!(arbitrate(&views, 0).candidate, 2);
    // Holders without a record: the candidacy stays.
    let unknown = SlotView {
        vacant: false,
        ..FREE
    };
    assert_eq!(arbitrate(&[unknown.clone(), unknown], 1).candidate, 1);
}

#[test]
fn one_slot_is_never_blocked() {
    let a = arbitrate(&[view(false, true, Some((1, "b")))], 5);
    assert_eq!(a.candidate, 0);
    assert_eq!(a.blocked, [None]);
}

// --- real machines --------------------------------------------------------------------------

/// One node's slot group, a fake clock, and what each slot published.
struct S {
    g: SlotGroup,
    now: Mono,
    /// Per slot, the member records published (the claim of a won campaign included).
    pubs: Vec<Vec<Member>>,
    /// Per slot, the member records as last fed.
    view: Vec<Vec<Member>>,
    /// Per slot, the claim of the campaign in flight.
    claim: Vec<Option<Member>>,
}

impl S {
    fn new(node: &str, slots: usize) -> S {
        S {
            g: SlotGroup::new(vec![params(node); slots]).unwrap(),
            now: Mono::from_millis(10_000),
            pubs: vec![Vec::new(); slots],
            view: vec![Vec::new(); slots],
            claim: vec![None; slots],
        }
    }

    fn note(&mut self, out: Vec<(usize, Action)>) -> Vec<(usize, Action)> {
        out.into_iter()
            .filter(|(k, a)| match a {
                Action::Publish(m) => {
                    self.pubs[*k].push(m.clone());
                    false
                }
                Action::Campaign { claim, .. } => {
                    self.claim[*k] = Some(claim.clone());
                    true
                }
                _ => true,
            })
            .collect()
    }

    fn ev(&mut self, slot: usize, e: Event) -> Vec<(usize, Action)> {
        if let Event::Members(ms) = &e {
            self.view[slot] = ms.clone();
        }
        if let Event::Campaigned(Some(term)) = &e
            && let Some(claim) = self.claim[slot].take()
        {
            self.pubs[slot].push(Member {
                term: Some(*term),
                ..claim
            });
        }
        let out = self.g.handle(slot, e, self.now).unwrap();
        self.note(out)
    }

    fn all(&mut self, e: Event) -> Vec<(usize, Action)> {
        let out = self.g.broadcast(&e, self.now);
        self.note(out)
    }

    fn renew_all(&mut self) -> Vec<(usize, Action)> {
        let sent_at = self.now;
        self.all(Event::Renewed { sent_at })
    }

    /// Start-up until every slot is passive, slot `k`'s key held by `leaders[k]` and its
    /// member records `members[k]`. The actions after start-up.
    fn up(
        &mut self,
        leaders: &[Option<(&str, u64)>],
        members: &[Vec<Member>],
    ) -> Vec<(usize, Action)> {
        self.all(Event::Tick);
        self.all(Event::StoreUp);
        self.renew_all();
        let mut out = Vec::new();
        for k in 0..self.g.len() {
            let leader = leaders[k].map(|(n, t)| (n.to_string(), t));
            self.ev(k, Event::Leader(leader));
            self.ev(k, Event::Members(members[k].clone()));
            self.ev(k, Event::Maintenance(false));
        }
        for k in 0..self.g.len() {
            out.extend(self.ev(
                k,
                Event::Job {
                    job: Job::StopActive,
                    ok: true,
                },
            ));
        }
        for m in self.g.machines() {
            assert_eq!(m.role(), Role::Passive);
        }
        out
    }

    /// Slot `slot`'s campaign is won at `term` and the store shows the claim: the actions.
    fn win(&mut self, slot: usize, term: u64) -> Vec<(usize, Action)> {
        let mut out = self.ev(slot, Event::Campaigned(Some(term)));
        let mine = self.published(slot).clone();
        let mut view: Vec<Member> = self.view[slot]
            .iter()
            .filter(|m| m.node != mine.node)
            .cloned()
            .collect();
        view.push(mine);
        out.extend(self.ev(slot, Event::Members(view)));
        out
    }

    fn published(&self, slot: usize) -> &Member {
        self.pubs[slot].last().expect("published at least once")
    }

    fn advance(&mut self, ms: u64) -> Vec<(usize, Action)> {
        self.now = self.now + Duration::from_millis(ms);
        let mut out = self.renew_all();
        out.extend(self.all(Event::Tick));
        out
    }
}

/// The slots that sent a campaign.
fn campaigns(out: &[(usize, Action)]) -> Vec<usize> {
    out.iter()
        .filter(|(_, a)| matches!(a, Action::Campaign { .. }))
        .map(|(k, _)| *k)
        .collect()
}

fn why(m: &Member) -> Option<Ineligibility> {
    m.why
}

const OTHER_SLOT: Option<Ineligibility> = Some(Ineligibility::Checked(Ineligible::OtherSlot));
const COOLDOWN: Option<Ineligibility> = Some(Ineligibility::Checked(Ineligible::Cooldown));

#[test]
fn a_group_needs_a_slot_and_one_node() {
    assert_eq!(SlotGroup::new(Vec::new()), Err(SlotError::NoSlots));
    let err = SlotGroup::new(vec![params("a"), params("b")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "slot 1 is for node \"b\", not \"a\": a slot group is one node's"
    );
    let mut g = SlotGroup::new(vec![params("a")]).unwrap();
    assert_eq!(
        g.handle(1, Event::Tick, Mono::ZERO),
        Err(SlotError::NoSuchSlot { slot: 1, slots: 1 })
    );
}

/// `actives = 1` is today's group: the slot group adds nothing to its machine's actions.
#[test]
fn one_slot_behaves_exactly_as_its_machine() {
    let mut g = SlotGroup::new(vec![params("a")]).unwrap();
    let mut m = GroupMachine::new(params("a"));
    let now = Mono::from_millis(10_000);
    let events = [
        Event::Tick,
        Event::StoreUp,
        Event::Renewed { sent_at: now },
        Event::Leader(None),
        Event::Members(vec![member("b", 100, true, Role::Passive)]),
        Event::Maintenance(false),
        Event::Job {
            job: Job::StopActive,
            ok: true,
        },
        Event::Campaigned(Some(4)),
        Event::Leader(Some(("a".into(), 4))),
    ];
    for e in events {
        let mine: Vec<Action> = g
            .handle(0, e.clone(), now)
            .unwrap()
            .into_iter()
            .map(|(k, a)| {
                assert_eq!(k, 0);
                a
            })
            .collect();
        assert_eq!(mine, m.handle(e, now));
    }
    assert_eq!(g.machine(0), Some(&m));
}

#[test]
fn at_start_up_only_the_lowest_vacant_slot_is_campaigned_for() {
    let mut s = S::new("a", 3);
    let out = s.up(&[None, None, None], &[vec![], vec![], vec![]]);
    assert_eq!(campaigns(&out), [0], "{out:#?}");
    assert_eq!(s.g.candidate(), 0);
    for k in [1, 2] {
        let record = s.published(k);
        assert!(!record.eligible, "slot {k}: {record:?}");
        assert_eq!(why(record), OTHER_SLOT, "slot {k}");
    }
    assert!(s.published(0).eligible);
}

/// The rule itself: a node that holds a slot never campaigns for another, however long the
/// other stays vacant and however well the node ranks there. Without the arbiter, slot 1's
/// machine would campaign at once (nothing else stands in its way).
#[test]
fn a_node_that_holds_a_slot_never_campaigns_for_another() {
    let mut s = S::new("a", 2);
    let spare = vec![member("c", 10, true, Role::Passive)];
    let out = s.up(&[None, None], &[spare.clone(), spare.clone()]);
    assert_eq!(campaigns(&out), [0]);
    let out = s.win(0, 7);
    assert!(
        out.contains(&(0, Action::Start(Job::StartActive, Some(7)))),
        "{out:#?}"
    );
    s.ev(
        0,
        Event::Job {
            job: Job::StartActive,
            ok: true,
        },
    );
    s.ev(0, Event::Leader(Some(("a".into(), 7))));
    assert_eq!(s.g.machine(0).map(GroupMachine::role), Some(Role::Active));
    assert_eq!(s.g.held(), Some(0));
    // Slot 1 stays vacant for a long time.
    let mut out = s.ev(1, Event::Leader(None));
    out.extend(s.ev(1, Event::Members(spare)));
    for _ in 0..20 {
        out.extend(s.advance(500));
    }
    assert_eq!(campaigns(&out), Vec::<usize>::new(), "{out:#?}");
    assert_eq!(why(s.published(1)), OTHER_SLOT);
    assert!(s.g.machine(1).is_some_and(|m| !m.is_eligible(s.now)));
    // Its Promote is refused by the slot it holds: a no-op.
    assert_eq!(s.g.request(Request::Promote, s.now), Ok(Vec::new()));
}

#[test]
fn a_taken_lower_slot_moves_the_candidacy_up() {
    let mut s = S::new("a", 2);
    let b = vec![member("b", 100, false, Role::Active)];
    let out = s.up(&[Some(("b", 5)), None], &[b, vec![]]);
    assert_eq!(campaigns(&out), [1], "{out:#?}");
    assert_eq!(s.g.candidate(), 1);
    assert_eq!(why(s.published(0)), OTHER_SLOT);
    assert!(s.published(1).eligible);
}

#[test]
fn a_campaign_in_flight_keeps_the_candidacy_until_it_is_lost() {
    let mut s = S::new("a", 2);
    let b = vec![member("b", 100, false, Role::Active)];
    let out = s.up(&[Some(("b", 5)), None], &[b, vec![]]);
    assert_eq!(campaigns(&out), [1]);
    // Slot 0 falls vacant while the campaign for slot 1 is in flight: nothing for slot 0.
    let mut out = s.ev(0, Event::Leader(None));
    out.extend(s.ev(0, Event::Members(vec![])));
    assert_eq!(campaigns(&out), Vec::<usize>::new(), "{out:#?}");
    assert_eq!(s.g.candidate(), 1);
    assert_eq!(why(s.published(0)), OTHER_SLOT);
    // The campaign is lost, c holds slot 1: the candidacy moves to slot 0, which is vacant.
    let mut out = s.ev(1, Event::Campaigned(None));
    out.extend(s.ev(1, Event::Leader(Some(("c".into(), 6)))));
    assert_eq!(campaigns(&out), [0], "{out:#?}");
    assert_eq!(s.g.candidate(), 0);
    assert_eq!(why(s.published(1)), OTHER_SLOT);
}

#[test]
fn a_failure_cooldown_in_one_slot_keeps_the_node_out_of_every_slot() {
    let mut s = S::new("a", 2);
    let c = vec![member("c", 10, true, Role::Passive)];
    s.up(&[None, None], &[c.clone(), c.clone()]);
    s.win(0, 3);
    // The active target fails to start: fail over, then the cooldown.
    let out = s.ev(
        0,
        Event::Job {
            job: Job::StartActive,
            ok: false,
        },
    );
    assert!(
        out.contains(&(0, Action::Start(Job::StopActive, None))),
        "{out:#?}"
    );
    let out = s.ev(
        0,
        Event::Job {
            job: Job::StopActive,
            ok: true,
        },
    );
    assert!(out.contains(&(0, Action::Release { term: 3 })), "{out:#?}");
    s.ev(0, Event::Released);
    s.ev(0, Event::Leader(Some(("c".into(), 4))));
    assert_eq!(s.g.machine(0).map(GroupMachine::role), Some(Role::Failed));
    // Slot 1 is vacant and the node the best candidate there: still no campaign.
    let mut out = s.ev(1, Event::Leader(None));
    for _ in 0..10 {
        out.extend(s.advance(500));
    }
    assert_eq!(campaigns(&out), Vec::<usize>::new(), "{out:#?}");
    assert_eq!(why(s.published(1)), COOLDOWN);
    // promctl reset clears the node: it goes for the vacant slot 1 at once.
    let out = s.g.request(Request::ResetFailed, s.now).unwrap();
    let out = s.note(out);
    assert_eq!(campaigns(&out), [1], "{out:#?}");
    assert_eq!(s.g.candidate(), 1);
}

#[test]
fn promote_aims_at_the_lowest_ranked_holder_and_demote_at_the_slot_held() {
    let mut s = S::new("a", 2);
    let b = vec![member("b", 100, false, Role::Active)];
    let c = vec![member("c", 50, false, Role::Active)];
    s.up(&[Some(("b", 5)), Some(("c", 6))], &[b, c]);
    assert_eq!(s.g.candidate(), 1, "c ranks below b");
    assert_eq!(s.g.held(), None);
    assert_eq!(s.g.request(Request::Demote, s.now), Ok(Vec::new()));
    let out = s.g.request(Request::Promote, s.now).unwrap();
    assert!(
        out.contains(&(1, Action::RequestSwitchover { to: "a".into() })),
        "{out:#?}"
    );
    assert!(out.iter().all(|(k, _)| *k == 1), "{out:#?}");
}

#[test]
fn demote_hands_over_the_slot_this_node_holds() {
    let mut s = S::new("a", 2);
    let c = vec![member("c", 10, true, Role::Passive)];
    s.up(&[None, None], &[c.clone(), c.clone()]);
    s.win(0, 3);
    s.ev(
        0,
        Event::Job {
            job: Job::StartActive,
            ok: true,
        },
    );
    let out = s.g.request(Request::Demote, s.now).unwrap();
    assert!(
        out.contains(&(0, Action::RequestSwitchover { to: "c".into() })),
        "{out:#?}"
    );
}

#[test]
fn units_go_to_the_slot_that_may_run_them_else_to_the_candidate() {
    let mut s = S::new("a", 2);
    let b = vec![member("b", 100, false, Role::Active)];
    s.up(&[Some(("b", 5)), None], &[b, vec![]]);
    assert_eq!(s.g.unit_owner(), 1, "the candidate");
    s.win(1, 9);
    assert_eq!(s.g.unit_owner(), 1);
    assert_eq!(s.g.held(), Some(1));
}
