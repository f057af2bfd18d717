//! Every transition of the group machine, with a fake clock and a fake store.

use super::*;

const LEASE: Duration = Duration::from_secs(2);

/// A node's parameters under a 2 s lease, with a passive target (also the slot tests').
pub(in crate::core) fn params(node: &str) -> GroupParams {
    GroupParams {
        node: node.into(),
        timing: Timing::new(LEASE),
        priority: 100,
        preempt: false,
        members: None,
        has_passive_target: true,
        failure_cooldown: Duration::from_secs(600),
        max_restarts: 3,
        restart_window: Duration::from_secs(300),
        restart_backoff: Duration::from_secs(1),
        term_floor: 0,
    }
}

fn is_campaign(a: &Action) -> bool {
    matches!(a, Action::Campaign { .. })
}

/// A member record (also the slot tests').
pub(in crate::core) fn member(node: &str, priority: i32, eligible: bool, role: Role) -> Member {
    Member {
        node: node.into(),
        priority,
        eligible,
        healthy: true,
        role,
        term: None,
        why: (!eligible).then_some(Ineligibility::Unknown),
        failures: 0,
        since_usec: None,
    }
}

/// A machine and a fake clock.
struct T {
    m: GroupMachine,
    now: Mono,
    /// Member records published, kept apart so the other actions can be compared exactly.
    pubs: Vec<Member>,
    /// The member records as last fed (`Event::Members`).
    view: Vec<Member>,
    /// The claim of the campaign in flight: published when it is won (the store writes it
    /// with the key).
    claim: Option<Member>,
}

impl T {
    fn new(p: GroupParams) -> T {
        T {
            m: GroupMachine::new(p),
            now: Mono::from_millis(10_000),
            pubs: Vec::new(),
            view: Vec::new(),
            claim: None,
        }
    }

    fn ev(&mut self, e: Event) -> Vec<Action> {
        if let Event::Members(ms) = &e {
            self.view = ms.clone();
        }
        if let Event::Campaigned(won) = &e
            && let Some(claim) = self.claim.take()
            && let Some(term) = won
        {
            self.pubs.push(Member {
                term: Some(*term),
                ..claim
            });
        }
        let mut out = self.m.handle(e, self.now);
        out.retain(|a| match a {
            Action::Publish(m) => {
                self.pubs.push(m.clone());
                false
            }
            Action::Campaign { claim, .. } => {
                assert_eq!(claim.role, Role::Promoting, "{claim:?}");
                self.claim = Some(claim.clone());
                true
            }
            _ => true,
        });
        out
    }

    /// The campaign is won at `term`: the node claims the role in its record, and once the
    /// store shows that record (the view as last fed, with this node's record replaced), it
    /// starts the active target. The actions of both steps.
    fn win(&mut self, term: u64) -> Vec<Action> {
        let mut a = self.ev(Event::Campaigned(Some(term)));
        assert!(
            !a.contains(&Action::Start(Job::StartActive, Some(term))),
            "nothing starts before the claim is written: {a:?}"
        );
        let claim = self.published().clone();
        assert_eq!(
            (claim.role, claim.term),
            (Role::Promoting, Some(term)),
            "the record claims the role at the won term"
        );
        a.extend(self.echo());
        a
    }

    /// The store shows the record last published (the view as last fed, with this node's
    /// record replaced).
    fn echo(&mut self) -> Vec<Action> {
        let mine = self.published().clone();
        let mut view: Vec<Member> = self
            .view
            .iter()
            .filter(|m| m.node != mine.node)
            .cloned()
            .collect();
        view.push(mine);
        self.ev(Event::Members(view))
    }

    /// The member record as last published.
    fn published(&self) -> &Member {
        self.pubs.last().expect("published at least once")
    }

    fn advance(&mut self, ms: u64) -> Vec<Action> {
        self.now = self.now + Duration::from_millis(ms);
        self.ev(Event::Tick)
    }

    fn renew(&mut self) -> Vec<Action> {
        let now = self.now;
        self.ev(Event::Renewed { sent_at: now })
    }

    /// Start-up until passive, with the store up, a fresh lease and `leader` holding the key.
    fn passive(p: GroupParams, leader: Option<(&str, u64)>) -> T {
        let mut t = T::new(p);
        let a = t.ev(Event::Tick);
        assert_eq!(
            a,
            vec![Action::Start(Job::StopActive, None), Action::KillActive],
            "start-up stops and kills"
        );
        t.ev(Event::StoreUp);
        t.renew();
        t.ev(Event::Leader(leader.map(|(n, term)| (n.to_string(), term))));
        t.ev(Event::Members(vec![]));
        t.ev(Event::Maintenance(false));
        let a = t.ev(Event::Job {
            job: Job::StopActive,
            ok: true,
        });
        assert_eq!(a, vec![Action::Start(Job::StartPassive, None)]);
        t.ev(Event::Job {
            job: Job::StartPassive,
            ok: true,
        });
        assert_eq!(t.m.role(), Role::Passive);
        t
    }

    /// The stop of the active units succeeds, then the start of the passive target: what the
    /// latter answer makes the machine do.
    fn units_down_then_passive(&mut self) -> Vec<Action> {
        self.ev(Event::Job {
            job: Job::StopActive,
            ok: true,
        });
        self.ev(Event::Job {
            job: Job::StartPassive,
            ok: true,
        })
    }

    /// Passive, then wins the key at `term` and finishes starting the active target.
    fn active(p: GroupParams, term: u64) -> T {
        let mut t = T::passive(p, None);
        t.win(term);
        let a = t.ev(Event::Job {
            job: Job::StartActive,
            ok: true,
        });
        assert!(has_role_change(&a, Role::Promoting, Role::Active));
        t
    }
}

fn has_role_change(actions: &[Action], from: Role, to: Role) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::RoleChanged { old, new, .. } if *old == from && *new == to))
}

fn starts(actions: &[Action], job: Job) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Start(j, _) if *j == job))
}

#[test]
fn start_up_stops_leftover_units_then_starts_passive_target() {
    let mut t = T::new(params("a"));
    let a = t.ev(Event::Tick);
    assert_eq!(
        a,
        vec![Action::Start(Job::StopActive, None), Action::KillActive]
    );
    assert_eq!(t.m.role(), Role::Starting);
    let a = t.ev(Event::Job {
        job: Job::StopActive,
        ok: true,
    });
    assert_eq!(a, vec![Action::Start(Job::StartPassive, None)]);
    let a = t.ev(Event::Job {
        job: Job::StartPassive,
        ok: true,
    });
    assert!(has_role_change(&a, Role::Starting, Role::Passive));
    // Without the store it publishes itself as not eligible and never campaigns.
    assert!(!t.published().eligible);
    assert_eq!(t.published().role, Role::Passive);
    assert!(!a.iter().any(is_campaign));
    assert_eq!(t.advance(60_000), vec![]);
}

#[test]
fn without_passive_target_start_up_goes_straight_to_passive() {
    let mut p = params("a");
    p.has_passive_target = false;
    let mut t = T::new(p);
    t.ev(Event::Tick);
    let a = t.ev(Event::Job {
        job: Job::StopActive,
        ok: true,
    });
    assert!(has_role_change(&a, Role::Starting, Role::Passive));
    assert!(!starts(&a, Job::StartPassive));
}

#[test]
fn best_candidate_campaigns_at_once_and_promotes_on_win() {
    let mut t = T::passive(params("a"), None);
    // Became eligible with the key vacant: campaign now.
    let a = t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
    assert!(a.iter().any(is_campaign) || t.m.campaigning(), "{a:?}");
    let a = t.win(42);
    assert!(has_role_change(&a, Role::Passive, Role::Promoting));
    assert!(a.contains(&Action::Start(Job::StartActive, Some(42))));
    assert_eq!(t.m.role(), Role::Promoting);
    let a = t.ev(Event::Job {
        job: Job::StartActive,
        ok: true,
    });
    assert!(a.iter().any(|x| matches!(
        x,
        Action::RoleChanged {
            new: Role::Active,
            term: 42,
            ..
        }
    )));
    assert_eq!(t.m.term(), 42);
}

#[test]
fn lower_ranked_candidates_wait_one_grace_period_per_rank() {
    let grace = Timing::new(LEASE).grace();
    // "c" ranks third: behind "a" (same priority, lower name) and "b" (higher priority).
    let mut t = T::passive(params("c"), Some(("x", 1)));
    t.ev(Event::Members(vec![
        member("a", 100, true, Role::Passive),
        member("b", 200, true, Role::Passive),
        // The old holder released the key: its record no longer claims the role.
        member("x", 100, false, Role::Passive),
    ]));
    assert!(!t.ev(Event::Leader(None)).iter().any(is_campaign));
    assert_eq!(t.m.next_deadline(), Some(t.now + grace * 2));
    let just_before = grace.as_millis() as u64 * 2 - 1;
    t.renew();
    assert!(!t.advance(just_before).iter().any(is_campaign));
    assert!(t.advance(1).iter().any(is_campaign));
}

/// The campaign found it (seed 1, `etcdctl del` of the leader key): the best standby saw the
/// key vanish and won it 5 ms later, while the holder was still killing its units; the two
/// hosts ran web.service at once for 39 ms. A vacant key is not enough: no other member may
/// still claim the role.
#[test]
fn a_key_deleted_under_a_live_holder_waits_until_the_holder_stands_down() {
    let mut t = T::passive(params("a"), Some(("x", 5)));
    t.ev(Event::Members(vec![member("x", 100, true, Role::Active)]));
    // Deleted by hand: the key is gone, the holder's record (and lease) still live.
    let a = t.ev(Event::Leader(None));
    assert!(!a.iter().any(is_campaign), "{a:?}");
    t.renew();
    assert!(!t.advance(1_000).iter().any(is_campaign));
    // The holder kills its units and says so...
    let a = t.ev(Event::Members(vec![member("x", 100, true, Role::Demoting)]));
    assert!(!a.iter().any(is_campaign), "{a:?}");
    // ... and once they are down it is passive: now the best standby goes at once.
    let a = t.ev(Event::Members(vec![member("x", 100, true, Role::Passive)]));
    assert!(a.iter().any(is_campaign), "{a:?}");
}

#[test]
fn a_key_whose_holder_is_gone_with_its_lease_is_campaigned_for_at_once() {
    let mut t = T::passive(params("a"), Some(("x", 5)));
    t.ev(Event::Members(vec![member("x", 100, true, Role::Active)]));
    // Expired: key and record go together (one lease).
    t.ev(Event::Members(vec![]));
    let a = t.ev(Event::Leader(None));
    assert!(a.iter().any(is_campaign), "{a:?}");
}

#[test]
fn a_lost_campaign_waits_for_the_winner() {
    let mut t = T::passive(params("a"), None);
    t.ev(Event::Tick);
    assert!(t.m.campaigning());
    let a = t.ev(Event::Campaigned(None));
    assert!(
        !a.iter().any(is_campaign),
        "no immediate retry: the watch shows the winner"
    );
    let a = t.ev(Event::Leader(Some(("b".into(), 7))));
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(t.m.leader(), Some("b"));
}

#[test]
fn renewals_keep_the_role_indefinitely() {
    let mut t = T::active(params("a"), 5);
    let step = LEASE.as_millis() as u64 / 3;
    for _ in 0..1000 {
        assert_eq!(t.advance(step), vec![]);
        t.renew();
    }
    assert_eq!(t.m.role(), Role::Active);
}

/// The watchdog's hang deadline moves to the lease's own only once PID 1 took the kill: a
/// kill asked but still waiting in promd does nothing if promd hangs, and then the kill is
/// `ExecStopPost=promd fence`'s, which needs the fence load's time.
#[test]
fn the_hang_deadline_moves_later_only_once_pid_1_took_the_kill() {
    let timing = Timing::new(LEASE);
    let mut t = T::active(params("a"), 5);
    let sent = t.now;
    t.renew();
    let early = Some(timing.hang_deadline_before_kill(sent));
    assert_eq!(t.m.hang_deadline(), early);
    // Taken before any kill was asked: moot.
    assert_eq!(t.ev(Event::KillSent), vec![]);
    assert_eq!(t.m.hang_deadline(), early);
    let to_kill = timing.kill_at(sent).saturating_sub(t.now).as_millis() as u64;
    let a = t.advance(to_kill);
    assert!(a.contains(&Action::KillActive), "{a:?}");
    assert_eq!(t.m.hang_deadline(), early, "asked, not yet taken");
    assert_eq!(t.ev(Event::KillSent), vec![]);
    assert_eq!(t.m.hang_deadline(), Some(timing.hang_deadline(sent)));
    // A unit starts while the stop runs: the kill taken did not cover it.
    t.ev(Event::UnitStarted {
        unit: "late.service".into(),
    });
    assert_eq!(t.m.hang_deadline(), early);
    // Stopped: nothing runs, no deadline.
    t.ev(Event::Job {
        job: Job::StopActive,
        ok: true,
    });
    assert_eq!(t.m.hang_deadline(), None);
}

#[test]
fn stalled_renewals_demote_before_the_lease_can_expire_then_kill() {
    let timing = Timing::new(LEASE);
    let mut t = T::active(params("a"), 5);
    let sent = t.now;
    t.renew();
    // The deadline is the fence time counted from the send time of the last renewal.
    assert_eq!(t.m.next_deadline(), Some(timing.fence_at(sent)));
    let to_fence = timing.fence_at(sent).saturating_sub(t.now).as_millis() as u64;
    assert_eq!(
        t.advance(to_fence - 1),
        vec![],
        "nothing before the fence deadline"
    );
    let a = t.advance(1);
    assert_eq!(a[0], Action::Start(Job::StopActive, None));
    assert!(has_role_change(&a, Role::Active, Role::Demoting));
    assert!(!a.contains(&Action::KillActive));
    // The stop hangs: kill before the lease can expire.
    assert_eq!(t.m.next_deadline(), Some(timing.kill_at(sent)));
    assert!(timing.kill_at(sent) < sent + LEASE);
    let to_kill = timing.kill_at(sent).saturating_sub(t.now).as_millis() as u64;
    assert_eq!(t.advance(to_kill - 1), vec![]);
    assert_eq!(t.advance(1), vec![Action::KillActive]);
    // Once stopped: passive target, then (store unreachable) passive without release.
    let a = t.ev(Event::Job {
        job: Job::StopActive,
        ok: true,
    });
    assert_eq!(a, vec![Action::Start(Job::StartPassive, None)]);
    let a = t.ev(Event::Job {
        job: Job::StartPassive,
        ok: true,
    });
    assert!(has_role_change(&a, Role::Demoting, Role::Passive));
}

#[test]
fn a_fence_load_begins_the_fence_earlier_and_at_once_if_that_time_has_passed() {
    // A 4 s lease: 1.2 s of stops move the kill 1.2 s sooner and the fence 800 ms, to
    // STOP_ROOM before the kill.
    // (At the tests' 2 s lease a load moves nothing: a renewal through a silent etcd member
    // needs all the lease leaves.)
    let timing = Timing::new(LEASE * 2);
    let p = || GroupParams {
        timing,
        ..params("a")
    };
    let load = Duration::from_millis(1200);
    let loaded = timing.with_fence_load(load);
    assert_eq!(
        timing.fence_at(Mono::ZERO),
        loaded.fence_at(Mono::ZERO) + Duration::from_millis(800)
    );
    let mut t = T::active(p(), 5);
    let sent = t.now;
    t.renew();
    assert_eq!(t.m.next_deadline(), Some(timing.fence_at(sent)));
    // The host's load is known while the fence is still far: only the deadline moves.
    assert_eq!(t.ev(Event::FenceLoad(load)), vec![]);
    assert_eq!(t.m.next_deadline(), Some(loaded.fence_at(sent)));
    assert_eq!(t.m.timing(), loaded);
    // Renewed, and the load is known only once the new fence time has passed: it fences in
    // that same step, without waiting for the old deadline.
    let mut t = T::active(p(), 5);
    let sent = t.now;
    t.renew();
    let past_new = loaded.fence_at(sent).saturating_sub(t.now) + Duration::from_millis(1);
    assert_eq!(t.advance(ms(past_new)), vec![]);
    let a = t.ev(Event::FenceLoad(load));
    assert_eq!(a[0], Action::Start(Job::StopActive, None));
    assert!(has_role_change(&a, Role::Active, Role::Demoting));
    // The kill comes at the loaded deadline.
    assert_eq!(t.m.next_deadline(), Some(loaded.kill_at(sent)));
    assert!(loaded.kill_at(sent) < timing.kill_at(sent));
}

#[test]
fn a_late_renewal_acknowledgement_counts_from_its_send_time() {
    let timing = Timing::new(LEASE);
    let mut t = T::active(params("a"), 5);
    let sent = t.now;
    // Acknowledged 1 s after it was sent: the deadline does not move with the answer.
    t.now = t.now + Duration::from_secs(1);
    t.ev(Event::Renewed { sent_at: sent });
    assert_eq!(t.m.next_deadline(), Some(timing.fence_at(sent)));
    // An older acknowledgement arriving out of order does not move it back.
    t.ev(Event::Renewed {
        sent_at: sent - Duration::from_millis(500),
    });
    assert_eq!(t.m.next_deadline(), Some(timing.fence_at(sent)));
}

#[test]
fn another_leader_or_a_lost_lease_stops_and_kills_at_once() {
    let mut t = T::active(params("a"), 5);
    let a = t.ev(Event::Leader(Some(("b".into(), 9))));
    assert_eq!(a[0], Action::Start(Job::StopActive, None));
    assert!(a.contains(&Action::KillActive), "{a:?}");

    let mut t = T::active(params("a"), 5);
    let a = t.ev(Event::LeaseLost);
    assert_eq!(a[0], Action::Start(Job::StopActive, None));
    assert!(a.contains(&Action::KillActive), "{a:?}");
    let a = t.units_down_then_passive();
    assert!(has_role_change(&a, Role::Demoting, Role::Passive));
    assert!(
        !a.iter().any(|x| matches!(x, Action::Release { .. })),
        "nothing to release: the lease is gone"
    );
}

/// The store answers a campaign once, before the down edge that settles it. An answer that
/// comes after that edge (found by the randomised simulation when its fake store reordered
/// them) must not make the key ours: the lease it was won under may be gone. The key, if it
/// is ours after all, shows up at the next read under our name and is released.
#[test]
fn a_campaign_answer_after_the_store_went_down_does_not_promote() {
    let mut t = T::passive(params("a"), None);
    t.ev(Event::Members(vec![]));
    assert!(t.m.campaigning());
    t.ev(Event::StoreDown);
    assert!(!t.m.campaigning(), "the down edge settles the campaign");
    let a = t.ev(Event::Campaigned(Some(9)));
    assert!(!starts(&a, Job::StartActive), "{a:?}");
    assert_eq!(t.m.role(), Role::Passive);
    assert_eq!(t.m.term(), 9, "the term seen still only grows");
    t.ev(Event::StoreUp);
    t.renew();
    let a = t.ev(Event::Leader(Some(("a".into(), 9))));
    assert!(a.contains(&Action::Release { term: 9 }), "{a:?}");
    assert!(!starts(&a, Job::StartActive), "{a:?}");
}

/// Passive with the key vacant and a campaign in flight; its claim as the store would hold
/// it, won at `term`.
fn campaign_in_flight(term: u64) -> (T, Member) {
    let mut t = T::passive(params("a"), None);
    t.ev(Event::Members(vec![]));
    assert!(t.m.campaigning());
    let claim = t.claim.clone().expect("the campaign carries a claim");
    (
        t,
        Member {
            term: Some(term),
            ..claim
        },
    )
}

/// A campaign writes its claim with the key. When its answer is lost (the connection broke
/// under it) and the campaign carried out again finds the key taken — by itself — the answer
/// says "not won", yet the store holds the key and the claim. The key is released, and the
/// record is written again with the release: a claim left behind would keep every standby
/// waiting for a holder that never promotes (`holder_standing`).
#[test]
fn an_own_key_won_by_a_lost_answer_is_released_with_the_claim_withdrawn() {
    let (mut t, claim) = campaign_in_flight(9);
    let before = t.pubs.len();
    t.ev(Event::Campaigned(None));
    let mut a = t.ev(Event::Members(vec![claim]));
    a.extend(t.ev(Event::Leader(Some(("a".into(), 9)))));
    assert!(a.contains(&Action::Release { term: 9 }), "{a:?}");
    assert!(!starts(&a, Job::StartActive), "{a:?}");
    let withdrawn = &t.pubs[before..];
    assert!(
        withdrawn.last().is_some_and(|m| m.role == Role::Passive),
        "the claim is withdrawn with the release: {withdrawn:?}"
    );
}

/// Found by the model check once the claim went with the campaign: the watch showed the won
/// key (a new term) before the campaign's answer came, and the record rule 5 sent for the new
/// term (`passive`) was written after the claim and overwrote it; the winner then waited for
/// a claim the store no longer held, for ever. Nothing is published while the campaign is in
/// flight: the claim stays, and the answer starts the units.
#[test]
fn the_won_key_seen_before_the_answer_does_not_overwrite_the_claim() {
    let (mut t, claim) = campaign_in_flight(3);
    let before = t.pubs.len();
    let mut a = t.ev(Event::Leader(Some(("a".into(), 3))));
    a.extend(t.ev(Event::Members(vec![claim])));
    assert_eq!(
        &t.pubs[before..],
        &[],
        "a record sent while the campaign is in flight overwrites its claim"
    );
    a.extend(t.ev(Event::Campaigned(Some(3))));
    assert!(starts(&a, Job::StartActive), "{a:?}");
    assert!(
        t.pubs[before..]
            .iter()
            .all(|m| m.role == Role::Promoting && m.term == Some(3)),
        "the role stays claimed: {:?}",
        &t.pubs[before..]
    );
}

#[test]
fn store_outage_alone_does_not_demote_while_the_lease_is_renewed() {
    let mut t = T::active(params("a"), 5);
    assert_eq!(t.ev(Event::StoreDown), vec![]);
    t.renew();
    assert_eq!(t.advance(500), vec![]);
    assert_eq!(t.m.role(), Role::Active);
}

#[test]
fn sigterm_on_the_active_node_stops_units_then_releases_then_exits() {
    let mut t = T::active(params("a"), 5);
    let a = t.ev(Event::Terminate);
    assert_eq!(a[0], Action::Start(Job::StopActive, None));
    assert!(has_role_change(&a, Role::Active, Role::Demoting));
    let a = t.ev(Event::Job {
        job: Job::StopActive,
        ok: true,
    });
    assert_eq!(
        a,
        vec![Action::Release { term: 5 }],
        "no passive target on the way out"
    );
    assert!(!t.m.exited());
    let a = t.ev(Event::Released);
    assert_eq!(a, vec![Action::Exit]);
    assert!(t.m.exited());
    assert_eq!(
        t.ev(Event::Leader(None)),
        vec![],
        "an exited machine does nothing"
    );
}

#[test]
fn sigterm_during_promotion_supersedes_the_start() {
    let mut t = T::passive(params("a"), None);
    t.win(3);
    assert_eq!(t.m.role(), Role::Promoting);
    let a = t.ev(Event::Terminate);
    assert_eq!(a[0], Action::Start(Job::StopActive, None));
    // The start's late answer is ignored; only the stop's counts.
    assert_eq!(
        t.ev(Event::Job {
            job: Job::StartActive,
            ok: true
        }),
        vec![]
    );
    assert_eq!(
        t.ev(Event::Job {
            job: Job::StopActive,
            ok: true
        }),
        vec![Action::Release { term: 3 }]
    );
}

#[test]
fn sigterm_on_a_passive_node_exits_at_once() {
    let mut t = T::passive(params("a"), Some(("b", 2)));
    assert_eq!(t.ev(Event::Terminate), vec![Action::Exit]);
}

#[test]
fn sigterm_with_the_store_unreachable_exits_after_stopping_units() {
    let mut t = T::active(params("a"), 5);
    t.ev(Event::StoreDown);
    t.ev(Event::Terminate);
    assert_eq!(
        t.ev(Event::Job {
            job: Job::StopActive,
            ok: true
        }),
        vec![Action::Exit]
    );
}

#[test]
fn a_failed_start_demotes_and_stays_failed_for_the_cooldown() {
    let mut t = T::passive(params("a"), None);
    t.win(3);
    let a = t.ev(Event::Job {
        job: Job::StartActive,
        ok: false,
    });
    assert_eq!(a[0], Action::Start(Job::StopActive, None));
    let a = t.units_down_then_passive();
    assert!(a.contains(&Action::Release { term: 3 }));
    assert!(
        has_role_change(&a, Role::Promoting, Role::Failed)
            || has_role_change(&a, Role::Demoting, Role::Failed)
    );
    t.ev(Event::Released);
    t.ev(Event::Leader(None));
    // Ineligible for the whole cooldown.
    for _ in 0..599 {
        t.renew();
        let a = t.advance(1000);
        assert!(!a.iter().any(is_campaign));
    }
    t.renew();
    let a = t.advance(1000);
    assert!(has_role_change(&a, Role::Failed, Role::Passive), "{a:?}");
    assert!(a.iter().any(is_campaign));
}

#[test]
fn switchover_to_an_eligible_member_hands_over_cleanly() {
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
    let a = t.ev(Event::Switchover(Some("b".into())));
    assert_eq!(a[0], Action::Start(Job::StopActive, None));
    assert!(a.iter().any(
        |x| matches!(x, Action::RoleChanged { reason: Reason::Switchover { to }, .. } if to == "b")
    ));
    t.ev(Event::Job {
        job: Job::StopActive,
        ok: true,
    });
    // Passive target first, and only then the key.
    let a = t.ev(Event::Job {
        job: Job::StartPassive,
        ok: true,
    });
    assert!(a.contains(&Action::Release { term: 5 }));
    t.ev(Event::Released);
    assert_eq!(t.m.role(), Role::Passive);
    // The old active does not campaign against the target.
    assert!(!t.ev(Event::Leader(None)).iter().any(is_campaign));
}

#[test]
fn switchover_to_a_non_candidate_is_dropped() {
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Members(vec![member("b", 100, false, Role::Failed)]));
    let a = t.ev(Event::Switchover(Some("b".into())));
    assert_eq!(a, vec![Action::ClearSwitchover]);
    assert_eq!(t.m.role(), Role::Active);
}

#[test]
fn switchover_target_campaigns_first_and_clears_the_request() {
    let mut t = T::passive(params("z"), Some(("a", 5)));
    t.ev(Event::Members(vec![member("b", 500, true, Role::Passive)]));
    t.ev(Event::Switchover(Some("z".into())));
    assert!(
        t.ev(Event::Leader(None)).iter().any(is_campaign),
        "the target goes first"
    );
    let a = t.win(6);
    assert!(a.contains(&Action::ClearSwitchover));
}

#[test]
fn preempt_asks_a_lower_priority_leader_to_hand_over_once_per_lease() {
    let mut p = params("a");
    p.preempt = true;
    p.priority = 200;
    let mut t = T::passive(p, Some(("b", 5)));
    let a = t.ev(Event::Members(vec![member("b", 100, false, Role::Active)]));
    assert!(a.contains(&Action::RequestSwitchover { to: "a".into() }));
    // Not again within the lease (the leader is busy handing over, or refused).
    let step = LEASE.as_millis() as u64 / 4;
    let requested = |a: &[Action]| {
        a.iter()
            .any(|x| matches!(x, Action::RequestSwitchover { .. }))
    };
    for _ in 0..3 {
        t.renew();
        assert!(!requested(&t.advance(step)));
    }
    t.renew();
    assert!(requested(&t.advance(step)));
}

#[test]
fn no_preemption_of_an_equal_priority_leader_or_without_preempt() {
    let mut p = params("a");
    p.preempt = true;
    let mut t = T::passive(p, Some(("b", 5)));
    assert!(
        t.ev(Event::Members(vec![member("b", 100, false, Role::Active)]))
            .iter()
            .all(|x| !matches!(x, Action::RequestSwitchover { .. }))
    );

    let mut p = params("a");
    p.priority = 1000;
    let mut t = T::passive(p, Some(("b", 5)));
    assert!(
        t.ev(Event::Members(vec![member("b", 100, false, Role::Active)]))
            .iter()
            .all(|x| !matches!(x, Action::RequestSwitchover { .. }))
    );
}

#[test]
fn a_restarted_node_releases_its_stale_key_and_lets_others_go_first() {
    let mut t = T::new(params("a"));
    t.ev(Event::Tick);
    t.ev(Event::StoreUp);
    t.renew();
    t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
    t.ev(Event::Maintenance(false));
    // The key still names us, from before the crash.
    let a = t.ev(Event::Leader(Some(("a".into(), 9))));
    assert!(
        !a.iter().any(|x| matches!(x, Action::Release { .. })),
        "not before the units are stopped"
    );
    let a = t.units_down_then_passive();
    assert!(a.contains(&Action::Release { term: 9 }), "{a:?}");
    assert!(!t.published().eligible, "defers");
    t.ev(Event::Released);
    let a = t.ev(Event::Leader(None));
    assert!(!a.iter().any(is_campaign), "b (ranked below us) goes first");
    assert_eq!(
        t.m.next_deadline(),
        Some(t.now + Timing::new(LEASE).grace())
    );
    // Once someone else holds the key, the node is an ordinary candidate again.
    t.ev(Event::Leader(Some(("b".into(), 10))));
    assert!(t.published().eligible);
}

#[test]
fn a_node_outside_the_configured_members_never_campaigns() {
    let mut p = params("a");
    p.members = Some(vec!["b".into(), "c".into()]);
    let mut t = T::passive(p, None);
    for _ in 0..20 {
        t.renew();
        assert!(!t.advance(500).iter().any(is_campaign));
    }
    assert!(!t.m.is_eligible(t.now));
}

#[test]
fn a_failed_passive_target_makes_the_node_ineligible() {
    let mut t = T::new(params("a"));
    t.ev(Event::Tick);
    t.ev(Event::StoreUp);
    t.renew();
    t.ev(Event::Job {
        job: Job::StopActive,
        ok: true,
    });
    let a = t.ev(Event::Job {
        job: Job::StartPassive,
        ok: false,
    });
    assert!(!t.published().eligible && !t.published().healthy);
    assert!(!a.iter().any(is_campaign));
}

#[test]
fn an_unreachable_store_or_an_unrenewed_lease_makes_a_passive_node_ineligible() {
    let mut t = T::passive(params("a"), Some(("b", 1)));
    assert!(t.m.is_eligible(t.now));
    t.ev(Event::StoreDown);
    assert!(!t.m.is_eligible(t.now));
    t.ev(Event::StoreUp);
    assert!(t.m.is_eligible(t.now));
    t.advance(LEASE.as_millis() as u64);
    assert!(
        !t.m.is_eligible(t.now),
        "a lease that may have expired is no basis to campaign"
    );
}

/// Randomised simulation against a fake store: whatever the network, the store and systemd do,
/// the active units never run unless this node holds the key under a lease the store still
/// honours. (Another node can only take the key after the store expired that lease.)
/// systemd's side includes stops that fail and units started behind promd's back; and a stop
/// is never issued while one runs, nor sooner than the backoff after a failed one.
#[test]
fn simulated_faults_never_leave_units_running_without_a_live_lease() {
    let mut total = Coverage::default();
    for seed in 1..=300u64 {
        let c = simulate(seed, 3_000);
        total.promotions += c.promotions;
        total.lease_fences += c.lease_fences;
        total.kills += c.kills;
        total.failed_stops += c.failed_stops;
        total.intruders += c.intruders;
        total.incomplete_starts += c.incomplete_starts;
    }
    // The runs must have reached the dangerous states, or they prove nothing.
    assert!(total.promotions > 1000, "{total:?}");
    assert!(total.lease_fences > 100, "{total:?}");
    assert!(total.kills > 100, "{total:?}");
    assert!(total.failed_stops > 100, "{total:?}");
    assert!(total.intruders > 100, "{total:?}");
    assert!(total.incomplete_starts > 100, "{total:?}");
}

#[derive(Debug, Default)]
struct Coverage {
    promotions: usize,
    lease_fences: usize,
    kills: usize,
    failed_stops: usize,
    /// Units started on this host by someone else (`Event::UnitStarted`).
    intruders: usize,
    /// Starts of the active target that left a unit down (`Event::StartIncomplete`).
    incomplete_starts: usize,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn simulate(seed: u64, steps: usize) -> Coverage {
    let mut cov = Coverage::default();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut t = T::new(params("a"));
    let renew_every = LEASE / 3;
    // The fake store.
    let mut link_up = true;
    let mut revision = 1u64;
    let mut key: Option<(String, u64)> = None;
    let mut my_lease_expiry: Option<Mono> = None; // store-side expiry of our lease
    let mut next_renew = t.now;
    // systemd, as far as safety goes: are the units running?
    let mut running = false;
    let mut pending_jobs: Vec<(Mono, Job, bool)> = Vec::new();
    let mut pending_events: Vec<(Mono, Event)> = Vec::new();
    let mut log: Vec<String> = Vec::new();
    // No hot loop: one stop at a time, and none within the first backoff of a failed one.
    let mut stop_running = false;
    let mut stop_failed_at: Option<Mono> = None;
    let min_backoff = Timing::new(LEASE).stop_retry_backoff(1);

    let mut actions = t.ev(Event::Tick);
    let mut echoed = 0;
    for step in 0..steps {
        // The store shows a record the machine published (if it can be reached).
        if t.pubs.len() > echoed {
            echoed = t.pubs.len();
            if link_up {
                let at = t.now + Duration::from_millis(rng.below(50));
                pending_events.push((at, Event::Members(vec![t.published().clone()])));
            }
        }
        // Carry out the machine's actions in the fake world.
        for a in actions.drain(..) {
            log.push(format!("{:?} {a:?}", t.now));
            match &a {
                Action::RoleChanged {
                    new: Role::Active, ..
                } => cov.promotions += 1,
                Action::RoleChanged {
                    reason: Reason::LeaseNotRenewed,
                    ..
                } => cov.lease_fences += 1,
                Action::KillActive => cov.kills += 1,
                _ => {}
            }
            match a {
                Action::Start(Job::StartActive, term) => {
                    assert_eq!(
                        key.as_ref().map(|k| k.1),
                        term,
                        "seed {seed}: start under a term not held\n{}",
                        log.join("\n")
                    );
                    running = true;
                    let d = rng.below(300);
                    pending_jobs.push((
                        t.now + Duration::from_millis(d),
                        Job::StartActive,
                        rng.chance(90),
                    ));
                }
                Action::Start(job, _) => {
                    if job == Job::StopActive {
                        assert!(
                            !stop_running
                                && stop_failed_at.is_none_or(|f| t.now >= f + min_backoff),
                            "seed {seed} step {step}: stop issued again too soon\n{}",
                            log.join("\n")
                        );
                        stop_running = true;
                    }
                    // Stops sometimes hang (until killed): a far-away completion.
                    let d = if rng.chance(10) {
                        60_000
                    } else {
                        rng.below(400)
                    };
                    // Some stops fail (a unit refuses to go): the units keep running.
                    let ok = job != Job::StopActive || !rng.chance(15);
                    pending_jobs.push((t.now + Duration::from_millis(d), job, ok));
                }
                Action::KillActive => {
                    running = false;
                    for j in pending_jobs.iter_mut().filter(|j| j.1 == Job::StopActive) {
                        j.0 = t.now + Duration::from_millis(5);
                    }
                }
                Action::Campaign { .. } => {
                    let at = t.now + Duration::from_millis(rng.below(50));
                    let won =
                        link_up && key.is_none() && my_lease_expiry.is_some_and(|e| e > t.now);
                    if won {
                        revision += 1;
                        key = Some(("a".into(), revision));
                        pending_events.push((at, Event::Campaigned(Some(revision))));
                    } else {
                        pending_events.push((at, Event::Campaigned(None)));
                    }
                }
                Action::Release { term } => {
                    if link_up && key.as_ref().is_some_and(|k| k.0 == "a" && k.1 == term) {
                        key = None;
                        pending_events
                            .push((t.now + Duration::from_millis(5), Event::Leader(None)));
                    }
                    if link_up {
                        pending_events.push((t.now + Duration::from_millis(3), Event::Released));
                    }
                }
                _ => {}
            }
        }
        // Safety: running units need our key under a live lease.
        if running {
            let ok = key.as_ref().is_some_and(|k| k.0 == "a")
                && my_lease_expiry.is_some_and(|e| t.now < e);
            assert!(
                ok,
                "seed {seed} step {step}: units run at {:?} without a live lease (expiry {my_lease_expiry:?}, key {key:?})\n{}",
                t.now,
                log.join("\n")
            );
        }

        // The world moves on: pick the next thing that happens.
        let mut next = t.now + Duration::from_millis(1 + rng.below(400));
        if let Some(d) = t.m.next_deadline() {
            next = next.min(d);
        }
        if link_up {
            next = next.min(next_renew.max(t.now));
        }
        for (at, _) in &pending_events {
            next = next.min(*at);
        }
        for (at, _, _) in &pending_jobs {
            next = next.min(*at);
        }
        if let Some(e) = my_lease_expiry
            && e > t.now
        {
            next = next.min(e);
        }
        t.now = next.max(t.now);

        // Lease expiry in the store: our key vanishes; sometimes another node takes it.
        if my_lease_expiry.is_some_and(|e| t.now >= e) {
            my_lease_expiry = None;
            if key.as_ref().is_some_and(|k| k.0 == "a") {
                key = None;
            }
            if link_up {
                pending_events.push((t.now, Event::LeaseLost));
            }
        }
        if key.is_none() && my_lease_expiry.is_none() && rng.chance(30) {
            revision += 1;
            key = Some(("b".into(), revision));
            if link_up {
                pending_events.push((t.now + Duration::from_millis(2), Event::Leader(key.clone())));
            }
        }
        // Faults.
        if rng.chance(2) {
            link_up = !link_up;
            let e = if link_up {
                Event::StoreUp
            } else {
                Event::StoreDown
            };
            log.push(format!(
                "{:?} link {}",
                t.now,
                if link_up { "up" } else { "down" }
            ));
            actions.extend(t.ev(e));
            if link_up {
                // As every backend does after (re)connecting: the leader key, then the members.
                pending_events.push((t.now, Event::Leader(key.clone())));
                pending_events.push((t.now, Event::Members(vec![])));
                pending_events.push((t.now, Event::Maintenance(false)));
            }
        }
        // Someone starts a unit of the active target on this host. A stop under way then
        // fails (conservatively: it may not have caught the newcomer).
        if rng.chance(1) {
            cov.intruders += 1;
            running = true;
            for j in pending_jobs.iter_mut().filter(|j| j.1 == Job::StopActive) {
                j.2 = false;
            }
            log.push(format!("{:?} intruder", t.now));
            actions.extend(t.ev(Event::UnitStarted {
                unit: "web.service".into(),
            }));
        }
        if rng.chance(1) && key.as_ref().is_some_and(|k| k.0 == "b") {
            key = None;
            if link_up {
                pending_events.push((t.now, Event::Leader(None)));
            }
        }
        // Renewals: sent now, reach the store after a delay (then extend the lease from the
        // moment they arrive), acknowledged later; some are lost.
        if link_up && t.now >= next_renew {
            next_renew = t.now + renew_every;
            let sent = t.now;
            let arrive = sent + Duration::from_millis(rng.below(200));
            if !rng.chance(15)
                && (my_lease_expiry.is_some_and(|e| arrive < e) || my_lease_expiry.is_none())
            {
                if my_lease_expiry.is_none() {
                    // A new lease (grant): the machine learns of it with the renewal.
                    pending_events.push((arrive, Event::StoreUp));
                    pending_events.push((arrive, Event::Leader(key.clone())));
                    pending_events.push((arrive, Event::Members(vec![])));
                    pending_events.push((arrive, Event::Maintenance(false)));
                }
                my_lease_expiry = Some(arrive + LEASE);
                pending_events.push((
                    arrive + Duration::from_millis(rng.below(300)),
                    Event::Renewed { sent_at: sent },
                ));
            }
        }
        // Deliver what is due.
        pending_events.sort_by_key(|e| e.0);
        while pending_events.first().is_some_and(|e| e.0 <= t.now) {
            let (_, e) = pending_events.remove(0);
            if matches!(e, Event::Renewed { .. }) && !link_up {
                continue;
            }
            log.push(format!("{:?} <- {e:?}", t.now));
            actions.extend(t.ev(e));
        }
        pending_jobs.sort_by_key(|j| j.0);
        while pending_jobs.first().is_some_and(|j| j.0 <= t.now) {
            let (_, job, ok) = pending_jobs.remove(0);
            if job == Job::StopActive {
                stop_running = false;
                if ok {
                    running = false;
                } else {
                    cov.failed_stops += 1;
                    stop_failed_at = Some(t.now);
                }
            }
            if job == Job::StartActive && ok && rng.chance(20) {
                // A unit failed in ExecStartPre= or was skipped: the start is retried.
                cov.incomplete_starts += 1;
                log.push(format!("{:?} <- start incomplete", t.now));
                let units = vec!["web.service".to_string()];
                actions.extend(t.ev(Event::StartIncomplete { units }));
                continue;
            }
            log.push(format!("{:?} <- job {job:?} {ok}", t.now));
            actions.extend(t.ev(Event::Job { job, ok }));
        }
        actions.extend(t.ev(Event::Tick));
    }
    cov
}

#[test]
fn a_restarted_node_defers_even_when_passive_before_the_store_is_up() {
    // The order seen on a real host: passive first, then the store, then the stale key.
    let mut t = T::new(params("a"));
    t.ev(Event::Tick);
    t.units_down_then_passive();
    assert_eq!(t.m.role(), Role::Passive);
    t.ev(Event::StoreUp);
    t.renew();
    let a = t.ev(Event::Leader(Some(("a".into(), 150))));
    assert_eq!(a, vec![Action::Release { term: 150 }]);
    t.ev(Event::Members(vec![
        member("b", 100, true, Role::Passive),
        member("c", 100, true, Role::Passive),
    ]));
    t.ev(Event::Switchover(None));
    t.ev(Event::Maintenance(false));
    let a = t.ev(Event::Released);
    assert!(!a.iter().any(is_campaign), "{a:?}");
    let a = t.ev(Event::Leader(None));
    assert!(!a.iter().any(is_campaign), "{a:?}");
    assert_eq!(
        t.m.next_deadline(),
        Some(t.now + Timing::new(LEASE).grace() * 2)
    );
}

fn switchover_requests(a: &[Action]) -> Vec<String> {
    a.iter()
        .filter_map(|x| match x {
            Action::RequestSwitchover { to } => Some(to.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn promote_on_a_passive_node_asks_for_a_switchover_and_goes_first() {
    let mut t = T::passive(params("z"), Some(("a", 5)));
    t.ev(Event::Members(vec![
        member("a", 100, false, Role::Active),
        member("b", 900, true, Role::Passive),
    ]));
    let a = t.m.request(Request::Promote, t.now).unwrap();
    assert_eq!(switchover_requests(&a), vec!["z".to_string()]);
    // The active node hands over (stops its units, says passive, releases the key); "z"
    // campaigns at once although "b" ranks higher.
    t.ev(Event::Members(vec![
        member("a", 100, false, Role::Passive),
        member("b", 900, true, Role::Passive),
    ]));
    assert!(t.ev(Event::Leader(None)).iter().any(is_campaign));
    let a = t.win(6);
    assert!(a.contains(&Action::ClearSwitchover));
    assert!(a.contains(&Action::Start(Job::StartActive, Some(6))));
}

#[test]
fn promote_is_a_no_op_on_the_active_node() {
    let mut t = T::active(params("a"), 5);
    assert_eq!(t.m.request(Request::Promote, t.now), Ok(vec![]));
    assert_eq!(t.m.role(), Role::Active);
}

#[test]
fn promote_is_refused_with_the_reason_when_not_eligible() {
    let mut p = params("a");
    p.members = Some(vec!["b".into()]);
    let mut t = T::passive(p, Some(("b", 5)));
    let err = t.m.request(Request::Promote, t.now).unwrap_err();
    assert!(
        matches!(&err, Refusal::NotEligible(Ineligible::NotMember)),
        "{err:?}"
    );

    let mut t = T::passive(params("a"), Some(("b", 5)));
    t.ev(Event::StoreDown);
    let err = t.m.request(Request::Promote, t.now).unwrap_err();
    assert!(
        matches!(&err, Refusal::NotEligible(Ineligible::StoreUnreachable)),
        "{err:?}"
    );
    // Nothing changed: no switchover request goes out later either.
    t.ev(Event::StoreUp);
    t.renew();
    t.ev(Event::Leader(Some(("b".into(), 5))));
    t.ev(Event::Members(vec![]));
    let a = t.ev(Event::Maintenance(false));
    assert!(switchover_requests(&a).is_empty());
}

#[test]
fn demote_hands_over_to_the_best_eligible_standby() {
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Members(vec![
        member("b", 100, true, Role::Passive),
        member("c", 300, true, Role::Passive),
        member("d", 900, false, Role::Failed),
    ]));
    let a = t.m.request(Request::Demote, t.now).unwrap();
    assert_eq!(switchover_requests(&a), vec!["c".to_string()]);
    assert!(a.contains(&Action::Start(Job::StopActive, None)));
    assert!(has_role_change(&a, Role::Active, Role::Demoting));
    let a = t.units_down_then_passive();
    assert!(a.contains(&Action::Release { term: 5 }));
    assert!(
        !t.m.settled_passive(),
        "not settled before the key is released"
    );
    t.ev(Event::Released);
    assert!(t.m.settled_passive());
}

#[test]
fn demote_without_a_standby_is_refused_and_changes_nothing() {
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Members(vec![member("b", 100, false, Role::Failed)]));
    let err = t.m.request(Request::Demote, t.now).unwrap_err();
    assert!(matches!(err, Refusal::NoStandby));
    assert_eq!(t.m.role(), Role::Active);
    t.renew();
    assert_eq!(t.advance(100), vec![]);
}

#[test]
fn reset_failed_makes_a_failed_node_eligible_at_once() {
    let mut t = T::passive(params("a"), None);
    t.win(3);
    t.ev(Event::Job {
        job: Job::StartActive,
        ok: false,
    });
    t.units_down_then_passive();
    t.ev(Event::Released);
    t.ev(Event::Leader(Some(("b".into(), 4))));
    assert_eq!(t.m.role(), Role::Failed);
    assert_eq!(t.m.ineligibility(t.now), Some(Ineligible::Cooldown));
    let a = t.m.request(Request::ResetFailed, t.now).unwrap();
    assert!(has_role_change(&a, Role::Failed, Role::Passive), "{a:?}");
    assert_eq!(t.m.ineligibility(t.now), None);
}

#[test]
fn maintenance_stops_elections_switchovers_and_requests_but_not_the_fence() {
    // A vacant key is not taken while maintenance is on; it is once it is off.
    let mut t = T::passive(params("a"), Some(("b", 5)));
    t.ev(Event::Maintenance(true));
    assert!(!t.ev(Event::Leader(None)).iter().any(is_campaign));
    t.renew();
    assert!(!t.advance(1000).iter().any(is_campaign));
    assert!(matches!(
        t.m.request(Request::Promote, t.now),
        Err(Refusal::Maintenance)
    ));
    assert!(t.ev(Event::Maintenance(false)).iter().any(is_campaign));

    // The active node ignores a switchover request and refuses to demote...
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
    t.ev(Event::Maintenance(true));
    assert_eq!(t.ev(Event::Switchover(Some("b".into()))), vec![]);
    assert!(matches!(
        t.m.request(Request::Demote, t.now),
        Err(Refusal::Maintenance)
    ));
    assert_eq!(t.m.role(), Role::Active);
    // ...but still fences itself when its lease is not renewed.
    let a = t.advance(LEASE.as_millis() as u64);
    assert_eq!(a[0], Action::Start(Job::StopActive, None));
}

fn notes(a: &[Action]) -> Vec<String> {
    a.iter()
        .filter_map(|x| match x {
            Action::Note(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn crash(t: &mut T, restarted: bool) -> Vec<Action> {
    t.ev(Event::UnitFailed {
        unit: "web.service".into(),
        restarted,
    })
}

#[test]
fn a_failed_unit_is_restarted_in_place_after_the_backoff() {
    let mut t = T::active(params("a"), 5);
    let a = crash(&mut t, false);
    assert!(notes(&a)[0].contains("1 of at most 3"), "{a:?}");
    assert!(
        !a.iter().any(|x| matches!(x, Action::RestartUnit(_))),
        "not before the backoff"
    );
    assert_eq!(t.m.failures(t.now), 1);
    t.renew();
    assert_eq!(t.advance(999), vec![]);
    assert_eq!(
        t.advance(1),
        vec![Action::RestartUnit(Some("web.service".into()))]
    );
    assert_eq!(t.m.role(), Role::Active);
}

#[test]
fn under_maintenance_a_failed_unit_is_neither_counted_nor_restarted_nor_failed_over() {
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
    // A restart asked just before maintenance began is dropped with it.
    crash(&mut t, false);
    t.ev(Event::Maintenance(true));
    for _ in 0..5 {
        let a = crash(&mut t, false);
        assert_eq!(
            notes(&a),
            vec!["web.service failed: not counted, nor restarted, while maintenance mode is on"]
        );
        t.renew();
        let later = t.advance(1100);
        assert!(
            !later
                .iter()
                .any(|x| matches!(x, Action::RestartUnit(_) | Action::RequestSwitchover { .. })),
            "{later:?}"
        );
    }
    let a = t.ev(Event::Health { ok: false });
    assert!(
        !a.iter().any(|x| matches!(x, Action::RestartUnit(_))),
        "{a:?}"
    );
    assert_eq!(t.m.failures(t.now), 1);
    assert_eq!(t.m.role(), Role::Active);
    // Off again: failures count as before.
    t.ev(Event::Maintenance(false));
    assert!(notes(&crash(&mut t, false))[0].contains("2 of at most 3"));
}

#[test]
fn a_unit_systemd_restarts_is_counted_but_not_restarted_again() {
    let mut t = T::active(params("a"), 5);
    let a = crash(&mut t, true);
    assert!(notes(&a)[0].contains("restarted by systemd"));
    t.renew();
    assert!(
        !t.advance(5000)
            .iter()
            .any(|x| matches!(x, Action::RestartUnit(_)))
    );
    assert_eq!(t.m.failures(t.now), 1);
}

#[test]
fn more_than_max_restarts_within_the_window_fails_over_to_the_best_standby() {
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Members(vec![
        member("b", 100, true, Role::Passive),
        member("c", 200, true, Role::Passive),
    ]));
    for _ in 0..3 {
        crash(&mut t, true);
        t.renew();
        t.advance(100);
    }
    assert_eq!(t.m.role(), Role::Active, "three failures are allowed");
    let a = crash(&mut t, true);
    assert!(
        notes(&a).iter().any(|n| n.contains("failing over to c")),
        "{a:?}"
    );
    assert_eq!(switchover_requests(&a), vec!["c".to_string()]);
    assert_eq!(
        a.iter().find(|x| matches!(x, Action::Start(..))),
        Some(&Action::Start(Job::StopActive, None))
    );
    t.units_down_then_passive();
    t.ev(Event::Released);
    assert_eq!(t.m.role(), Role::Failed);
    assert!(t.m.failed(t.now));
    assert!(
        !t.published().eligible,
        "skipped in elections during the cooldown"
    );
}

#[test]
fn failures_outside_the_window_do_not_count() {
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
    for _ in 0..10 {
        crash(&mut t, true);
        // 101 s apart: never more than three within 300 s.
        for _ in 0..101 {
            t.renew();
            t.advance(1000);
        }
    }
    assert_eq!(t.m.role(), Role::Active);
    assert_eq!(t.m.failures(t.now), 2);
}

#[test]
fn without_a_standby_the_node_stays_active_and_keeps_restarting() {
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Members(vec![member("b", 100, false, Role::Failed)]));
    for i in 0..6 {
        let a = crash(&mut t, false);
        if i >= 3 {
            assert!(
                notes(&a).iter().any(|n| n.contains("no eligible standby")),
                "{a:?}"
            );
        }
        t.renew();
        let a = t.advance(1000);
        assert_eq!(a, vec![Action::RestartUnit(Some("web.service".into()))]);
    }
    assert_eq!(t.m.role(), Role::Active);
    assert!(!t.m.failed(t.now));
}

#[test]
fn the_cooldown_ends_or_reset_clears_it() {
    let mut p = params("a");
    p.failure_cooldown = Duration::from_secs(20);
    let mut t = T::active(p, 5);
    t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
    for _ in 0..4 {
        crash(&mut t, true);
    }
    t.units_down_then_passive();
    t.ev(Event::Released);
    t.ev(Event::Leader(Some(("b".into(), 6))));
    assert_eq!(t.m.role(), Role::Failed);
    for _ in 0..19 {
        t.renew();
        t.advance(1000);
        assert_eq!(t.m.role(), Role::Failed);
    }
    t.renew();
    let a = t.advance(1000);
    assert!(has_role_change(&a, Role::Failed, Role::Passive), "{a:?}");
    assert_eq!(
        t.m.failures(t.now),
        4,
        "the history stays until the window passes"
    );
    t.m.request(Request::ResetFailed, t.now).unwrap();
    assert_eq!(t.m.failures(t.now), 0);
}

#[test]
fn failures_while_not_active_are_ignored() {
    let mut t = T::passive(params("a"), Some(("b", 5)));
    assert!(crash(&mut t, false).is_empty());
    assert_eq!(t.m.failures(t.now), 0);
}

#[test]
fn a_failing_health_check_counts_on_the_active_node_and_disqualifies_a_passive_one() {
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
    let a = t.ev(Event::Health { ok: false });
    assert!(notes(&a).iter().any(|n| n.contains("health check failed")));
    t.renew();
    assert_eq!(
        t.advance(1000),
        vec![Action::RestartUnit(None)],
        "every watched unit"
    );
    for _ in 0..3 {
        t.ev(Event::Health { ok: false });
    }
    assert_eq!(t.m.role(), Role::Demoting);

    let mut t = T::passive(params("a"), Some(("b", 5)));
    t.ev(Event::Health { ok: false });
    assert!(!t.published().eligible && !t.published().healthy);
    assert_eq!(t.m.ineligibility(t.now), Some(Ineligible::Unhealthy));
    assert!(!t.ev(Event::Leader(None)).iter().any(is_campaign));
    t.ev(Event::Health { ok: true });
    assert!(t.published().eligible);
}

#[test]
fn a_failed_passive_unit_makes_the_node_ineligible_until_it_recovers() {
    let mut t = T::passive(params("a"), Some(("b", 5)));
    t.ev(Event::PassiveUnits { ok: false });
    assert!(!t.published().eligible && !t.published().healthy);
    t.ev(Event::PassiveUnits { ok: true });
    assert!(t.published().eligible);
}

/// Found by the fault campaign: the runtime asked for the next deadline with a `now` that had
/// already passed the fence deadline (it had been busy), the deadline was dropped as past,
/// and the machine stayed active with an expired lease. A deadline stays due until a step
/// has handled it.
#[test]
fn a_deadline_the_caller_is_late_for_stays_due_until_a_step_handles_it() {
    let timing = Timing::new(LEASE);
    let mut t = T::active(params("a"), 5);
    let sent = t.now;
    t.renew();
    t.ev(Event::StoreDown);
    assert_eq!(t.m.next_deadline(), Some(timing.fence_at(sent)));
    // Time passes well beyond the deadline with no event at all: still due.
    t.now = timing.fence_at(sent) + Duration::from_millis(700);
    assert_eq!(t.m.next_deadline(), Some(timing.fence_at(sent)));
    // The late Tick fences (and kills at once: the kill deadline has passed too).
    let a = t.ev(Event::Tick);
    assert_eq!(a[0], Action::Start(Job::StopActive, None));
    assert!(a.contains(&Action::KillActive), "{a:?}");
    // Handled: no longer due.
    assert!(t.m.next_deadline().is_none_or(|d| d > t.now));
}

fn stop_result(t: &mut T, ok: bool) -> Vec<Action> {
    t.ev(Event::Job {
        job: Job::StopActive,
        ok,
    })
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Start-up with "b" holding the key, up to the passive target's start.
fn up_to_the_passive_start() -> T {
    let mut t = T::new(params("a"));
    t.ev(Event::Tick);
    t.ev(Event::StoreUp);
    t.renew();
    t.ev(Event::Leader(Some(("b".into(), 5))));
    t.ev(Event::Members(vec![]));
    t.ev(Event::Maintenance(false));
    stop_result(&mut t, true);
    t
}

fn failed_passive_start() -> T {
    let mut t = up_to_the_passive_start();
    t.ev(Event::Job {
        job: Job::StartPassive,
        ok: false,
    });
    assert!(!t.m.is_eligible(t.now));
    t
}

/// Before: a failed passive target left the node ineligible until promd restarted.
#[test]
fn reset_failed_starts_a_failed_passive_target_again() {
    let mut t = failed_passive_start();
    let a = t.m.request(Request::ResetFailed, t.now).unwrap();
    assert!(a.contains(&Action::Start(Job::StartPassive, None)), "{a:?}");
    t.ev(Event::Job {
        job: Job::StartPassive,
        ok: true,
    });
    assert!(t.m.is_eligible(t.now));
    assert!(t.published().eligible && t.published().healthy);
}

/// Before: a passive start that failed for a passing reason (at 1,000 groups PID 1 dropped
/// its bus connection, failing the call with `NoReply`) left the node ineligible for good:
/// its passive target was never started again, and no unit of it ever recovered.
#[test]
fn a_failed_passive_start_is_tried_again_after_a_growing_backoff() {
    let mut t = failed_passive_start();
    assert_eq!(t.m.role(), Role::Passive);
    let mut backoffs = Vec::new();
    for _ in 0..8 {
        let at =
            t.m.timers()
                .get(Timer::PassiveRetry)
                .expect("a retry is due");
        backoffs.push((at.0 - t.now.0).as_secs());
        // Not a moment before its time.
        t.now = at - Duration::from_millis(1);
        let a = t.ev(Event::Tick);
        assert!(
            !a.contains(&Action::Start(Job::StartPassive, None)),
            "{a:?}"
        );
        t.now = at;
        let a = t.ev(Event::Tick);
        assert!(a.contains(&Action::Start(Job::StartPassive, None)), "{a:?}");
        assert!(!t.m.is_eligible(t.now), "ineligible while the start runs");
        let a = t.ev(Event::Job {
            job: Job::StartPassive,
            ok: false,
        });
        assert!(
            a.iter()
                .any(|a| matches!(a, Action::Note(n) if n.contains("trying again"))),
            "{a:?}"
        );
    }
    assert_eq!(
        backoffs,
        [1, 2, 4, 8, 16, 32, 60, 60],
        "1 s doubling, at most a minute"
    );
    let at =
        t.m.timers()
            .get(Timer::PassiveRetry)
            .expect("a retry is due");
    t.now = at;
    t.ev(Event::Tick);
    t.ev(Event::Job {
        job: Job::StartPassive,
        ok: true,
    });
    t.renew();
    assert!(t.m.is_eligible(t.now));
    assert_eq!(t.m.timers().get(Timer::PassiveRetry), None);
}

/// A node whose passive target failed at start-up says so when it turns passive, instead of
/// "passive target up".
#[test]
fn start_up_with_a_failed_passive_target_says_so() {
    let mut t = up_to_the_passive_start();
    let a = t.ev(Event::Job {
        job: Job::StartPassive,
        ok: false,
    });
    let reason = a.iter().find_map(|a| match a {
        Action::RoleChanged { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(reason, Some(Reason::StartedPassiveFailed), "{a:?}");
}

#[test]
fn recovered_passive_units_clear_a_failed_passive_start() {
    let mut t = failed_passive_start();
    t.ev(Event::PassiveUnits { ok: false });
    assert!(t.ev(Event::Tick).is_empty());
    let a = t.ev(Event::PassiveUnits { ok: true });
    assert!(a.contains(&Action::Start(Job::StartPassive, None)), "{a:?}");
    t.ev(Event::Job {
        job: Job::StartPassive,
        ok: true,
    });
    assert!(t.m.is_eligible(t.now));
}

/// Before: the key vanishing (expired, or deleted by an operator) left the kill at
/// `s + L - L/10`, while another host could already be starting the units.
#[test]
fn the_key_vanishing_from_under_the_active_node_kills_at_once() {
    let mut t = T::active(params("a"), 5);
    t.renew();
    let a = t.ev(Event::Leader(None));
    assert_eq!(a[0], Action::Start(Job::StopActive, None));
    assert!(a.contains(&Action::KillActive), "{a:?}");

    // The same during a graceful switchover: draining is over once the key is gone.
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
    t.renew();
    let a = t.ev(Event::Switchover(Some("b".into())));
    assert!(!a.contains(&Action::KillActive), "{a:?}");
    assert_eq!(t.ev(Event::Leader(None)), vec![Action::KillActive]);

    // Or when the key turns out to be another's, or the lease is lost, mid-drain.
    for e in [Event::Leader(Some(("b".into(), 6))), Event::LeaseLost] {
        let mut t = T::active(params("a"), 5);
        t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
        t.renew();
        t.ev(Event::Switchover(Some("b".into())));
        assert_eq!(t.ev(e.clone()), vec![Action::KillActive], "{e:?}");
    }
}

/// The campaign found it (seed 21, fault #18, `etcdctl del` of the key): the kill reached
/// systemd before the stop job began, and systemd then ran web-drain.service's
/// `ExecStop=/bin/sleep 3` for the killed service in full: the holder's units were down 3.1 s
/// after the key vanished, not at once. While the stop runs, the fence kills again every
/// rekill interval (the lease's own kill margin); once it is done, no more.
#[test]
fn a_stop_still_running_after_its_kill_is_killed_again_every_rekill_interval() {
    let margin = Timing::new(LEASE).rekill_interval();
    let mut t = T::active(params("a"), 5);
    t.renew();
    let a = t.ev(Event::Leader(None));
    assert_eq!(
        a.iter().filter(|x| **x == Action::KillActive).count(),
        1,
        "{a:?}"
    );
    assert_eq!(t.m.next_deadline(), Some(t.now + margin));
    assert!(!t.advance(ms(margin) - 1).contains(&Action::KillActive));
    assert_eq!(t.advance(1), vec![Action::KillActive]);
    assert_eq!(t.advance(ms(margin)), vec![Action::KillActive]);
    // The stop is done: nothing more to kill, and no deadline for it.
    let a = stop_result(&mut t, true);
    assert!(!a.contains(&Action::KillActive), "{a:?}");
    assert!(!t.advance(ms(margin) * 3).contains(&Action::KillActive));
}

#[test]
fn a_graceful_demotion_drains_until_the_kill_deadline_while_the_key_is_held() {
    let timing = Timing::new(LEASE);
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
    let sent = t.now;
    t.renew();
    let a = t.ev(Event::Switchover(Some("b".into())));
    assert!(!a.contains(&Action::KillActive), "{a:?}");
    assert_eq!(t.m.next_deadline(), Some(timing.fence_at(sent)));
    let to_kill = ms(timing.kill_at(sent).saturating_sub(t.now));
    t.advance(to_kill - 1);
    assert_eq!(t.advance(1), vec![Action::KillActive]);
}

/// Before: a failed stop left the units "may run" with no job, and the fence issued the next
/// stop in the same step: a hot loop of D-Bus calls for as long as systemd said no.
#[test]
fn a_failed_fence_stop_is_killed_at_once_and_retried_after_a_doubling_backoff() {
    let timing = Timing::new(LEASE);
    let mut t = T::active(params("a"), 5);
    let a = t.ev(Event::Leader(Some(("b".into(), 9))));
    assert_eq!(a[0], Action::Start(Job::StopActive, None));
    // 250 ms, 500 ms, then capped at half the (2 s) lease.
    for (n, backoff) in [250u64, 500, 1000, 1000].into_iter().enumerate() {
        t.renew();
        let a = stop_result(&mut t, false);
        assert_eq!(a[0], Action::KillActive, "escalates at once: {a:?}");
        assert!(
            !starts(&a, Job::StopActive),
            "no stop in the same step: {a:?}"
        );
        assert_eq!(notes(&a).len(), 1, "{a:?}");
        assert!(
            notes(&a)[0].contains(&format!("{} in a row", n + 1)),
            "{a:?}"
        );
        assert_eq!(t.m.role(), Role::Demoting);
        assert_eq!(
            t.m.next_deadline(),
            Some(t.now + Duration::from_millis(backoff))
        );
        assert_eq!(t.advance(backoff - 1), vec![], "nothing before the retry");
        // The key is another's: the retry is killed at once too.
        assert_eq!(
            t.advance(1),
            vec![Action::Start(Job::StopActive, None), Action::KillActive]
        );
    }
    // A stale answer (a superseded job) is not a failure: no note, no kill.
    assert_eq!(
        t.ev(Event::Job {
            job: Job::StartActive,
            ok: false,
        }),
        vec![]
    );
    assert_eq!(
        stop_result(&mut t, true),
        vec![Action::Start(Job::StartPassive, None)]
    );
    let a = t.ev(Event::Job {
        job: Job::StartPassive,
        ok: true,
    });
    assert!(has_role_change(&a, Role::Demoting, Role::Passive), "{a:?}");

    // A success resets the backoff: the next failure waits 250 ms again.
    let a = t.ev(Event::UnitStarted {
        unit: "web.service".into(),
    });
    assert!(starts(&a, Job::StopActive), "{a:?}");
    stop_result(&mut t, false);
    assert_eq!(
        t.m.next_deadline(),
        Some(t.now + timing.stop_retry_backoff(1))
    );
    assert_eq!(ms(timing.stop_retry_backoff(1)), 250);
}

/// Before: a failed stop during a switchover was never retried; the node sat in `demoting`
/// holding the key for good.
#[test]
fn a_failed_stop_in_a_switchover_is_retried_and_the_demotion_finishes() {
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
    let a = t.ev(Event::Switchover(Some("b".into())));
    assert_eq!(a[0], Action::Start(Job::StopActive, None));
    assert!(!a.contains(&Action::KillActive), "graceful: {a:?}");
    let a = stop_result(&mut t, false);
    assert!(a.contains(&Action::KillActive), "{a:?}");
    assert!(!starts(&a, Job::StopActive), "{a:?}");
    assert!(
        !a.iter().any(|x| matches!(x, Action::Release { .. })),
        "{a:?}"
    );
    assert_eq!(t.m.role(), Role::Demoting);
    t.renew();
    assert_eq!(t.advance(249), vec![]);
    // The key is still held under a live lease: the retry drains, no kill yet.
    assert_eq!(t.advance(1), vec![Action::Start(Job::StopActive, None)]);
    assert_eq!(t.m.role(), Role::Demoting);
    assert_eq!(
        stop_result(&mut t, true),
        vec![Action::Start(Job::StartPassive, None)]
    );
    let a = t.ev(Event::Job {
        job: Job::StartPassive,
        ok: true,
    });
    assert!(a.contains(&Action::Release { term: 5 }), "{a:?}");
    assert!(has_role_change(&a, Role::Demoting, Role::Passive), "{a:?}");
}

#[test]
fn a_failed_stop_on_the_way_out_is_retried_then_the_key_is_released() {
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Terminate);
    let a = stop_result(&mut t, false);
    assert!(a.contains(&Action::KillActive), "{a:?}");
    assert!(!starts(&a, Job::StopActive), "{a:?}");
    t.renew();
    assert_eq!(t.advance(250), vec![Action::Start(Job::StopActive, None)]);
    assert_eq!(stop_result(&mut t, true), vec![Action::Release { term: 5 }]);
    assert_eq!(t.ev(Event::Released), vec![Action::Exit]);
}

#[test]
fn a_failed_stop_at_start_up_is_retried_and_the_node_still_becomes_passive() {
    let mut t = T::new(params("a"));
    t.ev(Event::Tick);
    let a = stop_result(&mut t, false);
    assert!(a.contains(&Action::KillActive), "{a:?}");
    assert!(!starts(&a, Job::StopActive), "{a:?}");
    assert_eq!(t.m.role(), Role::Starting);
    assert_eq!(
        t.advance(250),
        vec![Action::Start(Job::StopActive, None), Action::KillActive]
    );
    assert_eq!(
        stop_result(&mut t, true),
        vec![Action::Start(Job::StartPassive, None)]
    );
}

fn unit_started(t: &mut T) -> Vec<Action> {
    t.ev(Event::UnitStarted {
        unit: "web.service".into(),
    })
}

#[test]
fn a_unit_started_on_a_passive_node_is_stopped_and_killed_at_once() {
    let mut t = T::passive(params("a"), Some(("b", 5)));
    let a = unit_started(&mut t);
    assert_eq!(
        notes(&a),
        vec!["web.service started on a host that does not hold the role: stopping it".to_string()]
    );
    assert!(a.contains(&Action::Start(Job::StopActive, None)), "{a:?}");
    assert!(a.contains(&Action::KillActive), "{a:?}");
    assert!(
        !t.m.is_eligible(t.now),
        "not passive until the units are down"
    );
    assert_eq!(
        stop_result(&mut t, true),
        vec![Action::Start(Job::StartPassive, None)]
    );
    t.ev(Event::Job {
        job: Job::StartPassive,
        ok: true,
    });
    assert_eq!(t.m.role(), Role::Passive);
    assert!(t.m.is_eligible(t.now));
    assert!(t.m.settled_passive());
    t.renew();
    assert_eq!(t.advance(500), vec![]);
}

#[test]
fn a_unit_started_on_the_node_with_the_role_is_its_own_business() {
    let mut t = T::active(params("a"), 5);
    assert_eq!(unit_started(&mut t), vec![]);
    let mut t = T::passive(params("a"), None);
    t.win(3);
    assert_eq!(t.m.role(), Role::Promoting);
    assert_eq!(unit_started(&mut t), vec![]);
}

#[test]
fn a_unit_started_during_the_passive_start_supersedes_it_without_looping() {
    let mut t = T::new(params("a"));
    t.ev(Event::Tick);
    assert_eq!(
        stop_result(&mut t, true),
        vec![Action::Start(Job::StartPassive, None)]
    );
    let a = unit_started(&mut t);
    assert!(a.contains(&Action::Start(Job::StopActive, None)), "{a:?}");
    assert!(
        a.contains(&Action::KillActive),
        "starting: nothing to wait for: {a:?}"
    );
    // The superseded passive start's answer is ignored.
    assert_eq!(
        t.ev(Event::Job {
            job: Job::StartPassive,
            ok: true
        }),
        vec![]
    );
    assert_eq!(
        stop_result(&mut t, true),
        vec![Action::Start(Job::StartPassive, None)]
    );
    let a = t.ev(Event::Job {
        job: Job::StartPassive,
        ok: true,
    });
    assert!(has_role_change(&a, Role::Starting, Role::Passive), "{a:?}");
    assert_eq!(t.advance(5000), vec![]);
}

#[test]
fn a_unit_started_after_the_stop_of_a_demotion_is_stopped_before_the_key_is_released() {
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
    t.ev(Event::Switchover(Some("b".into())));
    assert_eq!(
        stop_result(&mut t, true),
        vec![Action::Start(Job::StartPassive, None)]
    );
    // Still holding the key under a live lease: stopped, drained, not killed.
    let a = unit_started(&mut t);
    assert_eq!(notes(&a).len(), 1, "{a:?}");
    assert!(a.contains(&Action::Start(Job::StopActive, None)), "{a:?}");
    assert!(!a.contains(&Action::KillActive), "{a:?}");
    assert_eq!(t.m.role(), Role::Demoting);
    assert_eq!(
        stop_result(&mut t, true),
        vec![Action::Start(Job::StartPassive, None)]
    );
    let a = t.ev(Event::Job {
        job: Job::StartPassive,
        ok: true,
    });
    assert!(a.contains(&Action::Release { term: 5 }), "{a:?}");
}

#[test]
fn a_unit_started_during_a_stop_is_killed_again_but_not_stopped_twice() {
    let mut t = T::new(params("a"));
    t.ev(Event::Tick);
    // The first kill predates it; the running stop covers it.
    assert_eq!(unit_started(&mut t), vec![Action::KillActive]);
    // A graceful drain keeps its deadline.
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
    t.renew();
    t.ev(Event::Switchover(Some("b".into())));
    assert_eq!(unit_started(&mut t), vec![]);
}

#[test]
fn a_unit_started_while_a_failed_stop_waits_for_its_retry_does_not_stop_early() {
    let mut t = T::passive(params("a"), Some(("b", 5)));
    unit_started(&mut t);
    stop_result(&mut t, false);
    // Not stopped before the retry is due, but killed: it must not run meanwhile.
    let a = unit_started(&mut t);
    assert!(!starts(&a, Job::StopActive), "{a:?}");
    assert!(a.contains(&Action::KillActive), "{a:?}");
    assert_eq!(
        t.advance(250),
        vec![Action::Start(Job::StopActive, None), Action::KillActive]
    );
}

/// Passive `a` wins the key at `term`; the start job ends with web.service not up.
fn start_incomplete(t: &mut T) -> Vec<Action> {
    t.ev(Event::StartIncomplete {
        units: vec!["web.service".into()],
    })
}

#[test]
fn a_start_that_leaves_a_unit_down_is_retried_in_place_and_never_reads_active() {
    let mut t = T::passive(params("a"), None);
    t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
    let a = t.win(4);
    assert!(starts(&a, Job::StartActive));
    let mut all = Vec::new();
    // max-restarts = 3: three failed starts are tried again in place, after the backoff.
    for n in 1..=3 {
        let a = start_incomplete(&mut t);
        assert!(
            notes(&a)
                .iter()
                .any(|x| x.contains(&format!("{n} of at most 3"))
                    && x.contains("starting the active target again in place")),
            "{a:?}"
        );
        assert_eq!(t.m.role(), Role::Promoting);
        t.renew();
        assert!(
            !starts(&t.advance(999), Job::StartActive),
            "not before the backoff"
        );
        let a = t.advance(1);
        assert_eq!(a, vec![Action::Start(Job::StartActive, Some(4))]);
        all.extend(a);
    }
    // The fourth fails over: stop, hand over to b, failed for the cooldown.
    let a = start_incomplete(&mut t);
    assert!(
        notes(&a).iter().any(|x| x.contains("failing over to b")),
        "{a:?}"
    );
    assert_eq!(switchover_requests(&a), vec!["b".to_string()]);
    assert!(a.contains(&Action::Start(Job::StopActive, None)));
    all.extend(a);
    let a = t.units_down_then_passive();
    assert!(a.contains(&Action::Release { term: 4 }));
    all.extend(a);
    assert_eq!(t.m.role(), Role::Failed);
    assert_eq!(t.m.failures(t.now), 4);
    assert!(
        !all.iter().any(|x| matches!(
            x,
            Action::RoleChanged {
                new: Role::Active,
                ..
            }
        )),
        "never active: {all:?}"
    );
}

#[test]
fn a_start_retry_is_dropped_when_a_stop_supersedes_it() {
    let mut t = T::passive(params("a"), None);
    t.win(4);
    start_incomplete(&mut t);
    // The key is lost before the retry is due: stop and kill, no start.
    let a = t.ev(Event::Leader(Some(("b".into(), 5))));
    assert!(a.contains(&Action::Start(Job::StopActive, None)), "{a:?}");
    t.renew();
    let a = t.advance(5000);
    assert!(!starts(&a, Job::StartActive), "{a:?}");
    // A late answer to the superseded start changes nothing.
    let a = start_incomplete(&mut t);
    assert!(!starts(&a, Job::StartActive), "{a:?}");
}

#[test]
fn without_a_standby_a_failing_start_keeps_trying_in_place() {
    let mut t = T::passive(params("a"), None);
    t.win(4);
    for i in 0..6 {
        let a = start_incomplete(&mut t);
        if i >= 3 {
            assert!(
                notes(&a)
                    .iter()
                    .any(|n| n.contains("no eligible standby: staying promoting")),
                "{a:?}"
            );
        }
        t.renew();
        let a = t.advance(1000);
        assert_eq!(a, vec![Action::Start(Job::StartActive, Some(4))]);
    }
    assert_eq!(t.m.role(), Role::Promoting);
}

/// A reconnection re-reads the store: the view from before the outage is no evidence, however
/// much it invites a campaign. Only the fresh reads (key, members, switchover, maintenance)
/// let the node campaign again.
#[test]
fn after_a_reconnection_nothing_is_campaigned_for_on_the_old_view() {
    let mut t = T::passive(params("a"), None);
    let grace = t.m.p.timing.grace().as_millis() as u64;
    // The vacant key is campaigned for, and lost (another node was faster).
    t.ev(Event::Campaigned(None));
    t.ev(Event::StoreDown);
    t.ev(Event::StoreUp);
    t.renew();
    // Past the retry: the old view still says "vacant", but it is not read again yet.
    let a = t.advance(grace + 10);
    assert!(!a.iter().any(is_campaign), "{a:?}");
    t.ev(Event::Leader(None));
    t.ev(Event::Members(vec![]));
    t.ev(Event::Switchover(None));
    let a = t.ev(Event::Maintenance(false));
    assert!(a.iter().any(is_campaign), "{a:?}");
}

/// Found by a fresh review. The node won the key and its claim was seen, but could not
/// promote (a unit of the role started behind its back, so the fence stopped the units
/// first); its store dropped before the withdrawn claim was seen. While it was offline the key
/// may have been deleted by hand and won by another node: on reconnecting, before the key is
/// read again, nothing may start the active target on the old view.
#[test]
fn after_a_reconnection_nothing_is_promoted_on_the_old_view() {
    let mut t = T::passive(params("a"), None);
    let a = t.ev(Event::Campaigned(Some(5)));
    assert!(!starts(&a, Job::StartActive), "{a:?}");
    let claim = t.published().clone();
    assert_eq!((claim.role, claim.term), (Role::Promoting, Some(5)));
    let a = t.ev(Event::UnitStarted {
        unit: "web.service".into(),
    });
    assert!(starts(&a, Job::StopActive), "{a:?}");
    // The store shows the claim now; the stop still runs, so no promotion, and the claim is
    // withdrawn.
    let a = t.ev(Event::Members(vec![claim.clone()]));
    assert!(!starts(&a, Job::StartActive), "{a:?}");
    assert_eq!(t.published().role, Role::Passive);
    t.ev(Event::StoreDown);
    t.units_down_then_passive();
    assert_eq!(t.m.role(), Role::Passive);
    // Back within the lease; the key is not read yet.
    let mut a = t.ev(Event::StoreUp);
    a.extend(t.renew());
    assert!(
        !starts(&a, Job::StartActive),
        "started on the old view: {a:?}"
    );
    // Once read again, the store says b holds the key at 8: a stays passive.
    t.ev(Event::Maintenance(false));
    let mut claim_b = member("b", 100, false, Role::Promoting);
    claim_b.term = Some(8);
    let mut a = t.ev(Event::Members(vec![claim_b, claim]));
    a.extend(t.ev(Event::Leader(Some(("b".into(), 8)))));
    assert!(!starts(&a, Job::StartActive), "{a:?}");
    assert_eq!(t.m.leader(), Some("b"));
    assert_eq!(t.m.term(), 8);
}

/// Found by a fresh review: the campaign's answer and the watch travel apart, so the watch
/// can show the won key, its deletion and another node's key before the answer "won at 6"
/// comes. Taking that win made the node claim the role at a term it did not hold (it never
/// promoted, nor released), and the real holder waited for that claim forever.
#[test]
fn a_late_win_does_not_override_a_newer_holder() {
    let mut t = T::passive(params("a"), None);
    let a = t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
    assert!(a.iter().any(is_campaign) || t.m.campaigning(), "{a:?}");
    t.ev(Event::Leader(Some(("a".into(), 6))));
    t.ev(Event::Leader(None));
    t.ev(Event::Leader(Some(("b".into(), 8))));
    let mut claim_b = member("b", 100, false, Role::Promoting);
    claim_b.term = Some(8);
    t.ev(Event::Members(vec![claim_b]));
    let mut a = t.ev(Event::Campaigned(Some(6)));
    for _ in 0..20 {
        a.extend(t.advance(500));
        a.extend(t.renew());
        a.extend(t.echo());
    }
    assert!(!starts(&a, Job::StartActive), "{a:?}");
    assert_eq!(t.m.leader(), Some("b"));
    let mine = t.published();
    assert!(
        !matches!(mine.role, Role::Promoting | Role::Active),
        "a claims the role while b holds the key: {mine:?}"
    );
}

/// The answer may also come after the watch showed the won key and then its deletion (by
/// hand): that key is gone, and the win counts for nothing. If the watch showed the won key
/// and nothing after, the win stands.
#[test]
fn a_late_win_counts_only_while_the_watch_still_shows_it() {
    let mut t = T::passive(params("a"), None);
    t.ev(Event::Members(vec![]));
    assert!(t.m.campaigning());
    t.ev(Event::Leader(Some(("a".into(), 6))));
    t.ev(Event::Leader(None));
    let a = t.ev(Event::Campaigned(Some(6)));
    assert_eq!(t.m.leader(), None, "{a:?}");
    assert!(
        !matches!(t.published().role, Role::Promoting | Role::Active),
        "no claim on a deleted key"
    );

    let mut t = T::passive(params("a"), None);
    t.ev(Event::Members(vec![]));
    t.ev(Event::Leader(Some(("a".into(), 6))));
    let a = t.win(6);
    assert!(starts(&a, Job::StartActive), "{a:?}");
}

/// The floor this host kept from earlier runs, and every member record's term, is what a
/// campaign asks the store to exceed; a key the store hands out at or below it (a store that
/// lost its history and ignored the floor) never starts the units and is released, and the
/// node campaigns again; the term the units see is above every term seen before.
#[test]
fn a_key_won_at_or_below_the_floor_never_starts_the_units() {
    let mut p = params("a");
    p.term_floor = 100;
    let mut t = T::passive(p, None);
    assert_eq!(t.m.term(), 100, "never below the kept floor");
    assert_eq!(t.published().term, Some(100), "the record says so too");
    // A member record knows of a higher term: the next campaign carries it.
    let mut b = member("b", 50, true, Role::Passive);
    b.term = Some(120);
    t.ev(Event::Members(vec![b]));
    assert!(t.m.campaigning(), "the best candidate campaigns at once");
    let a = t.ev(Event::Campaigned(None));
    assert!(!a.iter().any(is_campaign));
    let mut a = t.advance(500);
    a.extend(t.renew());
    let floors: Vec<u64> = a
        .iter()
        .filter_map(|a| match a {
            Action::Campaign { floor, .. } => Some(*floor),
            _ => None,
        })
        .collect();
    assert_eq!(floors, [120], "{a:?}");

    // The store hands out 90: below the floor. Not used, and said so.
    let a = t.ev(Event::Campaigned(Some(90)));
    assert!(!starts(&a, Job::StartActive), "{a:?}");
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Note(n) if n.contains("lost its history"))),
        "{a:?}"
    );
    assert_eq!(t.published().role, Role::Passive, "no claim of the role");
    // The watch shows the key as ours at 90: a key this node does not hold, released.
    let a = t.ev(Event::Leader(Some(("a".into(), 90))));
    assert!(a.contains(&Action::Release { term: 90 }), "{a:?}");
    assert!(!starts(&a, Job::StartActive), "{a:?}");
    t.ev(Event::Released);
    t.ev(Event::Leader(None));
    assert_eq!(t.m.term(), 100, "the key at 90 took nothing back");

    // A store that honours the floor: the units see a term above every earlier one.
    t.advance(2_000);
    t.renew();
    assert!(t.m.campaigning());
    let a = t.win(121);
    assert!(
        a.contains(&Action::Start(Job::StartActive, Some(121))),
        "{a:?}"
    );
}

/// A key held by another node below the floor is noted (the store lost its history); the
/// machine never uses it, as with any key of another's.
#[test]
fn a_key_below_the_kept_floor_is_noted() {
    let mut p = params("a");
    p.term_floor = 100;
    let mut t = T::new(p);
    t.ev(Event::Tick);
    t.ev(Event::StoreUp);
    t.renew();
    let a = t.ev(Event::Leader(Some(("b".into(), 40))));
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Note(n) if n.contains("below term 100"))),
        "{a:?}"
    );
    assert_eq!(t.m.term(), 100);
    let a = t.ev(Event::Leader(Some(("b".into(), 140))));
    assert!(!a.iter().any(|x| matches!(x, Action::Note(_))), "{a:?}");
    assert_eq!(t.m.term(), 140);
}

/// The store shows this node's record at a lower term than it published (a store restored
/// from an older snapshot keeps the old record under a lease that survived): it is written
/// again, so that a campaigner counts the term this node knows.
#[test]
fn an_own_record_behind_in_the_store_is_published_again() {
    let mut p = params("a");
    p.term_floor = 100;
    let mut t = T::passive(p, Some(("b", 100)));
    let mine = t.published().clone();
    assert_eq!(mine.term, Some(100));
    let before = t.pubs.len();
    t.ev(Event::Members(vec![mine.clone()]));
    assert_eq!(
        t.pubs.len(),
        before,
        "a record as published is not written again"
    );
    let stale = Member {
        term: Some(50),
        ..mine.clone()
    };
    t.ev(Event::Members(vec![stale]));
    assert_eq!(t.pubs.len(), before + 1);
    assert_eq!(t.published(), &mine);
}

/// Found by the restore system test (`tests/system_term.rs`): the active node fenced while
/// etcd was down; etcd came back restored from an older snapshot that holds this node's key
/// at term 5, under a lease the node still renews. The release of term 46 (what the node
/// held) deletes nothing; its answer made the node forget the key at term 5, which nobody
/// then deleted: no node became active. Now only the released term's key is forgotten, and
/// the stale one is released in turn.
#[test]
fn a_release_answer_forgets_only_the_key_it_released() {
    let mut t = T::active(params("a"), 46);
    t.ev(Event::StoreDown);
    let fence = LEASE.as_millis() as u64;
    let a = t.advance(fence);
    assert!(starts(&a, Job::StopActive), "{a:?}");
    t.units_down_then_passive();
    let mut a = t.ev(Event::StoreUp);
    a.extend(t.renew());
    assert!(a.contains(&Action::Release { term: 46 }), "{a:?}");
    // The restored store: this node's key at term 5, then the release's answer.
    t.ev(Event::Leader(Some(("a".into(), 5))));
    t.ev(Event::Members(vec![]));
    t.ev(Event::Maintenance(false));
    let mut a = t.ev(Event::Released);
    a.extend(t.ev(Event::Tick));
    assert_eq!(t.m.leader(), Some("a"), "the key at term 5 is still there");
    assert!(
        a.contains(&Action::Release { term: 5 }),
        "the stale own key is released: {a:?}"
    );
    let a = t.ev(Event::Released);
    assert_eq!(t.m.leader(), None, "{a:?}");
}

/// A retune that changes only what the test says.
fn retuned(t: &T, change: impl FnOnce(&mut Tunables)) -> Event {
    let mut tunables = t.m.tunables();
    change(&mut tunables);
    Event::Retune(tunables)
}

#[test]
fn a_priority_retuned_on_the_active_node_is_published_and_nothing_else_moves() {
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
    let pubs = t.pubs.len();
    let ev = retuned(&t, |p| p.priority = 50);
    let a = t.ev(ev);
    assert_eq!(a, vec![], "no stop, no role change, no campaign: {a:?}");
    assert_eq!((t.m.role(), t.m.term()), (Role::Active, 5));
    assert_eq!(t.pubs.len(), pubs + 1, "the new record is published");
    let me = t.published();
    assert_eq!((me.priority, me.role, me.term), (50, Role::Active, Some(5)));
    assert_eq!(t.m.priority(), 50);
    // It stays active under renewals: a peer must ask (preempt) to take the role.
    t.renew();
    assert_eq!(t.advance(1000), vec![]);
    assert_eq!(t.m.role(), Role::Active);
}

#[test]
fn preempt_retuned_on_asks_a_lower_priority_leader_to_hand_over() {
    let mut p = params("a");
    p.priority = 200;
    let mut t = T::passive(p, Some(("b", 5)));
    let a = t.ev(Event::Members(vec![member("b", 100, false, Role::Active)]));
    assert!(switchover_requests(&a).is_empty(), "no preempt yet");
    let ev = retuned(&t, |p| p.preempt = true);
    assert_eq!(switchover_requests(&t.ev(ev)), vec!["a".to_string()]);
}

#[test]
fn a_priority_retuned_above_the_leader_makes_a_preempting_standby_ask() {
    let mut p = params("a");
    p.preempt = true;
    let mut t = T::passive(p, Some(("b", 5)));
    let a = t.ev(Event::Members(vec![member("b", 100, false, Role::Active)]));
    assert!(
        switchover_requests(&a).is_empty(),
        "equal priority: no preempt"
    );
    let ev = retuned(&t, |p| p.priority = 150);
    let a = t.ev(ev);
    assert_eq!(switchover_requests(&a), vec!["a".to_string()]);
    assert_eq!(t.published().priority, 150);
}

#[test]
fn members_retuned_to_include_this_node_make_it_a_candidate() {
    let mut p = params("a");
    p.members = Some(vec!["b".into()]);
    let mut t = T::passive(p, None);
    t.advance(10_000);
    assert!(!t.published().eligible, "not a member");
    t.renew();
    let ev = retuned(&t, |p| p.members = Some(vec!["a".into(), "b".into()]));
    let a = t.ev(ev);
    assert!(
        a.iter().any(is_campaign),
        "a member now, the key vacant: {a:?}"
    );
    assert!(t.published().eligible);
}

#[test]
fn max_restarts_retuned_counts_from_the_next_failure() {
    let mut t = T::active(params("a"), 5);
    t.ev(Event::Members(vec![member("b", 100, true, Role::Passive)]));
    for _ in 0..2 {
        crash(&mut t, true);
        t.renew();
        t.advance(100);
    }
    let ev = retuned(&t, |p| p.max_restarts = 1);
    let a = t.ev(ev);
    assert_eq!(a, vec![], "the retune itself fails nothing over: {a:?}");
    assert_eq!(t.m.role(), Role::Active);
    let a = crash(&mut t, true);
    assert!(
        notes(&a).iter().any(|n| n.contains("failing over to b")),
        "the next failure is past the new limit: {a:?}"
    );
}

#[test]
fn restart_backoff_retuned_times_the_next_restart() {
    let mut t = T::active(params("a"), 5);
    let ev = retuned(&t, |p| p.restart_backoff = Duration::from_millis(200));
    t.ev(ev);
    crash(&mut t, false);
    t.renew();
    assert_eq!(t.advance(199), vec![]);
    assert_eq!(
        t.advance(1),
        vec![Action::RestartUnit(Some("web.service".into()))]
    );
}

/// Start-up with the store up, the key first read vacant and `members` in the store, until
/// passive: what the last step did (the step in which the node became eligible).
fn booting(p: GroupParams, members: Vec<Member>) -> (T, Vec<Action>) {
    let mut t = T::new(p);
    t.ev(Event::Tick);
    t.ev(Event::StoreUp);
    t.renew();
    t.ev(Event::Leader(None));
    t.ev(Event::Members(members));
    t.ev(Event::Maintenance(false));
    let a = t.units_down_then_passive();
    assert_eq!(t.m.role(), Role::Passive);
    (t, a)
}

/// A cluster boot: "c" (priority 100) finishes starting first, while "b" (priority 200) still
/// says `starting`. By the ordinary rule "c" would campaign at once (no eligible member ranks
/// above it) and, without preemption, keep the role; in the first election it waits for "b",
/// then lets it go first by one grace period.
#[test]
fn a_starting_higher_priority_member_wins_the_first_election() {
    let grace = Timing::new(LEASE).grace();
    let vacant_at = Mono::from_millis(10_000);
    let (mut t, a) = booting(params("c"), vec![member("b", 200, false, Role::Starting)]);
    assert!(!a.iter().any(is_campaign), "{a:?}");
    assert!(t.published().eligible, "c itself is a candidate");
    assert_eq!(
        t.m.timers().get(Timer::FirstElection),
        Some(vacant_at + LEASE)
    );
    assert_eq!(
        t.m.timers().get(Timer::Campaign),
        None,
        "no campaign is due before the first election's wait ends"
    );
    t.renew();
    assert!(!t.advance(300).iter().any(is_campaign));
    // "b" finishes starting: the grace periods count from now, "b" ranks first.
    let a = t.ev(Event::Members(vec![member("b", 200, true, Role::Passive)]));
    assert!(!a.iter().any(is_campaign), "{a:?}");
    assert_eq!(t.m.timers().get(Timer::Campaign), Some(t.now + grace));
    assert!(!t.advance(ms(grace) - 1).iter().any(is_campaign));
    // "b" wins: nothing more to do, and the first election is over.
    let a = t.ev(Event::Leader(Some(("b".into(), 1))));
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(t.m.timers().get(Timer::Campaign), None);
    assert_eq!(t.m.timers().get(Timer::FirstElection), None);
}

/// Had "b" not taken the key within its grace period, "c" goes after it as usual.
#[test]
fn after_a_starting_member_finished_the_next_campaigns_one_grace_period_later() {
    let grace = Timing::new(LEASE).grace();
    let (mut t, _) = booting(params("c"), vec![member("b", 200, false, Role::Starting)]);
    t.renew();
    t.advance(1_500);
    t.ev(Event::Members(vec![member("b", 200, true, Role::Passive)]));
    t.renew();
    assert!(!t.advance(ms(grace) - 1).iter().any(is_campaign));
    assert!(t.advance(1).iter().any(is_campaign));
}

/// Between "b"'s `starting` record and its first eligible one, "b" publishes `passive` but
/// not yet eligible (its first lease renewal not yet acknowledged). "c" reads that record in
/// that moment: "b" is still waited for, and once eligible it goes first by a grace period.
/// (Campaigning on the in-between record, "c" won a cold boot in `system_boot`.)
#[test]
fn a_member_passive_but_not_yet_renewed_is_still_starting_in_the_first_election() {
    let grace = Timing::new(LEASE).grace();
    let (mut t, _) = booting(params("c"), vec![member("b", 200, false, Role::Starting)]);
    t.renew();
    t.advance(300);
    let mut b = member("b", 200, false, Role::Passive);
    b.why = Some(Ineligibility::Checked(Ineligible::LeaseNotRenewed));
    let a = t.ev(Event::Members(vec![b]));
    assert!(!a.iter().any(is_campaign), "{a:?}");
    assert!(!t.advance(ms(grace) * 2).iter().any(is_campaign));
    let a = t.ev(Event::Members(vec![member("b", 200, true, Role::Passive)]));
    assert!(!a.iter().any(is_campaign), "{a:?}");
    assert_eq!(t.m.timers().get(Timer::Campaign), Some(t.now + grace));
}

/// A member that is ineligible for a reason that does not pass by itself (here: unhealthy)
/// is not waited for: "c" campaigns at once.
#[test]
fn a_member_passive_and_unhealthy_is_not_waited_for_in_the_first_election() {
    let (mut t, _) = booting(params("c"), vec![member("b", 200, false, Role::Starting)]);
    t.renew();
    t.advance(300);
    let mut b = member("b", 200, false, Role::Passive);
    b.why = Some(Ineligibility::Checked(Ineligible::Unhealthy));
    let a = t.ev(Event::Members(vec![b]));
    assert!(a.iter().any(is_campaign), "{a:?}");
}

/// "b" never finishes starting (its passive target hangs): "c" waits one lease from the moment
/// it first saw the key vacant, then campaigns as if "b" were not there, and says why.
#[test]
fn a_member_that_never_finishes_starting_delays_the_first_election_by_the_bound_only() {
    let vacant_at = Mono::from_millis(10_000);
    let (mut t, _) = booting(
        params("c"),
        vec![
            member("b", 200, false, Role::Starting),
            // Ranked below "c": never waited for.
            member("a", 50, false, Role::Starting),
        ],
    );
    let bound = ms(Timing::new(LEASE).first_election_wait());
    assert_eq!(bound, ms(LEASE));
    let mut waited = 0;
    while waited + 500 < bound {
        t.renew();
        assert!(!t.advance(500).iter().any(is_campaign));
        waited += 500;
    }
    t.renew();
    assert!(!t.advance(bound - waited - 1).iter().any(is_campaign));
    let a = t.advance(1);
    assert_eq!(t.now, vacant_at + LEASE);
    assert!(a.iter().any(is_campaign), "{a:?}");
    assert!(
        notes(&a)
            .iter()
            .any(|n| n.contains("first election: b still starting")),
        "{a:?}"
    );
    assert_eq!(t.m.timers().get(Timer::FirstElection), None);
}

/// Once a node has seen the key held, a member that is starting is not waited for: "a" (the
/// highest priority) crashed and restarts while its key expires, and "c" takes over at once.
#[test]
fn a_restarting_member_never_delays_a_failover() {
    let mut t = T::passive(params("c"), Some(("a", 5)));
    t.ev(Event::Members(vec![member("a", 200, true, Role::Active)]));
    // "a"'s promd is back, still starting, under a new lease; its old key and record expired.
    t.ev(Event::Members(vec![member(
        "a",
        200,
        false,
        Role::Starting,
    )]));
    let a = t.ev(Event::Leader(None));
    assert!(a.iter().any(is_campaign), "{a:?}");
}

/// Also when "c" itself restarted into a running cluster: the key it first reads is held, so
/// its later elections are ordinary ones.
#[test]
fn a_node_that_first_saw_the_key_held_never_waits_for_starting_members() {
    let mut p = params("c");
    p.members = Some(vec!["a".into(), "b".into(), "c".into()]);
    let mut t = T::passive(p, Some(("a", 5)));
    assert_eq!(t.m.timers().get(Timer::FirstElection), None);
    t.ev(Event::Members(vec![member(
        "a",
        200,
        false,
        Role::Starting,
    )]));
    // "b" has no record, "a" is starting: neither is waited for.
    let a = t.ev(Event::Leader(None));
    assert!(a.iter().any(is_campaign), "{a:?}");
}

/// With `members` configured, a member with no record yet may outrank this node: the first
/// election waits for it to publish; a record ranked below ends the wait at once.
#[test]
fn a_configured_member_without_a_record_is_waited_for_until_it_publishes() {
    let mut p = params("c");
    p.priority = 300;
    p.members = Some(vec!["a".into(), "b".into(), "c".into()]);
    let (mut t, a) = booting(p, vec![member("a", 100, true, Role::Passive)]);
    assert!(!a.iter().any(is_campaign), "b may outrank c: {a:?}");
    t.renew();
    assert!(!t.advance(700).iter().any(is_campaign));
    // "b" publishes: it is starting, but ranks below "c".
    let a = t.ev(Event::Members(vec![
        member("a", 100, true, Role::Passive),
        member("b", 200, false, Role::Starting),
    ]));
    assert!(a.iter().any(is_campaign), "{a:?}");
}

/// Without `members`, a node cannot know of a host that has not published: it does not wait.
#[test]
fn without_configured_members_nothing_unpublished_is_waited_for() {
    let (_, a) = booting(params("c"), vec![]);
    assert!(a.iter().any(is_campaign), "{a:?}");
}
