//! A group with `actives = 2`: two slots on this host, of which it campaigns for, holds and
//! runs at most one; the passive target is the host's; what the group's env file says.

use super::*;

/// `sched`, two slots, each starting its instance of a template target; a passive target.
const SCHED: &str = r#"
[[group]]
name = "sched"
active-target = "sched-active@.target"
passive-target = "sched-passive.target"
lease = "2s"
actives = 2
"#;

/// The slots' ids: slot 0 is group 0, slot 1 group 1.
const S0: u64 = 0;
const S1: u64 = 1;

fn leader(node: &str, term: u64) -> Option<Leader> {
    Some(Leader {
        node: node.into(),
        term,
        host: None,
    })
}

/// Both slots' sessions up with these leaders and members; the start-up stops done.
/// Views are taken after every input ([`H::views`]), so `STATUS=` is checked as the runtime
/// builds it.
fn started(slot0: Option<Leader>, slot1: Option<Leader>, members: &[MemberRecord]) -> H {
    let mut h = H::new(&[SCHED]);
    h.views = true;
    h.input(Input::Start);
    h.walked();
    for (id, l) in [(S0, slot0), (S1, slot1)] {
        h.store(id, StoreEvent::Up);
        h.renew(id);
        h.store(id, StoreEvent::Leader(l));
        h.store(id, StoreEvent::Members(members.to_vec()));
        h.store(id, StoreEvent::Switchover(None));
        h.store(id, StoreEvent::Maintenance(None));
    }
    for id in [S0, S1] {
        h.job(id, Job::StopActive, true);
    }
    h
}

fn campaigns(out: &[Output]) -> Vec<GroupId> {
    store_commands(out)
        .into_iter()
        .filter(|(_, c)| *c == "Campaign")
        .map(|(id, _)| id)
        .collect()
}

fn job_orders(out: &[Output]) -> Vec<(GroupId, &JobOrder)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Job(id, order) => Some((*id, order)),
            _ => None,
        })
        .collect()
}

#[test]
fn each_slot_is_a_group_of_its_own_keys_and_target_instance() {
    let mut h = H::new(&[SCHED]);
    let out = h.input(Input::Start);
    let opened: Vec<(GroupId, String, String)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Open(id, cfg) => Some((*id, cfg.name.clone(), cfg.active_target.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        opened,
        [
            (GroupId(S0), "sched".into(), "sched-active@0.target".into()),
            (
                GroupId(S1),
                "sched@1".into(),
                "sched-active@1.target".into()
            ),
        ]
    );
}

/// Every slot vacant: the host campaigns for the lowest one only, and once it holds it, for
/// no other, however long the other stays vacant.
#[test]
fn a_host_campaigns_for_one_vacant_slot_and_holds_at_most_one() {
    let mut h = started(None, None, &[]);
    assert_eq!(campaigns(&h.out), [GroupId(S0)], "{:#?}", h.out);
    let out = h.win(S0, 7);
    let starts: Vec<(GroupId, Job, Option<EnvFile>)> = job_orders(&out)
        .into_iter()
        .map(|(id, o)| (id, o.job, o.env.clone()))
        .collect();
    assert_eq!(
        starts,
        [(
            GroupId(S0),
            Job::StartActive,
            Some(EnvFile {
                role: Role::Active,
                term: 7,
                leader: "n1".into(),
                slot: SlotLine::Holds(0),
            })
        )]
    );
    h.job(S0, Job::StartActive, true);
    assert_eq!(h.role(S0), Some(Role::Active));
    h.take();
    // Slot 1 stays vacant for minutes: this host, holding slot 0, never asks for it.
    for _ in 0..60 {
        h.renew(S0);
        h.renew(S1);
        h.advance(Duration::from_millis(600));
    }
    let out = h.take();
    assert!(campaigns(&out).is_empty(), "{:?}", campaigns(&out));
    let slot1 = &h.agent.groups[&GroupId(S1)].machine;
    assert_eq!(slot1.role(), Role::Passive);
    assert_eq!(
        slot1.ineligibility(h.now),
        Some(crate::core::Ineligible::OtherSlot)
    );
}

/// Slot 0 held by n2: the host's candidate is slot 1, which it campaigns for.
#[test]
fn a_host_goes_for_the_lowest_vacant_slot() {
    let mut h = started(leader("n2", 4), None, &[]);
    assert_eq!(campaigns(&h.out), [GroupId(S1)], "{:#?}", h.out);
    let out = h.win(S1, 2);
    let env = job_orders(&out)
        .into_iter()
        .find_map(|(id, o)| (id == GroupId(S1)).then(|| o.env.clone()).flatten());
    assert_eq!(env.map(|e| (e.term, e.slot)), Some((2, SlotLine::Holds(1))));
    // The journal: PROMD_GROUP is the group's, PROMD_SLOT the slot's.
    let promoted = records(&h.out)
        .into_iter()
        .find(|r| r.text.starts_with("sched@1: passive -> promoting"))
        .map(|r| (r.fields.group.clone(), r.fields.slot));
    assert_eq!(promoted, Some((Some("sched".to_string()), Some(1))));
    h.job(S1, Job::StartActive, true);
    // The group's object shows the slot this host holds, as slot 1's own object does.
    let group = h.agent.view_of(GroupId(S0), h.now).unwrap();
    assert_eq!(
        (group.name.as_str(), group.role.as_str(), group.term),
        ("sched", "active", 2)
    );
    let slot1 = h.agent.view_of(GroupId(S1), h.now).unwrap();
    assert_eq!(
        (slot1.name.as_str(), slot1.role.as_str()),
        ("sched@1", "active")
    );
}

/// `standbys = 1`, both slots held elsewhere (n2 term 4, n3 term 6), and n0 (priority 200,
/// no slot) ranks above this host: a spare. With n0's record.
fn spare_of_two() -> (H, MemberRecord) {
    let limited = SCHED.replace("actives = 2", "actives = 2\nstandbys = 1");
    let mut better = member("n0", Some(OTHER_HOST));
    better.priority = 200;
    let mut h = H::new(&[&limited]);
    h.views = true;
    h.input(Input::Start);
    h.walked();
    for (id, l) in [(S0, leader("n2", 4)), (S1, leader("n3", 6))] {
        h.store(id, StoreEvent::Up);
        h.renew(id);
        h.store(id, StoreEvent::Leader(l));
        h.store(id, StoreEvent::Members(vec![better.clone()]));
        h.store(id, StoreEvent::Switchover(None));
        h.store(id, StoreEvent::Maintenance(None));
    }
    for id in [S0, S1] {
        h.job(id, Job::StopActive, true);
    }
    (h, better)
}

/// Both slots held elsewhere: the host is a standby and starts the group's passive target
/// (with `PROMD_SLOT=` empty, slot 0's term and leader); with `standbys = 1` and a better
/// host without a slot, it is a spare and runs neither target.
#[test]
fn the_passive_target_is_the_hosts_and_a_spare_runs_neither_target() {
    let mut h = started(leader("n2", 4), leader("n3", 6), &[]);
    let out = h.take();
    let passive: Vec<(GroupId, Option<EnvFile>)> = job_orders(&out)
        .into_iter()
        .filter(|(_, o)| o.job == Job::StartPassive)
        .map(|(id, o)| (id, o.env.clone()))
        .collect();
    assert_eq!(
        passive,
        [(
            GroupId(S0),
            Some(EnvFile {
                role: Role::Passive,
                term: 4,
                leader: "n2".into(),
                slot: SlotLine::Without,
            })
        )]
    );
    h.job(S0, Job::StartPassive, true);
    assert_eq!(h.role(S0), Some(Role::Passive));

    // standbys = 1, and n0 (priority 200, no slot) ranks above this host.
    let (mut h, better) = spare_of_two();
    let out = h.take();
    assert!(
        jobs(&out).iter().all(|(_, j)| *j != Job::StartPassive),
        "a spare started the passive target: {:?}",
        jobs(&out)
    );
    // n0 takes slot 1's key: this host is now the best without a slot, so a standby.
    let out = h.store(S1, StoreEvent::Leader(leader("n0", 7)));
    assert_eq!(jobs(&out), [(GroupId(S0), Job::StartPassive)]);
    h.job(S0, Job::StartPassive, true);
    // n3 comes back without a slot at priority 300: this host is a spare again, and stops it.
    let mut best = member("n3", Some(OTHER_HOST));
    best.priority = 300;
    let out = h.store(S0, StoreEvent::Members(vec![better, best]));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::StopPassive(id) if *id == GroupId(S0))),
        "{out:#?}"
    );
}

/// The group's `maintenance` key is slot 0's; a slot's own (never written) is not read.
#[test]
fn maintenance_is_the_groups_and_reaches_every_slot() {
    let mut h = started(leader("n2", 4), leader("n3", 6), &[]);
    h.store(S0, StoreEvent::Maintenance(Some(maintenance(true))));
    assert!(h.agent.groups[&GroupId(S1)].machine.maintenance());
    h.store(S1, StoreEvent::Maintenance(None));
    assert!(
        h.agent.groups[&GroupId(S1)].machine.maintenance(),
        "slot 1's own empty key turned the group's maintenance off"
    );
    h.store(S0, StoreEvent::Maintenance(Some(maintenance(false))));
    assert!(!h.agent.groups[&GroupId(S1)].machine.maintenance());
}

/// Promote on the group's object, with both slots held elsewhere, switches over the slot of
/// the lowest-ranked holder (n3, priority 50): the host's candidate slot.
#[test]
fn promote_on_the_group_switches_over_the_weakest_holders_slot() {
    let holder = |node: &str, priority| {
        let mut m = member(node, Some(OTHER_HOST));
        m.priority = priority;
        m.role = Role::Active;
        m
    };
    let members = [holder("n2", 100), holder("n3", 50)];
    let mut h = started(leader("n2", 4), leader("n3", 6), &members);
    assert_eq!(h.agent.families["sched"].arbiter.candidate(), 1);
    h.take();
    let (_, out) = h.call(S0, Call::Promote);
    let asked: Vec<(GroupId, &str)> = store_commands(&out)
        .into_iter()
        .filter(|(_, c)| *c == "RequestSwitchover")
        .collect();
    assert_eq!(asked, [(GroupId(S1), "RequestSwitchover")], "{out:#?}");
}

/// kill -9 of slot 0's holder: the restarted promd finds its old key, releases it, and lets
/// the hosts without a slot go first, although their records in slot 0 say they stand by for
/// slot 1 (they go for slot 0 only once they see it vacant).
#[test]
fn a_restarted_holder_lets_the_hosts_without_a_slot_take_its_slot_first() {
    let mut free = member("n3", Some(OTHER_HOST));
    free.eligible = false;
    free.why = Some(crate::core::Ineligibility::from_word("standby-elsewhere"));
    let mut h = started(
        leader("n1", 9),
        leader("n2", 4),
        std::slice::from_ref(&free),
    );
    assert!(
        store_commands(&h.out).contains(&(GroupId(S0), "Retire")),
        "{:?} {:?}",
        store_commands(&h.out),
        texts(&h.out)
    );
    h.store(S0, StoreEvent::Released);
    h.store(S0, StoreEvent::Leader(None));
    h.renew(S0);
    h.renew(S1);
    let out = h.take();
    assert!(
        campaigns(&out).is_empty(),
        "campaigned at once, before n3 could: {out:#?}"
    );
    // Past n3's grace period, and n3 has not come: this host takes it after all.
    let grace = h.agent.groups[&GroupId(S0)].machine.timing().grace();
    for _ in 0..3 {
        h.renew(S0);
        h.renew(S1);
        h.advance(grace / 2);
    }
    assert_eq!(campaigns(&h.take()), [GroupId(S0)]);
}

/// Demote on the holder of a slot that the hosts without a slot do not aim at (they stand
/// by for the weaker holder's): the hand-over goes to the best of them all the same.
#[test]
fn demote_hands_the_slot_to_a_host_that_stands_by_for_another() {
    let mut free = member("n3", Some(OTHER_HOST));
    free.eligible = false;
    free.why = Some(crate::core::Ineligibility::from_word("standby-elsewhere"));
    let mut h = started(None, leader("n2", 4), std::slice::from_ref(&free));
    h.win(S0, 7);
    h.job(S0, Job::StartActive, true);
    let mut me = member("n1", Some(THIS_HOST));
    me.role = Role::Active;
    me.term = Some(7);
    h.store(S0, StoreEvent::Members(vec![me, free]));
    h.take();
    let (_, out) = h.call(S0, Call::Demote);
    let asked: Vec<(GroupId, String)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Store(id, StoreCommand::RequestSwitchover(r)) => Some((*id, r.to.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(asked, [(GroupId(S0), "n3".to_string())], "{out:#?}");
    // The store shows the request: the holder hands over.
    h.store(
        S0,
        StoreEvent::Switchover(Some(SwitchoverRecord {
            v: 1,
            to: "n3".into(),
            from: "n1".into(),
        })),
    );
    assert!(jobs(&h.take()).contains(&(GroupId(S0), Job::StopActive)));
}

/// The health check is the host's: slot 0 runs it (slot 1 has none of its own), and its
/// result makes every slot's machine healthy or not.
#[test]
fn the_hosts_health_check_is_every_slots() {
    let checked = SCHED.replace(
        "actives = 2",
        "actives = 2\nhealth-command = [\"/bin/true\"]",
    );
    let mut h = H::new(&[&checked]);
    let cfgs: Vec<Option<Vec<String>>> = h
        .agent
        .groups
        .values()
        .map(|g| g.cfg.health_command.clone())
        .collect();
    assert_eq!(cfgs, [Some(vec!["/bin/true".to_string()]), None]);
    h.input(Input::Start);
    let failed = crate::health::HealthResult {
        ok: false,
        detail: "exit status 1".into(),
        duration: Duration::from_millis(5),
    };
    h.input(Input::Health(GroupId(S0), failed));
    assert!(!h.agent.groups[&GroupId(S1)].machine.healthy());
    // A reload that changes the check's interval does not make slot 1 healthy: it has no
    // check of its own to have dropped.
    let slower = checked.replace("lease = \"2s\"", "lease = \"2s\"\nhealth-interval = \"3s\"");
    let out = super::reload::reload(&mut h, &[&slower]);
    assert!(
        texts(&out)
            .iter()
            .any(|t| t.contains("changed in place [sched]")),
        "{out:#?}"
    );
    assert!(!h.agent.groups[&GroupId(S1)].machine.healthy());
}

/// `standbys` with one active host: the passive target runs on the best standbys only, and
/// the env file has no `PROMD_SLOT`.
#[test]
fn standbys_limit_the_passive_target_with_one_active_host_too() {
    let one = SCHED
        .replace("actives = 2", "standbys = 1")
        .replace("sched-active@.target", "sched-active.target");
    let mut better = member("n0", Some(OTHER_HOST));
    better.priority = 200;
    let mut h = H::new(&[&one]);
    h.input(Input::Start);
    h.walked();
    h.store(S0, StoreEvent::Up);
    h.renew(S0);
    h.store(S0, StoreEvent::Leader(leader("n2", 4)));
    h.store(S0, StoreEvent::Members(vec![better]));
    h.store(S0, StoreEvent::Switchover(None));
    h.store(S0, StoreEvent::Maintenance(None));
    h.job(S0, Job::StopActive, true);
    assert_eq!(h.role(S0), Some(Role::Passive));
    assert!(
        !jobs(&h.out).contains(&(GroupId(S0), Job::StartPassive)),
        "a spare started the passive target"
    );
    // n0 takes the key: this host is the best without it, a standby.
    let out = h.store(S0, StoreEvent::Leader(leader("n0", 5)));
    let env = job_orders(&out).into_iter().find_map(|(_, o)| {
        (o.job == Job::StartPassive)
            .then(|| o.env.clone())
            .flatten()
    });
    assert_eq!(env.map(|e| e.slot), Some(SlotLine::Absent));
}

/// A reload from two slots to three opens slot 2 only: slot 0, held here, keeps its units
/// and term; back to two, slot 2 is retired like a removed group and leaves the family once
/// it has closed.
#[test]
fn a_reload_grows_and_shrinks_the_slots_in_place() {
    let mut h = started(None, leader("n2", 4), &[]);
    h.win(S0, 7);
    h.job(S0, Job::StartActive, true);
    h.take();
    let three = SCHED.replace("actives = 2", "actives = 3");
    let out = super::reload::reload(&mut h, &[&three]);
    let opened: Vec<(GroupId, String)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Open(id, cfg) => Some((*id, cfg.name.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(opened, [(GroupId(2), "sched@2".to_string())], "{out:#?}");
    assert!(
        !jobs(&out)
            .iter()
            .any(|(id, j)| *id == GroupId(S0) && *j == Job::StopActive),
        "slot 0 handed over: {out:#?}"
    );
    assert_eq!(h.role(S0), Some(Role::Active));
    assert_eq!(h.agent.families["sched"].ids.len(), 3);

    let out = super::reload::reload(&mut h, &[SCHED]);
    assert!(
        texts(&out)
            .iter()
            .any(|t| t.starts_with("sched@2: slot 2 is beyond actives = 2")),
        "{:#?}",
        texts(&out)
    );
    assert_eq!(h.role(S0), Some(Role::Active));
    // Slot 2's machine never got further than its start-up: it exits once that is done.
    h.job(2, Job::StopActive, true);
    h.store(2, StoreEvent::Up);
    let out = h.take();
    let closed: Vec<&str> = out
        .iter()
        .filter_map(|o| match o {
            Output::Close { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(closed, ["sched@2"], "{out:#?}");
    assert_eq!(h.agent.families["sched"].ids.len(), 2);
}

/// A reload that grows the group by two slots opens both before either steps: a step of
/// one slot steps its siblings (the harness checks that no group's work precedes its Open).
#[test]
fn a_reload_that_adds_two_slots_opens_both_before_either_steps() {
    let mut h = started(None, leader("n2", 4), &[]);
    h.take();
    let four = SCHED.replace("actives = 2", "actives = 4");
    let out = super::reload::reload(&mut h, &[&four]);
    let opened: Vec<String> = out
        .iter()
        .filter_map(|o| match o {
            Output::Open(_, cfg) => Some(cfg.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(opened, ["sched@2", "sched@3"]);
    assert_eq!(h.agent.families["sched"].ids.len(), 4);
}

/// `STATUS=` has one clause for the group: the slot this host holds, with its role and term,
/// then every other slot's holder and term; a host without a slot lists them all, and says
/// when it is a spare. It reaches systemd as soon as a slot changes.
#[test]
fn status_names_the_slot_this_host_holds_and_every_other_slots_holder() {
    let mut h = started(leader("n2", 4), None, &[]);
    // Campaigning for slot 1 is not holding it yet.
    assert_eq!(
        h.status(),
        "sched: passive, slot 0 n2 (term 4), slot 1 vacant"
    );
    let out = h.win(S1, 2);
    assert!(
        notified(&out).contains(&&Notify::Status(
            "sched: promoting in slot 1 (term 2), slot 0 n2 (term 4)".into()
        )),
        "{:?}",
        notified(&out)
    );
    let out = h.job(S1, Job::StartActive, true);
    let line = "sched: active in slot 1 (term 2), slot 0 n2 (term 4)";
    assert_eq!(h.status(), line);
    assert!(
        notified(&out).contains(&&Notify::Status(line.into())),
        "{:?}",
        notified(&out)
    );
    // Slot 0 changes hands: only slot 0's group has an input, and the line follows.
    let out = h.store(S0, StoreEvent::Leader(leader("n3", 9)));
    let line = "sched: active in slot 1 (term 2), slot 0 n3 (term 9)";
    assert!(
        notified(&out).contains(&&Notify::Status(line.into())),
        "{:?}",
        notified(&out)
    );

    // Both slots held elsewhere, then slot 1's store session down.
    let mut h = started(leader("n2", 4), leader("n3", 6), &[]);
    h.job(S0, Job::StartPassive, true);
    assert_eq!(
        h.status(),
        "sched: passive, slot 0 n2 (term 4), slot 1 n3 (term 6)"
    );
    let (event, shown) = down("connection reset");
    let out = h.store(S1, event);
    let line = h.status();
    assert_eq!(
        line,
        format!("sched: passive, waiting for the store ({shown})")
    );
    assert!(notified(&out).contains(&&Notify::Status(line.clone())));

    // A spare says so: standbys = 1 and n0 ranks above this host.
    let (h, _) = spare_of_two();
    assert_eq!(
        h.status(),
        "sched: passive, slot 0 n2 (term 4), slot 1 n3 (term 6), spare"
    );
}

/// A start that fails in slot 1 leaves this host without a slot and slot 1's machine failed:
/// the group's clause says so, as a plain group's does (found by review).
#[test]
fn status_says_a_failure_in_a_slot_the_host_no_longer_holds() {
    let mut h = started(leader("n2", 4), None, &[]);
    h.win(S1, 2);
    h.job(S1, Job::StartActive, false);
    h.job(S1, Job::StopActive, true);
    h.store(S1, StoreEvent::Released);
    h.store(S1, StoreEvent::Leader(None));
    h.advance(Duration::from_secs(5));
    let line = h.status();
    assert!(line.starts_with("sched: failed"), "{line}");
    assert!(
        line.contains("ineligible until the cooldown ends"),
        "{line}"
    );
}

/// A reload removes the group while this host holds slot 1: slot 0 (passive) closes first,
/// and while slot 1 still hands over, the group's clause is slot 1's, never an empty line
/// (found by review).
#[test]
fn status_keeps_the_group_while_its_last_slots_close() {
    let mut h = started(leader("n2", 4), None, &[]);
    h.win(S1, 2);
    h.job(S1, Job::StartActive, true);
    h.take();
    let web = "[[group]]\nname = \"web\"\nactive-target = \"web-active.target\"\nlease = \"2s\"\n";
    super::reload::reload(&mut h, &[web]);
    h.job(S0, Job::StopActive, true);
    h.store(S0, StoreEvent::Released);
    let out = h.take();
    assert!(!h.agent.groups.contains_key(&GroupId(S0)), "slot 0 closed");
    assert!(
        h.agent.groups.contains_key(&GroupId(S1)),
        "slot 1 still leaving"
    );
    let line = h.status();
    assert!(
        line.starts_with("sched: demoting in slot 1 (term 2)"),
        "{line}"
    );
    assert!(
        notified(&out)
            .iter()
            .all(|n| !matches!(n, Notify::Status(s) if !s.contains("sched"))),
        "{:?}",
        notified(&out)
    );
}

/// A unit failure restarted in place in slot 1, then slot 1 lost to n3: the failure still
/// counts in its window, and the group's clause says it as a plain group's does (found by
/// review).
#[test]
fn status_keeps_the_failures_of_a_slot_the_host_lost() {
    let mut h = started(leader("n2", 4), None, &[]);
    h.win(S1, 2);
    h.job(S1, Job::StartActive, true);
    h.input(Input::Watch(
        GroupId(S1),
        crate::watch::WatchEvent::Failed {
            unit: "sched@1.service".into(),
            restarted: true,
        },
    ));
    h.store(S1, StoreEvent::Leader(leader("n3", 9)));
    h.job(S1, Job::StopActive, true);
    let line = h.status();
    assert!(line.contains("1 failure in the window"), "{line}");
}

/// A reload removes the group while this host holds slot 0; slot 1 (passive) closes at once.
/// The line keeps the group's form ("in slot 0"), not a plain group's "leader n1" that names
/// this host (found by review).
#[test]
fn status_keeps_the_slot_form_while_a_removed_group_hands_over() {
    let mut h = started(None, leader("n2", 4), &[]);
    h.win(S0, 7);
    h.job(S0, Job::StartActive, true);
    let web = "[[group]]\nname = \"web\"\nactive-target = \"web-active.target\"\nlease = \"2s\"\n";
    super::reload::reload(&mut h, &[web]);
    let line = h.status();
    assert!(
        line.starts_with("sched: demoting in slot 0 (term 7)"),
        "{line}"
    );
}
