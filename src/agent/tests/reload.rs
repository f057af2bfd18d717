//! `systemctl reload promd`: which groups are left alone, added, handed over and restarted.

use super::*;
use crate::logging;

pub(super) fn reload(h: &mut H, groups: &[&str]) -> Vec<Output> {
    reload_walked(h, groups, &[])
}

/// A reload whose added groups' closures were walked as `walked` says (group, units); a group
/// left out could not be walked.
fn reload_walked(h: &mut H, groups: &[&str], walked: &[(&str, &[&str])]) -> Vec<Output> {
    let text = format!("node = \"n1\"\n{}", groups.concat());
    let file = NewConfig {
        config: config_of(&text),
        closures: walked
            .iter()
            .map(|(g, units)| (g.to_string(), closure_of(units)))
            .collect(),
        text,
    };
    h.input(Input::Signal(Signal::Reload(Ok(file))))
}

/// A closure of these units, each pulled in and steady.
pub(super) fn closure_of(units: &[&str]) -> Closure {
    let mut closure = Closure::default();
    for unit in units {
        closure
            .units
            .insert(unit.to_string(), crate::systemd::Reach::Pulled);
        closure.steady.insert(unit.to_string());
    }
    closure
}

/// `web` passive and `db` active, with `db.service` found in db's role.
fn db_active_running_db_service() -> H {
    let mut h = H::web_passive_db_active();
    h.input(Input::Closure(GroupId(1), closure_of(&["db.service"])));
    h.take();
    h
}

fn summary(out: &[Output]) -> &str {
    texts(out)
        .into_iter()
        .find_map(|t| t.strip_prefix("configuration reloaded from /etc/promd/promd.toml: "))
        .unwrap_or("(no summary)")
}

fn opened(out: &[Output]) -> Vec<(GroupId, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Open(id, cfg) => Some((*id, cfg.name.clone())),
            _ => None,
        })
        .collect()
}

fn closed(out: &[Output]) -> Vec<(GroupId, &str, bool)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Close {
                id, name, unbind, ..
            } => Some((*id, name.as_str(), *unbind)),
            _ => None,
        })
        .collect()
}

/// The passive targets the closes of `out` stop.
fn passive_stopped(out: &[Output]) -> Vec<&str> {
    out.iter()
        .filter_map(|o| match o {
            Output::Close { stop_passive, .. } => stop_passive.as_deref(),
            _ => None,
        })
        .collect()
}

/// web and db, both passive under n2's key.
fn two_passive() -> H {
    let mut h = H::new(&[WEB, DB]);
    h.input(Input::Start);
    h.passive(0, Some(("n2", 3)));
    h.passive(1, Some(("n2", 4)));
    h.take();
    h
}

#[test]
fn a_reload_leaves_unchanged_groups_alone() {
    let mut h = two_passive();
    let out = reload(&mut h, &[WEB, DB]);
    assert_eq!(
        summary(&out),
        "2 unchanged, added [], removed [], changed in place [], changed (handed over, then restarted) []"
    );
    assert!(jobs(&out).is_empty() && store_commands(&out).is_empty());
    assert_eq!(notified(&out).first(), Some(&&Notify::Reloading));
    assert_eq!(
        notified(&out).last(),
        Some(&&Notify::Ready(
            "web: passive, leader n2 (term 3); db: passive, leader n2 (term 4)".into()
        ))
    );
}

#[test]
fn a_reload_adds_a_group_passive_first() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.passive(0, Some(("n2", 3)));
    h.take();
    let out = reload(&mut h, &[WEB, DB]);
    assert_eq!(
        summary(&out),
        "1 unchanged, added [db], removed [], changed in place [], changed (handed over, then restarted) []"
    );
    assert_eq!(opened(&out), vec![(GroupId(1), "db".to_string())]);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Serve(GroupId(1), v) if v.name == "db"))
    );
    // Its first step, as at start-up: whatever a previous run left of its units is stopped.
    assert_eq!(jobs(&out), vec![(GroupId(1), Job::StopActive)]);
    assert_eq!(
        h.status(),
        "web: passive, leader n2 (term 3); db: starting, waiting for the store"
    );
}

#[test]
fn a_removed_group_hands_over_then_closes_for_good() {
    let mut h = H::web_passive_db_active();
    h.take();
    let out = reload(&mut h, &[WEB]);
    assert_eq!(
        summary(&out),
        "1 unchanged, added [], removed [db], changed in place [], changed (handed over, then restarted) []"
    );
    assert!(
        texts(&out)
            .contains(&"db: removed from the configuration: handing over and stopping this group")
    );
    // The role change says why: the reload, not a stopping promd.
    assert!(
        texts(&out).contains(
            &"db: active -> demoting (term 5): retired by a reload (removed, or changed so that it restarts)"
        ),
        "{:?}",
        texts(&out)
    );
    assert!(out.iter().any(|o| matches!(o, Output::Quiet(GroupId(1)))));
    assert_eq!(jobs(&out), vec![(GroupId(1), Job::StopActive)]);
    // Still shown while it hands over; not addressable by name on D-Bus any more.
    assert!(h.status().contains("db: "));
    assert!(h.agent.views(h.now)[1].retired);
    h.job(1, Job::StopActive, true);
    h.store(1, StoreEvent::Released);
    let out = h.take();
    assert_eq!(closed(&out), vec![(GroupId(1), "db", true)]);
    assert!(opened(&out).is_empty());
    // Gone from STATUS= and D-Bus once it has exited.
    assert_eq!(h.status(), "web: passive, leader n2 (term 3)");
    assert_eq!(h.agent.views(h.now).len(), 1);
    assert!(notified(&out).contains(&&Notify::Status("web: passive, leader n2 (term 3)".into())));
}

#[test]
fn a_changed_group_hands_over_then_restarts_under_a_new_id() {
    let mut h = two_passive();
    let changed = DB.replace("lease = \"2s\"", "lease = \"4s\"");
    let out = reload(&mut h, &[WEB, &changed]);
    assert_eq!(
        summary(&out),
        "1 unchanged, added [], removed [], changed in place [], changed (handed over, then restarted) [db]"
    );
    assert!(
        texts(&out).contains(
            &"restarting group db: lease changed 2s → 4s; handing over, then starting it again"
        ),
        "{:?}",
        texts(&out)
    );
    assert!(
        texts(&out)
            .contains(&"db: its configuration changed: handing over and stopping this group")
    );
    // Passive: it exits at once, closes and opens again with its new settings.
    assert_eq!(closed(&out), vec![(GroupId(1), "db", false)]);
    let new = out.iter().find_map(|o| match o {
        Output::Open(id, cfg) => Some((*id, cfg.lease)),
        _ => None,
    });
    assert_eq!(new, Some((GroupId(2), Duration::from_secs(4))));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Serve(GroupId(2), v) if v.name == "db"))
    );
    // Its old id reaches nothing any more.
    assert!(h.store(1, StoreEvent::Up).is_empty());
}

/// A group's hand-over starts its passive target (rule 3b); once the group is gone, nothing
/// of the configuration starts that target, so its close stops it. A changed group whose
/// next version starts the same target keeps it up.
#[test]
fn a_group_gone_for_good_stops_its_passive_target_and_a_changed_one_keeps_it() {
    let mut h = two_passive();
    let out = reload(&mut h, &[DB]);
    assert_eq!(closed(&out), vec![(GroupId(0), "web", true)]);
    assert_eq!(passive_stopped(&out), vec!["web-passive.target"]);

    let mut h = two_passive();
    let changed = WEB.replace("lease = \"2s\"", "lease = \"4s\"");
    let out = reload(&mut h, &[&changed, DB]);
    assert_eq!(closed(&out), vec![(GroupId(0), "web", false)]);
    assert!(passive_stopped(&out).is_empty(), "{out:?}");

    let mut h = two_passive();
    let moved = WEB.replace("web-passive.target", "web-standby.target");
    let out = reload(&mut h, &[&moved, DB]);
    assert_eq!(closed(&out), vec![(GroupId(0), "web", false)]);
    assert_eq!(passive_stopped(&out), vec!["web-passive.target"]);

    // db has no passive target: nothing to stop.
    let mut h = two_passive();
    let out = reload(&mut h, &[WEB]);
    assert_eq!(closed(&out), vec![(GroupId(1), "db", true)]);
    assert!(passive_stopped(&out).is_empty());
}

/// SIGTERM while a changed group hands over: its next version is never opened, but it is
/// still the configuration's, so the old version's close leaves the passive target it
/// shares with it running, as a stopping promd does for every other group.
#[test]
fn sigterm_during_a_hand_over_keeps_the_passive_target_of_the_next_version() {
    let mut h = H::new(&[WEB, DB]);
    h.input(Input::Start);
    h.walked();
    h.active(0, 5);
    h.passive(1, Some(("n2", 4)));
    h.take();
    let changed = WEB.replace("lease = \"2s\"", "lease = \"4s\"");
    reload(&mut h, &[&changed, DB]);
    h.input(Input::Signal(Signal::Terminate));
    for j in [Job::StopActive, Job::StartPassive] {
        h.job(0, j, true);
    }
    h.store(0, StoreEvent::Released);
    let out = h.take();
    assert_eq!(closed(&out), vec![(GroupId(0), "web", true)]);
    assert!(
        opened(&out).is_empty(),
        "a stopping promd opened {:?}",
        opened(&out)
    );
    assert!(passive_stopped(&out).is_empty(), "{out:?}");
}

#[test]
fn the_latest_file_wins_for_a_group_still_handing_over() {
    let mut h = H::web_passive_db_active();
    let slow = DB.replace("lease = \"2s\"", "lease = \"3s\"");
    reload(&mut h, &[WEB, &slow]);
    let slower = format!("{slow}priority = 40\n");
    let out = reload(&mut h, &[WEB, &slower]);
    assert_eq!(
        summary(&out),
        "1 unchanged, added [], removed [], changed in place [], changed (handed over, then restarted) []",
        "db is still handing over: nothing new to retire"
    );
    h.job(1, Job::StopActive, true);
    h.take();
    h.store(1, StoreEvent::Released);
    let out = h.take();
    let new = out.iter().find_map(|o| match o {
        Output::Open(id, cfg) => Some((*id, cfg.priority)),
        _ => None,
    });
    assert_eq!(new, Some((GroupId(2), 40)));
    // Changed, then removed before its old version had exited: never started again.
    let mut h = H::web_passive_db_active();
    reload(&mut h, &[WEB, &slow]);
    reload(&mut h, &[WEB]);
    h.job(1, Job::StopActive, true);
    h.take();
    h.store(1, StoreEvent::Released);
    let out = h.take();
    assert_eq!(closed(&out), vec![(GroupId(1), "db", true)]);
    assert!(opened(&out).is_empty());
}

/// A renamed group shares its targets (and so its units) with the old name: the new one
/// starts only once the old one has handed over, or its start-up would kill the units the old
/// one is still draining (the rolling-rename system test saw `web.service` SIGKILLed so).
/// A group that shares nothing starts at once beside it.
#[test]
fn a_renamed_group_starts_once_the_old_name_has_handed_over() {
    let mut h = db_active_running_db_service();
    let renamed = DB.replace("name = \"db\"", "name = \"db2\"");
    let cache = "\n[[group]]\nname = \"cache\"\nactive-target = \"cache-active.target\"\n";
    let walked: &[(&str, &[&str])] = &[("db2", &["db.service"]), ("cache", &["cache.service"])];
    let out = reload_walked(&mut h, &[WEB, &renamed, cache], walked);
    assert_eq!(
        summary(&out),
        "1 unchanged, added [db2 cache], removed [db], changed in place [], changed (handed over, then restarted) []"
    );
    assert!(
        texts(&out).contains(
            &"db2: starts once group db has handed over (they share a target, a unit or an \
              address, or its units could not be read)"
        ),
        "{:?}",
        texts(&out)
    );
    let names: Vec<String> = opened(&out).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["cache"], "db2 waits; cache shares nothing");
    assert_eq!(db_hands_over(&mut h), ["db2"]);
}

/// Renamed with its targets, the new group has no target in common with the old, but its
/// role pulls in the same service: it waits all the same. One whose units could not be read
/// waits too; one that shares no unit starts at once.
#[test]
fn a_group_renamed_with_its_targets_waits_for_the_units_it_shares() {
    let mut h = db_active_running_db_service();
    let renamed = "\n[[group]]\nname = \"store\"\nactive-target = \"store-active.target\"\n\
                   lease = \"2s\"\n";
    let unread = "\n[[group]]\nname = \"queue\"\nactive-target = \"queue-active.target\"\n";
    let cache = "\n[[group]]\nname = \"cache\"\nactive-target = \"cache-active.target\"\n";
    let walked: &[(&str, &[&str])] = &[
        ("store", &["store-extra.service", "db.service"]),
        ("cache", &["cache.service"]),
    ];
    let out = reload_walked(&mut h, &[WEB, renamed, unread, cache], walked);
    let names: Vec<String> = opened(&out).into_iter().map(|(_, n)| n).collect();
    assert_eq!(
        names,
        ["cache"],
        "store shares db.service, queue's units are unknown: {:?}",
        texts(&out)
    );
    let mut after = db_hands_over(&mut h);
    after.sort();
    assert_eq!(after, ["queue", "store"]);
}

/// The active `db` (id 1) stops its units and releases its key: it closes for good, and
/// the names of the groups that open then.
fn db_hands_over(h: &mut H) -> Vec<String> {
    h.job(1, Job::StopActive, true);
    h.take();
    h.store(1, StoreEvent::Released);
    let out = h.take();
    assert_eq!(closed(&out), vec![(GroupId(1), "db", true)]);
    opened(&out).into_iter().map(|(_, n)| n).collect()
}

/// An address moved from one group to another with other targets: the group that takes it
/// starts once the one that had it has handed over (the store's address key keeps other
/// hosts out; this keeps the two groups of this host from holding it at once).
#[test]
fn a_group_given_another_groups_address_starts_once_that_one_has_handed_over() {
    let db_x = format!("{DB}addresses = [\"192.0.2.10/24 dev eth0\"]\n");
    let mut h = H::new(&[WEB, &db_x]);
    h.input(Input::Start);
    h.passive(0, Some(("n2", 3)));
    h.active(1, 5);
    h.take();
    let cache = "\n[[group]]\nname = \"cache\"\nactive-target = \"cache-active.target\"\n\
                 addresses = [\"192.0.2.10/24 dev eth1\"]\n";
    h.input(Input::Closure(GroupId(1), closure_of(&["db.service"])));
    let walked: &[(&str, &[&str])] = &[("cache", &["cache.service"])];
    let out = reload_walked(&mut h, &[WEB, cache], walked);
    assert!(
        opened(&out).is_empty(),
        "cache waits for db: {:?}",
        texts(&out)
    );
    assert_eq!(db_hands_over(&mut h), ["cache"]);
}

#[test]
fn an_invalid_file_is_refused_and_nothing_changes() {
    let mut h = two_passive();
    let problems =
        "promd.toml:3:1: unknown key `bogus`\npromd.toml:5:9: lease under 1s".to_string();
    let out = h.input(Input::Signal(Signal::Reload(Err(problems))));
    let refused: Vec<(&str, Level)> = records(&out)
        .into_iter()
        .filter(|r| r.message_id == Some(logging::CONFIG_REFUSED))
        .map(|r| (r.text.as_str(), r.level))
        .collect();
    assert_eq!(
        refused,
        vec![
            ("promd.toml:3:1: unknown key `bogus`", Level::Error),
            ("promd.toml:5:9: lease under 1s", Level::Error),
            (
                "reload refused: keeping the running configuration",
                Level::Error
            ),
        ]
    );
    assert!(jobs(&out).is_empty() && store_commands(&out).is_empty());
    assert!(matches!(notified(&out).last(), Some(Notify::Ready(_))));
    assert_eq!(h.agent.views(h.now).len(), 2);
}

#[test]
fn a_new_node_name_needs_a_restart() {
    let mut h = two_passive();
    let text = format!("node = \"n9\"\n{WEB}{DB}");
    let file = NewConfig {
        config: config_of(&text),
        text,
        closures: Default::default(),
    };
    let out = h.input(Input::Signal(Signal::Reload(Ok(file))));
    let refused: Vec<&str> = records(&out)
        .into_iter()
        .filter(|r| r.message_id == Some(logging::CONFIG_REFUSED))
        .map(|r| r.text.as_str())
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0].starts_with("/etc/promd/promd.toml:1:")
            && refused[0].contains("`node` = \"n9\" but the running promd is node \"n1\""),
        "{}",
        refused[0]
    );
    // Still the running configuration: a later reload is compared with n1.
    let out = reload(&mut h, &[WEB, DB]);
    assert!(summary(&out).starts_with("2 unchanged"));
}

#[test]
fn a_shorter_lease_lowers_the_watchdog_and_a_longer_one_never_raises_it() {
    let mut h = two_passive();
    let short = WEB.replace("lease = \"2s\"", "lease = \"1s\"");
    let out = reload(&mut h, &[&short, DB]);
    let fitted = notified(&out).into_iter().find_map(|n| match n {
        Notify::Watchdog(d) => Some(*d),
        _ => None,
    });
    let expected = Timing::new(Duration::from_secs(1)).fitting_watchdog();
    assert!(expected < WATCHDOG);
    assert_eq!(fitted, Some(expected));
    assert!(texts(&out).contains(&"watchdog 300ms -> 100ms to fit group web's lease"));
    let long = WEB.replace("lease = \"2s\"", "lease = \"30s\"");
    let out = reload(&mut h, &[&long]);
    assert!(
        !notified(&out)
            .iter()
            .any(|n| matches!(n, Notify::Watchdog(_)))
    );
    // Without a watchdog there is nothing to fit.
    assert_eq!(watchdog_fit(&config(&[&short]), None), None);
}

#[test]
fn sigterm_during_a_replacement_starts_nothing_new() {
    let mut h = H::web_passive_db_active();
    let changed = DB.replace("lease = \"2s\"", "lease = \"3s\"");
    reload(&mut h, &[WEB, &changed]);
    h.input(Input::Signal(Signal::Terminate));
    // A reload while stopping is ignored (the runtime does not even read the file).
    assert!(reload(&mut h, &[WEB]).is_empty());
    h.job(1, Job::StopActive, true);
    h.take();
    h.store(1, StoreEvent::Released);
    let out = h.take();
    assert_eq!(closed(&out), vec![(GroupId(1), "db", true)]);
    assert!(opened(&out).is_empty());
    assert!(h.agent.done());
}

/// The records of a reload that say what it did to a group in place or why it restarts it.
fn said(out: &[Output]) -> Vec<&str> {
    texts(out)
        .into_iter()
        .filter(|t| t.contains("applied in place") || t.starts_with("restarting group"))
        .collect()
}

fn retunes(out: &[Output]) -> Vec<(GroupId, bool)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Retune { id, health, .. } => Some((*id, *health)),
            _ => None,
        })
        .collect()
}

/// The active group db, reloaded with `extra` keys: applied in place, the summary says so,
/// nothing stops, starts or hands over. Returns the reload's outputs.
fn in_place_on_active_db(extra: &str, said_text: &str) -> (H, Vec<Output>) {
    let mut h = H::web_passive_db_active();
    h.take();
    let changed = format!("{DB}{extra}");
    let out = reload(&mut h, &[WEB, &changed]);
    assert_eq!(
        summary(&out),
        "1 unchanged, added [], removed [], changed in place [db], changed (handed over, then restarted) []"
    );
    assert_eq!(said(&out), vec![said_text]);
    assert!(jobs(&out).is_empty(), "no stop, no start: {:?}", jobs(&out));
    assert!(closed(&out).is_empty() && opened(&out).is_empty());
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Kill { .. } | Output::Quiet(_))),
        "nothing is killed or quietened"
    );
    assert!(
        !store_commands(&out)
            .iter()
            .any(|(_, c)| matches!(*c, "Release" | "Campaign" | "Shutdown")),
        "the key stays: {:?}",
        store_commands(&out)
    );
    assert_eq!(h.role(1), Some(Role::Active));
    assert_eq!(h.agent.groups[&GroupId(1)].machine.term(), 5);
    assert_eq!(retunes(&out).len(), 1);
    (h, out)
}

#[test]
fn a_priority_change_is_applied_in_place_and_published() {
    let (h, out) =
        in_place_on_active_db("priority = 50\n", "db: applied in place: priority 100 → 50");
    let published: Vec<i32> = out
        .iter()
        .filter_map(|o| match o {
            Output::Store(GroupId(1), StoreCommand::Publish(m)) => Some(m.priority),
            _ => None,
        })
        .collect();
    assert_eq!(published, vec![50], "peers rank it by its new priority");
    assert_eq!(h.agent.views(h.now)[1].priority, 50, "D-Bus Priority");
    let r = records(&out)
        .into_iter()
        .find(|r| r.text.contains("applied in place"))
        .map(|r| (r.fields.group.clone(), r.fields.term))
        .unwrap();
    assert_eq!(r, (Some("db".to_string()), Some(5)));
}

#[test]
fn preempt_and_the_restart_settings_are_applied_in_place() {
    in_place_on_active_db(
        "preempt = true\n",
        "db: applied in place: preempt false → true",
    );
    in_place_on_active_db(
        "max-restarts = 5\nrestart-window = \"1min\"\nrestart-backoff = \"2s\"\nfailure-cooldown = \"1min\"\n",
        "db: applied in place: max-restarts 3 → 5, restart-window 5m → 1m, restart-backoff 1s → 2s, \
         failure-cooldown 10m → 1m",
    );
}

#[test]
fn members_that_keep_this_node_are_applied_in_place() {
    in_place_on_active_db(
        "members = [\"n1\", \"n2\"]\n",
        "db: applied in place: members any node → [n1 n2]",
    );
}

#[test]
fn a_watch_change_follows_the_units_anew() {
    let (_, out) = in_place_on_active_db(
        "watch = [\"db.service\"]\n",
        "db: applied in place: watch the closure's units → [db.service]",
    );
    let followed: Vec<Vec<String>> = out
        .iter()
        .filter_map(|o| match o {
            Output::Follow(GroupId(1), f) => Some(
                f.iter()
                    .filter(|(_, e)| e.watched)
                    .map(|(u, _)| u.clone())
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(followed, vec![vec!["db.service".to_string()]]);
    assert_eq!(
        retunes(&out),
        vec![(GroupId(1), false)],
        "the health check stays"
    );
}

#[test]
fn a_health_change_restarts_the_check_and_a_dropped_check_clears_its_failure() {
    let (_, out) = in_place_on_active_db(
        "health-command = [\"/bin/true\"]\nhealth-interval = \"5s\"\n",
        "db: applied in place: health-command none → [/bin/true], health-interval 2s → 5s",
    );
    assert_eq!(retunes(&out), vec![(GroupId(1), true)]);

    // web is passive; its check fails, which makes it ineligible; the reload drops the check.
    let checked = format!("{WEB}health-command = [\"/bin/false\"]\n");
    let mut h = H::new(&[&checked, DB]);
    h.input(Input::Start);
    h.passive(0, Some(("n2", 3)));
    h.input(Input::Health(
        GroupId(0),
        crate::health::HealthResult {
            ok: false,
            detail: "exit status 1".into(),
            duration: Duration::from_millis(3),
        },
    ));
    assert!(!h.agent.groups[&GroupId(0)].machine.healthy());
    h.take();
    let out = reload(&mut h, &[WEB, DB]);
    assert_eq!(
        said(&out),
        vec!["web: applied in place: health-command [/bin/false] → none"]
    );
    assert_eq!(retunes(&out), vec![(GroupId(0), true)]);
    assert!(
        h.agent.groups[&GroupId(0)].machine.healthy(),
        "no check, nothing failing"
    );
    assert_eq!(h.role(0), Some(Role::Passive));
}

/// db (active) reloaded with `changed` in its place: it hands over and restarts, and the
/// journal says why.
fn restarts_active_db(changed: &str, why: &str) {
    let mut h = H::web_passive_db_active();
    h.take();
    let out = reload(&mut h, &[WEB, changed]);
    assert_eq!(
        summary(&out),
        "1 unchanged, added [], removed [], changed in place [], changed (handed over, then restarted) [db]"
    );
    assert_eq!(said(&out), vec![why]);
    assert_eq!(
        jobs(&out),
        vec![(GroupId(1), Job::StopActive)],
        "handed over"
    );
    assert!(retunes(&out).is_empty());
}

#[test]
fn target_lease_address_and_membership_changes_restart_the_group_and_say_why() {
    restarts_active_db(
        &DB.replace("db-active.target", "db2-active.target"),
        "restarting group db: active-target changed db-active.target → db2-active.target; \
         handing over, then starting it again",
    );
    restarts_active_db(
        &format!("{DB}passive-target = \"db-passive.target\"\n"),
        "restarting group db: passive-target changed none → db-passive.target; handing over, \
         then starting it again",
    );
    restarts_active_db(
        &format!(
            "{}priority = 50\n",
            DB.replace("lease = \"2s\"", "lease = \"4s\"")
        ),
        "restarting group db: lease changed 2s → 4s (and priority 100 → 50); handing over, then \
         starting it again",
    );
    restarts_active_db(
        &format!("{DB}addresses = [\"192.0.2.10/24 dev eth0\"]\n"),
        "restarting group db: addresses changed [] → [192.0.2.10/24 dev eth0]; handing over, \
         then starting it again",
    );
    restarts_active_db(
        &format!("{DB}members = [\"n2\", \"n3\"]\n"),
        "restarting group db: members changed any node → [n2 n3], without this node (n1); \
         handing over, then starting it again",
    );
}

#[test]
fn addresses_in_a_new_order_or_spelling_are_no_change() {
    let two = |a: &str, b: &str| format!("{DB}addresses = [\"{a}\", \"{b}\"]\n");
    let mut h = H::new(&[
        WEB,
        &two("192.0.2.10/24 dev eth0", "2001:db8::10/64 dev eth0"),
    ]);
    h.input(Input::Start);
    h.passive(0, Some(("n2", 3)));
    h.active(1, 5);
    h.take();
    let out = reload(
        &mut h,
        &[
            WEB,
            &two("2001:db8:0:0::10/64  dev eth0", "192.0.2.10/24 dev eth0"),
        ],
    );
    assert_eq!(
        summary(&out),
        "2 unchanged, added [], removed [], changed in place [], changed (handed over, then restarted) []"
    );
    assert!(jobs(&out).is_empty(), "{out:#?}");
    assert_eq!(h.role(1), Some(Role::Active));
}

/// A group grown to two active hosts hands over, then opens as two slots, each a group of
/// its own keys; the family is then one group to later reloads (unchanged, changed in place
/// in every slot, removed with every slot).
#[test]
fn a_group_grown_to_two_slots_restarts_as_two_and_reloads_as_one() {
    let mut h = two_passive();
    let two = WEB.replace("lease = \"2s\"", "lease = \"2s\"\nactives = 2");
    let out = reload(&mut h, &[&two, DB]);
    assert_eq!(
        summary(&out),
        "1 unchanged, added [], removed [], changed in place [], changed (handed over, then restarted) [web]"
    );
    h.store(0, StoreEvent::Released);
    let out = h.take();
    let names: Vec<String> = opened(&out).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["web", "web@1"], "{out:#?}");
    let ids: Vec<GroupId> = opened(&out).into_iter().map(|(id, _)| id).collect();
    h.walked();
    h.passive(ids[0].0, Some(("n2", 3)));
    h.passive(ids[1].0, Some(("n3", 1)));

    let out = reload(&mut h, &[&two, DB]);
    assert!(
        summary(&out).starts_with("2 unchanged"),
        "{}",
        summary(&out)
    );

    let preferred = format!("{two}priority = 150\n");
    let out = reload(&mut h, &[&preferred, DB]);
    assert!(
        summary(&out).contains("changed in place [web]"),
        "{}",
        summary(&out)
    );
    let retuned: Vec<(GroupId, i32)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Retune { id, cfg, .. } => Some((*id, cfg.priority)),
            _ => None,
        })
        .collect();
    assert_eq!(retuned, [(ids[0], 150), (ids[1], 150)]);

    let out = reload(&mut h, &[DB]);
    assert!(summary(&out).contains("removed [web]"), "{}", summary(&out));
    for id in &ids {
        h.store(id.0, StoreEvent::Released);
    }
    let out = h.take();
    let closed: Vec<&str> = closed(&out).into_iter().map(|(_, n, _)| n).collect();
    assert_eq!(closed, ["web", "web@1"], "{out:#?}");
    assert_eq!(
        passive_stopped(&out),
        ["web-passive.target"],
        "once, with the last slot"
    );
    assert!(h.agent.families.is_empty());
}

#[test]
fn a_change_of_actives_or_standbys_restarts_the_group() {
    let old = config_of(&format!("node = \"n1\"\n{WEB}")).groups.remove(0);
    let new = crate::config::GroupConfig {
        actives: 2,
        standbys: std::num::NonZeroU32::new(1),
        ..old.clone()
    };
    let c = super::super::reload::changes(&old, &new, "n1");
    assert_eq!(
        c.restart,
        ["actives changed 1 → 2", "standbys changed no limit → 1"]
    );
    assert!(c.in_place.is_empty());
}
