//! Many groups per agent (issue 13), as CI runs it: 200 groups on three real systemd hosts
//! with a 3-member etcd, promd as the shipped `promd.service` (its watchdog included). Every
//! group `gN` has its own active target pulling in `gN.service`, which records its run spans,
//! and its own passive target. Every other service drains (`ExecStop=/bin/sleep 20`, 30 s to
//! stop): a cut host's fence must kill those in time, and PID 1 then has their whole stop to
//! run after the kill. Of the rest, every other one ignores SIGTERM and forks two children
//! that ignore it too, so only the fence's SIGKILL of the whole cgroup ends it before its
//! 10 s stop timeout. What a user would check: promd is READY within a few seconds,
//! every group settles with one active host, none of the hosts' promd is restarted by its
//! watchdog over its first minute, and when the host with every group (the worst case: `n1`
//! is preferred for all, with `preempt`) is cut off silently, every one of its groups is elected elsewhere within the lease plus a second, the
//! hosts that take over are not restarted either, and no two hosts run a group's service at
//! once. The figures for more groups are `benches/groups.rs`'s.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::etcd::EtcdCluster;
use support::groups::{self, mono_us};
use support::hosts::{self, Host, Net};

const GROUPS: usize = 200;
const HOSTS: usize = 3;
/// The shortest lease promd finds enough for the 200 services stopped at once
/// (`Timing::lease_for_fence_load`; the issue tried 4 s): each runs an `ExecStopPost=`, the
/// draining ones an `ExecStop=` too, 300 stop commands (`Timing::fence_load_for`: 3 s), 8 s;
/// 9 s with `PROMD_TEST_DRAIN`. promd kills early enough for its estimate.
///
/// History: at 5 s and 8 ms per unit the 200 services' processes were gone 1.23 s after the
/// fence, but their last stop job ended only after 1.83 s, and the watchdog restarted promd;
/// with the lease's own window they outlived the lease (docs/safety.md, "Where PID 1 itself
/// is the bound"). At 6 s, all 200 draining and killed at the lease's own kill margin, 131
/// outlived `s + L`; with the kill moved but one command's cost counted, every one was down
/// in time but PID 1 ended the last stop job past the hang deadline (12.8 ms per unit) and
/// the watchdog restarted promd.
fn lease() -> Duration {
    let pinned = if std::env::var_os("PROMD_TEST_DRAIN").is_some() {
        DRAINING_LEASE
    } else {
        LEASE
    };
    // Pinned, not taken from the code under test: a cost per unit that grows must fail
    // here, not quietly run the test at a longer lease.
    let asked = promd::core::Timing::lease_for_fence_load(fence_load());
    assert!(
        asked.is_some_and(|l| l <= pinned),
        "promd asks for a {asked:?} lease for these services; the test runs at {pinned:?}"
    );
    pinned
}

/// The lease the test runs at: what promd asks for 200 services, half of them draining.
const LEASE: Duration = Duration::from_secs(8);
/// With `PROMD_TEST_DRAIN`, every service draining.
const DRAINING_LEASE: Duration = Duration::from_secs(9);

/// What promd estimates PID 1 needs to stop every group's service at once: one unit each,
/// an `ExecStopPost=` each, an `ExecStop=` for those that drain; no group without processes
/// (`Timing::fence_load_for`).
fn fence_load() -> Duration {
    let commands = GROUPS + (1..=GROUPS).filter(|&g| drains(g)).count();
    promd::core::Timing::fence_load_for(0, GROUPS, commands)
}

/// The command a draining service runs as `ExecStop=`: `PROMD_TEST_DRAIN` (then every
/// service drains: the reviewer's worst case), else `/bin/sleep 20` for every other group.
fn drain_command() -> String {
    std::env::var("PROMD_TEST_DRAIN").unwrap_or_else(|_| "/bin/sleep 20".into())
}

/// Whether group `g`'s service drains.
fn drains(g: usize) -> bool {
    std::env::var_os("PROMD_TEST_DRAIN").is_some() || g.is_multiple_of(2)
}
/// The bound for start-up at 500 groups; 200 must do at least as well.
const READY_BOUND: Duration = Duration::from_secs(5);
/// How long after the lease every cut group's service must be running on another host.
const SERVICES_UP_AFTER_LEASE: Duration = Duration::from_secs(4);
/// How long no promd may be restarted by its watchdog, counted from the start.
const QUIET: Duration = Duration::from_secs(60);

/// CLOCK_REALTIME in ns, the clock of the span logs (`date +%s%N`).
fn real_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64
}

/// Whether group `g`'s service ignores SIGTERM and forks children that ignore it too (every
/// fourth group, none of them draining unless `PROMD_TEST_DRAIN` is set).
fn ignores_term(g: usize) -> bool {
    g % 4 == 1
}

/// What such a service runs: a shell that ignores SIGTERM (as its children inherit) and
/// waits for two `sleep`s it started in the background. Unit-file syntax.
const IGNORES_TERM: &str =
    "/bin/sh -c 'trap \"\" TERM; /usr/bin/sleep infinity & /usr/bin/sleep infinity & wait'";

/// The hosts, every draining service ([`drains`]) with a drop-in that makes it drain, and
/// every one that [`ignores_term`] with one that makes it so.
fn boot(net: &Net, etcd: &EtcdCluster, spans: &[tempfile::TempDir]) -> Vec<Host> {
    let drain = drain_command();
    let specs = (0..HOSTS)
        .map(|i| {
            let mut spec =
                groups::host_spec(net, i, etcd, GROUPS, lease(), Some(spans[i].path()), i == 0);
            for g in (1..=GROUPS).filter(|&g| drains(g)) {
                spec.file(
                    &format!("/etc/systemd/system/g{g}.service.d/drain.conf"),
                    format!("[Service]\nExecStop={drain}\nTimeoutStopSec=30s\n"),
                );
            }
            for g in (1..=GROUPS).filter(|&g| ignores_term(g)) {
                spec.file(
                    &format!("/etc/systemd/system/g{g}.service.d/ignores-term.conf"),
                    format!("[Service]\nExecStart=\nExecStart={IGNORES_TERM}\n"),
                );
            }
            spec
        })
        .collect();
    net.boot_all(specs)
}

/// The groups whose active (`.0`) and passive (`.1`) targets are up on `h`.
fn roles(h: &Host) -> (BTreeSet<usize>, BTreeSet<usize>) {
    groups::parse_roles(&h.run_ok(&groups::ROLES_COMMAND))
}

/// Every group active on exactly one host and passive on the others; `Err` says what is not.
fn settled(all: &[(BTreeSet<usize>, BTreeSet<usize>)]) -> Result<(), String> {
    let mut wrong = Vec::new();
    for g in 1..=GROUPS {
        let active = all.iter().filter(|(a, _)| a.contains(&g)).count();
        let passive = all.iter().filter(|(_, p)| p.contains(&g)).count();
        if active != 1 || passive != HOSTS - 1 {
            wrong.push(format!("g{g}: {active} active, {passive} passive"));
        }
    }
    match wrong.len() {
        0 => Ok(()),
        n => Err(format!(
            "{n} groups not settled, e.g. {}",
            wrong[..n.min(5)].join("; ")
        )),
    }
}

/// promd restarts on `h`: [`Host::promd_restarts`].
fn restarts(h: &Host) -> (u64, usize) {
    h.promd_restarts()
}

/// Every write of a group's leader key (`/promd/gN/leader`) as an `etcdctl watch` that the
/// test runs sees it: when, which group, which node. The election itself, in the store;
/// promd's "won the election" follows once its loop has read the answer.
struct LeaderWatch {
    child: Child,
    seen: Arc<Mutex<Vec<(Instant, usize, String)>>>,
}

impl LeaderWatch {
    /// Watch `etcd`, and return once the watch is live (it saw a key the test wrote outside
    /// any group, which promd ignores).
    fn start(etcd: &EtcdCluster) -> LeaderWatch {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", etcd.endpoints().join(",")))
            .args(["watch", "--prefix", "/promd/"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl watch");
        let stdout = child.stdout.take().expect("its output");
        let seen: Arc<Mutex<Vec<(Instant, usize, String)>>> = Arc::default();
        let into = seen.clone();
        std::thread::spawn(move || {
            // Three lines per event: PUT or DELETE, the key, the value.
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            while let Some(kind) = lines.next() {
                let (Some(key), Some(value)) = (lines.next(), lines.next()) else {
                    return;
                };
                let at = Instant::now();
                let group = key
                    .strip_prefix("/promd/g")
                    .and_then(|k| k.strip_suffix("/leader"))
                    .and_then(|g| g.parse::<usize>().ok());
                let node = serde_json::from_str::<serde_json::Value>(&value)
                    .ok()
                    .and_then(|v| v.get("node").and_then(|n| n.as_str()).map(str::to_string));
                let probe = key == "/promd/watch-probe";
                if let (true, Some(g), Some(node)) = (kind == "PUT", group, node) {
                    into.lock().unwrap().push((at, g, node));
                } else if probe {
                    into.lock().unwrap().push((at, 0, String::new()));
                }
            }
        });
        let watch = LeaderWatch { child, seen };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            etcd.etcdctl(&["put", "/promd/watch-probe", "x"]);
            std::thread::sleep(Duration::from_millis(200));
            if watch.seen.lock().unwrap().iter().any(|(_, g, _)| *g == 0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "etcdctl watch never saw its probe"
            );
        }
        etcd.etcdctl(&["del", "/promd/watch-probe"]);
        watch
    }

    /// When each group was first elected by a node other than `victim` at or after `since`.
    fn elected(&self, since: Instant, victim: &str) -> BTreeMap<usize, Duration> {
        let mut first = BTreeMap::new();
        for (at, g, node) in self.seen.lock().unwrap().iter() {
            if *g > 0 && *at >= since && node != victim {
                first.entry(*g).or_insert(*at - since);
            }
        }
        first
    }
}

impl Drop for LeaderWatch {
    fn drop(&mut self) {
        // Ours, by pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_hundred_groups_start_stay_up_and_fail_over_together_without_overlap() {
    let net = Net::new(HOSTS);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let spans: Vec<tempfile::TempDir> = (0..HOSTS)
        .map(|_| tempfile::tempdir().expect("span dir"))
        .collect();
    let hosts = boot(&net, &etcd, &spans);
    let names: Vec<String> = hosts.iter().map(|h| h.name().to_string()).collect();

    // `systemctl start --no-block promd` on every host at once.
    let started = Instant::now();
    let t0 = mono_us();
    groups::start_promd_everywhere(&hosts);
    for h in &hosts {
        hosts::wait_until(Duration::from_secs(30), "promd READY", || {
            h.run_ok(&["systemctl", "show", "-P", "ActiveState", "promd"])
                .trim()
                == "active"
        });
        let ready_us: u64 = h
            .run_ok(&[
                "systemctl",
                "show",
                "-P",
                "ActiveEnterTimestampMonotonic",
                "promd",
            ])
            .trim()
            .parse()
            .expect("a timestamp");
        let ready = Duration::from_micros(ready_us.saturating_sub(t0));
        eprintln!("{}: READY {ready:?} after the start", h.name());
        assert!(ready <= READY_BOUND, "{}: READY after {ready:?}", h.name());
    }

    // Every group settles: one host active, the others passive.
    let deadline = Instant::now() + Duration::from_secs(90);
    let all = loop {
        let all: Vec<_> = hosts.iter().map(roles).collect();
        // n1 is preferred for every group (`preempt`), so it takes those that another host
        // won while it was starting: its cut is the worst case, every group fenced at once.
        let why = match settled(&all) {
            Ok(()) if all[0].0.len() == GROUPS => break all,
            Ok(()) => format!("the preferred n1 active for {} groups", all[0].0.len()),
            Err(e) => e,
        };
        assert!(Instant::now() < deadline, "not settled in 90 s: {why}");
        // Each look runs systemctl on every host: looking often took CPU from the start-up
        // it watches, on a machine that runs three hosts on two cores.
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!(
        "settled {:?} after the start; active groups per host: {:?}",
        started.elapsed(),
        all.iter().map(|(a, _)| a.len()).collect::<Vec<_>>()
    );

    // The services that ignore SIGTERM do, with their two children: what the fence must
    // SIGKILL, or the test would measure plain services.
    let ignoring: Vec<usize> = all[0]
        .0
        .iter()
        .copied()
        .filter(|&g| ignores_term(g))
        .collect();
    assert!(
        !ignoring.is_empty(),
        "no group whose service ignores SIGTERM"
    );
    let script = format!(
        "for g in {}; do pid=$(systemctl show -P MainPID g$g.service); \
         echo g$g $(ps -o pid= --ppid $pid | wc -l) \
         $(sed -n 's/^SigIgn:[[:space:]]*//p' /proc/$pid/status); done",
        ignoring
            .iter()
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    for line in hosts[0].run_ok(&["sh", "-c", &script]).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let ignored = words
            .get(2)
            .and_then(|m| u64::from_str_radix(m, 16).ok())
            .is_some_and(|m| m & (1 << (15 - 1)) != 0);
        assert!(
            words.get(1) == Some(&"2") && ignored,
            "{line}: not a service whose main process ignores SIGTERM with two children \
             (children, SigIgn)"
        );
    }

    // A minute of running without a watchdog restart anywhere, counted from the start.
    if let Some(rest) = QUIET.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    for h in &hosts {
        let (n, kills) = restarts(h);
        assert_eq!(
            (n, kills),
            (0, 0),
            "{}: promd restarted {n} times, {kills} watchdog kills",
            h.name()
        );
        // PID 1 drops its bus connection (failing every call in flight) when promd queues
        // more jobs than dbus-daemon leaves it match rules for (`NORMAL_JOBS`).
        assert!(
            !h.journal(&["-t", "systemd"])
                .contains("Got disconnect on API bus"),
            "{}: PID 1 lost its bus connection",
            h.name()
        );
    }

    // A silent cut of the host with the most groups.
    let victim = (0..HOSTS).max_by_key(|&i| all[i].0.len()).unwrap_or(0);
    let theirs = all[victim].0.clone();
    let others: Vec<usize> = (0..HOSTS).filter(|&i| i != victim).collect();
    // Times count from the moment the cut is in force: `nft` commits its rules at its end,
    // and starting it (`ip netns exec`, two processes) took up to a second on a loaded CI
    // machine — a second the lease had not yet been running.
    let leaders = LeaderWatch::start(&etcd);
    let began = Instant::now();
    hosts[victim].cut();
    let (t_cut, t_cut_mono, cut_at) = (real_ns(), mono_us(), Instant::now());
    eprintln!(
        "the cut took {:?} to be in force, at {t_cut_mono} µs (CLOCK_MONOTONIC)",
        began.elapsed()
    );
    let deadline = Instant::now() + lease() * 4;
    loop {
        let elsewhere: BTreeSet<usize> = others.iter().flat_map(|&i| roles(&hosts[i]).0).collect();
        let missing: Vec<usize> = theirs.difference(&elsewhere).copied().collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {}'s {} groups not active elsewhere {:?} after the cut, e.g. {:?}",
            missing.len(),
            names[victim],
            theirs.len(),
            lease() * 4,
            &missing[..missing.len().min(5)]
        );
        // The times come from the journals below; this only waits for the last one.
        std::thread::sleep(Duration::from_millis(500));
    }
    // When each of the cut host's groups was elected on another host (promd's "won the
    // election", on the monotonic clock the journal and the cut share), and when its service
    // started there (its span): the election is promd's; the start is also systemd's, which
    // starts ~100 services at once on a machine that runs three hosts on two cores.
    let mut elected: BTreeMap<usize, Duration> = BTreeMap::new();
    for &i in &others {
        let journal = hosts[i].journal(&["-u", "promd.service", "-o", "short-monotonic"]);
        for line in journal.lines().filter(|l| l.ends_with("won the election")) {
            let Some((ts, rest)) = line.trim_start_matches('[').split_once(']') else {
                continue;
            };
            let Ok(ts) = ts.trim().parse::<f64>() else {
                continue;
            };
            let at_us = (ts * 1e6) as u64;
            let Some(g) = rest
                .split(": ")
                .nth(1)
                .and_then(|g| g.strip_prefix('g'))
                .and_then(|g| g.parse::<usize>().ok())
            else {
                continue;
            };
            if at_us >= t_cut_mono && theirs.contains(&g) {
                elected
                    .entry(g)
                    .or_insert(Duration::from_micros(at_us - t_cut_mono));
            }
        }
    }
    let mut service_up: BTreeMap<usize, Duration> = BTreeMap::new();
    for &g in &theirs {
        let start = others
            .iter()
            .filter_map(|&i| {
                hosts::read_spans(spans[i].path().join(format!("g{g}.log")))
                    .iter()
                    .map(|s| s.start_ns)
                    .find(|&s| s >= t_cut)
            })
            .min()
            .unwrap_or_else(|| panic!("g{g}: no span on another host after the cut"));
        service_up.insert(g, Duration::from_nanos(start - t_cut));
    }
    let spread = |m: &BTreeMap<usize, Duration>| {
        let mut v: Vec<Duration> = m.values().copied().collect();
        v.sort();
        format!("{:?} / {:?} / {:?}", v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let in_store: BTreeMap<usize, Duration> = leaders
        .elected(cut_at, &names[victim])
        .into_iter()
        .filter(|(g, _)| theirs.contains(g))
        .collect();
    drop(leaders);
    eprintln!(
        "{} groups of the cut host {}: leader key written by another host after {}, \
         that promd logged it won after {}, their services started after {} \
         (first / median / last)",
        theirs.len(),
        names[victim],
        spread(&in_store),
        spread(&elected),
        spread(&service_up)
    );
    let not_logged: Vec<&usize> = theirs.iter().filter(|g| !elected.contains_key(g)).collect();
    let not_written: Vec<&usize> = theirs
        .iter()
        .filter(|g| !in_store.contains_key(g))
        .collect();
    assert!(
        not_logged.is_empty() && not_written.is_empty(),
        "no \"won the election\" in the journals for {not_logged:?}; \
         no leader key written by another host for {not_written:?}"
    );
    // The goal: every group re-elected (its leader key another host's) within the
    // lease and a second. etcd expires a lease on a 500 ms tick, so that second can be half.
    let late: Vec<String> = in_store
        .iter()
        .filter(|(_, t)| **t > lease() + Duration::from_secs(1))
        .map(|(g, t)| format!("g{g} {t:?}"))
        .collect();
    assert!(
        late.is_empty(),
        "re-elected later than the lease + 1 s: {late:?}"
    );
    // And their services running there: systemd on the new hosts starts ~100 each at once,
    // on a machine that runs three hosts on two cores (measured: up to L + 1.1 s at 8 s,
    // L + 1.8 s with every service draining at 9 s, L + 2 s at 6 s). A bound a user would
    // hold a failover of 200 groups to; it is not the goal, which is the election.
    let slow: Vec<String> = service_up
        .iter()
        .filter(|(_, t)| **t > lease() + SERVICES_UP_AFTER_LEASE)
        .map(|(g, t)| format!("g{g} {t:?}"))
        .collect();
    assert!(
        slow.is_empty(),
        "services up elsewhere later than the lease + {SERVICES_UP_AFTER_LEASE:?}: {slow:?}"
    );

    // The cut host stops its own units (its fence); no group ever ran on two hosts at once.
    hosts::wait_until(lease() * 2, "the cut host's active targets stopped", || {
        roles(&hosts[victim]).0.is_disjoint(&theirs)
    });
    hosts[victim].heal();
    // `PROMD_TEST_JOURNAL=DIR`: the cut host's journal (monotonic time stamps), for a look at
    // its fence; kept before the assertions on it, so a failure leaves it too.
    if let Some(dir) = std::env::var_os("PROMD_TEST_JOURNAL") {
        let file = std::path::Path::new(&dir).join(format!("{}.journal", names[victim]));
        let all = hosts[victim].journal(&["-o", "short-monotonic"]);
        if let Err(e) = std::fs::write(&file, all) {
            eprintln!("PROMD_TEST_JOURNAL: {}: {e}", file.display());
        }
    }
    for g in 1..=GROUPS {
        hosts::assert_no_overlap(&groups::spans_per_host(&spans, &names, &format!("g{g}")));
    }
    // The fence's promise, with no slack from the new host's start: each of the cut host's
    // services was down (its ExecStopPost= ran) before another host could write the group's
    // key, which etcd allows only once the cut host's lease has lapsed. The key's time is when
    // the test's watch saw it, a few ms after the write: the check errs towards passing by
    // that much, never more.
    // When the cut host's service of `g` was down (its ExecStopPost= ran, realtime ns),
    // said if that was at or after `deadline`.
    let late_for = |g: usize, deadline: u64, what: &str| {
        let stop = hosts::read_spans(spans[victim].path().join(format!("g{g}.log")))
            .last()
            .map_or(u64::MAX, |s| s.end_ns());
        (stop >= deadline).then(|| {
            let late = Duration::from_nanos(stop.saturating_sub(deadline));
            format!("g{g} down {late:?} after {what}")
        })
    };
    let outlived: Vec<String> = theirs
        .iter()
        .filter_map(|&g| {
            let taken = t_cut + in_store.get(&g)?.as_nanos() as u64;
            late_for(g, taken, "the key was taken")
        })
        .collect();
    assert!(
        outlived.is_empty(),
        "the cut host's services outlived its lease: {outlived:?}"
    );
    // And with the design's own margin: the fence begins at `s + L - margin` (`s`: the send
    // time of the last renewal etcd answered), so each service must be down by the time of
    // its group's fence line plus the margin, `s + L`, whenever etcd's 500 ms expiry tick
    // comes. (A fence timer that fired late would make this lenient by as much.)
    let timing = promd::core::Timing::new(lease()).with_fence_load(fence_load());
    let margin = timing.margin();
    // The first line per group: the fence's start (a later one, after a restart of promd,
    // would make the check lenient by as much).
    let mut fenced: BTreeMap<usize, u64> = BTreeMap::new();
    for (g, at_us) in hosts[victim]
        .journal(&["-u", "promd.service", "-o", "short-monotonic"])
        .lines()
        .filter(|l| l.contains("lease not renewed in time"))
        .filter_map(|line| {
            let (ts, rest) = line.trim_start_matches('[').split_once(']')?;
            let at_us = (ts.trim().parse::<f64>().ok()? * 1e6) as u64;
            let g: usize = rest.split(": ").nth(1)?.strip_prefix('g')?.parse().ok()?;
            (at_us >= t_cut_mono).then_some((g, at_us))
        })
    {
        fenced.entry(g).or_insert(at_us);
    }
    let past_lease: Vec<String> = theirs
        .iter()
        .filter_map(|&g| {
            let Some(&at_us) = fenced.get(&g) else {
                return Some(format!("g{g}: no fence line"));
            };
            let lease_end = t_cut + (at_us - t_cut_mono) * 1000 + margin.as_nanos() as u64;
            late_for(g, lease_end, "s + L")
        })
        .collect();
    // How the fence fared: from its line to each service down, and what was left of `s + L`.
    let (mut took, mut left) = (Vec::new(), Vec::new());
    for &g in &theirs {
        let (Some(&at_us), Some(span)) = (
            fenced.get(&g),
            hosts::read_spans(spans[victim].path().join(format!("g{g}.log")))
                .last()
                .cloned(),
        ) else {
            continue;
        };
        let fence = t_cut + (at_us - t_cut_mono) * 1000;
        took.push(Duration::from_nanos(span.end_ns().saturating_sub(fence)));
        left.push(Duration::from_nanos(
            (fence + margin.as_nanos() as u64).saturating_sub(span.end_ns()),
        ));
    }
    took.sort();
    left.sort();
    if let (Some(last), Some(least)) = (took.last(), left.first()) {
        eprintln!(
            "the cut host's fence (margin {margin:?}, kill margin {:?}): the last of {} \
             services down {last:?} after its fence line, {least:?} before its s + L at the least",
            timing.kill_margin(),
            took.len()
        );
    }
    // When PID 1 ended its last stop job (its "Stopped gN.service"), against the first fence
    // line: promd must see it before the hang deadline, `margin - 400 ms` after the fence,
    // or its watchdog fires (asserted below).
    let stopped_at = |needle: &str| -> Vec<u64> {
        hosts[victim]
            .journal(&["-o", "short-monotonic"])
            .lines()
            .filter(|l| l.contains(needle))
            .filter_map(|l| {
                let (ts, _) = l.trim_start_matches('[').split_once(']')?;
                let at_us = (ts.trim().parse::<f64>().ok()? * 1e6) as u64;
                (at_us >= t_cut_mono).then_some(at_us)
            })
            .collect()
    };
    // And when promd had the last of those stops confirmed: it starts a group's passive
    // target only then (rule 3b), so PID 1's last "Reached target gN-passive.target" bounds
    // it from above; "demoting -> passive" follows that start. Between the stop jobs' end and
    // the confirmations is what promd's own calls cost under the fence's load.
    if let (Some(first_fence), Some(last_stop), Some(last_passive), Some(last_demoted)) = (
        fenced.values().min(),
        stopped_at("systemd[1]: Stopped g").into_iter().max(),
        stopped_at("-passive.target").into_iter().max(),
        stopped_at(": demoting -> passive").into_iter().max(),
    ) {
        let after = |at: u64| Duration::from_micros(at.saturating_sub(*first_fence));
        eprintln!(
            "after the first fence line: PID 1 ended its last stop job {:?}, the last passive \
             target was up {:?} (every stop confirmed before), the last group passive {:?}; \
             the hang deadline is {:?} after it",
            after(last_stop),
            after(last_passive),
            after(last_demoted),
            margin.saturating_sub(promd::core::WATCHDOG_REACH)
        );
    }
    assert!(
        past_lease.is_empty(),
        "the cut host's services outlived s + L: {past_lease:?}"
    );

    // Each promd said what it estimates, and found the lease long enough for it.
    for (i, host) in hosts.iter().enumerate() {
        let said = host.journal(&["-u", "promd.service", "-o", "cat"]);
        assert!(
            said.contains("fence load: 200 units with processes in the roles of all groups")
                && !said.contains("too short"),
            "{}: the fence load not said, or the lease said too short: {said}",
            names[i]
        );
    }

    // No promd was restarted, the cut host's included: its fence confirmed every stop before
    // its hang deadline, so its watchdog had no cause to fire (at a 4 s lease it fired in
    // every run: lease() above).
    for &i in &others {
        assert_eq!(restarts(&hosts[i]), (0, 0), "{}: restarted", names[i]);
        // Hundreds of lines at once are a burst journald takes, not one to drop.
        let warnings = hosts[i].journal(&["-u", "promd.service", "-p", "warning", "-o", "cat"]);
        assert!(
            !warnings.contains("lines were dropped"),
            "{}: promd dropped log lines: {warnings}",
            names[i]
        );
    }
    assert_eq!(
        restarts(&hosts[victim]),
        (0, 0),
        "the cut host {}: promd restarted (restarts, watchdog kills)",
        names[victim]
    );
}
