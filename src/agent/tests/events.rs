//! Driver events and machine actions as the journal, systemd and the store see them.

use super::*;
use crate::logging;

#[test]
fn a_store_outage_is_journalled_once_per_reason() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    let (refused, refused_why) = down("connection refused");
    assert_eq!(
        texts(&h.store(0, refused.clone())),
        vec![format!("web: store unreachable: {refused_why}")]
    );
    assert!(texts(&h.store(0, refused)).is_empty());
    // A new reason is the store's, not the group's: said once, for every group.
    let (timeout, timeout_why) = down("timeout");
    assert_eq!(
        texts(&h.store(0, timeout)),
        vec![format!("store unreachable: {timeout_why}")]
    );
    let out = h.store(0, StoreEvent::Up);
    let r = records(&out);
    assert_eq!(
        r[0].text,
        format!("web: store reachable again (was: {timeout_why})")
    );
    assert_eq!(r[0].level, Level::Info);
    // Every record of a group carries its fields.
    assert_eq!(r[0].fields.group.as_deref(), Some("web"));
    assert_eq!(r[0].fields.role, Some(Role::Starting));
    assert_eq!(r[0].fields.term, Some(0));
    assert_eq!(r[0].fields.leader.as_deref(), Some(""));
}

/// Before: one outage of the connection 500 groups share wrote ~1,500 lines within a second
/// (each group, once per endpoint tried), while the cut host had to fence them all.
#[test]
fn an_outage_of_a_shared_store_is_journalled_once_per_group_and_once_per_new_reason() {
    let mut h = H::new(&[WEB, DB]);
    h.input(Input::Start);
    let mut lines = Vec::new();
    for why in [
        "connection refused",
        "timeout",
        "connection refused",
        "timeout",
    ] {
        for g in 0..2 {
            let out = h.store(g, down(why).0);
            lines.extend(texts(&out).into_iter().map(str::to_string));
        }
    }
    let (_, refused_why) = down("connection refused");
    let (_, timeout_why) = down("timeout");
    assert_eq!(
        lines,
        vec![
            format!("web: store unreachable: {refused_why}"),
            format!("db: store unreachable: {refused_why}"),
            format!("store unreachable: {timeout_why}"),
            format!("store unreachable: {refused_why}"),
            format!("store unreachable: {timeout_why}"),
        ]
    );
    // Each group says when it is back, and the next outage is told afresh.
    for g in 0..2 {
        assert_eq!(texts(&h.store(g, StoreEvent::Up)).len(), 1);
    }
    assert_eq!(
        texts(&h.store(1, down("timeout").0)),
        vec![format!("db: store unreachable: {timeout_why}")]
    );
}

#[test]
fn a_role_change_is_journalled_signalled_and_catalogued() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.passive(0, None);
    h.win(0, 7);
    let out = h.job(0, Job::StartActive, true);
    let changes: Vec<&Record> = records(&out)
        .into_iter()
        .filter(|r| r.message_id.is_some())
        .collect();
    assert_eq!(changes.len(), 1, "{out:#?}");
    let r = changes[0];
    assert_eq!(r.message_id, Some(logging::ROLE_CHANGED));
    assert_eq!(
        r.text,
        "web: promoting -> active (term 7): active target started"
    );
    assert_eq!(r.fields.role, Some(Role::Active));
    assert_eq!(r.fields.old_role, Some(Role::Promoting));
    assert_eq!(r.fields.reason.as_deref(), Some("active target started"));
    assert!(out.iter().any(|o| matches!(o,
        Output::RoleSignal { group, old: Role::Promoting, new: Role::Active, term: 7, .. }
            if group == "web")));
}

#[test]
fn a_fence_has_its_own_message_id() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.active(0, 7);
    h.take();
    // No renewal acknowledged for a whole lease: the node fences itself.
    let out = h.advance(Duration::from_secs(2));
    let fenced: Vec<&Record> = records(&out)
        .into_iter()
        .filter(|r| r.message_id == Some(logging::FENCED))
        .collect();
    assert_eq!(fenced.len(), 1, "{out:#?}");
    assert!(
        fenced[0]
            .text
            .starts_with("web: active -> demoting (term 7): lease not renewed")
    );
    assert!(jobs(&out).contains(&(GroupId(0), Job::StopActive)));
}

#[test]
fn the_env_file_carries_the_term_and_the_leader() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.passive(0, Some(("n2", 42)));
    let env = |out: &[Output]| {
        out.iter()
            .find_map(|o| match o {
                Output::Job(_, JobOrder { env, .. }) => env.clone(),
                _ => None,
            })
            .expect("a start with an env file")
    };
    let passive = h
        .out
        .iter()
        .rev()
        .find_map(|o| match o {
            Output::Job(_, o) if o.job == Job::StartPassive => o.env.clone(),
            _ => None,
        })
        .expect("the passive target started");
    let expected = EnvFile {
        role: Role::Passive,
        term: 42,
        leader: "n2".into(),
        slot: SlotLine::Absent,
    };
    assert_eq!(passive, expected);
    // n2's key goes; n1 wins it at term 43 and starts the active target with that term.
    h.store(0, StoreEvent::Leader(None));
    let out = h.win(0, 43);
    let expected = EnvFile {
        role: Role::Active,
        term: 43,
        leader: "n1".into(),
        slot: SlotLine::Absent,
    };
    assert_eq!(env(&out), expected);
}

#[test]
fn another_host_under_this_node_makes_promd_refuse_and_stop_every_group() {
    let mut h = H::new(&[WEB, DB]);
    h.input(Input::Start);
    h.active(0, 7);
    h.passive(1, Some(("n2", 3)));
    h.take();
    let theirs = Leader {
        node: "n1".into(),
        term: 9,
        host: Some(OTHER_HOST.into()),
    };
    let out = h.store(0, StoreEvent::Leader(Some(theirs)));
    let r = records(&out);
    assert_eq!(r[0].message_id, Some(logging::NODE_CONFLICT));
    assert_eq!(r[0].level, Level::Error);
    assert_eq!(r[0].fields.node.as_deref(), Some("n1"));
    assert_eq!(r[0].fields.group.as_deref(), Some("web"));
    let why = format!(
        "node n1 is in use by another host: the leader key was written by the promd on \
         machine {OTHER_HOST} (this host is {THIS_HOST}); each host needs its own `node` in \
         promd.toml"
    );
    assert_eq!(
        r[0].text,
        format!("refusing to run: {why}; stopping every group")
    );
    assert_eq!(h.agent.refused(), Some(why.as_str()));
    assert_eq!(notified(&out)[0], &Notify::Stopping);
    assert!(
        jobs(&out).contains(&(GroupId(0), Job::StopActive)),
        "web hands over"
    );
    assert_eq!(
        store_commands(&out),
        vec![(GroupId(1), "Shutdown")],
        "db has nothing to"
    );
    // The key is not taken for one of ours from an earlier run.
    assert_eq!(
        h.agent.views(h.now)[0].leader,
        format!("n1 (machine {OTHER_HOST})")
    );
    // Said once, however often the other host shows up.
    let mine = member("n1", Some(OTHER_HOST));
    let out = h.store(0, StoreEvent::Members(vec![mine]));
    assert!(records(&out).iter().all(|r| r.message_id.is_none()));
}

#[test]
fn a_member_record_of_this_node_from_another_host_is_a_conflict_too() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.passive(0, Some(("n2", 3)));
    let out = h.store(0, StoreEvent::Members(vec![member("n1", Some(OTHER_HOST))]));
    assert_eq!(records(&out)[0].message_id, Some(logging::NODE_CONFLICT));
    assert!(
        h.agent
            .refused()
            .is_some_and(|w| w.contains("this node's member record"))
    );
    // Records of this host, or of an older promd that wrote no host, prove nothing.
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.passive(0, Some(("n2", 3)));
    let ours = vec![member("n1", Some(THIS_HOST)), member("n1", None)];
    h.store(0, StoreEvent::Members(ours));
    assert_eq!(h.agent.refused(), None);
}

#[test]
fn a_failing_health_check_is_journalled_once_with_its_reason() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.passive(0, Some(("n2", 3)));
    h.take();
    let check = |ok: bool| HealthResult {
        ok,
        detail: if ok {
            String::new()
        } else {
            "exit status 3: broken".into()
        },
        duration: Duration::from_millis(20),
    };
    let out = h.input(Input::Health(GroupId(0), check(false)));
    assert!(texts(&out).contains(&"web: health check failed: exit status 3: broken"));
    let out = h.input(Input::Health(GroupId(0), check(false)));
    assert!(texts(&out).is_empty(), "{out:#?}");
    h.input(Input::Health(GroupId(0), check(true)));
    let out = h.input(Input::Health(GroupId(0), check(false)));
    assert!(texts(&out).contains(&"web: health check failed: exit status 3: broken"));
}

#[test]
fn a_start_that_left_watched_units_down_is_a_failed_start() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.passive(0, None);
    h.win(0, 7);
    h.take();
    let done = JobDone {
        job: Job::StartActive,
        ok: true,
        not_up: vec![("web.service".into(), "failed".into())],
    };
    let out = h.input(Input::Job(GroupId(0), done));
    assert!(
        texts(&out).contains(
            &"web: web.service is failed after the active target started: a failed start"
        )
    );
    // Never `active` with nothing running.
    assert_eq!(h.role(0), Some(Role::Promoting));
}

#[test]
fn a_unit_that_stops_on_its_own_counts_as_a_failure_on_the_active_node() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.active(0, 7);
    let stopped = WatchEvent::Stopped {
        unit: "web.service".into(),
    };
    let out = h.input(Input::Watch(GroupId(0), stopped));
    assert!(texts(&out).contains(
        &"web: web.service is not running, though nobody failed it: counted as a failure"
    ));
    assert_eq!(h.agent.views(h.now)[0].failures, 1);
}

#[test]
fn under_maintenance_a_unit_stopped_by_hand_is_left_and_started_again_when_it_ends() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.active(0, 7);
    h.store(0, StoreEvent::Maintenance(Some(maintenance(true))));
    let down = WatchEvent::SteadyUnits {
        down: vec!["web.service".into()],
    };
    h.input(Input::Watch(GroupId(0), down));
    let stopped = WatchEvent::Stopped {
        unit: "web.service".into(),
    };
    let out = h.input(Input::Watch(GroupId(0), stopped));
    assert_eq!(
        texts(&out),
        vec![
            "web: web.service is not running, though nobody failed it: left as it is while \
             maintenance mode is on"
        ]
    );
    // Past the restart backoff (1 s), the lease renewed.
    h.renew(0);
    let later = h.advance(Duration::from_millis(1100));
    assert!(
        !later.iter().any(|o| matches!(o, Output::Restart(..))),
        "nothing restarted under maintenance: {later:?}"
    );
    assert_eq!(h.role(0), Some(Role::Active));
    assert_eq!(h.agent.views(h.now)[0].failures, 0);
    // Maintenance off: what is down is started again, not counted.
    let out = h.store(0, StoreEvent::Maintenance(None));
    assert!(
        texts(&out).contains(&"web: maintenance mode off: starting web.service again, down since"),
        "{:?}",
        texts(&out)
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Restart(GroupId(0), u) if u == &["web.service"])),
        "{out:?}"
    );
    assert_eq!(h.agent.views(h.now)[0].failures, 0);
}

#[test]
fn an_unreadable_store_value_is_journalled_and_ignored() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.passive(0, Some(("n2", 3)));
    h.take();
    let (ev, why) = corrupt("/promd/web/members/n3", "expected value at line 1");
    let out = h.store(0, ev);
    assert_eq!(
        texts(&out),
        vec![format!(
            "web: ignoring unreadable store value /promd/web/members/n3: {why}"
        )]
    );
    assert!(store_commands(&out).is_empty() && jobs(&out).is_empty());
}

#[test]
fn maintenance_changes_are_journalled_with_who_set_them() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.passive(0, Some(("n2", 3)));
    let out = h.store(0, StoreEvent::Maintenance(Some(maintenance(true))));
    assert_eq!(texts(&out), vec!["web: maintenance mode on (set by n2)"]);
    assert!(texts(&h.store(0, StoreEvent::Maintenance(Some(maintenance(true))))).is_empty());
    let out = h.store(0, StoreEvent::Maintenance(None));
    assert_eq!(texts(&out), vec!["web: maintenance mode off"]);
}

#[test]
fn the_closure_is_said_when_it_changes_and_its_units_followed() {
    use crate::systemd::Reach;
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    let mut closure = Closure::default();
    closure.units.insert("web.service".into(), Reach::Pulled);
    closure.steady.insert("web.service".into());
    closure.missing.insert("gone.service".into());
    let out = h.input(Input::Closure(GroupId(0), closure.clone()));
    let said: Vec<&str> = texts(&out)
        .into_iter()
        .filter(|t| !t.starts_with("fence load"))
        .collect();
    assert_eq!(
        said,
        vec![
            "web: the role's units (bound to promd, stopped on demotion, killed by the fence): \
             web.service; not found, nothing to stop: gone.service"
        ]
    );
    let followed = followed_of(&out);
    let web = followed["web.service"];
    assert!(web.role && web.watched && web.steady && !web.passive);
    assert!(
        h.input(Input::Closure(GroupId(0), closure)).is_empty(),
        "unchanged"
    );
    // A stop covers the closure as last found.
    h.passive(0, None);
    h.win(0, 7);
    h.job(0, Job::StartActive, true);
    let out = h.input(Input::Signal(Signal::Terminate));
    let known = out.iter().find_map(|o| match o {
        Output::Job(
            _,
            JobOrder {
                job: Job::StopActive,
                known,
                ..
            },
        ) => Some(known.names()),
        _ => None,
    });
    assert_eq!(known, Some(vec!["web.service".to_string()]));
}

/// Group 0 active at term 7, then its health check fails: the outputs once the restart
/// backoff (1s by default) has passed.
fn active_then_sick(h: &mut H) -> Vec<Output> {
    h.input(Input::Start);
    h.walked();
    h.active(0, 7);
    h.take();
    let sick = HealthResult {
        ok: false,
        detail: "exit status 1".into(),
        duration: Duration::from_millis(30),
    };
    h.input(Input::Health(GroupId(0), sick));
    h.advance(Duration::from_secs(1))
}

#[test]
fn a_failed_health_check_on_the_active_node_restarts_the_watched_units() {
    let text = format!("node = \"n1\"\n{WEB}watch = [\"web.service\", \"web-db.service\"]\n");
    let mut h = H::with(config_of(&text));
    let out = active_then_sick(&mut h);
    let restarted = out.iter().find_map(|o| match o {
        Output::Restart(GroupId(0), units) => Some(units.clone()),
        _ => None,
    });
    assert_eq!(
        restarted,
        Some(vec![
            "web.service".to_string(),
            "web-db.service".to_string()
        ]),
        "{out:#?}"
    );
    assert!(texts(&out).contains(&"web: restarting web.service web-db.service in place"));
}

/// What group 0 follows, as `out` says it.
fn followed_of(out: &[Output]) -> crate::watch::Followed {
    out.iter()
        .find_map(|o| match o {
            Output::Follow(GroupId(0), f) => Some(f.clone()),
            _ => None,
        })
        .expect("followed")
}

/// A closure of `web.service` and the address unit of 192.0.2.10, both steady.
fn closure_with_address() -> Closure {
    use crate::systemd::Reach;
    let mut closure = Closure::default();
    for unit in ["web.service", "promd-address-web.192.0.2.10.service"] {
        closure.units.insert(unit.into(), Reach::Pulled);
        closure.steady.insert(unit.into());
    }
    closure
}

#[test]
fn a_failed_health_check_restarts_the_services_and_leaves_the_address_up() {
    let text = format!("node = \"n1\"\n{WEB}addresses = [\"192.0.2.10/24 dev eth0\"]\n");
    let mut h = H::with(config_of(&text));
    h.input(Input::Start);
    h.input(Input::Closure(GroupId(0), closure_with_address()));
    let out = active_then_sick(&mut h);
    let restarted = out.iter().find_map(|o| match o {
        Output::Restart(GroupId(0), units) => Some(units.clone()),
        _ => None,
    });
    assert_eq!(restarted, Some(vec!["web.service".to_string()]), "{out:#?}");
}

#[test]
fn the_view_says_which_addresses_this_host_holds() {
    let text = format!(
        "node = \"n1\"\n{WEB}addresses = [\"192.0.2.10/24 dev eth0\", \"2001:db8::10/64 dev eth0\"]\n"
    );
    let mut h = H::with(config_of(&text));
    h.input(Input::Start);
    h.passive(0, Some(("n2", 3)));
    let both = |held: bool| {
        vec![
            ("192.0.2.10/24 dev eth0".to_string(), held),
            ("2001:db8::10/64 dev eth0".to_string(), held),
        ]
    };
    assert_eq!(h.agent.views(h.now)[0].addresses, both(false));
    h.active(0, 7);
    assert_eq!(h.agent.views(h.now)[0].addresses, both(true));
    // Its unit down (a flush, a link without carrier): not held, though the role is here.
    let down = WatchEvent::SteadyUnits {
        down: vec!["promd-address-web.2001:db8::10.service".into()],
    };
    h.input(Input::Watch(GroupId(0), down));
    assert_eq!(
        h.agent.views(h.now)[0].addresses,
        vec![
            ("192.0.2.10/24 dev eth0".to_string(), true),
            ("2001:db8::10/64 dev eth0".to_string(), false),
        ]
    );
}

#[test]
fn an_address_unit_is_watched_also_beside_a_configured_watch() {
    let text = format!(
        "node = \"n1\"\n{WEB}watch = [\"web.service\"]\naddresses = [\"192.0.2.10/24 dev eth0\"]\n"
    );
    let mut h = H::with(config_of(&text));
    h.input(Input::Start);
    let out = h.input(Input::Closure(GroupId(0), closure_with_address()));
    let followed = followed_of(&out);
    let address = followed["promd-address-web.192.0.2.10.service"];
    assert!(
        address.role && address.watched && address.steady,
        "{followed:#?}"
    );
    // Its failure is a failure of the role: restarted in place, by name.
    h.active(0, 7);
    h.take();
    h.input(Input::Watch(
        GroupId(0),
        crate::watch::WatchEvent::Failed {
            unit: "promd-address-web.192.0.2.10.service".into(),
            restarted: false,
        },
    ));
    let out = h.advance(Duration::from_secs(1));
    let restarted = out.iter().find_map(|o| match o {
        Output::Restart(GroupId(0), units) => Some(units.clone()),
        _ => None,
    });
    assert_eq!(
        restarted,
        Some(vec!["promd-address-web.192.0.2.10.service".to_string()]),
        "{out:#?}"
    );
}

/// A stop must not be overtaken by work it supersedes: the restart in place still in flight
/// and the start are cancelled right before it.
#[test]
fn a_stop_cancels_the_restarts_and_the_start_in_flight_before_it_runs() {
    let mut h = H::new(&[WEB]);
    let out = active_then_sick(&mut h);
    assert!(
        out.iter().any(|o| matches!(o, Output::Restart(..))),
        "{out:#?}"
    );
    assert!(
        !out.iter().any(|o| matches!(o, Output::Cancel(..))),
        "a restart cancels nothing: {out:#?}"
    );
    let out = h.input(Input::Signal(Signal::Terminate));
    let cancel = out.iter().position(
        |o| matches!(o, Output::Cancel(GroupId(0), c) if c.start && c.restarts && !c.kills),
    );
    let stop = out
        .iter()
        .position(|o| matches!(o, Output::Job(GroupId(0), j) if j.job == Job::StopActive));
    assert!(
        matches!((cancel, stop), (Some(c), Some(s)) if c + 1 == s),
        "the cancel comes right before the stop: {out:#?}"
    );
}

#[test]
fn machine_actions_become_store_records_of_this_host() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.store(0, StoreEvent::Up);
    h.renew(0);
    h.store(0, StoreEvent::Leader(None));
    h.store(0, StoreEvent::Members(Vec::new()));
    h.store(0, StoreEvent::Switchover(None));
    h.store(0, StoreEvent::Maintenance(None));
    h.job(0, Job::StopActive, true);
    let out = h.job(0, Job::StartPassive, true);
    let campaign = out.iter().find_map(|o| match o {
        Output::Store(_, StoreCommand::Campaign { record, .. }) => Some(record.clone()),
        _ => None,
    });
    let campaign = campaign.expect("the best candidate campaigns for a vacant key");
    assert_eq!(
        (
            campaign.node.as_str(),
            campaign.priority,
            campaign.host.as_deref()
        ),
        ("n1", 100, Some(THIS_HOST))
    );
    let published = h.out.iter().rev().find_map(|o| match o {
        Output::Store(_, StoreCommand::Publish(rec)) => Some(rec.clone()),
        _ => None,
    });
    assert_eq!(published.and_then(|r| r.host), Some(THIS_HOST.to_string()));
}

#[test]
fn late_events_of_a_closed_group_reach_nobody() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.passive(0, Some(("n2", 3)));
    let file = NewConfig {
        config: config(&[]),
        text: "node = \"n1\"\n".into(),
        closures: Default::default(),
    };
    h.input(Input::Signal(Signal::Reload(Ok(file))));
    assert!(h.agent.groups.is_empty(), "web exited and closed");
    h.take();
    for input in [
        Input::Store(GroupId(0), down("gone").0),
        Input::Job(GroupId(0), JobDone::failed(Job::StopActive)),
        Input::Watch(GroupId(0), WatchEvent::PassiveUnits { ok: false }),
        Input::Closure(GroupId(0), Closure::default()),
    ] {
        let out = h.input(input);
        assert!(out.is_empty(), "{out:#?}");
    }
}

/// A group starts from the term kept on disk by earlier runs: its campaign asks the store for
/// a higher one, and the term the units are handed is kept on disk before the start.
#[test]
fn the_kept_term_is_the_floor_and_a_handed_out_term_is_kept_before_the_start() {
    let floors = std::collections::BTreeMap::from([("web".to_string(), 40)]);
    let mut h = H::with_floors(config(&[WEB]), floors);
    h.input(Input::Start);
    h.passive(0, None);
    let floor = h.out.iter().find_map(|o| match o {
        Output::Store(_, StoreCommand::Campaign { floor, .. }) => Some(*floor),
        _ => None,
    });
    assert_eq!(floor, Some(40), "{:#?}", h.out);
    assert!(
        !h.out.iter().any(|o| matches!(o, Output::KeepTerm { .. })),
        "nothing above the kept term yet"
    );
    let out = h.win(0, 41);
    let order: Vec<&str> = out
        .iter()
        .filter_map(|o| match o {
            Output::KeepTerm { group, term } if group == "web" && *term == 41 => Some("keep 41"),
            Output::Job(_, order) if order.job == Job::StartActive => Some("start"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["keep 41", "start"], "{out:#?}");
}

/// The start of the active target says whether its closure was walked: an empty closure
/// that no walk found yet must be found and bound before the start, one found empty need not.
#[test]
fn a_start_says_whether_its_empty_closure_was_walked() {
    fn start_walked(out: &[Output]) -> Option<bool> {
        out.iter().find_map(|o| match o {
            Output::Job(
                _,
                JobOrder {
                    job: Job::StartActive,
                    walked,
                    ..
                },
            ) => Some(*walked),
            _ => None,
        })
    }
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.passive(0, None);
    assert_eq!(start_walked(&h.win(0, 7)), Some(false));

    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.input(Input::Closure(
        GroupId(0),
        crate::systemd::Closure::default(),
    ));
    h.passive(0, None);
    assert_eq!(start_walked(&h.win(0, 7)), Some(true));
}

/// The env files the outputs ask for, by group: (role, term, leader).
fn envs(out: &[Output]) -> Vec<(GroupId, Role, u64, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Env(id, e) => Some((*id, e.role, e.term, e.leader.clone())),
            Output::Job(id, order) => order
                .env
                .as_ref()
                .map(|e| (*id, e.role, e.term, e.leader.clone())),
            _ => None,
        })
        .collect()
}

fn leader(node: &str, term: u64) -> StoreEvent {
    StoreEvent::Leader(Some(Leader {
        node: node.into(),
        term,
        host: None,
    }))
}

#[test]
fn a_passive_host_rewrites_its_env_file_when_the_leader_or_term_changes_and_only_then() {
    let mut h = H::new(&[WEB, DB]);
    h.input(Input::Start);
    h.passive(0, Some(("n2", 3)));
    // db has no passive target: its env file is written all the same.
    h.passive(1, Some(("n2", 4)));
    let out = h.take();
    assert_eq!(
        envs(&out),
        vec![
            (GroupId(0), Role::Passive, 3, "n2".into()),
            (GroupId(1), Role::Passive, 4, "n2".into()),
        ]
    );
    // A failover: the key goes, then n3 wins it at a higher term.
    let out = h.store(0, StoreEvent::Leader(None));
    assert_eq!(
        envs(&out),
        vec![(GroupId(0), Role::Passive, 3, String::new())]
    );
    let out = h.store(0, leader("n3", 7));
    assert_eq!(
        envs(&out),
        vec![(GroupId(0), Role::Passive, 7, "n3".into())]
    );
    // Store events that change neither leader nor term write nothing.
    let mut quiet = h.renew(0);
    quiet.extend(h.store(0, leader("n3", 7)));
    quiet.extend(h.store(0, StoreEvent::Members(vec![member("n3", None)])));
    quiet.extend(h.advance(Duration::from_millis(500)));
    assert_eq!(envs(&quiet), vec![]);
    // The env file follows the write: after the step's other outputs.
    let out = h.store(0, leader("n2", 9));
    assert!(matches!(
        out.iter()
            .rev()
            .find(|o| !matches!(o, Output::Log(_) | Output::Notify(_))),
        Some(Output::Env(..))
    ));
}

#[test]
fn the_active_host_keeps_the_env_file_its_units_started_with() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.active(0, 5);
    let out = h.take();
    assert_eq!(
        envs(&out).last(),
        Some(&(GroupId(0), Role::Active, 5, "n1".into())),
        "written before the start: {:?}",
        envs(&out)
    );
    h.renew(0);
    h.store(0, StoreEvent::Members(vec![member("n2", None)]));
    assert_eq!(envs(&h.take()), vec![]);
}

/// Store events of several groups that arrived together are one input: each group's machine
/// takes its own event (here both lose the shared lease and stop their units), and what
/// follows an input (`STATUS=`) is done once for all of them.
#[test]
fn store_events_of_several_groups_are_handled_as_one_input() {
    let mut h = H::new(&[WEB, DB]);
    h.input(Input::Start);
    h.active(0, 3);
    h.active(1, 5);
    let out = h.input(Input::Stores(vec![
        (GroupId(0), StoreEvent::LeaseLost),
        (GroupId(1), StoreEvent::LeaseLost),
    ]));
    let stops: Vec<GroupId> = out
        .iter()
        .filter_map(|o| match o {
            Output::Job(id, order) if order.job == Job::StopActive => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(stops, [GroupId(0), GroupId(1)], "{out:#?}");
    let statuses = out
        .iter()
        .filter(|o| matches!(o, Output::Notify(Notify::Status(_))))
        .count();
    assert_eq!(statuses, 1, "{out:#?}");
    assert_ne!(h.role(0), Some(Role::Active));
    assert_ne!(h.role(1), Some(Role::Active));
}

/// A stop the fence had systemd do, confirmed past the group's hang deadline, is said as a
/// warning naming the setting to change (the host stops more at once than the lease leaves
/// PID 1 time for: docs/safety.md, "What is assumed about the host"); one confirmed in time
/// says nothing. A 2 s lease renewed at 0: fence at 1.3 s, hang deadline at 1.6 s once PID 1
/// took the kill.
#[test]
fn a_stop_confirmed_past_the_hang_deadline_is_said_with_the_lease_to_change() {
    let said_after = |confirmed: Duration| {
        let mut h = H::new(&[WEB]);
        h.input(Input::Start);
        h.active(0, 7);
        h.take();
        let fence = h.advance(Duration::from_millis(1400));
        assert!(jobs(&fence).contains(&(GroupId(0), Job::StopActive)));
        // With the closure unknown, the kill goes out with the stop: PID 1 takes it at once.
        h.kills_sent(&fence);
        h.advance(confirmed - Duration::from_millis(1400));
        let out = h.job(0, Job::StopActive, true);
        texts(&out)
            .into_iter()
            .filter(|t| t.contains("past the hang deadline"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        said_after(Duration::from_millis(1550)),
        Vec::<String>::new()
    );
    assert_eq!(
        said_after(Duration::from_millis(1700)),
        vec![
            "web: the role's units were confirmed stopped 100 ms past the hang deadline (the \
             lease can lapse 400 ms after it): systemd took longer to stop them than the lease \
             leaves; make `lease` longer for what this host stops at once (promd.toml(5), lease)"
                .to_string()
        ]
    );
}

/// A closure of `n` services named `PREFIX-i.service` under a target of its own, each with
/// one stop command (12 ms of fence load).
fn services(prefix: &str, n: usize) -> Closure {
    use crate::systemd::Reach;
    let mut closure = Closure::default();
    closure
        .units
        .insert(format!("{prefix}-extra.target"), Reach::Pulled);
    for i in 0..n {
        let unit = format!("{prefix}-{i}.service");
        closure.stop_commands.insert(unit.clone(), 1);
        closure.units.insert(unit, Reach::Pulled);
    }
    closure
}

#[test]
fn the_units_of_every_closure_begin_every_groups_fence_earlier() {
    // Two groups at 4 s, whose own margin is 1 s (the kill 500 ms before s + L); a load
    // moves the kill earlier by the load, and the fence once it would come less than 100 ms
    // before the kill, at most to 1.866 s before s + L (a silent etcd member's renewal must
    // still come in time).
    let four = |g: &str| g.replace("lease = \"2s\"", "lease = \"4s\"");
    let mut h = H::with(config(&[&four(WEB), &four(DB)]));
    h.input(Input::Start);
    let margin = |h: &H, id: u64| h.agent.groups[&GroupId(id)].machine.timing().margin();
    let fence_load = |h: &H, id: u64| h.agent.groups[&GroupId(id)].machine.timing().fence_load;
    let own = Duration::from_secs(1);
    let most = Duration::from_millis(1866);
    // Until every closure is known, every fence begins as early as a load may make it.
    h.active(0, 7);
    assert_eq!(margin(&h, 0), most);
    // 10 services (120 ms, 200 ms in steps); db's closure is not known yet.
    let out = h.input(Input::Closure(GroupId(0), services("web", 10)));
    assert_eq!(margin(&h, 0), most);
    // Known, and empty: 200 ms of load, which the lease's own drain time holds: web's fence
    // begins where its lease alone puts it.
    h.input(Input::Closure(GroupId(1), Closure::default()));
    assert!(!texts(&out).iter().any(|t| t.contains("too short")));
    assert_eq!(margin(&h, 0), own);
    assert_eq!(margin(&h, 1), own);
    // 30 of db's own and web's 10, each counted once however many closures name it: 480 ms,
    // 500 ms in steps. Both groups fence 100 ms sooner, web's too.
    let mut db = services("db", 30);
    db.units
        .insert("web-3.service".into(), crate::systemd::Reach::Pulled);
    let out = h.input(Input::Closure(GroupId(1), db));
    assert_eq!(fence_load(&h, 0), Duration::from_millis(500));
    assert_eq!(fence_load(&h, 1), Duration::from_millis(500));
    assert_eq!(margin(&h, 0), Duration::from_millis(1100));
    assert_eq!(margin(&h, 1), Duration::from_millis(1100));
    assert!(!texts(&out).iter().any(|t| t.contains("too short")));
    assert!(
        texts(&out).contains(
            &"fence load: 40 units with processes in the roles of all groups, 40 stop \
              commands among them, about 500ms for PID 1 to stop at once; each fence kills \
              early enough for it, as far as its lease allows"
        ),
        "{:?}",
        texts(&out)
    );
    // 41 units: 500 ms, the same step. Nothing moves, but the line says the new count.
    let out = h.input(Input::Closure(GroupId(1), services("db", 31)));
    assert_eq!(margin(&h, 0), Duration::from_millis(1100));
    assert!(
        texts(&out)
            .iter()
            .any(|t| t.starts_with("fence load: 41 units")),
        "{:?}",
        texts(&out)
    );
    // 200 units: 2.4 s, more than the 1.266 s the lease allows between the kill and the
    // hang deadline. Said once, with the lease that would do.
    let out = h.input(Input::Closure(GroupId(1), services("db", 190)));
    assert_eq!(margin(&h, 1), most, "at most what the lease allows");
    let warned: Vec<&str> = texts(&out)
        .into_iter()
        .filter(|t| t.contains("too short"))
        .collect();
    assert_eq!(
        warned,
        vec![
            "lease 4s is too short for the 200 units this host may have to stop at once: \
             PID 1 may need about 2s 400ms to stop them, and the fence's kill leaves it 1s 266ms; \
             make lease at least 6s (docs/safety.md, \"What is assumed about the host\")"
        ]
    );
    // Another unit in place of one: the same load, nothing said again.
    let mut other = services("db", 189);
    other
        .units
        .insert("db-other.service".into(), crate::systemd::Reach::Pulled);
    let out = h.input(Input::Closure(GroupId(1), other));
    assert!(!texts(&out).iter().any(|t| t.contains("too short")), "once");
    // Fewer units again: the fence begins later again.
    h.input(Input::Closure(GroupId(1), services("db", 0)));
    assert_eq!(fence_load(&h, 0), Duration::from_millis(200));
    assert_eq!(margin(&h, 0), own);
}

#[test]
fn a_unit_in_the_roles_of_two_groups_is_said_as_an_error() {
    let mut h = H::new(&[WEB, DB]);
    h.input(Input::Start);
    let mut web = services("web", 2);
    web.units
        .insert("cache.service".into(), crate::systemd::Reach::Pulled);
    h.input(Input::Closure(GroupId(0), web));
    // db pulls in web's cache too, and a target web has: only the service counts.
    let mut db = services("db", 1);
    for unit in ["cache.service", "web-extra.target"] {
        db.units.insert(unit.into(), crate::systemd::Reach::Pulled);
    }
    let out = h.input(Input::Closure(GroupId(1), db.clone()));
    let errors: Vec<&str> = records(&out)
        .into_iter()
        .filter(|r| r.level == Level::Error)
        .map(|r| r.text.as_str())
        .collect();
    assert_eq!(
        errors,
        vec![
            "db: cache.service also in the role of group web: each group elects its own host, \
             so it may run on two hosts at once; give each unit to one group's active target"
        ]
    );
    // Said when the closure changes, not at every walk.
    assert!(h.input(Input::Closure(GroupId(1), db)).is_empty());
    // Given to one group only: nothing to say.
    let out = h.input(Input::Closure(GroupId(1), services("db", 1)));
    assert!(!records(&out).iter().any(|r| r.level == Level::Error));
}

/// A load that the lease's own margin holds moves no fence, but it moves the kill: every
/// machine gets it (a reviewer found one grown from 100 to 900 ms at 6 s given to none, their
/// kills left 800 ms late).
#[test]
fn a_load_that_moves_only_the_kill_reaches_every_machine() {
    let six = |g: &str| g.replace("lease = \"2s\"", "lease = \"6s\"");
    let mut h = H::with(config(&[&six(WEB), &six(DB)]));
    h.input(Input::Start);
    h.active(0, 7);
    let timing = |h: &H, id: u64| h.agent.groups[&GroupId(id)].machine.timing();
    h.input(Input::Closure(GroupId(0), services("web", 8)));
    h.input(Input::Closure(GroupId(1), services("db", 0)));
    assert_eq!(timing(&h, 0).fence_load, Duration::from_millis(100));
    let own = timing(&h, 0).margin();
    assert_eq!(own, Duration::from_millis(1500));
    assert_eq!(timing(&h, 0).kill_margin(), Duration::from_millis(600));
    // 75 units: 900 ms. The fence stays where the lease puts it; the kill comes 1.4 s before
    // s + L, on both groups.
    h.input(Input::Closure(GroupId(1), services("db", 67)));
    for id in [0, 1] {
        let t = timing(&h, id);
        assert_eq!(t.fence_load, Duration::from_millis(900), "group {id}");
        assert_eq!(t.margin(), own, "group {id}");
        assert_eq!(t.kill_margin(), Duration::from_millis(1400), "group {id}");
    }
}

/// A unit added to an active role by a drop-in and `systemctl daemon-reload`: the runtime
/// walks every group again and hands the closures over in one input. The units it adds
/// count at once: every group's fence begins earlier, and the journal says the new count.
#[test]
fn a_walk_after_a_reload_that_adds_units_raises_every_groups_margin_and_says_the_count() {
    let four = |g: &str| g.replace("lease = \"2s\"", "lease = \"4s\"");
    let mut h = H::with(config(&[&four(WEB), &four(DB)]));
    h.input(Input::Start);
    let margin = |h: &H, id: u64| h.agent.groups[&GroupId(id)].machine.timing().margin();
    h.active(0, 7);
    h.input(Input::Closure(GroupId(0), services("web", 10)));
    h.input(Input::Closure(GroupId(1), services("db", 0)));
    // 10 units, 200 ms in steps: the lease's own margin holds them.
    assert_eq!(margin(&h, 0), Duration::from_secs(1), "the lease's own");
    assert_eq!(margin(&h, 1), Duration::from_secs(1));
    // 10 services more in web's role, 20 in db's: 40 units, 480 ms, 500 ms in steps.
    let out = h.input(Input::Closures(vec![
        (GroupId(0), services("web", 20)),
        (GroupId(1), services("db", 20)),
    ]));
    assert_eq!(margin(&h, 0), Duration::from_millis(1100));
    assert_eq!(margin(&h, 1), Duration::from_millis(1100));
    let said = texts(&out);
    let loads: Vec<&&str> = said
        .iter()
        .filter(|t| t.starts_with("fence load"))
        .collect();
    assert_eq!(
        loads,
        [
            &"fence load: 40 units with processes in the roles of all groups, 40 stop \
            commands among them, about 500ms for PID 1 to stop at once; each fence kills early \
            enough for it, as far as its lease allows"
        ],
        "{said:?}"
    );
    // Each group's new units said, and followed.
    for (group, unit) in [("web", "web-19.service"), ("db", "db-19.service")] {
        assert!(
            said.iter()
                .any(|t| t.starts_with(&format!("{group}: the role's units")) && t.contains(unit)),
            "{said:?}"
        );
    }
    let followed: Vec<GroupId> = out
        .iter()
        .filter_map(|o| match o {
            Output::Follow(id, f) if f.len() > 15 => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(followed, [GroupId(0), GroupId(1)]);
    // A walk that finds nothing new says nothing.
    let out = h.input(Input::Closures(vec![
        (GroupId(0), services("web", 20)),
        (GroupId(1), services("db", 20)),
    ]));
    assert!(out.iter().all(|o| !matches!(o, Output::Log(_))), "{out:#?}");
}

/// `n` groups `g0`… with their own active targets and this lease, started.
fn started_groups(n: u64, lease: &str) -> H {
    let groups: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "\n[[group]]\nname = \"g{i}\"\nactive-target = \"g{i}-active.target\"\n\
                 lease = \"{lease}\"\n"
            )
        })
        .collect();
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    let mut h = H::with(config(&groups));
    h.input(Input::Start);
    h
}

/// The walk after a reload covers every group: one input for all of them journals the
/// fence load once, not once per group, and a unit two groups share is said once for each.
#[test]
fn one_walk_of_many_groups_says_the_fence_load_once() {
    const GROUPS: u64 = 40;
    let mut h = started_groups(GROUPS, "4s");
    let walk = |per_group: usize| -> Vec<(GroupId, Closure)> {
        (0..GROUPS)
            .map(|i| (GroupId(i), services(&format!("g{i}"), per_group)))
            .collect()
    };
    let loads = |out: &[Output]| -> Vec<String> {
        texts(out)
            .into_iter()
            .filter(|t| t.starts_with("fence load"))
            .map(str::to_string)
            .collect()
    };
    // The first closures of all: known from this one input on.
    let out = h.input(Input::Closures(walk(1)));
    assert_eq!(loads(&out).len(), 1, "{:?}", loads(&out));
    assert!(loads(&out)[0].starts_with("fence load: 40 units"));
    // Two services more in every role, and one that g3 and g7 both pull in, whose two stop
    // commands only g3's walk saw (it changed between the walks): counted once, with two.
    let mut grown = walk(3);
    for (id, closure) in &mut grown {
        if [GroupId(3), GroupId(7)].contains(id) {
            closure
                .units
                .insert("cache.service".into(), crate::systemd::Reach::Pulled);
        }
        if *id == GroupId(3) {
            closure.stop_commands.insert("cache.service".into(), 2);
        }
    }
    let out = h.input(Input::Closures(grown));
    assert_eq!(loads(&out).len(), 1, "{:?}", loads(&out));
    assert!(
        loads(&out)[0].starts_with(
            "fence load: 121 units with processes in the roles of all groups, 122 stop commands \
             among them, about 1s 500ms"
        ),
        "{:?}",
        loads(&out)
    );
    let errors: Vec<&str> = records(&out)
        .into_iter()
        .filter(|r| r.level == Level::Error)
        .map(|r| r.text.as_str())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("g3: cache.service also in the role of group g7"));
    assert!(errors[1].starts_with("g7: cache.service also in the role of group g3"));
    // Every margin moved with it: 121 units, about 1 s.
    for i in 0..GROUPS {
        let t = h.agent.groups[&GroupId(i)].machine.timing();
        assert_eq!(
            t.fence_load,
            crate::core::Timing::fence_load_for(0, 121, 122),
            "g{i}"
        );
    }
}

/// Groups whose roles run no process still cost their stop's confirmation: past the first
/// 50, 2 ms each, said in the fence load line and in the short-lease warning; a group with a
/// service is counted by its units instead.
#[test]
fn groups_without_processes_count_past_the_first_fifty() {
    const GROUPS: u64 = 600;
    let mut h = started_groups(GROUPS, "2s");
    // Every role but g0's is its target alone; g0 runs one service.
    let walk: Vec<(GroupId, Closure)> = (0..GROUPS)
        .map(|i| (GroupId(i), services(&format!("g{i}"), usize::from(i == 0))))
        .collect();
    let out = h.input(Input::Closures(walk));
    // 599 groups without processes: 1,198 ms less the free 100, and g0's service (12 ms):
    // 1.11 s, rounded up to 1.2 s.
    let load = Duration::from_millis(1200);
    assert_eq!(crate::core::Timing::fence_load_for(599, 1, 1), load);
    assert_eq!(
        h.agent.groups[&GroupId(5)].machine.timing().fence_load,
        load
    );
    let said = texts(&out);
    assert!(
        said.contains(
            &"fence load: 1 unit with processes in the roles of all groups, 1 stop command \
              among them, about 1s 200ms for PID 1 to stop at once, and for promd to confirm \
              the stops of the 599 groups whose roles run no process; each fence kills early \
              enough for it, as far as its lease allows"
        ),
        "{said:?}"
    );
    assert!(
        said.iter().any(|t| t.starts_with(
            "lease 2s is too short for the 1 unit and 599 groups without processes this host \
             may have to stop at once"
        ) && t.contains("make lease at least 4s")),
        "{said:?}"
    );

    // No group runs a process: only the groups are named.
    let mut h = started_groups(GROUPS, "2s");
    let walk: Vec<(GroupId, Closure)> = (0..GROUPS)
        .map(|i| (GroupId(i), services(&format!("g{i}"), 0)))
        .collect();
    let out = h.input(Input::Closures(walk));
    let said = texts(&out);
    assert!(
        said.iter().any(|t| t.starts_with(
            "lease 2s is too short for the 600 groups without processes this host may have to \
             stop at once"
        )),
        "{said:?}"
    );
}
