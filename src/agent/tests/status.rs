//! `STATUS=` (what `systemctl status promd` shows) and the D-Bus views.

use super::*;

#[test]
fn without_groups_status_says_so() {
    let mut h = H::new(&[]);
    let out = h.input(Input::Start);
    assert_eq!(
        notified(&out),
        vec![&Notify::Ready("no groups configured".into())]
    );
}

#[test]
fn status_says_what_a_group_waits_for_then_who_leads() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    assert_eq!(h.status(), "web: starting, waiting for the store");
    let (ev, why) = down("connection refused");
    h.store(0, ev);
    assert_eq!(
        h.status(),
        format!("web: starting, waiting for the store ({why})")
    );
    h.passive(0, Some(("n2", 42)));
    assert_eq!(h.status(), "web: passive, leader n2 (term 42)");
}

#[test]
fn an_active_group_shows_its_term() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.active(0, 7);
    assert_eq!(h.status(), "web: active (term 7)");
}

#[test]
fn status_names_maintenance_failures_and_health() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.active(0, 7);
    h.store(0, StoreEvent::Maintenance(Some(maintenance(true))));
    assert_eq!(h.status(), "web: active (term 7), maintenance");
    h.store(0, StoreEvent::Maintenance(Some(maintenance(false))));
    let failed = WatchEvent::Failed {
        unit: "web.service".into(),
        restarted: true,
    };
    h.input(Input::Watch(GroupId(0), failed));
    assert_eq!(h.status(), "web: active (term 7), 1 failure in the window");
    let sick = HealthResult {
        ok: false,
        detail: "exit status 1".into(),
        duration: Duration::from_millis(30),
    };
    h.input(Input::Health(GroupId(0), sick));
    assert_eq!(
        h.status(),
        "web: active (term 7), 2 failures in the window, unhealthy"
    );
}

#[test]
fn a_node_that_failed_over_says_until_when() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.passive(0, None);
    h.win(0, 7);
    // The start of the active target fails: the node fails over and cools down.
    h.job(0, Job::StartActive, false);
    assert!(
        h.status()
            .ends_with(", failed: ineligible until the cooldown ends (promctl reset clears it)"),
        "{}",
        h.status()
    );
}

#[test]
fn status_is_sent_when_it_changes_and_only_then() {
    let mut h = H::new(&[WEB, DB]);
    let out = h.input(Input::Start);
    assert_eq!(notified(&out).len(), 1, "READY=1 with the status");
    // A renewal changes nothing an operator sees.
    h.store(0, StoreEvent::Up);
    h.take();
    let out = h.renew(0);
    assert!(notified(&out).is_empty(), "{out:#?}");
    let (timeout, why) = down("timeout");
    let out = h.store(1, timeout.clone());
    assert_eq!(
        notified(&out),
        vec![&Notify::Status(format!(
            "web: starting (term 0); db: starting, waiting for the store ({why})"
        ))]
    );
    assert!(notified(&h.store(1, timeout)).is_empty());
}

#[test]
fn the_dbus_view_lists_configured_members_the_store_does_not_know_as_down() {
    let text = format!("node = \"n1\"\n{WEB}members = [\"n1\", \"n2\", \"n3\"]\n");
    let mut h = H::with(config_of(&text));
    h.input(Input::Start);
    h.passive(0, Some(("n2", 42)));
    h.store(0, StoreEvent::Members(vec![member("n2", None)]));
    let views = h.agent.views(h.now);
    assert_eq!(views.len(), 1);
    let v = &views[0];
    assert_eq!((v.id, v.name.as_str()), (GroupId(0), "web"));
    assert_eq!(
        (v.role.as_str(), v.leader.as_str(), v.term),
        ("passive", "n2", 42)
    );
    let summaries: Vec<(String, String, i32, bool)> =
        v.members.iter().map(MemberView::summary).collect();
    assert_eq!(
        summaries,
        vec![
            ("n1".into(), "passive".into(), 100, true),
            ("n2".into(), "passive".into(), 100, true),
            ("n3".into(), "down".into(), 0, false),
        ]
    );
    // This host from its machine, n2 from its record, n3 without one.
    let me = h.agent.groups[&GroupId(0)].machine.why_ineligible(h.now);
    assert_eq!(
        (v.members[0].eligible, v.members[0].why.as_str()),
        (me.is_none(), me.map(|w| w.word()).unwrap_or(""))
    );
    assert_eq!(
        (v.eligible, v.why.as_str()),
        (v.members[0].eligible, v.members[0].why.as_str())
    );
    assert_eq!(v.members[0].term, 42);
    assert_eq!(
        (v.members[1].eligible, v.members[1].why.as_str()),
        (true, "")
    );
    assert_eq!(
        (v.members[2].eligible, v.members[2].why.as_str()),
        (false, WHY_DOWN)
    );
    assert!(!v.retired);
    assert!(h.agent.store_connected());
}

#[test]
fn since_is_the_wall_clock_of_the_last_role_change() {
    let mut h = H::new(&[WEB]);
    assert_eq!(h.agent.views(h.now)[0].since_usec, 1_000_000, "start-up");
    h.input(Input::Start);
    h.now = Mono(Duration::from_secs(200));
    h.passive(0, None);
    assert_eq!(h.agent.views(h.now)[0].since_usec, 200_000_000);
}

#[test]
fn store_connected_needs_every_group() {
    let mut h = H::new(&[WEB, DB]);
    h.input(Input::Start);
    h.store(0, StoreEvent::Up);
    assert!(!h.agent.store_connected());
    h.store(1, StoreEvent::Up);
    assert!(h.agent.store_connected());
}

#[test]
fn the_view_names_the_steady_units_that_are_down() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.active(0, 7);
    h.agent.take_views(h.now);
    let down = WatchEvent::SteadyUnits {
        down: vec!["web.service".into()],
    };
    let out = h.input(Input::Watch(GroupId(0), down));
    assert!(out.is_empty(), "nothing to do but show it: {out:?}");
    match h.agent.take_views(h.now) {
        ViewUpdate::Some(v) => {
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].units_down, vec!["web.service".to_string()]);
            assert_eq!(v[0].role, "active", "a unit down is not a role change");
        }
        other => panic!("{other:?}"),
    }
    h.input(Input::Watch(
        GroupId(0),
        WatchEvent::SteadyUnits { down: Vec::new() },
    ));
    match h.agent.take_views(h.now) {
        ViewUpdate::Some(v) => assert!(v[0].units_down.is_empty()),
        other => panic!("{other:?}"),
    }
}
