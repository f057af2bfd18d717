//! What `/metrics` shows after a sequence of inputs: the agent counts as the events pass.

use std::sync::Arc;

use super::*;
use crate::http::Snapshot;
use crate::http::metrics::render;

/// The exposition (Prometheus text 0.0.4) of the agent's metrics and views now.
fn scrape(h: &H) -> String {
    let views = h.agent.views(h.now).into_iter().map(Arc::new).collect();
    let snapshot = Arc::new(Snapshot::new("n1", h.agent.store_connected(), false, views));
    render(h.agent.metrics(), snapshot, false).0
}

/// The value of the series `series` (name and labels as printed), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().ok()).flatten()
    })
}

fn count(out: &[Output], f: impl Fn(&Output) -> bool) -> usize {
    out.iter().filter(|o| f(o)).count()
}

#[test]
fn roles_terms_and_promotions_follow_the_inputs() {
    let mut h = H::web_passive_db_active();
    let text = scrape(&h);
    for (group, role, want) in [
        ("db", "active", 1.0),
        ("db", "passive", 0.0),
        ("web", "passive", 1.0),
        ("web", "active", 0.0),
        ("web", "starting", 0.0),
    ] {
        let series = format!("promd_group_role{{group=\"{group}\",role=\"{role}\"}}");
        assert_eq!(value(&text, &series), Some(want), "{series}\n{text}");
    }
    // Exactly one role per group is 1.
    let ones = text
        .lines()
        .filter(|l| l.starts_with("promd_group_role{") && l.ends_with(" 1"))
        .count();
    assert_eq!(ones, 2, "{text}");
    assert_eq!(value(&text, "promd_group_term{group=\"db\"}"), Some(5.0));
    assert_eq!(value(&text, "promd_group_term{group=\"web\"}"), Some(3.0));
    assert_eq!(
        value(&text, "promd_group_promotions_total{group=\"db\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "promd_group_promotions_total{group=\"web\"}"),
        Some(0.0)
    );
    assert_eq!(value(&text, "promd_store_connected"), Some(1.0));
    assert_eq!(
        value(&text, "promd_build_info{version=\"0.1.0\"}"),
        Some(1.0),
        "{text}"
    );

    // Another host takes web's key: one leader change.
    let n3 = Leader {
        node: "n3".into(),
        term: 4,
        host: None,
    };
    h.store(0, StoreEvent::Leader(Some(n3.clone())));
    h.store(0, StoreEvent::Leader(Some(n3)));
    let text = scrape(&h);
    assert_eq!(
        value(&text, "promd_group_leader_changes_total{group=\"web\"}"),
        Some(1.0)
    );
    assert_eq!(value(&text, "promd_group_term{group=\"web\"}"), Some(4.0));
}

#[test]
fn renewals_headroom_and_the_fence() {
    let mut h = H::web_passive_db_active();
    let g = h.agent.metrics().group("db");
    // Renewed just now (the harness sends its renewals at the current time).
    h.renew(1);
    let now = h.now.0;
    assert_eq!(g.renewal_age(now + Duration::from_millis(250)), Some(0.25));
    // A 2 s lease fences at 2 s - max(L/4, min(L/2, 700ms), W + 400ms) = 1.3 s after the send.
    let headroom = g.fence_headroom(now).unwrap_or(f64::NAN);
    assert!((headroom - 1.3).abs() < 1e-9, "{headroom}");
    // The passive group runs no units under its lease: no headroom.
    assert_eq!(h.agent.metrics().group("web").fence_headroom(now), None);
    // The harness renewed twice (at start and now).
    assert_eq!(
        value(
            &scrape(&h),
            "promd_group_lease_renewal_duration_seconds_count{group=\"db\"}"
        ),
        Some(2.0)
    );

    // No renewal any more: the fence fires, and the slow stop is killed.
    h.take();
    let kills_before = value(&scrape(&h), "promd_group_kills_total{group=\"db\"}");
    // The start-up sweep (what an earlier run may have left) ran, and is not a kill counted.
    assert_eq!(kills_before, Some(0.0));
    h.advance(Duration::from_millis(1400));
    h.advance(Duration::from_millis(400));
    let out = h.take();
    let text = scrape(&h);
    assert_eq!(
        value(&text, "promd_group_fences_total{group=\"db\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "promd_group_demotions_total{group=\"db\"}"),
        Some(1.0)
    );
    // Kills: the fence's.
    let kills = count(&out, |o| matches!(o, Output::Kill { id: GroupId(1), .. }));
    assert!(kills >= 1, "{out:#?}");
    assert_eq!(
        value(&text, "promd_group_kills_total{group=\"db\"}"),
        kills_before.map(|k| k + kills as f64),
        "{text}"
    );
    assert!(text.contains("promd_group_role{group=\"db\",role=\"demoting\"} 1"));
}

#[test]
fn health_failures_restarts_calls_and_reconnects() {
    let mut h = H::web_passive_db_active();
    for ok in [true, false, true] {
        h.input(Input::Health(
            GroupId(1),
            crate::health::HealthResult {
                ok,
                detail: String::new(),
                duration: Duration::from_millis(40),
            },
        ));
    }
    // A watched unit of the active group fails, and systemd did not restart it.
    h.input(Input::Watch(
        GroupId(1),
        crate::watch::WatchEvent::Failed {
            unit: "db.service".into(),
            restarted: false,
        },
    ));
    h.advance(Duration::from_secs(2));
    let (_, out) = h.call(0, Call::ResetFailed);
    let answered = replies(&out).len();
    let (down, _) = down("connection refused");
    h.store(0, down);
    h.store(0, StoreEvent::Up);
    let restarts = count(&h.out, |o| matches!(o, Output::Restart(GroupId(1), _)));
    let text = scrape(&h);
    let v = |s: &str| value(&text, s);
    assert_eq!(
        v("promd_group_health_checks_total{group=\"db\",result=\"ok\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        v("promd_group_health_checks_total{group=\"db\",result=\"failed\"}"),
        Some(1.0)
    );
    assert_eq!(
        v("promd_group_health_check_duration_seconds_count{group=\"db\"}"),
        Some(3.0)
    );
    assert_eq!(
        v("promd_group_health_check_duration_seconds_bucket{group=\"db\",le=\"0.05\"}"),
        Some(3.0)
    );
    assert_eq!(
        v("promd_group_unit_failures_total{group=\"db\"}"),
        Some(1.0)
    );
    assert_eq!(
        v("promd_group_unit_restarts_total{group=\"db\"}"),
        Some(restarts as f64)
    );
    assert_eq!(answered, 1);
    let calls: f64 = text
        .lines()
        .filter(|l| l.starts_with("promd_dbus_calls_total{method=\"ResetFailed\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(calls, 1.0, "{text}");
    assert_eq!(v("promd_store_reconnects_total"), Some(1.0));
    // Every family has its HELP and TYPE under the name its samples use (promtool's rule).
    for family in [
        "promd_group_promotions_total",
        "promd_group_fence_headroom_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family}\n{text}"
        );
    }
}

fn reload(h: &mut H, groups: &[&str]) {
    let text = format!("node = \"n1\"\n{}", groups.concat());
    let file = NewConfig {
        config: config_of(&text),
        text,
        closures: Default::default(),
    };
    h.input(Input::Signal(Signal::Reload(Ok(file))));
}

#[test]
fn a_group_removed_by_a_reload_leaves_the_exposition() {
    let mut h = H::web_passive_db_active();
    reload(&mut h, &[WEB]);
    // Handing over: no role any more (not served), its counters still there.
    let text = scrape(&h);
    assert!(!text.contains("promd_group_role{group=\"db\""), "{text}");
    assert_eq!(
        value(&text, "promd_group_promotions_total{group=\"db\"}"),
        Some(1.0)
    );
    h.job(1, Job::StopActive, true);
    h.store(1, StoreEvent::Released);
    let text = scrape(&h);
    assert!(!text.contains("group=\"db\""), "{text}");
    assert!(text.contains("promd_group_role{group=\"web\",role=\"passive\"} 1"));

    // Added again: it starts from zero, as a new group.
    reload(&mut h, &[WEB, DB]);
    let text = scrape(&h);
    assert_eq!(
        value(&text, "promd_group_promotions_total{group=\"db\"}"),
        Some(0.0),
        "{text}"
    );
    assert!(text.contains("promd_group_role{group=\"db\",role=\"starting\"} 1"));
}

#[test]
fn a_group_changed_by_a_reload_keeps_its_counters() {
    let mut h = H::web_passive_db_active();
    // A lease change restarts the group (a priority change would be applied in place).
    let changed = DB.replace("lease = \"2s\"", "lease = \"3s\"");
    reload(&mut h, &[WEB, &changed]);
    h.job(1, Job::StopActive, true);
    h.store(1, StoreEvent::Released);
    // Restarted under a new id (2), with the same name and series.
    assert!(h.agent.groups.contains_key(&GroupId(2)));
    let text = scrape(&h);
    assert_eq!(
        value(&text, "promd_group_promotions_total{group=\"db\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "promd_group_demotions_total{group=\"db\"}"),
        Some(1.0)
    );
}

#[test]
fn a_group_added_by_a_reload_is_not_a_reconnection() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.passive(0, Some(("n2", 3)));
    let text = format!("node = \"n1\"\n{WEB}{DB}");
    let file = NewConfig {
        config: config_of(&text),
        text,
        closures: Default::default(),
    };
    h.input(Input::Signal(Signal::Reload(Ok(file))));
    // db's session comes up: the store was never unreachable.
    h.passive(1, Some(("n2", 4)));
    let text = scrape(&h);
    assert_eq!(
        value(&text, "promd_store_reconnects_total"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(value(&text, "promd_store_connected"), Some(1.0), "{text}");
}
