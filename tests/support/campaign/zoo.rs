//! The zoo: the units the campaign's hosts run under `web-active.target`, their spans, and
//! the checks over every process of the closure.

use super::*;

/// How long `web-drain.service`'s `ExecStop=` drains: longer than the lease, so a graceful
/// demotion drains while promd keeps renewing, and a fence must kill the drain.
pub const DRAIN: Duration = Duration::from_secs(3);
pub(super) const UNITS: &str = "/etc/systemd/system";
/// The loopback port of `web-api.socket` (each host has its own network namespace).
pub(super) const API_PORT: u16 = 8099;
/// The tmpfs of `srv-webcache.mount`.
pub(super) const MOUNT_POINT: &str = "/srv/webcache";
pub(super) const MOUNT_UNIT: &str = "srv-webcache.mount";
/// Heartbeats (realtime ns) of web-fork.service's child that ignores SIGTERM.
pub(super) const FORK_BEAT: &str = "web-fork.beat";
/// The flag the health command checks (`! test -e`).
pub(super) const UNHEALTHY: &str = "/run/web-unhealthy";
/// The group's health check: the campaign's `health` fault makes the active host unhealthy.
/// The timeout is generous (a loaded 2-core machine must not fail a `test -e`); it must be
/// shorter than the interval.
pub const HEALTH_EXTRA: &str = "health-command = [\"/bin/sh\", \"-c\", \"! test -e /run/web-unhealthy\"]\n\
     health-interval = \"1s\"\nhealth-timeout = \"800ms\"\n";

/// The zoo's services and their span logs (the name of the log in the host's `/spans`).
/// `web.service` logs to `spans.log`, as [`Cluster`] writes it.
pub const ZOO_SERVICES: [(&str, &str); 6] = [
    ("web.service", "spans.log"),
    ("web-worker.service", "web-worker.log"),
    ("web-fork.service", "web-fork.log"),
    ("web-drain.service", "web-drain.log"),
    ("web-api.service", "web-api.log"),
    ("web-refuse.service", "web-refuse.log"),
];

/// Every unit of the zoo that runs on the active host, and on no other host.
pub const ZOO_UP: [&str; 9] = [
    "web.service",
    "web-worker.service",
    "web-fork.service",
    "web-drain.service",
    "web-api.service",
    "web-refuse.service",
    "web-api.socket",
    MOUNT_UNIT,
    "web-stack.target",
];

/// Whether a unit of the zoo owns a cgroup when it runs (processes, mount helpers): all but
/// the target.
pub(super) fn has_cgroup(unit: &str) -> bool {
    !unit.ends_with(".target")
}

/// web-fork.service's main process: it forks two children and waits; one child ignores
/// SIGTERM and writes a heartbeat every 0.2 s (its `sleep`s inherit the ignored signal).
pub(super) const FORK_SCRIPT: &str = "#!/bin/sh\n\
    # A main process that forks: one child ignores SIGTERM, the other does not.\n\
    /bin/sh -c 'trap \"\" TERM; while :; do date +%s%N >> /spans/web-fork.beat; sleep 0.2; done' &\n\
    sleep infinity &\n\
    wait\n";

/// The zoo, on top of [`super::cluster::web_units`] (later files at the same path replace
/// earlier ones):
///
/// ```text
/// web-active.target  Wants= web-stack.target                      (a nested target)
/// web-stack.target   Wants= web.service web-fork.service web-drain.service web-api.socket
///                           srv-webcache.mount web-refuse.service web-missing.service
/// web.service        Wants= web-worker.service                    (a service pulls one in)
/// web-worker.service ExecStartPost= connects to web-api.socket    (so it triggers web-api)
/// web-fork.service   main forks; one child ignores SIGTERM        (killed after 2 s)
/// web-drain.service  ExecStop= drains for DRAIN (3 s > the 2 s lease)
/// web-api.socket     127.0.0.1:8099, starts web-api.service on a connection
/// srv-webcache.mount a tmpfs on /srv/webcache
/// web-refuse.service RefuseManualStop=yes
/// web-missing.service does not exist
/// ```
///
/// Every service records its run spans like [`hosts::span_unit`] (`ExecStartPre=` /
/// `ExecStopPost=`, one log per unit in the host's `/spans`). Does a span cover every process
/// of the unit, not only the main one? promd's drop-in keeps `KillMode=control-group`
/// ([`Engine::check_claims`] checks it on the host), and the claim was that systemd then runs
/// `ExecStopPost=` only once the unit's cgroup is empty. Verified on this machine: **false**
/// (cgroup v1 inside nspawn; see [`zoo_view`]). So web-fork.service's TERM-ignoring child
/// writes heartbeats, and the span checker extends the unit's spans to them.
pub fn zoo_units(spec: &mut HostSpec) {
    let span = |unit: &str, log: &str| hosts::span_unit(unit, "web", &format!("/spans/{log}"));
    let log_of = |unit: &str| {
        ZOO_SERVICES
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, l)| *l)
            .unwrap_or_default()
    };
    spec.file(
        &format!("{UNITS}/web-active.target"),
        "[Unit]\nDescription=web: active (the zoo)\nWants=web-stack.target\nConflicts=web-passive.target\n",
    );
    spec.file(
        &format!("{UNITS}/web-stack.target"),
        format!(
            "[Unit]\nDescription=web: the stack\nWants=web.service web-fork.service web-drain.service \
             web-api.socket {MOUNT_UNIT} web-refuse.service web-missing.service\n"
        ),
    );
    // web.service itself is Cluster's span unit (spans.log).
    spec.file(
        &format!("{UNITS}/web.service.d/zoo.conf"),
        "[Unit]\nWants=web-worker.service\n",
    );
    for unit in [
        "web-worker.service",
        "web-fork.service",
        "web-drain.service",
        "web-api.service",
        "web-refuse.service",
    ] {
        spec.file(&format!("{UNITS}/{unit}"), span(unit, log_of(unit)));
    }
    // The worker is the socket's client: its connection starts web-api.service. A refused
    // connection ("-") does not fail the worker; the campaign then sees web-api down.
    spec.file(
        &format!("{UNITS}/web-worker.service.d/zoo.conf"),
        format!(
            "[Unit]\nAfter=web-api.socket\n[Service]\n\
             ExecStartPost=-/bin/bash -c 'exec 3<>/dev/tcp/127.0.0.1/{API_PORT}'\n"
        ),
    );
    spec.executable("/etc/zoo/fork", FORK_SCRIPT);
    spec.file(
        &format!("{UNITS}/web-fork.service.d/zoo.conf"),
        "[Service]\nExecStart=\nExecStart=/etc/zoo/fork\nTimeoutStopSec=2s\n",
    );
    spec.file(
        &format!("{UNITS}/web-drain.service.d/zoo.conf"),
        format!(
            "[Service]\nExecStop=/bin/sleep {}\nTimeoutStopSec=30s\n",
            DRAIN.as_secs()
        ),
    );
    spec.file(
        &format!("{UNITS}/web-api.socket"),
        format!(
            "[Unit]\nDescription=web api (socket)\n[Socket]\nListenStream=127.0.0.1:{API_PORT}\n"
        ),
    );
    spec.file(
        &format!("{UNITS}/{MOUNT_UNIT}"),
        format!(
            "[Unit]\nDescription=web cache (tmpfs)\n[Mount]\nWhat=tmpfs\nWhere={MOUNT_POINT}\n\
             Type=tmpfs\nOptions=size=1m,mode=0755\n"
        ),
    );
    spec.file(
        &format!("{UNITS}/web-refuse.service.d/zoo.conf"),
        "[Unit]\nRefuseManualStop=yes\n",
    );
}

/// One host's spans: (unit, span) for every zoo service.
pub(super) type HostSpans = (String, Vec<(&'static str, Span)>);

/// Every host's spans of every zoo service, on the one clock the hosts share: a consistent
/// snapshot. The logs are read one after the other, so one pass could see host A's unit still
/// open and then host B's start that came after A's stop; the logs only grow, so two passes
/// that read the same show every log as it was at the moment between them.
pub(super) fn zoo_spans(c: &Cluster) -> Vec<HostSpans> {
    let mut last = read_zoo_spans(c);
    for _ in 0..20 {
        let again = read_zoo_spans(c);
        if again == last {
            break;
        }
        last = again;
    }
    last
}

pub(super) fn read_zoo_spans(c: &Cluster) -> Vec<HostSpans> {
    (0..c.hosts.len())
        .map(|i| {
            let dir = c.span_dir(i);
            let spans = ZOO_SERVICES
                .iter()
                .flat_map(|(unit, log)| {
                    hosts::read_spans(dir.join(log))
                        .into_iter()
                        .map(move |s| (*unit, s))
                })
                .collect();
            (c.hosts[i].name().to_string(), spans)
        })
        .collect()
}

pub(super) fn describe_span(unit: &str, s: &Span) -> String {
    let term = s.term.map_or("-".to_string(), |t| t.to_string());
    let slot = s.slot.map_or(String::new(), |k| format!(" slot {k}"));
    match s.stop_ns {
        Some(stop) => format!("{unit} [{} .. {stop}] term {term}{slot}", s.start_ns),
        None => format!("{unit} [{} .. open] term {term}{slot}", s.start_ns),
    }
}

/// Every unit's spans on one timeline, in ms from the first event.
pub fn zoo_timeline(all: &[HostSpans]) -> String {
    let mut events: Vec<(u64, &str, String)> = Vec::new();
    for (host, spans) in all {
        for (unit, s) in spans {
            let term = s.term.map_or("-".to_string(), |t| t.to_string());
            let slot = s.slot.map_or(String::new(), |k| format!(" slot {k}"));
            events.push((s.start_ns, host, format!("start {unit} term {term}{slot}")));
            events.push((
                s.end_ns(),
                host,
                match s.stop_ns {
                    Some(_) => format!("stop  {unit}"),
                    None => format!("(never stopped) {unit}"),
                },
            ));
        }
    }
    events.sort();
    let t0 = events.first().map_or(0, |e| e.0);
    let mut out = String::new();
    for (ns, host, what) in &events {
        let at = if *ns == u64::MAX {
            "end".to_string()
        } else {
            format!("{:.3} ms", (ns - t0) as f64 / 1e6)
        };
        let _ = writeln!(out, "{at:>14}  {host:<6} {what}");
    }
    out
}

/// What [`zoo_view`] saw of web-fork.service's TERM-ignoring child.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outlived {
    /// Stops of web-fork.service after which the child still beat.
    pub stops: usize,
    /// Stops of web-fork.service in all.
    pub of: usize,
    /// By how much the child outlived `ExecStopPost=` at most.
    pub longest: Duration,
    /// Runs whose `stop` line never came: the fence's `KillUnit` also kills a control process,
    /// and so the recorder's `ExecStopPost=` when the kill lands during it. Such a span is
    /// closed where systemd says the unit went inactive (see [`close_lost_stops`]).
    pub lost: usize,
}

/// Every host's spans of every zoo service (a consistent snapshot, see [`zoo_spans`]), with
/// web-fork.service's spans extended to the last heartbeat of its TERM-ignoring child.
///
/// The span recorder's `stop` comes from `ExecStopPost=`, and systemd does not wait for an
/// empty cgroup before it on this machine: systemd (252) waits for the cgroup to empty before
/// `ExecStopPost=` only on the unified (v2) hierarchy; on the legacy v1 hierarchy inside a
/// container, where cgroup-empty notifications do not work, it enters `stop-post` as soon as
/// the main and control processes are gone and kills what is left of the cgroup only after
/// `ExecStopPost=` (`final-sigterm`). The campaign's first run saw it: the child beat 1.06 s
/// after the recorded stop. So the recorder alone does not cover every process; the child's
/// heartbeats do (a beat is taken before it is written, so the last one is at most the child's
/// death), and [`zoo_leftovers`] looks at the processes themselves.
pub(super) fn zoo_view(c: &Cluster) -> (Vec<HostSpans>, Outlived) {
    // The heartbeats first: each one read was written before the spans are read, so the span
    // it belongs to is in what is read next.
    let beats: Vec<String> = (0..c.hosts.len())
        .map(|i| std::fs::read_to_string(c.span_dir(i).join(FORK_BEAT)).unwrap_or_default())
        .collect();
    let mut all = zoo_spans(c);
    let mut outlived = Outlived {
        lost: close_lost_stops(c, &mut all),
        ..Outlived::default()
    };
    for (i, (host, spans)) in all.iter_mut().enumerate() {
        let mut fork: Vec<&mut Span> = spans
            .iter_mut()
            .filter(|(u, _)| *u == "web-fork.service")
            .map(|(_, s)| s)
            .collect();
        fork.sort_by_key(|s| s.start_ns);
        let mut last_beat = vec![0u64; fork.len()];
        // Whole lines only: the last one may be half written.
        let whole = beats[i].split_inclusive('\n').filter(|l| l.ends_with('\n'));
        for beat in whole.filter_map(|l| l.trim().parse::<u64>().ok()) {
            // The span it belongs to: the last one that started before it.
            let k = fork.partition_point(|s| s.start_ns <= beat);
            assert!(
                k > 0,
                "{host}: web-fork.service's child beat at {beat}, before any start of the unit"
            );
            last_beat[k - 1] = last_beat[k - 1].max(beat);
        }
        for (s, beat) in fork.iter_mut().zip(last_beat) {
            let Some(stop) = s.stop_ns else { continue };
            outlived.of += 1;
            if beat > stop {
                outlived.stops += 1;
                outlived.longest = outlived.longest.max(Duration::from_nanos(beat - stop));
                s.stop_ns = Some(beat);
            }
        }
    }
    (all, outlived)
}

/// Closes the open spans of units that are not running, each at an upper bound of its end
/// (so no overlap can hide): a run followed by another start of the same unit on the same
/// host ended when systemd's journal first says the unit stopped after the run began
/// (`Stopped UNIT`, `UNIT: Deactivated successfully`, `UNIT: Failed with result`), or at the
/// next start if the journal does not say; the last run of a unit that is inactive or failed
/// now ended when systemd says it went inactive (`InactiveEnterTimestamp`). Both clocks are
/// realtime, the recorder's. (A next start can be minutes later: taking it as the end would
/// make the run overlap every run elsewhere in between.) Returns how many spans it closed.
pub(super) fn close_lost_stops(c: &Cluster, all: &mut [HostSpans]) -> usize {
    let mut closed = 0;
    for (i, (_, spans)) in all.iter_mut().enumerate() {
        let mut last_open: Vec<(&str, usize)> = Vec::new();
        for (unit, _) in ZOO_SERVICES {
            let runs: Vec<usize> = (0..spans.len()).filter(|&k| spans[k].0 == unit).collect();
            let lost: Vec<(usize, u64)> = runs
                .windows(2)
                .filter(|w| spans[w[0]].1.stop_ns.is_none())
                .map(|w| (w[0], spans[w[1]].1.start_ns))
                .collect();
            if !lost.is_empty() {
                let stops = hosts::journal_stops(&c.hosts[i], unit, spans[lost[0].0].1.start_ns);
                for (k, next_start) in lost {
                    let start = spans[k].1.start_ns;
                    let end = stops
                        .iter()
                        .copied()
                        .find(|&t| t >= start && t <= next_start)
                        .unwrap_or(next_start);
                    spans[k].1.stop_ns = Some(end);
                    closed += 1;
                }
            }
            if let Some(&k) = runs.last()
                && spans[k].1.stop_ns.is_none()
            {
                last_open.push((unit, k));
            }
        }
        if last_open.is_empty() {
            continue;
        }
        let script: Vec<String> = last_open
            .iter()
            .map(|(unit, _)| {
                format!(
                    "busctl get-property org.freedesktop.systemd1 /org/freedesktop/systemd1/unit/{} \
                     org.freedesktop.systemd1.Unit ActiveState InactiveEnterTimestamp || printf '\\n\\n'; echo",
                    bus_path_label(unit)
                )
            })
            .collect();
        let out =
            c.hosts[i].exec_timeout(&["sh", "-c", &script.join("; ")], Duration::from_secs(20));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        for (_, k) in last_open {
            let state = lines.next().unwrap_or_default().trim().to_string();
            let since = lines.next().unwrap_or_default().trim().to_string();
            let _ = lines.next(); // the separator
            let down = state == "s \"inactive\"" || state == "s \"failed\"";
            let since_ns = timestamp_ns(&since);
            let span = &mut spans[k].1;
            if let Some(at) = since_ns.filter(|&at| down && at >= span.start_ns) {
                span.stop_ns = Some(at);
                closed += 1;
            }
        }
    }
    closed
}

/// When `unit` on host `i` last went inactive (realtime ns), as systemd says; `None` before
/// its first stop or when the host does not answer.
pub(super) fn inactive_since(c: &Cluster, i: usize, unit: &str) -> Option<u64> {
    let out = c.hosts[i].exec_timeout(
        &[
            "busctl",
            "get-property",
            "org.freedesktop.systemd1",
            &format!("/org/freedesktop/systemd1/unit/{}", bus_path_label(unit)),
            "org.freedesktop.systemd1.Unit",
            "InactiveEnterTimestamp",
        ],
        Duration::from_secs(20),
    );
    timestamp_ns(&String::from_utf8_lossy(&out.stdout))
}

/// A systemd timestamp property as `busctl get-property` prints it (`t USEC`, realtime µs),
/// in ns; `None` for 0 (never) or anything else.
fn timestamp_ns(line: &str) -> Option<u64> {
    let us = line.trim().strip_prefix("t ")?.parse::<u64>().ok()?;
    (us > 0).then_some(us * 1000)
}

/// A unit name as a label of its D-Bus object path: every byte but `[A-Za-z0-9]` as `_xx`.
fn bus_path_label(unit: &str) -> String {
    unit.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("_{b:02x}")
            }
        })
        .collect()
}

/// The span checker over every process of the closure, on one clock ([`zoo_view`]):
/// - no span of one host overlaps a span of another host of the same slot (`PROMD_SLOT`, which
///   every zoo service records; in a group of one active host there is no slot, so any unit
///   against any unit);
/// - no host runs units of two slots at once, and in a group with slots no run lacks one;
/// - each slot's term (`PROMD_TERM`, which every zoo service records) never goes back, and
///   grows whenever a unit starts on another host than the unit that started before it.
///
/// Returns the number of spans and what web-fork.service's child did.
pub fn check_zoo(c: &Cluster) -> (usize, Outlived) {
    let (all, outlived) = zoo_view(c);
    let overlap = |a: &Span, b: &Span| a.start_ns < b.end_ns() && b.start_ns < a.end_ns();
    let mut overlaps = Vec::new();
    // In a group with slots every run of the zoo belongs to one: a run without (the env file
    // of a host holding no slot says `PROMD_SLOT=`) would be compared with no slot's runs.
    if all
        .iter()
        .any(|(_, spans)| spans.iter().any(|(_, s)| s.slot.is_some()))
    {
        for (host, spans) in &all {
            for (unit, s) in spans.iter().filter(|(_, s)| s.slot.is_none()) {
                overlaps.push(format!(
                    "{host} ran {} without a slot in a group with slots",
                    describe_span(unit, s)
                ));
            }
        }
    }
    for (a, (host_a, spans_a)) in all.iter().enumerate() {
        for (host_b, spans_b) in all.iter().skip(a + 1) {
            for (ua, sa) in spans_a {
                for (ub, sb) in spans_b.iter().filter(|(_, sb)| sb.slot == sa.slot) {
                    if overlap(sa, sb) {
                        overlaps.push(format!(
                            "{host_a} {} and {host_b} {} overlap",
                            describe_span(ua, sa),
                            describe_span(ub, sb)
                        ));
                    }
                }
            }
        }
        for (i, (ua, sa)) in spans_a.iter().enumerate() {
            for (ub, sb) in spans_a.iter().skip(i + 1) {
                if sa.slot != sb.slot && overlap(sa, sb) {
                    overlaps.push(format!(
                        "{host_a} ran {} and {} at once: two slots",
                        describe_span(ua, sa),
                        describe_span(ub, sb)
                    ));
                }
            }
        }
    }
    assert!(
        overlaps.is_empty(),
        "units of the zoo ran where they must not (two hosts in one slot, a host in two, a run without a slot):\n  {}\ntimeline:\n{}",
        overlaps.join("\n  "),
        zoo_timeline(&all)
    );
    // (start, term, host, unit) of every run, by slot.
    type Starts<'a> = Vec<(u64, u64, &'a str, &'a str)>;
    let mut by_slot: BTreeMap<Option<u32>, Starts> = BTreeMap::new();
    for (h, spans) in &all {
        for (u, s) in spans {
            let term = s
                .term
                .unwrap_or_else(|| panic!("{h} {u}: no PROMD_TERM in the unit's environment"));
            by_slot
                .entry(s.slot)
                .or_default()
                .push((s.start_ns, term, h.as_str(), *u));
        }
    }
    let runs = by_slot.into_values().map(assert_terms_grow).sum();
    (runs, outlived)
}

/// What of the zoo is left on host `h`: processes in a zoo unit's cgroup (`unit: pid (name)`),
/// and the tmpfs if it is mounted. The cgroup of each live process of the host comes from
/// `/proc/PID/cgroup` (as the machine sees it): this machine runs the legacy cgroup v1
/// hierarchy (`name=systemd`), where `/sys/fs/cgroup/system.slice/UNIT/cgroup.procs` does not
/// exist, and the per-process view works with v1 and v2 alike.
pub(super) fn zoo_leftovers(h: &Host) -> Vec<String> {
    let mut found: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for pid in hosts::all_pids().into_iter().filter(|&p| h.owns_pid(p)) {
        let Ok(cgroups) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        let Some(unit) = ZOO_UP.iter().filter(|u| has_cgroup(u)).find(|unit| {
            let dir = format!("/system.slice/{unit}");
            cgroups
                .lines()
                .any(|l| l.ends_with(&dir) || l.contains(&format!("{dir}/")))
        }) else {
            continue;
        };
        let Some(st) = hosts::proc_status(pid).filter(|st| !matches!(st.state, 'Z' | 'X')) else {
            continue;
        };
        found
            .entry(unit)
            .or_default()
            .push(format!("{pid} ({})", st.name));
    }
    let mut left: Vec<String> = found
        .iter()
        .map(|(unit, pids)| format!("{unit}: {}", pids.join(", ")))
        .collect();
    if is_mounted(h) {
        left.push(format!("{MOUNT_POINT} is mounted"));
    }
    left
}

/// Whether the zoo's tmpfs is mounted on host `h` (its init's mount table).
pub(super) fn is_mounted(h: &Host) -> bool {
    std::fs::read_to_string(format!("/proc/{}/mountinfo", h.init_pid()))
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(MOUNT_POINT))
}

/// `systemctl is-active` of every unit of [`ZOO_UP`] on each host.
pub(super) fn zoo_states(c: &Cluster) -> Vec<Vec<String>> {
    c.hosts
        .iter()
        .map(|h| {
            let mut args = vec!["systemctl", "is-active"];
            args.extend(ZOO_UP);
            let out = h.exec_timeout(&args, Duration::from_secs(20));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .collect()
        })
        .collect()
}

pub(super) fn all_up(states: &[String]) -> bool {
    states.len() == ZOO_UP.len() && states.iter().all(|s| s == "active")
}

/// The zoo units of `states` that are not inactive or failed, with their state.
pub(super) fn not_down(states: &[String]) -> Vec<String> {
    ZOO_UP
        .iter()
        .zip(states)
        .filter(|(_, s)| !matches!(s.as_str(), "inactive" | "failed"))
        .map(|(u, s)| format!("{u}={s}"))
        .collect()
}
