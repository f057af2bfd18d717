//! The agent driven as the runtime drives it, with a fake clock and a scripted store: each
//! test asserts what an operator would see (STATUS=, the journal, D-Bus answers, which
//! groups restart on a reload).

mod calls;
mod events;
mod metrics;
mod reload;
mod slots;
mod status;

use std::time::{Duration, Instant};

use super::*;
use crate::core::Role;
use crate::store::{Leader, MaintenanceRecord, MemberRecord, StoreCommand, SwitchoverRecord};

/// This host's machine-id in the tests; [`OTHER_HOST`] is another host's.
const THIS_HOST: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1";
const OTHER_HOST: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2";

/// The watchdog promd runs with in the tests: fitted to a 2s lease, as promd fits it at
/// start-up (a machine given a watchdog too long for its lease cannot keep its margin).
const WATCHDOG: Duration = Duration::from_millis(300);

/// One group, `web`, on node `n1`, with a 2s lease.
const WEB: &str = r#"
[[group]]
name = "web"
active-target = "web-active.target"
passive-target = "web-passive.target"
lease = "2s"
"#;

/// A second group, `db`.
const DB: &str = r#"
[[group]]
name = "db"
active-target = "db-active.target"
lease = "2s"
"#;

fn config(groups: &[&str]) -> Config {
    config_of(&format!("node = \"n1\"\n{}", groups.concat()))
}

fn config_of(text: &str) -> Config {
    match crate::config::parse(text, "promd.toml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

/// An agent, a fake clock, and every output so far.
struct H {
    agent: Agent,
    origin: Instant,
    now: Mono,
    /// Every output, in order; `take` hands out those since the last call.
    out: Vec<Output>,
    calls: u64,
    /// The groups whose drivers are open (since `Input::Start`).
    opened: Option<std::collections::BTreeSet<GroupId>>,
    /// Take the views after every input, as the runtime does, and check that the `STATUS=`
    /// line built from the clauses of the touched groups alone is the full line.
    views: bool,
}

impl H {
    fn new(groups: &[&str]) -> H {
        H::with(config(groups))
    }

    fn with(config: Config) -> H {
        H::with_floors(config, std::collections::BTreeMap::new())
    }

    /// With these terms kept on disk by earlier runs, by group name.
    fn with_floors(config: Config, term_floors: std::collections::BTreeMap<String, u64>) -> H {
        let origin = Instant::now();
        let agent = Agent::new(Settings {
            config,
            config_origin: "/etc/promd/promd.toml".into(),
            host: crate::store::HostId::parse(THIS_HOST),
            watchdog: Some(WATCHDOG),
            origin,
            wall_usec: 1_000_000,
            term_floors,
        });
        H {
            agent,
            origin,
            now: Mono(Duration::from_secs(100)),
            out: Vec::new(),
            calls: 0,
            opened: None,
            views: false,
        }
    }

    fn at(&self) -> Now {
        Now {
            mono: self.now,
            wall_usec: u64::try_from(self.now.0.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// Handle one input; returns its outputs (also kept in `out`).
    fn input(&mut self, input: Input) -> Vec<Output> {
        let started = matches!(input, Input::Start) || self.opened.is_some();
        let out = self.agent.handle(input, self.at());
        assert!(
            self.agent.deadlines_filed(),
            "the filed deadlines differ from a scan of the machines"
        );
        // The runtime drops a group's work that comes before its drivers are open.
        if started {
            let opened = self.opened.get_or_insert_with(Default::default);
            for o in &out {
                match o {
                    Output::Open(id, _) => {
                        opened.insert(*id);
                    }
                    Output::Job(id, _)
                    | Output::Kill { id, .. }
                    | Output::Store(id, _)
                    | Output::Env(id, _)
                    | Output::Follow(id, _)
                    | Output::Restart(id, _)
                    | Output::StopPassive(id) => {
                        assert!(
                            opened.contains(id),
                            "{o:?} before the group's Open: {out:#?}"
                        );
                    }
                    _ => {}
                }
            }
        }
        if self.views {
            self.agent.take_views(self.now);
            assert_eq!(
                self.agent.last_status,
                self.agent.status_line(self.now),
                "STATUS= as rebuilt for the touched groups differs from the full line"
            );
        }
        self.out.extend(out.iter().cloned());
        out
    }

    fn store(&mut self, id: u64, ev: StoreEvent) -> Vec<Output> {
        self.input(Input::Store(GroupId(id), ev))
    }

    fn job(&mut self, id: u64, job: Job, ok: bool) -> Vec<Output> {
        let done = JobDone {
            job,
            ok,
            not_up: Vec::new(),
        };
        self.input(Input::Job(GroupId(id), done))
    }

    /// Time passes; a Tick at the new time.
    fn advance(&mut self, d: Duration) -> Vec<Output> {
        self.now = self.now + d;
        self.input(Input::Tick)
    }

    /// PID 1 takes the kills in `out`, as the runtime says ([`Input::KillSent`]); returns
    /// what that brought.
    fn kills_sent(&mut self, out: &[Output]) -> Vec<Output> {
        let sent: Vec<(GroupId, u64)> = out
            .iter()
            .filter_map(|o| match o {
                Output::Kill { id, kill, .. } => Some((*id, *kill)),
                _ => None,
            })
            .collect();
        sent.into_iter()
            .flat_map(|(id, kill)| self.input(Input::KillSent(id, kill)))
            .collect()
    }

    /// The number of the kill in `out` of group `id`.
    fn kill_number(out: &[Output], id: u64) -> Option<u64> {
        out.iter().find_map(|o| match o {
            Output::Kill {
                id: GroupId(g),
                kill,
                ..
            } if *g == id => Some(*kill),
            _ => None,
        })
    }

    fn renew(&mut self, id: u64) -> Vec<Output> {
        let sent_at = self.origin + self.now.0;
        self.store(id, StoreEvent::Renewed { sent_at })
    }

    fn call(&mut self, id: u64, call: Call) -> (CallId, Vec<Output>) {
        let c = CallId(self.calls);
        self.calls += 1;
        (c, self.input(Input::Call(c, GroupId(id), call)))
    }

    fn status(&self) -> String {
        self.agent.status_line(self.now)
    }

    /// The store comes up and shows `leader` holding the key; the start-up stop and the
    /// passive target's start succeed. The group ends passive.
    fn passive(&mut self, id: u64, leader: Option<(&str, u64)>) {
        self.store(id, StoreEvent::Up);
        self.renew(id);
        let leader = leader.map(|(node, term)| Leader {
            node: node.into(),
            term,
            host: None,
        });
        self.store(id, StoreEvent::Leader(leader));
        self.store(id, StoreEvent::Members(Vec::new()));
        self.store(id, StoreEvent::Switchover(None));
        self.store(id, StoreEvent::Maintenance(None));
        self.job(id, Job::StopActive, true);
        self.job(id, Job::StartPassive, true);
        assert_eq!(self.role(id), Some(Role::Passive), "{:#?}", self.out);
    }

    /// The campaign is won at `term`; the store then shows the record the campaign wrote
    /// with the key (claiming the role), which is when it starts the active target. The
    /// outputs of both.
    fn win(&mut self, id: u64, term: u64) -> Vec<Output> {
        let claim = self
            .out
            .iter()
            .rev()
            .find_map(|o| match o {
                Output::Store(g, StoreCommand::Campaign { claim, .. }) if *g == GroupId(id) => {
                    Some(claim.with_term(term))
                }
                _ => None,
            })
            .expect("the campaign carries the record that claims the role");
        assert_eq!(claim.role, Role::Promoting);
        let mut out = self.store(id, StoreEvent::Campaigned(Some(term)));
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::Store(_, StoreCommand::Publish(_)))),
            "the claim was written with the key, not again: {out:#?}"
        );
        out.extend(self.store(id, StoreEvent::Members(vec![claim])));
        out
    }

    /// Passive with no leader, then wins the key at `term` and starts the active target.
    fn active(&mut self, id: u64, term: u64) {
        self.passive(id, None);
        self.win(id, term);
        self.job(id, Job::StartActive, true);
        assert_eq!(self.role(id), Some(Role::Active), "{:#?}", self.out);
    }

    /// Every group whose closure was not found yet gets one, empty (what the runtime reports
    /// once its walks are done): until then each fence begins as early as its lease allows
    /// (`fence_load.rs`).
    fn walked(&mut self) -> Vec<Output> {
        let ids: Vec<GroupId> = (self.agent.groups.iter())
            .filter(|(_, g)| !g.walked)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.input(Input::Closure(id, Closure::default())));
        }
        out
    }

    /// Two groups started: web (0) passive under n2's key at term 3, db (1) active at term 5.
    fn web_passive_db_active() -> H {
        let mut h = H::new(&[WEB, DB]);
        h.input(Input::Start);
        h.walked();
        h.passive(0, Some(("n2", 3)));
        h.active(1, 5);
        h
    }

    fn role(&self, id: u64) -> Option<Role> {
        self.agent
            .groups
            .get(&GroupId(id))
            .map(|g| g.machine.role())
    }

    /// Every output since the last `take`.
    fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }
}

/// A member record of `node` as the store shows it.
fn member(node: &str, host: Option<&str>) -> MemberRecord {
    MemberRecord {
        v: 1,
        node: node.into(),
        priority: 100,
        eligible: true,
        healthy: true,
        role: Role::Passive,
        term: None,
        host: host.map(str::to_string),
        why: None,
        failures: None,
        since_usec: None,
    }
}

/// The store going down for `why`, and the reason as promd shows it. The only place that
/// builds the backend's error, so that its type can change without touching the tests.
fn down(why: &str) -> (StoreEvent, String) {
    let error = crate::store::StoreError::Etcd(crate::store::EtcdError::Failed {
        call: "lease keepalive",
        cause: crate::store::Cause::new(std::io::Error::other(why.to_string())),
    });
    let shown = error.to_string();
    (StoreEvent::Down(error), shown)
}

/// An unreadable value at `key`, and the error as promd shows it (see [`down`]).
fn corrupt(key: &str, why: &str) -> (StoreEvent, String) {
    let error = crate::store::ValueError::Record(crate::store::RecordError::Invalid(why.into()));
    let shown = error.to_string();
    let ev = StoreEvent::Corrupt {
        key: key.into(),
        error,
    };
    (ev, shown)
}

fn maintenance(on: bool) -> MaintenanceRecord {
    MaintenanceRecord {
        v: 1,
        on,
        by: "n2".into(),
    }
}

/// The journal records among `out`.
fn records(out: &[Output]) -> Vec<&Record> {
    out.iter()
        .filter_map(|o| match o {
            Output::Log(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// The journal texts among `out`.
fn texts(out: &[Output]) -> Vec<&str> {
    records(out).into_iter().map(|r| r.text.as_str()).collect()
}

/// The answers to D-Bus calls among `out`.
fn replies(out: &[Output]) -> Vec<(CallId, Result<(), CallError>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Reply(c, r) => Some((*c, r.clone())),
            _ => None,
        })
        .collect()
}

/// The sd_notify messages among `out`.
fn notified(out: &[Output]) -> Vec<&Notify> {
    out.iter()
        .filter_map(|o| match o {
            Output::Notify(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// The store commands among `out`, by name.
fn store_commands(out: &[Output]) -> Vec<(GroupId, &'static str)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Store(id, cmd) => Some((
                *id,
                match cmd {
                    StoreCommand::Campaign { .. } => "Campaign",
                    StoreCommand::Release { .. } => "Release",
                    StoreCommand::Retire { .. } => "Retire",
                    StoreCommand::Publish(_) => "Publish",
                    StoreCommand::RequestSwitchover(_) => "RequestSwitchover",
                    StoreCommand::ClearSwitchover => "ClearSwitchover",
                    StoreCommand::SetMaintenance(_) => "SetMaintenance",
                    StoreCommand::Shutdown => "Shutdown",
                },
            )),
            _ => None,
        })
        .collect()
}

/// The systemd jobs among `out`.
fn jobs(out: &[Output]) -> Vec<(GroupId, Job)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Job(id, order) => Some((*id, order.job)),
            _ => None,
        })
        .collect()
}

#[test]
fn start_opens_every_group_then_says_ready() {
    let mut h = H::new(&[WEB, DB]);
    let out = h.input(Input::Start);
    let opened: Vec<(GroupId, &str)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Open(id, cfg) => Some((*id, cfg.name.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(opened, vec![(GroupId(0), "web"), (GroupId(1), "db")]);
    // Each machine's first step: the units a previous run may have left are stopped.
    assert_eq!(
        jobs(&out),
        vec![(GroupId(0), Job::StopActive), (GroupId(1), Job::StopActive)]
    );
    assert!(
        matches!(out.last(), Some(Output::Notify(Notify::Ready(s)))
            if s == "web: starting, waiting for the store; db: starting, waiting for the store"),
        "{out:#?}"
    );
}

#[test]
fn sigterm_hands_every_group_over_then_promd_may_exit() {
    let mut h = H::new(&[WEB, DB]);
    h.input(Input::Start);
    h.active(0, 7);
    h.passive(1, Some(("n2", 3)));
    h.take();
    let out = h.input(Input::Signal(Signal::Terminate));
    assert_eq!(
        texts(&out),
        vec![
            "SIGTERM: handing over every group and stopping",
            "web: active -> demoting (term 7): promd is stopping"
        ]
    );
    assert_eq!(notified(&out)[0], &Notify::Stopping);
    // The active group stops its units first; the passive one has nothing to hand over.
    assert_eq!(jobs(&out), vec![(GroupId(0), Job::StopActive)]);
    assert_eq!(store_commands(&out), vec![(GroupId(1), "Shutdown")]);
    assert!(h.agent.stopping() && !h.agent.done());
    // A second SIGTERM changes nothing.
    assert!(h.input(Input::Signal(Signal::Terminate)).is_empty());
    // Its units down, web releases the key (no passive target on the way out), then exits.
    let out = h.job(0, Job::StopActive, true);
    assert_eq!(store_commands(&out), vec![(GroupId(0), "Release")]);
    let out = h.store(0, StoreEvent::Released);
    assert_eq!(store_commands(&out), vec![(GroupId(0), "Shutdown")]);
    assert!(h.agent.done());
    assert_eq!(h.agent.refused(), None);
    // The wait for the store at exit: the longest lease, at least 1s.
    assert_eq!(h.agent.shutdown_wait(), Duration::from_secs(2));
}

#[test]
fn a_group_that_has_exited_no_longer_wakes_the_loop() {
    let mut h = H::web_passive_db_active();
    // db cannot hand over (its stop hangs); web exits at once.
    h.input(Input::Signal(Signal::Terminate));
    assert!(h.agent.groups[&GroupId(0)].machine.exited());
    h.advance(Duration::from_secs(10));
    // Whatever deadline web had when it exited has no step to wait for any more: were it
    // counted, the loop would wake at once, again and again, until db is done.
    assert!(
        h.agent.next_deadline().is_none_or(|d| d > h.now),
        "{:?} at {:?}",
        h.agent.next_deadline(),
        h.now
    );
}

#[test]
fn the_watchdog_horizon_moves_only_while_every_store_task_turns() {
    let mut h = H::new(&[WEB, DB]);
    h.input(Input::Start);
    let fresh = Some(Duration::from_millis(100));
    let check = |h: &mut H, ages: Vec<(GroupId, Option<Duration>)>| h.input(Input::StoreAges(ages));
    let out = check(&mut h, vec![(GroupId(0), fresh), (GroupId(1), None)]);
    assert!(
        records(&out).is_empty(),
        "a task that never beat is not stalled"
    );
    // No units may run: the horizon is the loop's own liveness, moved by every input.
    assert_eq!(h.agent.watchdog_horizon(), h.now + LOOP_STALL_LIMIT);
    h.advance(Duration::from_secs(1));
    h.input(Input::Tick);
    assert_eq!(h.agent.watchdog_horizon(), h.now + LOOP_STALL_LIMIT);
    // Three renewal intervals, at least 5s, without a turn: hung. The horizon stays.
    let held = h.agent.watchdog_horizon();
    let out = check(
        &mut h,
        vec![
            (GroupId(0), fresh),
            (GroupId(1), Some(Duration::from_secs(6))),
        ],
    );
    let r = records(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].level, Level::Error);
    assert_eq!(
        r[0].text,
        "store driver stalled: the watchdog will restart promd"
    );
    assert_eq!(r[0].fields.group.as_deref(), Some("db"));
    h.advance(Duration::from_secs(1));
    h.input(Input::Tick);
    assert_eq!(
        h.agent.watchdog_horizon(),
        held,
        "no input moves it while stalled"
    );
    // The task turns again: the horizon moves on.
    check(
        &mut h,
        vec![
            (GroupId(0), fresh),
            (GroupId(1), Some(Duration::from_secs(4))),
        ],
    );
    assert_eq!(h.agent.watchdog_horizon(), h.now + LOOP_STALL_LIMIT);
}

/// Group 0 (`web`) active under term 5, its last renewal sent now: the harness, that send
/// time `s`, and the group's timing.
fn active_renewed_now() -> (H, crate::core::Mono, Timing) {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.active(0, 5);
    h.renew(0);
    let s = h.now;
    let timing = h.agent.groups[&GroupId(0)].machine.timing();
    (h, s, timing)
}

#[test]
fn while_units_may_run_the_horizon_is_their_hang_deadline() {
    // The last renewal went out now (s); the store then goes silent.
    let (mut h, s, timing) = active_renewed_now();
    // The group's own: the lease, the watchdog, and the host's fence load, not known here
    // (no closure was walked): the most the lease allows.
    assert_eq!(
        timing,
        Timing::new(Duration::from_secs(2))
            .with_watchdog(WATCHDOG)
            .with_fence_load(Duration::MAX)
    );
    // Until PID 1 took the fence's kill, earlier than the lease alone asks by the kill's
    // window (100 ms here): the watchdog's own kill goes through PID 1 too.
    assert_eq!(
        h.agent.watchdog_horizon(),
        timing.hang_deadline_before_kill(s)
    );
    assert_eq!(timing.kill_window(), Duration::from_millis(100));
    assert_eq!(
        timing.hang_deadline_before_kill(s) + timing.kill_window(),
        timing.hang_deadline(s)
    );
    // A promd slow but not hung has KILL_ROOM after its kill deadline for PID 1 to take the
    // kill.
    assert_eq!(
        timing.hang_deadline_before_kill(s),
        timing.kill_at(s) + crate::core::KILL_ROOM
    );
    // Past the fence deadline the units drain (the stop job runs); a hang now must be caught
    // before s + L, not W after the hang, and no later input moves the horizon.
    h.now = timing.fence_at(s) + Duration::from_millis(50);
    let out = h.input(Input::Tick);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Job(_, j) if j.job == Job::StopActive)),
        "{out:#?}"
    );
    h.input(Input::StoreAges(vec![(
        GroupId(0),
        Some(Duration::from_millis(10)),
    )]));
    let horizon = h.agent.watchdog_horizon();
    assert_eq!(horizon, timing.hang_deadline_before_kill(s));
    let dead = horizon
        + crate::core::WATCHDOG_ACCURACY
        + crate::core::AFTER_WATCHDOG
        + timing.kill_window();
    assert!(dead < s + Duration::from_secs(2));
    // The kill is asked, but its calls may still wait in promd (a task not yet run, or a
    // kill in flight): a hang now leaves the kill to `ExecStopPost=promd fence`, which
    // needs the fence load's time, so the horizon stays.
    h.now = timing.kill_at(s);
    let out = h.input(Input::Tick);
    let kill = H::kill_number(&out, 0).expect("the kill is asked");
    assert_eq!(
        h.agent.watchdog_horizon(),
        timing.hang_deadline_before_kill(s)
    );
    // PID 1 took the calls: it carries the kill out whatever promd does, and the horizon
    // moves to the lease's own hang deadline, for promd to see it done.
    h.input(Input::KillSent(GroupId(0), kill));
    assert_eq!(h.agent.watchdog_horizon(), timing.hang_deadline(s));
    // The stop is done: the units are down, only the loop's liveness bounds it again.
    h.job(0, Job::StopActive, true);
    assert_eq!(h.agent.watchdog_horizon(), h.now + LOOP_STALL_LIMIT);
}

#[test]
fn only_the_answer_to_the_latest_kill_moves_the_horizon() {
    let (mut h, s, timing) = active_renewed_now();
    h.now = timing.fence_at(s) + Duration::from_millis(50);
    h.input(Input::Tick);
    h.now = timing.kill_at(s);
    let out = h.input(Input::Tick);
    let first = H::kill_number(&out, 0).expect("the kill is asked");
    // A unit of the role starts while the stop runs (a timer, a dependency): the kill asked
    // before it did not cover it, and it is killed at once, the kill deadline being past.
    let started = crate::watch::WatchEvent::Started {
        unit: "late.service".into(),
    };
    let out = h.input(Input::Watch(GroupId(0), started));
    assert_eq!(H::kill_number(&out, 0), Some(first + 1), "{out:#?}");
    // The first kill's answer comes in late: it says nothing of the newcomer.
    h.input(Input::KillSent(GroupId(0), first));
    assert_eq!(
        h.agent.watchdog_horizon(),
        timing.hang_deadline_before_kill(s)
    );
    h.input(Input::KillSent(GroupId(0), first + 1));
    assert_eq!(h.agent.watchdog_horizon(), timing.hang_deadline(s));
    // A kill again (the stop still runs a rekill interval later) keeps it: the units the
    // answered kill hit are dying whatever promd does.
    h.now = h.now + timing.rekill_interval();
    let out = h.input(Input::Tick);
    assert_eq!(H::kill_number(&out, 0), Some(first + 2), "{out:#?}");
    assert_eq!(h.agent.watchdog_horizon(), timing.hang_deadline(s));
}

#[test]
fn an_exited_groups_store_task_may_stop_turning() {
    let mut h = H::new(&[WEB, DB]);
    h.input(Input::Start);
    h.active(0, 5);
    h.passive(1, Some(("n2", 3)));
    h.input(Input::Signal(Signal::Terminate));
    assert!(h.agent.groups[&GroupId(1)].machine.exited());
    let hung = Some(Duration::from_secs(60));
    let out = h.input(Input::StoreAges(vec![(GroupId(1), hung)]));
    assert!(records(&out).is_empty());
    assert!(h.agent.watchdog_horizon() > h.now);
}

/// systemd drops a notify message over 4 KiB whole, `READY=1` with it: with 200 groups the
/// one-clause-per-group status never made promd ready. Past `STATUS_MAX` the line is a
/// summary that still names the groups that need a look.
#[test]
fn the_status_of_hundreds_of_groups_is_a_summary_that_fits_a_notify_message() {
    let groups: Vec<String> = (1..=200)
        .map(|g| {
            format!(
                "[[group]]\nname = \"g{g}\"\nactive-target = \"g{g}-active.target\"\nlease = \"2s\"\n"
            )
        })
        .collect();
    let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    let mut h = H::new(&refs);
    let out = h.input(Input::Start);
    let ready: Vec<&Notify> = notified(&out)
        .into_iter()
        .filter(|n| matches!(n, Notify::Ready(_)))
        .collect();
    let [Notify::Ready(status)] = ready[..] else {
        panic!("one READY=1: {ready:?}");
    };
    assert!(status.len() <= STATUS_MAX, "{} bytes", status.len());
    assert!(status.starts_with("200 groups: 200 starting"), "{status}");
    for g in 0..200 {
        h.passive(g, Some(("n2", 3)));
    }
    assert_eq!(h.status(), "200 groups: 200 passive");
    // One group loses its store, one fails its passive target: both are named.
    h.store(
        7,
        StoreEvent::Down(crate::store::StoreError::Dir(
            crate::store::DirError::NotADirectory("/x".into()),
        )),
    );
    let status = h.status();
    assert!(
        status.starts_with("200 groups: 200 passive; g8: passive, waiting for the store"),
        "{status}"
    );
    assert!(status.len() <= STATUS_MAX);
    // A few groups stay within the limit: one clause each, as before.
    let mut few = H::new(&[WEB, DB]);
    few.input(Input::Start);
    few.passive(0, Some(("n2", 3)));
    few.passive(1, Some(("n2", 4)));
    assert_eq!(
        few.status(),
        "web: passive, leader n2 (term 3); db: passive, leader n2 (term 4)"
    );
}

/// With hundreds of groups, a renewal of one must cost one view, not hundreds: the D-Bus
/// views are handed over for the groups an input touched, every one of them after a start
/// or a signal; the once-a-second refresh hands over only those time alone changed.
#[test]
fn a_renewal_refreshes_only_its_groups_view() {
    let mut h = H::new(&[WEB, DB]);
    h.input(Input::Start);
    assert!(matches!(h.agent.take_views(h.now), ViewUpdate::All(v) if v.len() == 2));
    h.passive(0, Some(("n2", 3)));
    h.passive(1, Some(("n2", 4)));
    h.agent.take_views(h.now);
    h.renew(1);
    match h.agent.take_views(h.now) {
        ViewUpdate::Some(v) => {
            assert_eq!(
                v.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
                ["db"]
            );
        }
        other => panic!("{other:?}"),
    }
    // Nothing happened since: nothing to refresh.
    assert_eq!(h.agent.take_views(h.now), ViewUpdate::Some(Vec::new()));
    h.input(Input::StoreAges(Vec::new()));
    assert_eq!(h.agent.take_views(h.now), ViewUpdate::Some(Vec::new()));
    let file = NewConfig {
        config: config(&[WEB, DB]),
        text: format!("node = \"n1\"\n{WEB}{DB}"),
        closures: Default::default(),
    };
    h.input(Input::Signal(Signal::Reload(Ok(file))));
    assert!(matches!(h.agent.take_views(h.now), ViewUpdate::All(v) if v.len() == 2));
}

/// A failure leaves its window with no input of its own: the once-a-second refresh rebuilds
/// that group's view and `STATUS=` clause, and leaves the idle group's alone.
#[test]
fn the_periodic_refresh_rebuilds_what_time_alone_changed() {
    let web = WEB.replace(
        "lease = \"2s\"",
        "lease = \"30s\"\nrestart-window = \"10s\"",
    );
    let db = DB.replace("lease = \"2s\"", "lease = \"30s\"");
    let mut h = H::with(config(&[&web, &db]));
    h.input(Input::Start);
    h.active(0, 7);
    h.passive(1, Some(("n2", 4)));
    let failed = WatchEvent::Failed {
        unit: "web.service".into(),
        restarted: true,
    };
    let out = h.input(Input::Watch(GroupId(0), failed));
    assert_eq!(
        notified(&out),
        vec![&Notify::Status(
            "web: active (term 7), 1 failure in the window; db: passive, leader n2 (term 4)".into()
        )]
    );
    h.agent.take_views(h.now);
    // Still inside the window: nothing to rebuild.
    h.now = h.now + Duration::from_secs(5);
    let out = h.input(Input::StoreAges(Vec::new()));
    assert!(notified(&out).is_empty(), "{out:#?}");
    assert_eq!(h.agent.take_views(h.now), ViewUpdate::Some(Vec::new()));
    // Out of it (no Tick: no machine is fed).
    h.now = h.now + Duration::from_secs(6);
    let out = h.input(Input::StoreAges(Vec::new()));
    assert_eq!(
        notified(&out),
        vec![&Notify::Status(
            "web: active (term 7); db: passive, leader n2 (term 4)".into()
        )]
    );
    match h.agent.take_views(h.now) {
        ViewUpdate::Some(v) => {
            assert_eq!(v.len(), 1, "{v:#?}");
            assert_eq!((v[0].name.as_str(), v[0].failures), ("web", 0));
        }
        other => panic!("{other:?}"),
    }
    // No renewal for most of a lease: both are ineligible now, and their views say so.
    h.now = h.now + Duration::from_secs(20);
    h.input(Input::StoreAges(Vec::new()));
    match h.agent.take_views(h.now) {
        ViewUpdate::Some(v) => {
            let why: Vec<_> = v
                .iter()
                .map(|v| (v.name.as_str(), v.why.as_str()))
                .collect();
            assert_eq!(
                why,
                [("web", "lease-not-renewed"), ("db", "lease-not-renewed")]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn units_left_by_an_earlier_run_do_not_time_the_watchdog_to_the_new_lease() {
    let mut h = H::new(&[WEB]);
    // Start-up: the role's units are killed (an earlier run may have left them); the store
    // comes up and renews while that kill is still unconfirmed.
    let out = h.input(Input::Start);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Job(_, j) if j.job == Job::StopActive)),
        "the start-up stop: {out:#?}"
    );
    h.store(0, StoreEvent::Up);
    h.renew(0);
    // No key is this node's: no standby waits for its lease, so only the loop's liveness
    // bounds the watchdog, however long the stop takes to be confirmed.
    h.now = h.now + Duration::from_secs(10);
    h.input(Input::StoreAges(vec![(
        GroupId(0),
        Some(Duration::from_millis(10)),
    )]));
    assert_eq!(h.agent.watchdog_horizon(), h.now + LOOP_STALL_LIMIT);
}

#[test]
fn a_switchover_releases_the_key_and_says_passive_in_one_write() {
    let mut h = H::new(&[WEB]);
    h.input(Input::Start);
    h.active(0, 7);
    h.take();
    let mut own = member("n1", Some(THIS_HOST));
    own.role = Role::Active;
    own.term = Some(7);
    h.store(0, StoreEvent::Members(vec![own, member("n2", None)]));
    h.store(
        0,
        StoreEvent::Switchover(Some(SwitchoverRecord {
            v: 1,
            to: "n2".into(),
            from: "n2".into(),
        })),
    );
    let out = h.take();
    assert_eq!(jobs(&out), vec![(GroupId(0), Job::StopActive)], "{out:#?}");
    let out = h.job(0, Job::StopActive, true);
    assert_eq!(jobs(&out), vec![(GroupId(0), Job::StartPassive)]);
    let out = h.job(0, Job::StartPassive, true);
    // Not a Release and then a Publish: one write, the record saying passive.
    assert_eq!(
        store_commands(&out),
        vec![(GroupId(0), "Retire")],
        "{out:#?}"
    );
    let retired = out.iter().find_map(|o| match o {
        Output::Store(_, StoreCommand::Retire { term, record }) => Some((*term, record.role)),
        _ => None,
    });
    assert_eq!(retired, Some((7, Role::Passive)));
    assert_eq!(h.role(0), Some(Role::Passive));
}
