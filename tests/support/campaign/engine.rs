//! The engine: a settled cluster, the cluster's state as the hosts tell it, and what a
//! failure leaves for the reader.

use super::*;

pub(super) struct Engine<'a> {
    pub(super) seed: u64,
    pub(super) c: &'a Cluster,
    pub(super) etcd: &'a mut EtcdCluster,
    pub(super) start: Instant,
    pub(super) log: Vec<String>,
    pub(super) outcomes: Vec<Outcome>,
    /// The cluster as the last settle poll saw it (printed if it never settles).
    pub(super) last_seen: String,
    pub(super) kinds: Vec<Kind>,
    /// The fault in progress.
    pub(super) current: usize,
    /// The group's `actives` (slots): how many hosts run the zoo at once.
    pub(super) actives: usize,
}

/// One host running the whole zoo: its slot (`PROMD_SLOT` of its runs; `None` in a group of
/// one active host) and when the last of its zoo services came up (realtime ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Active {
    pub(super) host: usize,
    pub(super) slot: Option<u32>,
    pub(super) latest: u64,
}

/// One host as `systemctl` and promd's D-Bus API show it.
#[derive(Default)]
pub(super) struct HostState {
    pub(super) promd: String,
    pub(super) passive: String,
    pub(super) role: String,
    /// `systemctl is-active` of each unit of [`ZOO_UP`].
    pub(super) zoo: Vec<String>,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let zoo = if all_up(&self.zoo) {
            "all up".to_string()
        } else {
            let up = not_down(&self.zoo);
            if up.is_empty() {
                "all down".to_string()
            } else {
                up.join(" ")
            }
        };
        write!(
            f,
            "promd {}, role {}, passive target {}, zoo: {zoo}",
            self.promd, self.role, self.passive
        )
    }
}

pub(super) fn host_state(h: &Host) -> HostState {
    let script = format!(
        "systemctl is-active promd.service web-passive.target {}; \
         busctl --timeout=5 get-property org.promd1 /org/promd1/group/web org.promd1.Group Role \
         2>/dev/null || echo unknown",
        ZOO_UP.join(" ")
    );
    let out = h.exec_timeout(&["sh", "-c", &script], Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(|l| l.trim().to_string());
    let mut next = || lines.next().unwrap_or_default();
    let promd = next();
    let passive = next();
    let zoo = ZOO_UP.iter().map(|_| next()).collect();
    HostState {
        promd,
        passive,
        zoo,
        role: next()
            .trim_start_matches("s ")
            .trim_matches('"')
            .to_string(),
    }
}

/// ` PROMD_CAMPAIGN_KINDS=...` unless `kinds` is the default.
pub(super) fn kinds_env(kinds: &[Kind]) -> String {
    if kinds == Kind::ALL {
        return String::new();
    }
    let keys: Vec<&str> = kinds.iter().map(|k| k.key()).collect();
    format!(" PROMD_CAMPAIGN_KINDS={}", keys.join(","))
}

/// After a SIGSTOP: SIGCONT the promd if it still exists, else the watchdog killed it. Says
/// which, for the fault log.
pub(super) fn resume_unless_killed(host: &Host, pid: u32) -> &'static str {
    if host.pids_on_machine("promd").contains(&pid) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
        "resumed"
    } else {
        "killed by the watchdog"
    }
}

/// "Exactly `n` actives" over the zoo: the `n` hosts on which every unit of [`ZOO_UP`] runs,
/// if no unit of it runs on any other host, each host's open runs all carry one slot, and no
/// two hosts carry the same one; in slot order.
pub(super) fn actives(c: &Cluster, n: usize) -> Option<Vec<Active>> {
    let states = zoo_states(c);
    let states: Vec<&[String]> = states.iter().map(Vec::as_slice).collect();
    actives_in(c, &states, n)
}

/// [`actives`] from each host's `systemctl is-active` of [`ZOO_UP`], already asked.
fn actives_in(c: &Cluster, states: &[&[String]], n: usize) -> Option<Vec<Active>> {
    let up: Vec<usize> = (0..states.len()).filter(|&i| all_up(states[i])).collect();
    if up.len() != n {
        return None;
    }
    let others_down = (0..states.len())
        .filter(|i| !up.contains(i))
        .all(|i| states[i].iter().all(|s| s != "active"));
    if !others_down {
        return None;
    }
    let mut found: Vec<Active> = up.iter().map(|&h| open_run(c, h)).collect::<Option<_>>()?;
    found.sort_by_key(|a| a.slot);
    let distinct = found.windows(2).all(|w| w[0].slot != w[1].slot);
    (distinct && (n == 1 || found.iter().all(|a| a.slot.is_some()))).then_some(found)
}

/// Host `h`'s open run of the zoo, from its span logs: every zoo service has an open span,
/// all of one slot.
fn open_run(c: &Cluster, h: usize) -> Option<Active> {
    let dir = c.span_dir(h);
    let (mut latest, mut slots) = (0, Vec::new());
    for (_, log) in ZOO_SERVICES {
        let spans = hosts::read_spans(dir.join(log));
        let open = spans.last().filter(|s| s.stop_ns.is_none())?;
        latest = latest.max(open.start_ns);
        slots.push(open.slot);
    }
    slots.dedup();
    let [slot] = slots[..] else { return None };
    Some(Active {
        host: h,
        slot,
        latest,
    })
}

/// Time in `[from, to]` during which no host's span was open.
pub(super) fn uncovered(all: &[(String, Vec<Span>)], from: u64, to: u64) -> Duration {
    let mut iv: Vec<(u64, u64)> = all
        .iter()
        .flat_map(|(_, spans)| spans.iter())
        .map(|s| (s.start_ns.max(from), s.end_ns().min(to)))
        .filter(|(a, b)| a < b)
        .collect();
    iv.sort();
    let (mut covered, mut reach) = (0u64, from);
    for (a, b) in iv {
        let a = a.max(reach);
        if b > a {
            covered += b - a;
            reach = b;
        }
    }
    Duration::from_nanos(to.saturating_sub(from).saturating_sub(covered))
}

impl Engine<'_> {
    pub(super) fn say(&mut self, line: String) {
        let line = format!(
            "[seed {} +{:7.1}s] {line}",
            self.seed,
            self.start.elapsed().as_secs_f64()
        );
        eprintln!("{line}");
        self.log.push(line);
    }

    pub(super) fn name(&self, i: usize) -> &str {
        self.c.hosts[i].name()
    }

    /// The hosts running the zoo now, if exactly [`Engine::actives`] do (see [`actives`]).
    pub(super) fn now_active(&self) -> Option<Vec<Active>> {
        actives(self.c, self.actives)
    }

    /// Waits until [`Engine::actives`] hosts are active, each in a slot of its own, and the
    /// others passive and eligible, promd running everywhere; returns the active hosts in slot
    /// order.
    pub(super) fn settle(&mut self) -> Vec<Active> {
        let mut active = Vec::new();
        let mut seen = String::new();
        let c = self.c;
        let n = self.actives;
        let result = catch_unwind(AssertUnwindSafe(|| {
            hosts::wait_until(
                SETTLE_TIMEOUT,
                &format!(
                    "the cluster settles (the zoo up on {n} active host(s) in distinct slots, the \
                     others passive with the zoo down, promd running everywhere)"
                ),
                || {
                    let states: Vec<HostState> = c.hosts.iter().map(host_state).collect();
                    seen = states
                        .iter()
                        .zip(&c.hosts)
                        .map(|(s, h)| format!("{}: {s:?}", h.name()))
                        .collect::<Vec<_>>()
                        .join("; ");
                    let zoo: Vec<&[String]> = states.iter().map(|s| s.zoo.as_slice()).collect();
                    let Some(up) = actives_in(c, &zoo, n) else {
                        return false;
                    };
                    let settled = states.iter().enumerate().all(|(i, s)| {
                        s.promd == "active"
                            && if up.iter().any(|a| a.host == i) {
                                s.role == "active"
                            } else {
                                s.role == "passive"
                                    && s.passive == "active"
                                    && not_down(&s.zoo).is_empty()
                            }
                    });
                    if settled {
                        active = up;
                    }
                    settled
                },
            )
        }));
        self.last_seen = seen;
        if let Err(panic) = result {
            let seen = self.last_seen.clone();
            self.say(format!("the cluster did not settle; last seen: {seen}"));
            resume_unwind(panic);
        }
        active
    }

    /// A host that runs none of the zoo, chosen by `pick`.
    pub(super) fn passive_host(&self, active: &[Active], pick: u64) -> usize {
        let others: Vec<usize> = (0..self.c.hosts.len())
            .filter(|&i| active.iter().all(|a| a.host != i))
            .collect();
        others[(pick % others.len() as u64) as usize]
    }

    /// busctl call ... Manager METHOD s web on host `h`: "ok" or the refusal's message.
    pub(super) fn manager_call(&self, h: usize, method: &str) -> String {
        manager_call(&self.c.hosts[h], method)
    }

    /// What the campaign relies on, checked once on the first active host `a`:
    /// - the span logs are where [`check_zoo`] reads them, and the cgroup probe of
    ///   [`zoo_leftovers`] sees the processes of a running unit (so that an empty answer on a
    ///   passive host means something);
    /// - promd's drop-in leaves every zoo service with `KillMode=control-group` (whether
    ///   `ExecStopPost=` waits for the cgroup to empty is another matter, see [`zoo_view`]);
    /// - the socket got its service started by the worker's connection.
    pub(super) fn check_claims(&mut self, a: usize) {
        let h = &self.c.hosts[a];
        let left = zoo_leftovers(h);
        for unit in ["web.service", "web-fork.service", "web-api.service"] {
            assert!(
                left.iter().any(|l| l.starts_with(&format!("{unit}: "))),
                "{}: no process seen in {unit}'s cgroup on the active host: {left:?}",
                h.name()
            );
        }
        assert!(
            is_mounted(h),
            "{MOUNT_POINT} not mounted on the active host"
        );
        for (unit, _) in ZOO_SERVICES {
            let out = h.run_ok(&[
                "systemctl",
                "show",
                "-p",
                "KillMode",
                "-p",
                "DropInPaths",
                unit,
            ]);
            assert!(
                out.contains("KillMode=control-group") && out.contains("50-promd-web.conf"),
                "{}: {unit} is not under promd's drop-in with KillMode=control-group: {out}",
                h.name()
            );
        }
        let triggered = h.run_ok(&["systemctl", "show", "-p", "TriggeredBy", "web-api.service"]);
        assert!(
            triggered.contains("web-api.socket"),
            "web-api.service: {triggered}"
        );
        let fork = zoo_leftovers(h)
            .into_iter()
            .find(|l| l.starts_with("web-fork.service"))
            .unwrap_or_default();
        self.say(format!(
            "checked on {}: the zoo's processes visible in their cgroups ({fork}), {MOUNT_POINT} \
             mounted, KillMode=control-group under promd's drop-in, web-api.service triggered by \
             its socket",
            h.name()
        ));
    }
}

/// busctl call ... Manager METHOD s web on `h`: "ok" or the refusal's message.
pub(super) fn manager_call(h: &Host, method: &str) -> String {
    let argv = crate::support::bus::manager_call_argv(method, "web", "45");
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = h.exec_timeout(&argv, Duration::from_secs(60));
    if out.status.success() {
        return "ok".into();
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let msg = err.lines().next().unwrap_or("").trim();
    let msg = msg.strip_prefix("Call failed: ").unwrap_or(msg);
    format!("refused ({msg})")
}

/// Whether every zoo service that ran on host `h` at `t` (realtime ns) has stopped since.
/// A run whose stop line a kill lost (the recorder's `ExecStopPost=` killed with the unit)
/// counts as stopped once systemd says the unit went inactive after the run began.
pub(super) fn stopped_since(c: &Cluster, h: usize, t: u64) -> bool {
    ZOO_SERVICES.iter().all(|(unit, log)| {
        let open: Vec<u64> = hosts::read_spans(c.span_dir(h).join(log))
            .iter()
            .filter(|s| s.start_ns < t && s.stop_ns.is_none())
            .map(|s| s.start_ns)
            .collect();
        // One question to systemd per unit, however many of its runs lost their line.
        open.is_empty()
            || zoo::inactive_since(c, h, unit).is_some_and(|at| open.iter().all(|&s| at >= s))
    })
}

/// Polls `cond` every 20 ms for at most `timeout`; whether it became true.
pub(super) fn poll(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a hand-over call (`busctl call ... METHOD s web`) on `h` and runs `during` while it
/// runs; `during` gets a probe that says whether the call is still in flight. Returns the
/// call's result and `during`'s.
pub(super) fn during_call<T>(
    h: &Host,
    method: &str,
    during: impl FnOnce(&dyn Fn() -> bool) -> T,
) -> (String, T) {
    std::thread::scope(|s| {
        let call = s.spawn(|| manager_call(h, method));
        let in_flight = || !call.is_finished();
        let t = during(&in_flight);
        let result = call.join().unwrap_or_else(|p| resume_unwind(p));
        (result, t)
    })
}
