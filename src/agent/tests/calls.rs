//! D-Bus calls: which call gets which answer, and when (each `CallError` is the D-Bus error
//! `org.promd1.Error.<variant>`; see `dbus::tests::call_errors_keep_their_dbus_names`).

use super::*;

/// `web` passive under n2's key, with n2 also a member.
fn passive_under_n2() -> H {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.passive(0, Some(("n2", 42)));
    h.store(0, StoreEvent::Members(vec![member("n2", None)]));
    h.take();
    h
}

#[test]
fn promote_is_answered_once_this_node_is_active() {
    let mut h = passive_under_n2();
    let (c, out) = h.call(0, Call::Promote);
    assert!(replies(&out).is_empty(), "not yet");
    assert_eq!(
        store_commands(&out),
        vec![(GroupId(0), "RequestSwitchover")]
    );
    assert!(texts(&out).contains(&"web: promote requested"));
    assert!(texts(&out).contains(&"web: asking the active node to hand over to n1"));
    // n2 hands over: its key goes, n1 wins it and starts the active target.
    h.store(0, StoreEvent::Leader(None));
    h.win(0, 43);
    assert!(replies(&h.take()).is_empty());
    let out = h.job(0, Job::StartActive, true);
    assert_eq!(replies(&out), vec![(c, Ok(()))]);
}

#[test]
fn promote_is_refused_with_the_reason_this_node_is_not_eligible() {
    let text = format!("node = \"n1\"\n{WEB}members = [\"n2\", \"n3\"]\n");
    let mut h = H::with(config_of(&text));
    h.input(Input::Start);
    h.passive(0, Some(("n2", 42)));
    let (c, out) = h.call(0, Call::Promote);
    assert_eq!(
        replies(&out),
        vec![(
            c,
            Err(CallError::NotEligible(
                "this node is not in the group's members".into()
            ))
        )]
    );
    assert!(store_commands(&out).is_empty(), "nothing changed");
}

#[test]
fn promote_that_fails_while_taking_over_is_not_eligible() {
    let mut h = passive_under_n2();
    let (c, _) = h.call(0, Call::Promote);
    h.store(0, StoreEvent::Leader(None));
    h.win(0, 43);
    // The start of the active target fails: the node demotes, hands the key back, and is
    // `failed` for its cooldown; the call is answered then.
    h.take();
    h.job(0, Job::StartActive, false);
    assert!(replies(&h.out).is_empty(), "demoting: not answered yet");
    h.job(0, Job::StopActive, true);
    h.job(0, Job::StartPassive, true);
    h.store(0, StoreEvent::Released);
    assert_eq!(h.role(0), Some(Role::Failed));
    assert_eq!(
        replies(&h.take()),
        vec![(
            c,
            Err(CallError::NotEligible(
                "this host failed while taking over".into()
            ))
        )]
    );
}

#[test]
fn calls_in_maintenance_mode_are_refused() {
    let mut h = passive_under_n2();
    h.store(0, StoreEvent::Maintenance(Some(maintenance(true))));
    let (c, out) = h.call(0, Call::Promote);
    assert_eq!(
        replies(&out),
        vec![(
            c,
            Err(CallError::Maintenance("maintenance mode is on".into()))
        )]
    );
}

#[test]
fn a_pending_promote_fails_when_maintenance_goes_on() {
    let mut h = passive_under_n2();
    let (c, _) = h.call(0, Call::Promote);
    let out = h.store(0, StoreEvent::Maintenance(Some(maintenance(true))));
    assert_eq!(
        replies(&out),
        vec![(
            c,
            Err(CallError::Maintenance("maintenance mode is on".into()))
        )]
    );
}

#[test]
fn demote_without_an_eligible_standby_is_refused() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.active(0, 7);
    let (c, out) = h.call(0, Call::Demote);
    assert_eq!(
        replies(&out),
        vec![(
            c,
            Err(CallError::NoStandby(
                "no other member is eligible to take over".into()
            ))
        )]
    );
}

#[test]
fn demote_is_answered_once_the_units_are_down_and_the_key_released() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.active(0, 7);
    h.store(0, StoreEvent::Members(vec![member("n2", None)]));
    let (c, out) = h.call(0, Call::Demote);
    assert!(replies(&out).is_empty());
    assert!(texts(&out).contains(&"web: asking the active node to hand over to n2"));
    let to_n2 = crate::store::SwitchoverRecord {
        v: 1,
        to: "n2".into(),
        from: "n1".into(),
    };
    h.store(0, StoreEvent::Switchover(Some(to_n2)));
    h.job(0, Job::StopActive, true);
    h.job(0, Job::StartPassive, true);
    assert!(replies(&h.take()).is_empty(), "the key is still held");
    let out = h.store(0, StoreEvent::Released);
    assert_eq!(replies(&out), vec![(c, Ok(()))]);
}

#[test]
fn maintenance_needs_the_store() {
    let mut h = passive_under_n2();
    h.store(0, down("connection refused").0);
    let (c, out) = h.call(0, Call::SetMaintenance(true));
    assert_eq!(
        replies(&out),
        vec![(c, Err(CallError::Failed("the store is unreachable".into())))]
    );
    assert!(store_commands(&out).is_empty());
}

#[test]
fn maintenance_is_answered_once_the_store_shows_it() {
    let mut h = passive_under_n2();
    let (c, out) = h.call(0, Call::SetMaintenance(true));
    assert_eq!(store_commands(&out), vec![(GroupId(0), "SetMaintenance")]);
    assert!(texts(&out).contains(&"web: maintenance on requested"));
    assert!(replies(&out).is_empty());
    let out = h.store(0, StoreEvent::Maintenance(Some(maintenance(true))));
    assert_eq!(replies(&out), vec![(c, Ok(()))]);
    // Asking for what is already so writes nothing and is answered at once.
    let (c, out) = h.call(0, Call::SetMaintenance(true));
    assert!(store_commands(&out).is_empty());
    assert_eq!(replies(&out), vec![(c, Ok(()))]);
}

#[test]
fn reset_failed_is_answered_at_once() {
    let mut h = passive_under_n2();
    let (c, out) = h.call(0, Call::ResetFailed);
    assert_eq!(replies(&out), vec![(c, Ok(()))]);
    assert!(texts(&out).contains(&"web: failed state reset"));
}

#[test]
fn a_call_that_does_not_complete_times_out() {
    let mut h = passive_under_n2();
    let (c, _) = h.call(0, Call::Promote);
    // The active node never hands over. A 2s lease gives the call 30s.
    assert_eq!(
        call_timeout(Duration::from_secs(2)),
        Duration::from_secs(30)
    );
    assert_eq!(
        call_timeout(Duration::from_secs(20)),
        Duration::from_secs(60)
    );
    assert!(
        h.agent
            .next_deadline()
            .is_some_and(|d| d <= h.now + Duration::from_secs(30))
    );
    h.renew(0);
    assert!(replies(&h.advance(Duration::from_secs(29))).is_empty());
    let out = h.advance(Duration::from_secs(1));
    assert_eq!(
        replies(&out),
        vec![(
            c,
            Err(CallError::Timeout(
                "Promote did not complete in time".into()
            ))
        )]
    );
}

#[test]
fn a_call_on_a_group_that_has_closed_is_unknown() {
    let mut h = passive_under_n2();
    let file = NewConfig {
        config: config(&[]),
        text: "node = \"n1\"\n".into(),
        closures: Default::default(),
    };
    h.input(Input::Signal(Signal::Reload(Ok(file))));
    let (c, out) = h.call(0, Call::Demote);
    assert_eq!(
        replies(&out),
        vec![(
            c,
            Err(CallError::UnknownGroup(
                "this group was removed from the configuration".into()
            ))
        )]
    );
}
