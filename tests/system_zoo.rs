//! A zoo of unit shapes and operator actions that promd must handle, on three real systemd
//! hosts (nspawn containers) with a real 3-member etcd cluster and a 4 s lease: units that
//! refuse a manual stop, that fail or are skipped at start, that leave TERM-ignoring children
//! behind, services pulled in by services, targets of targets, a missing wanted unit, a health
//! restart still in flight at a failover, a service stopped or started by hand, a stop that
//! drains longer than the lease, a socket whose connection starts a service (the port listens
//! on the active host only), a tmpfs `.mount` of the role (mounted on the active host only),
//! and a `Type=notify` unit that never sends READY on one host (its start timeout is a
//! failure there).
//!
//! Each test checks what an operator would check on the hosts: `systemctl`, `busctl`,
//! `promctl`, `etcdctl`, the journal, the processes in a unit's cgroup, `ss`, `findmnt` and
//! `mountpoint`, and the run spans the span-recording units write on the one clock the hosts
//! share.

mod support;

use std::fs;
use std::process::Output;
use std::time::{Duration, Instant};

use promd::core::{Timing, WATCHDOG_ACCURACY, WATCHDOG_REACH};

use support::cluster::{Cluster, StoreKind, elapsed, group_prop, group_prop_command};
use support::etcd::EtcdCluster;
use support::hosts::{self, Host, HostSpec, Net, Signal, Span};

const LEASE: Duration = Duration::from_secs(4);
/// The bound the issue sets for an unplanned failover here: lease + 2 s.
const FAILOVER_BOUND: Duration = Duration::from_secs(LEASE.as_secs() + 2);
const UNITS: &str = "/etc/systemd/system";

fn zoo_cluster(
    net: &Net,
    etcd: &EtcdCluster,
    group_extra: &str,
    customize: impl Fn(usize, &mut HostSpec),
) -> Cluster {
    Cluster::boot_with(net, StoreKind::Etcd(etcd), LEASE, group_extra, customize)
}

fn boot(
    group_extra: &str,
    customize: impl Fn(usize, &mut HostSpec),
) -> (Net, EtcdCluster, Cluster) {
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let c = zoo_cluster(&net, &etcd, group_extra, customize);
    (net, etcd, c)
}

/// The group's role on a host, as busctl prints it (`s "active"`); empty if promd does not
/// answer (not running, restarting).
fn role(h: &Host) -> String {
    let out = h.exec_timeout(&group_prop_command("Role"), Duration::from_secs(10));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn quoted(role: &str) -> String {
    format!("s \"{role}\"")
}

fn failures(h: &Host) -> u32 {
    group_prop(h, "Failures")
        .trim_start_matches("u ")
        .parse()
        .unwrap_or(u32::MAX)
}

/// `promctl ARGS...` on a host, bounded.
fn promctl(h: &Host, args: &[&str]) -> Output {
    let mut full = vec!["promctl"];
    full.extend_from_slice(args);
    h.exec_timeout(&full, Duration::from_secs(40))
}

fn describe(out: &Output) -> String {
    format!(
        "{}: stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// The node named in etcd's leader key of the group, as `etcdctl get` shows it.
fn leader_in_etcd(etcd: &EtcdCluster) -> Option<String> {
    let eps = etcd.endpoints().join(",");
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &eps,
            "get",
            "/promd/web/leader",
            "--print-value-only",
        ])
        .output()
        .expect("etcdctl");
    assert!(out.status.success(), "etcdctl get: {}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let v: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("leader key {text:?}: {e}"));
    v["node"].as_str().map(str::to_string)
}

/// Hosts on which `unit` is active.
fn running(c: &Cluster, unit: &str) -> Vec<usize> {
    (0..c.hosts.len())
        .filter(|&i| c.hosts[i].is_active(unit))
        .collect()
}

/// Waits (10 s at most) until `unit` is active on host `only` and on no other host.
fn wait_runs_only_on(c: &Cluster, unit: &str, only: usize) {
    let what = format!("{unit} running on {} only", c.hosts[only].name());
    hosts::wait_until(Duration::from_secs(10), &what, || {
        running(c, unit) == vec![only]
    });
}

/// Waits until every host's Role is settled: `active` on `a`, `passive` elsewhere.
fn wait_roles(c: &Cluster, a: usize, timeout: Duration) {
    let what = format!("{} active and the others passive", c.hosts[a].name());
    let start = Instant::now();
    let seen = loop {
        let seen = c.hosts.iter().map(role).collect::<Vec<_>>();
        let ok = seen
            .iter()
            .enumerate()
            .all(|(i, r)| *r == quoted(if i == a { "active" } else { "passive" }));
        if ok {
            return;
        }
        if start.elapsed() >= timeout {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    panic!("timed out after {timeout:?} waiting until {what}: roles {seen:?}");
}

/// Spans of a span-recorded unit logging to `log` (a path inside every host).
fn unit_spans(c: &Cluster, log: &str) -> Vec<(String, Vec<Span>)> {
    c.hosts
        .iter()
        .map(|h| (h.name().to_string(), hosts::read_spans(h.path(log))))
        .collect()
}

/// Machine pids of the live processes in `unit`'s cgroup on `h` (main, children, and control
/// processes such as `ExecStop=`), with their names.
fn unit_processes(h: &Host, unit: &str) -> Vec<(u32, String)> {
    let needle = format!("/system.slice/{unit}");
    hosts::all_pids()
        .into_iter()
        .filter(|&pid| h.owns_pid(pid))
        .filter(|&pid| {
            fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|t| {
                t.lines()
                    .any(|l| l.ends_with(&needle) || l.contains(&format!("{needle}/")))
            })
        })
        .filter_map(|pid| {
            let st = hosts::proc_status(pid)?;
            (!matches!(st.state, 'Z' | 'X')).then_some((pid, st.name))
        })
        .collect()
}

/// Whether a process (machine pid) ignores SIGTERM (`SigIgn:` of /proc/PID/status).
fn ignores_term(pid: u32) -> bool {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (Signal::SIGTERM as i32 - 1)) != 0)
}

/// What happened on `old` after `t0`, when its promd was killed, paused or cut off.
struct Fence {
    /// The host that started web.service next.
    new: usize,
    /// When it recorded its start (realtime ns).
    new_start: u64,
    /// The last time a process of web.service was seen on `old` (realtime ns, taken before
    /// the look, so the process certainly lived at or after it), and what was seen.
    last_seen: Option<(u64, Vec<(u32, String)>)>,
}

/// Watches the old host's web.service cgroup and the other hosts' spans from `t0` until
/// another host has started web.service and no process of the unit is left on `old` (or
/// `timeout`).
fn watch_fence(c: &Cluster, old: usize, t0: u64, timeout: Duration) -> Fence {
    let start = Instant::now();
    let mut last_seen = None;
    let mut started: Option<(usize, u64)> = None;
    loop {
        let before = hosts::now_ns();
        let procs = unit_processes(&c.hosts[old], "web.service");
        if !procs.is_empty() {
            last_seen = Some((before, procs.clone()));
        }
        if started.is_none() {
            started = c
                .spans()
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != old)
                .filter_map(|(i, (_, spans))| {
                    spans
                        .iter()
                        .map(|s| s.start_ns)
                        .find(|&s| s >= t0)
                        .map(|s| (i, s))
                })
                .min_by_key(|&(_, s)| s);
        }
        if started.is_some() && procs.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < timeout,
            "after {timeout:?}: another host started web: {started:?}; processes of web.service left on {}: {procs:?}",
            c.hosts[old].name()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (new, new_start) = started.unwrap_or_default();
    Fence {
        new,
        new_start,
        last_seen,
    }
}

impl Fence {
    fn assert_clean(&self, c: &Cluster, old: usize, what: &str) {
        if let Some((seen, procs)) = &self.last_seen
            && *seen > self.new_start
        {
            panic!(
                "{what}: {} still had processes of web.service {} ms after {} started it: {procs:?}\n{}",
                c.hosts[old].name(),
                (seen - self.new_start) / 1_000_000,
                c.hosts[self.new].name(),
                hosts::timeline(&c.spans())
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn refuse_manual_stop_on_every_host_still_elects_one() {
    let (_net, etcd, c) = boot("", |_, spec| {
        spec.file(
            &format!("{UNITS}/web.service.d/refuse.conf"),
            "[Unit]\nRefuseManualStop=yes\n",
        );
    });
    let a = c.wait_one_active(None, Duration::from_secs(30));
    wait_roles(&c, a, Duration::from_secs(10));
    assert_eq!(running(&c, "web.service"), vec![a]);
    assert_eq!(leader_in_etcd(&etcd).as_deref(), Some(c.hosts[a].name()));

    let out = promctl(&c.hosts[a], &["demote", "web"]);
    assert!(
        out.status.success(),
        "promctl demote web: {}",
        describe(&out)
    );
    let b = c.wait_one_active(Some(a), Duration::from_secs(15));
    wait_roles(&c, b, Duration::from_secs(10));
    assert_eq!(role(&c.hosts[a]), quoted("passive"));
    assert_eq!(
        leader_in_etcd(&etcd).as_deref(),
        Some(c.hosts[b].name()),
        "the old host does not hold the key"
    );
    assert_eq!(
        group_prop(&c.hosts[a], "Leader"),
        format!("s \"{}\"", c.hosts[b].name())
    );
    assert_eq!(running(&c, "web.service"), vec![b]);
    c.check_history();
}

/// On n2 only, `dropin` makes web.service fail (or be skipped) at start. `promctl promote web`
/// on n2: a failed start, tried again in place (max-restarts = 1), then failed over; n2 never
/// says active, and `promctl promote` says it failed.
fn a_failing_start_on_n2_fails_over(dropin: &str) {
    let n2 = 1;
    let (_net, _etcd, c) = boot(
        "max-restarts = 1\nrestart-window = \"1min\"\nrestart-backoff = \"200ms\"\nfailure-cooldown = \"10min\"\n",
        |_, _| {},
    );
    // The start that fails goes on n2 once another host holds the role: at boot n2 may win
    // the first election (then it would fail over at once and sit out the cooldown).
    let mut a = c.wait_one_active(None, Duration::from_secs(30));
    if a == n2 {
        let other = (n2 + 1) % 3;
        let out = promctl(&c.hosts[other], &["promote", "web"]);
        assert!(out.status.success(), "{}", describe(&out));
        a = c.wait_one_active(Some(n2), Duration::from_secs(30));
    }
    wait_roles(&c, a, Duration::from_secs(10));
    let h = &c.hosts[n2];
    h.write_file(&format!("{UNITS}/web.service.d/zoo.conf"), dropin);
    h.run_ok(&["systemctl", "daemon-reload"]);
    wait_roles(&c, a, Duration::from_secs(10));

    let t0 = hosts::now_ns();
    // promctl waits for the outcome; watch n2's role from another thread meanwhile.
    let promote = std::thread::scope(|s| {
        let promote = s.spawn(|| promctl(h, &["promote", "web"]));
        let start = Instant::now();
        let mut samples: Vec<(String, String, Duration)> = Vec::new();
        loop {
            let r = role(h);
            let web = h.unit_state("web.service");
            if samples
                .last()
                .is_none_or(|(lr, lw, _)| *lr != r || *lw != web)
            {
                samples.push((r.clone(), web.clone(), start.elapsed()));
            }
            assert_ne!(
                r,
                quoted("active"),
                "n2 said active (web.service {web}); states: {samples:?}"
            );
            let others = running(&c, "web.service");
            if promote.is_finished() && others.len() == 1 && others[0] != n2 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "no failover away from n2 within 40 s; states: {samples:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("n2 states: {samples:?}");
        promote.join().expect("promctl thread")
    });
    eprintln!("promctl promote web on n2: {}", describe(&promote));
    assert!(
        !promote.status.success(),
        "promctl promote reports the failure"
    );

    // End state: one other host active and running web; n2 failed, the failure counted.
    let b = c.wait_one_active(Some(n2), Duration::from_secs(10));
    wait_roles_except(&c, b, n2);
    hosts::wait_until(Duration::from_secs(10), "n2 failed", || {
        role(h) == quoted("failed")
    });
    assert!(failures(h) >= 1, "n2 counted the failure");
    let j = h.journal(&[
        "-u",
        "promd",
        "-o",
        "cat",
        "--since",
        &format!("@{}", t0 / 1_000_000_000),
    ]);
    for said in [
        "web.service is ",
        "starting the active target again in place",
        "failing over to",
    ] {
        assert!(j.contains(said), "n2's promd never said {said:?}:\n{j}");
    }
    assert!(!h.is_active("web.service"));
    assert_eq!(role(&c.hosts[b]), quoted("active"));
    assert!(c.start_after(b, t0) >= t0);
    c.check_history();
}

/// `b` active, every host but `b` and `skip` passive.
fn wait_roles_except(c: &Cluster, b: usize, skip: usize) {
    hosts::wait_until(Duration::from_secs(10), "roles settled", || {
        (0..c.hosts.len())
            .filter(|&i| i != skip)
            .all(|i| role(&c.hosts[i]) == quoted(if i == b { "active" } else { "passive" }))
    });
}

#[test]
fn exec_start_pre_failing_on_the_promoted_host_fails_over() {
    a_failing_start_on_n2_fails_over("[Service]\nExecStartPre=/usr/bin/test -e /srv/web/ready\n");
}

#[test]
fn condition_skipped_unit_counts_as_a_failure() {
    a_failing_start_on_n2_fails_over("[Unit]\nConditionPathExists=/srv/web/data\n");
}

/// web.service whose main process and its child both ignore SIGTERM, each writing a heartbeat
/// (realtime ns) to a file of its own every 0.1 s; run spans as `span_unit` records them.
fn term_ignoring_web() -> String {
    hosts::span_unit_running(
        "web.service",
        "web",
        "/spans/spans.log",
        "/bin/sh -c 'trap \"\" TERM; /bin/sh -c \"while :; do date +%%s%%N >> /spans/beat-child; sleep 0.1; done\" & while :; do date +%%s%%N >> /spans/beat-main; sleep 0.1; done'",
    )
}

const SLOW_STOP: &str = "/etc/systemd/system/web.service.d/slow-stop.conf";

/// The latest heartbeat of each process of web.service on `h`.
fn last_beats(h: &Host) -> Vec<(String, u64)> {
    ["/spans/beat-main", "/spans/beat-child"]
        .iter()
        .map(|f| {
            let last = h
                .read_file(f)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<u64>().ok())
                .max()
                .unwrap_or(0);
            (f.to_string(), last)
        })
        .collect()
}

fn kill_promd_and_check_the_fence(c: &Cluster, old: usize, what: &str) -> usize {
    let h = &c.hosts[old];
    hosts::wait_until(Duration::from_secs(10), "web's processes up", || {
        unit_processes(h, "web.service")
            .iter()
            .filter(|(_, n)| n == "sh")
            .count()
            >= 2
    });
    let procs = unit_processes(h, "web.service");
    let long_lived: Vec<_> = procs.iter().filter(|(_, n)| n == "sh").collect();
    for (pid, name) in &long_lived {
        assert!(
            ignores_term(*pid),
            "{what}: {name} ({pid}) does not ignore SIGTERM"
        );
    }
    let pid = c.promd_pid(old);
    let t0 = hosts::now_ns();
    h.signal(pid, Signal::SIGKILL);
    let f = watch_fence(c, old, t0, Duration::from_secs(60));
    let took = elapsed(t0, f.new_start);
    eprintln!(
        "{what}: {} started web after {} ms; last process of web.service on {} seen at {:?} ms",
        c.hosts[f.new].name(),
        took.as_millis(),
        h.name(),
        f.last_seen
            .as_ref()
            .map(|(t, _)| (*t as i64 - t0 as i64) / 1_000_000)
    );
    f.assert_clean(c, old, what);
    for (file, beat) in last_beats(h) {
        assert!(
            beat < f.new_start,
            "{what}: {file} on {} beat {} ms after {} started web",
            h.name(),
            (beat - f.new_start) / 1_000_000,
            c.hosts[f.new].name()
        );
    }
    assert!(
        took < FAILOVER_BOUND,
        "{what}: took {took:?}, bound {FAILOVER_BOUND:?}"
    );
    let new = c.wait_one_active(Some(old), Duration::from_secs(10));
    assert_eq!(new, f.new);
    c.wait_promd_back(old, pid);
    new
}

#[test]
fn kill_9_promd_with_a_term_ignoring_child_leaves_no_process_behind() {
    let (_net, _etcd, c) = boot("", |_, spec| {
        spec.file(&format!("{UNITS}/web.service"), term_ignoring_web());
    });
    let a = c.wait_one_active(None, Duration::from_secs(30));
    let b = kill_promd_and_check_the_fence(&c, a, "kill -9, TERM-ignoring child");

    // The same with a slow ExecStop=.
    for h in &c.hosts {
        h.write_file(SLOW_STOP, "[Service]\nExecStop=/bin/sleep 20\n");
        h.run_ok(&["systemctl", "daemon-reload"]);
    }
    kill_promd_and_check_the_fence(&c, b, "kill -9, TERM-ignoring child, ExecStop=sleep 20");
    c.check_history();
    remove_slow_stop(&c);
}

/// Removes the slow `ExecStop=` again, so that the hosts halt quickly.
fn remove_slow_stop(c: &Cluster) {
    for h in &c.hosts {
        let _ = fs::remove_file(h.path(SLOW_STOP));
        h.run_ok(&["systemctl", "daemon-reload"]);
    }
}

#[test]
fn a_service_pulled_in_by_a_service_follows_the_role() {
    const WORKER_LOG: &str = "/spans/worker.log";
    let (_net, _etcd, c) = boot("", |_, spec| {
        spec.file(
            &format!("{UNITS}/web.service.d/worker.conf"),
            "[Unit]\nWants=web-worker.service\n",
        );
        spec.file(
            &format!("{UNITS}/web-worker.service"),
            hosts::span_unit("web-worker.service", "web", WORKER_LOG),
        );
    });
    let a = c.wait_one_active(None, Duration::from_secs(30));
    wait_runs_only_on(&c, "web-worker.service", a);

    // Switchover.
    let b = (a + 1) % 3;
    switch_over(&c, a, b);
    wait_runs_only_on(&c, "web-worker.service", b);
    hosts::assert_no_overlap(&unit_spans(&c, WORKER_LOG));

    // Cut the active host off.
    c.hosts[b].cut();
    let n = c.wait_one_active(Some(b), FAILOVER_BOUND + Duration::from_secs(10));
    hosts::wait_until(
        Duration::from_secs(15),
        "the worker stopped on the cut host",
        || !c.hosts[b].is_active("web-worker.service"),
    );
    hosts::wait_until(
        Duration::from_secs(10),
        "the worker runs on the new host",
        || c.hosts[n].is_active("web-worker.service"),
    );
    c.hosts[b].heal();
    hosts::assert_no_overlap(&unit_spans(&c, WORKER_LOG));
    c.check_history();
}

#[test]
fn a_target_of_targets_is_fenced_whole() {
    let (_net, _etcd, c) = boot("", |_, spec| {
        spec.file(
            &format!("{UNITS}/web-active.target"),
            "[Unit]\nDescription=web: active\nWants=web-stack.target\nConflicts=web-passive.target\n",
        );
        spec.file(
            &format!("{UNITS}/web-stack.target"),
            "[Unit]\nDescription=web: the stack\nWants=web.service\n",
        );
    });
    let a = c.wait_one_active(None, Duration::from_secs(30));
    assert!(c.hosts[a].is_active("web-stack.target"));

    c.hosts[a].cut();
    let b = c.wait_one_active(Some(a), FAILOVER_BOUND + Duration::from_secs(10));
    hosts::wait_until(
        Duration::from_secs(15),
        "web stopped on the cut host",
        || !c.hosts[a].is_active("web.service"),
    );
    c.hosts[a].heal();
    c.check_history();

    // A switchover to the third host.
    let t = (0..3).find(|&i| i != a && i != b).unwrap_or_default();
    hosts::wait_until(Duration::from_secs(20), "the third host passive", || {
        role(&c.hosts[t]) == quoted("passive")
    });
    let out = promctl(&c.hosts[t], &["promote", "web"]);
    assert!(
        out.status.success(),
        "promctl promote web: {}",
        describe(&out)
    );
    assert_eq!(c.wait_one_active(Some(b), Duration::from_secs(10)), t);
    assert_eq!(running(&c, "web.service"), vec![t]);
    c.check_history();
}

#[test]
fn a_missing_wanted_unit_does_not_block_the_role() {
    let (_net, _etcd, c) = boot("", |_, spec| {
        spec.file(
            &format!("{UNITS}/web-active.target"),
            "[Unit]\nDescription=web: active\nWants=web.service web-extra.service\nConflicts=web-passive.target\n",
        );
    });
    let a = c.wait_one_active(None, Duration::from_secs(30));
    wait_roles(&c, a, Duration::from_secs(10));

    // A window of 20 s: no event to wait for, the count of lines in it is the measure.
    let since = format!("@{}", hosts::now_ns() / 1_000_000_000);
    let window = Duration::from_secs(20);
    std::thread::sleep(window + Duration::from_secs(1));
    let until = format!("@{}", hosts::now_ns() / 1_000_000_000 - 1);
    for h in &c.hosts {
        let j = h.journal(&["-u", "promd", "--since", &since, "--until", &until]);
        let n = j.lines().filter(|l| l.contains("NoSuchUnit")).count();
        eprintln!("{}: {n} NoSuchUnit lines in {window:?}", h.name());
        assert!(
            n < 20,
            "{}: {n} NoSuchUnit lines in {window:?} (a hot loop):\n{}",
            h.name(),
            j.lines().take(30).collect::<Vec<_>>().join("\n")
        );
    }
    assert_eq!(running(&c, "web.service"), vec![a]);
    assert_eq!(role(&c.hosts[a]), quoted("active"));
    c.check_history();
}

#[test]
fn a_health_restart_in_flight_never_lands_after_a_failover() {
    const B_LOG: &str = "/spans/web-b.log";
    let (_net, _etcd, c) = boot(
        "max-restarts = 1\nrestart-window = \"1min\"\nrestart-backoff = \"200ms\"\nfailure-cooldown = \"10min\"\n\
         watch = [\"web.service\", \"web-b.service\"]\n\
         health-command = [\"/bin/sh\", \"-c\", \"! test -e /run/web-unhealthy\"]\n\
         health-interval = \"300ms\"\nhealth-timeout = \"200ms\"\n",
        |_, spec| {
            spec.file(
                &format!("{UNITS}/web-active.target"),
                "[Unit]\nDescription=web: active\nWants=web.service web-b.service\nConflicts=web-passive.target\n",
            );
            spec.file(
                &format!("{UNITS}/web.service.d/slow-start.conf"),
                "[Service]\nExecStartPre=/bin/sleep 5\n",
            );
            spec.file(
                &format!("{UNITS}/web-b.service"),
                hosts::span_unit("web-b.service", "web", B_LOG),
            );
        },
    );
    let a = c.wait_one_active(None, Duration::from_secs(40));
    wait_runs_only_on(&c, "web-b.service", a);

    c.hosts[a].write_file("/run/web-unhealthy", "");
    let b = c.wait_one_active(Some(a), Duration::from_secs(40));
    hosts::wait_until(
        Duration::from_secs(15),
        "web-b runs on the new host",
        || c.hosts[b].is_active("web-b.service"),
    );
    // The old host settles: no job of systemd left (a restart in flight would be one).
    hosts::wait_until(
        Duration::from_secs(30),
        "no jobs left on the old host",
        || {
            c.hosts[a]
                .run_ok(&["systemctl", "list-jobs", "--no-legend"])
                .trim()
                .is_empty()
        },
    );
    let old = &c.hosts[a];
    assert!(
        !old.is_active("web.service"),
        "web.service runs on the old host"
    );
    assert!(
        !old.is_active("web-b.service"),
        "web-b.service runs on the old host"
    );
    assert_eq!(running(&c, "web-b.service"), vec![b]);
    assert_eq!(running(&c, "web.service"), vec![b]);
    hosts::assert_no_overlap(&unit_spans(&c, B_LOG));
    c.check_history();
}

#[test]
fn stopping_the_service_by_hand_is_a_failure() {
    let (_net, _etcd, c) = boot("restart-backoff = \"200ms\"\n", |_, _| {});
    let a = c.wait_one_active(None, Duration::from_secs(30));
    wait_roles(&c, a, Duration::from_secs(10));
    let h = &c.hosts[a];

    // Stopped by hand on the active host: restarted in place, the role stays.
    let t0 = hosts::now_ns();
    h.run_ok(&["systemctl", "stop", "web.service"]);
    hosts::wait_until(
        Duration::from_secs(5),
        "web.service restarted in place",
        || {
            assert_eq!(role(h), quoted("active"), "the role stays");
            h.is_active("web.service") && c.spans()[a].1.iter().any(|s| s.start_ns > t0)
        },
    );
    assert_eq!(c.active_hosts(), vec![a]);
    assert_eq!(role(h), quoted("active"));

    // Started by hand on a passive host: stopped again, and the journal says so.
    let p = (a + 1) % 3;
    let hp = &c.hosts[p];
    let since = format!("@{}", hosts::now_ns() / 1_000_000_000);
    // promd may stop it before its start job is even done: then systemctl says the job was
    // canceled, or, when promd's kill caught `ExecStartPre=` running, that a fatal signal was
    // delivered to the control process (exit 1). Either way it must not stay up.
    let out = hp.exec(&["systemctl", "start", "web.service"]);
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        assert!(
            why.contains("canceled") || why.contains("fatal signal was delivered"),
            "{}",
            describe(&out)
        );
    }
    hosts::wait_until(
        Duration::from_secs(5),
        "web.service stopped on the passive host",
        || !hp.is_active("web.service"),
    );
    assert_eq!(role(hp), quoted("passive"));
    let j = hp.journal(&["-u", "promd", "--since", &since]);
    assert!(
        j.lines()
            .any(|l| l.contains("web.service") && l.to_lowercase().contains("stop")),
        "no promd journal line about stopping web.service on the passive host:\n{j}"
    );
    assert_eq!(c.active_hosts(), vec![a]);
}

#[test]
fn a_drain_stop_outlives_no_lease() {
    let (_net, _etcd, c) = boot("", |_, spec| {
        spec.file(
            &format!("{UNITS}/web.service.d/slow-stop.conf"),
            "[Service]\nExecStop=/bin/sleep 20\nTimeoutStopSec=90\n",
        );
    });
    let a = c.wait_one_active(None, Duration::from_secs(30));
    let h = &c.hosts[a];
    let pid = h.pid_on_machine("promd").expect("promd runs");
    let t0 = hosts::now_ns();
    h.signal(pid, Signal::SIGSTOP);
    let f = watch_fence(&c, a, t0, Duration::from_secs(60));
    if h.owns_pid(pid) {
        h.signal(pid, Signal::SIGCONT);
    }
    let took = elapsed(t0, f.new_start);
    eprintln!(
        "SIGSTOP: {} started web after {} ms; last process of web.service on {} seen at {:?} ms",
        c.hosts[f.new].name(),
        took.as_millis(),
        h.name(),
        f.last_seen
            .as_ref()
            .map(|(t, _)| (*t as i64 - t0 as i64) / 1_000_000)
    );
    f.assert_clean(&c, a, "SIGSTOP with ExecStop=sleep 20");
    let sys = h.journal(&["-u", "promd"]);
    assert!(
        sys.contains("Watchdog timeout"),
        "the systemd watchdog killed promd:\n{sys}"
    );
    assert_eq!(c.wait_one_active(Some(a), Duration::from_secs(10)), f.new);
    c.wait_promd_back(a, pid);
    c.check_history();
    remove_slow_stop(&c);
}

/// A host cut off the store fences (its stop drains for 20 s), and its promd hangs just after
/// the fence began. The watchdog must fire no later than `s + L - 400 ms + 250 ms` (its
/// deadline, and systemd's accuracy); the fence began at `s + L - m`, so at most
/// `m - 150 ms` (850 ms at this 4 s lease) after the fence line. With only its interval
/// (600 ms) the watchdog would fire up to 850 ms after the hang, which came after the fence
/// line.
#[test]
fn a_promd_that_hangs_while_its_fence_drains_is_killed_before_the_lease_ends() {
    let (_net, _etcd, c) = boot("", |_, spec| {
        spec.file(
            SLOW_STOP,
            "[Service]\nExecStop=/bin/sleep 20\nTimeoutStopSec=90\n",
        );
    });
    let a = c.wait_one_active(None, Duration::from_secs(30));
    let h = &c.hosts[a];
    let pid = h.pid_on_machine("promd").expect("promd runs");
    let t0 = hosts::now_ns();
    h.cut();
    const FENCING: &str = "lease not renewed in time: fencing before it can expire";
    hosts::wait_until(LEASE * 2, "the cut host starts to fence", || {
        h.journal(&["-u", "promd", "-o", "cat"]).contains(FENCING)
    });
    h.signal(pid, Signal::SIGSTOP);
    let f = watch_fence(&c, a, t0, Duration::from_secs(60));
    if h.owns_pid(pid) {
        h.signal(pid, Signal::SIGCONT);
    }
    f.assert_clean(
        &c,
        a,
        "cut, then SIGSTOP after the fence began, ExecStop=sleep 20",
    );
    let log = h.journal(&["-u", "promd", "-o", "short-monotonic"]);
    let at = |needle: &str| -> Duration {
        let line = log
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no journal line with {needle:?}:\n{log}"));
        let secs = line
            .trim_start_matches('[')
            .split(']')
            .next()
            .and_then(|t| t.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no monotonic time in {line:?}"));
        Duration::from_secs_f64(secs)
    };
    let fenced = at(FENCING);
    let fired = at("Watchdog timeout");
    // The fence began at s + L - m; the watchdog's deadline is s + L - WATCHDOG_REACH, and
    // systemd fires it up to WATCHDOG_ACCURACY late.
    let margin = Timing::new(LEASE).margin();
    let bound = margin - WATCHDOG_REACH + WATCHDOG_ACCURACY;
    eprintln!(
        "fence line -> watchdog timeout: {} ms (bound {} ms)",
        fired.saturating_sub(fenced).as_millis(),
        bound.as_millis()
    );
    assert!(
        fired.saturating_sub(fenced) <= bound,
        "the watchdog fired {:?} after the fence began, past s + L - 150 ms:\n{log}",
        fired.saturating_sub(fenced)
    );
    h.heal();
    c.wait_promd_back(a, pid);
    assert_eq!(c.wait_one_active(Some(a), Duration::from_secs(10)), f.new);
    c.check_history();
    remove_slow_stop(&c);
}

/// The units promd says the role has on `h` (its start-up line "the role's units (...): A B
/// C; ..."), the last time it said so.
fn said_closure(h: &Host) -> Vec<String> {
    let j = h.journal(&["-u", "promd", "-o", "cat"]);
    let line = j
        .lines()
        .rev()
        .find(|l| l.contains("the role's units"))
        .unwrap_or_else(|| panic!("{}: promd never said the role's units:\n{j}", h.name()));
    let names = line.split_once("): ").map_or("", |(_, rest)| rest);
    let names = names.split(';').next().unwrap_or("");
    names.split_whitespace().map(str::to_string).collect()
}

/// Waits until every host has said which units the role has, and checks that `units` are
/// among them.
fn assert_closure_has(c: &Cluster, units: &[&str]) {
    for h in &c.hosts {
        hosts::wait_until(
            Duration::from_secs(10),
            "promd said the role's units",
            || {
                h.journal(&["-u", "promd", "-o", "cat"])
                    .contains("the role's units")
            },
        );
        let said = said_closure(h);
        for u in units {
            assert!(
                said.iter().any(|s| s == u),
                "{}: {u} is not among the role's units {said:?}",
                h.name()
            );
        }
    }
}

const SOCKET_PORT: u16 = 8089;

/// web.socket (ListenStream on the host's own loopback) whose connections start
/// web-sock.service (`Accept=no`: one service takes the listening socket).
fn socket_units(spec: &mut HostSpec) {
    spec.file(
        &format!("{UNITS}/web-active.target"),
        "[Unit]\nDescription=web: active\nWants=web.service web.socket\nConflicts=web-passive.target\n",
    );
    spec.file(
        &format!("{UNITS}/web.socket"),
        format!(
            "[Unit]\nDescription=web: socket (promd tests)\n\
             [Socket]\nListenStream=127.0.0.1:{SOCKET_PORT}\nService=web-sock.service\n"
        ),
    );
    spec.file(
        &format!("{UNITS}/web-sock.service"),
        "[Unit]\nDescription=web: started by a connection (promd tests)\n\
         [Service]\nExecStart=/usr/bin/sleep infinity\n",
    );
}

/// Whether anything on `h` listens on TCP `port` (`ss -ltn` inside the host).
fn listens(h: &Host, port: u16) -> bool {
    let filter = format!("sport = :{port}");
    let out = h.run_ok(&["ss", "-ltnH", &filter]);
    !out.trim().is_empty()
}

fn loopback(port: u16) -> std::net::SocketAddrV4 {
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port)
}

/// Whether neither the socket nor the service it started is up on `h`, and nothing listens
/// on the port.
fn socket_down(h: &Host) -> bool {
    !h.is_active("web.socket") && !h.is_active("web-sock.service") && !listens(h, SOCKET_PORT)
}

/// The old host stopped listening before another one took over (checked once the new host
/// runs web.service): neither unit is up there, nothing listens, a connection is refused.
fn assert_socket_gone(h: &Host, what: &str) {
    assert!(
        socket_down(h),
        "{what}: {} still has web.socket {}, web-sock.service {}, a listener {}",
        h.name(),
        h.unit_state("web.socket"),
        h.unit_state("web-sock.service"),
        listens(h, SOCKET_PORT)
    );
    assert!(
        !h.can_connect(loopback(SOCKET_PORT), Duration::from_secs(5)),
        "{what}: {} still accepts connections on port {SOCKET_PORT}",
        h.name()
    );
}

/// On the active host `a`: the socket listens there only, and a connection starts the service.
fn socket_serves_on(c: &Cluster, a: usize, what: &str) {
    let h = &c.hosts[a];
    wait_runs_only_on(c, "web.socket", a);
    for (i, other) in c.hosts.iter().enumerate() {
        assert_eq!(
            listens(other, SOCKET_PORT),
            i == a,
            "{what}: {} listening on port {SOCKET_PORT}",
            other.name()
        );
    }
    assert!(
        !h.is_active("web-sock.service"),
        "{what}: nothing connected yet"
    );
    assert!(
        h.can_connect(loopback(SOCKET_PORT), Duration::from_secs(5)),
        "{what}: {} does not accept a connection",
        h.name()
    );
    hosts::wait_until(
        Duration::from_secs(10),
        &format!("{what}: the connection started web-sock.service"),
        || h.is_active("web-sock.service"),
    );
}

/// `promctl promote web` on host `to`; waits until it alone runs web.service.
fn switch_over(c: &Cluster, from: usize, to: usize) {
    let out = promctl(&c.hosts[to], &["promote", "web"]);
    assert!(
        out.status.success(),
        "promctl promote web: {}",
        describe(&out)
    );
    assert_eq!(c.wait_one_active(Some(from), Duration::from_secs(10)), to);
}

#[test]
fn a_socket_activated_service_listens_on_the_active_host_only() {
    let (_net, _etcd, c) = boot("", |_, spec| socket_units(spec));
    let a = c.wait_one_active(None, Duration::from_secs(30));
    wait_roles(&c, a, Duration::from_secs(10));
    assert_closure_has(&c, &["web.service", "web.socket", "web-sock.service"]);
    socket_serves_on(&c, a, "start-up");

    // Switchover: the old host stops listening and the service its connection started.
    let b = (a + 1) % 3;
    switch_over(&c, a, b);
    assert_socket_gone(&c.hosts[a], "switchover");
    socket_serves_on(&c, b, "after the switchover");

    // kill -9 promd on the active host: the binding and the fence take both down.
    let pid = c.promd_pid(b);
    c.hosts[b].signal(pid, Signal::SIGKILL);
    let n = c.wait_one_active(Some(b), FAILOVER_BOUND + Duration::from_secs(10));
    assert_socket_gone(&c.hosts[b], "kill -9");
    socket_serves_on(&c, n, "after kill -9");
    // promd comes back passive on the old host, and does not listen there.
    c.wait_promd_back(b, pid);
    assert_socket_gone(&c.hosts[b], "promd back");
    assert_eq!(running(&c, "web.socket"), vec![n]);
    c.check_history();
}

const CACHE: &str = "/srv/web-cache";

/// Whether `path` is a mount point on `h` (`mountpoint -q`), and if so of a tmpfs.
fn mounted(h: &Host, path: &str) -> bool {
    let out = h.exec(&["findmnt", "-n", "-o", "FSTYPE", "--mountpoint", path]);
    let fstype = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let is_mountpoint = h.exec(&["mountpoint", "-q", path]).status.success();
    assert_eq!(
        is_mountpoint,
        out.status.success(),
        "{}: mountpoint and findmnt disagree on {path}",
        h.name()
    );
    if is_mountpoint {
        assert_eq!(fstype, "tmpfs", "{}: {path}", h.name());
    }
    is_mountpoint
}

/// The old host unmounted `CACHE` before another one took over (checked once the new host
/// runs web.service).
fn assert_unmounted(h: &Host, what: &str) {
    assert!(
        !mounted(h, CACHE),
        "{what}: {CACHE} still mounted on {} after another host took over",
        h.name()
    );
}

/// Waits until `CACHE` is mounted on host `a` and on no other.
fn wait_mounted_only_on(c: &Cluster, a: usize, what: &str) {
    let on = || -> Vec<usize> {
        (0..c.hosts.len())
            .filter(|&i| mounted(&c.hosts[i], CACHE))
            .collect()
    };
    hosts::wait_until(
        Duration::from_secs(15),
        &format!("{what}: {CACHE} mounted on {} only", c.hosts[a].name()),
        || on() == vec![a],
    );
}

#[test]
fn a_tmpfs_mount_of_the_role_is_mounted_on_the_active_host_only() {
    const MOUNT_UNIT: &str = "srv-web\\x2dcache.mount";
    let (_net, _etcd, c) = boot("", |_, spec| {
        spec.file(
            &format!("{UNITS}/web-active.target"),
            format!(
                "[Unit]\nDescription=web: active\nWants=web.service\nRequiresMountsFor={CACHE}\n\
                 Conflicts=web-passive.target\n"
            ),
        );
        spec.file(
            &format!("{UNITS}/{MOUNT_UNIT}"),
            format!(
                "[Unit]\nDescription=web: cache (promd tests)\n\
                 [Mount]\nWhat=tmpfs\nWhere={CACHE}\nType=tmpfs\nOptions=size=1m,mode=0755\n"
            ),
        );
    });
    let a = c.wait_one_active(None, Duration::from_secs(30));
    wait_roles(&c, a, Duration::from_secs(10));
    assert_closure_has(&c, &["web.service", MOUNT_UNIT]);
    wait_mounted_only_on(&c, a, "start-up");
    assert!(c.hosts[a].is_active(MOUNT_UNIT));

    // Switchover.
    let b = (a + 1) % 3;
    switch_over(&c, a, b);
    assert_unmounted(&c.hosts[a], "switchover");
    wait_mounted_only_on(&c, b, "switchover");

    // Cut the active host off: it fences itself and unmounts; the new host mounts.
    c.hosts[b].cut();
    let n = c.wait_one_active(Some(b), FAILOVER_BOUND + Duration::from_secs(10));
    assert_unmounted(&c.hosts[b], "cut");
    wait_mounted_only_on(&c, n, "cut");
    c.hosts[b].heal();

    // kill -9 promd on the active host: the binding unmounts at once.
    let pid = c.promd_pid(n);
    c.hosts[n].signal(pid, Signal::SIGKILL);
    let m = c.wait_one_active(Some(n), FAILOVER_BOUND + Duration::from_secs(10));
    assert_unmounted(&c.hosts[n], "kill -9");
    wait_mounted_only_on(&c, m, "kill -9");
    c.wait_promd_back(n, pid);
    wait_mounted_only_on(&c, m, "promd back on the old host");
    c.check_history();
}

#[test]
fn a_notify_unit_that_never_gets_ready_fails_over() {
    a_failing_start_on_n2_fails_over(
        "[Service]\nType=notify\nNotifyAccess=main\nTimeoutStartSec=3s\n",
    );
}
