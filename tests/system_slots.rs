//! Issue 16: a group with `actives = 2` and `standbys = 1` on five real systemd hosts with a
//! 3-member etcd. Each slot is elected and fenced like a group of one active host; a host
//! holds at most one slot; the passive target runs on the best host without a slot only.
//!
//! The service is a template, `sched@.service`, pulled in by `sched-active@.target`: slot k
//! runs `sched@k.service`, which records its run spans (per slot, on the clock the hosts
//! share) and the `PROMD_SLOT`/`PROMD_TERM` it was started with. It forks two children, and
//! all three ignore SIGTERM: a stop drains for a second (`ExecStop=`), then waits out
//! `TimeoutStopSec=2s` until systemd's SIGKILL, so a cut host's slot is ended by the fence's
//! own kill, not by the stop. The checks: no two hosts' spans of one slot overlap, a slot's term only grows, a
//! slot emptied by kill -9, SIGSTOP or a cut is filled within lease + 1 s, Promote and Demote
//! move one slot, and a reload grows the group to three slots and back. Then a seeded
//! campaign of those faults and kills of the service, on random slots at random phases
//! (`campaign`).

mod support;

use std::time::Duration;

use support::campaign::Rng;
use support::cluster::{Cluster, StoreKind, assert_terms_grow, elapsed, promd_unit};
use support::etcd::EtcdCluster;
use support::hosts::{self, HostSpec, Net, Signal, Span};

const LEASE: Duration = Duration::from_secs(2);
/// The bound the issue sets for refilling a slot after an unplanned fault.
const REFILL_BOUND: Duration = Duration::from_millis(LEASE.as_millis() as u64 + 1000);
const HOSTS: usize = 5;

/// promd.toml of host `i` (n1 ranks first: priority 150, then 140, ...).
fn config(i: usize, endpoints: &[String], actives: u32) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "node = \"n{}\"\n[store]\nkind = \"etcd\"\nendpoints = [{}]\nconnect-timeout = \"500ms\"\n\n\
         [[group]]\nname = \"sched\"\nactive-target = \"sched-active@.target\"\n\
         passive-target = \"sched-passive.target\"\nlease = \"{}ms\"\npriority = {}\n\
         actives = {actives}\nstandbys = 1\n\n[http]\nlisten = [\"127.0.0.1:{}\"]\n",
        i + 1,
        eps.join(", "),
        LEASE.as_millis(),
        150 - 10 * i,
        support::http::PORT
    )
}

/// The units, as an operator would write them for a worker per slot.
fn sched_units(spec: &mut HostSpec) {
    spec.file(
        "/etc/systemd/system/sched-active@.target",
        "[Unit]\nDescription=sched: active in slot %i\nWants=sched@%i.service\n\
         Conflicts=sched-passive.target\n",
    );
    spec.file(
        "/etc/systemd/system/sched-passive.target",
        "[Unit]\nDescription=sched: standby\nWants=sched-standby.service\n",
    );
    spec.file(
        "/etc/systemd/system/sched-standby.service",
        "[Unit]\nDescription=sched standby\nPartOf=sched-passive.target\n\
         [Service]\nExecStart=/usr/bin/sleep infinity\n",
    );
    // `%%` and `$$` are a literal `%` and `$` in a unit file.
    spec.file(
        "/etc/systemd/system/sched@.service",
        "[Unit]\nDescription=scheduler of partition %i\nStartLimitIntervalSec=0\n\
         [Service]\nType=exec\nEnvironmentFile=-/run/promd/sched.env\n\
         ExecStartPre=/bin/sh -c 'echo \"start $$(date +%%s%%N) $${PROMD_TERM:-}\" >> /spans/slot-%i.log; \
         echo \"slot=$${PROMD_SLOT:-none} term=$${PROMD_TERM:-none}\" > /run/sched-%i.seen'\n\
         ExecStart=/bin/sh -c 'trap \"\" TERM; sleep infinity & sleep infinity & wait'\n\
         ExecStop=/bin/sleep 1\n\
         ExecStopPost=/bin/sh -c 'echo \"stop $$(date +%%s%%N)\" >> /spans/slot-%i.log'\n\
         TimeoutStopSec=2s\n",
    );
}

struct Slots {
    c: Cluster,
}

impl Slots {
    /// Which host runs slot `k`'s service now, if exactly one does.
    fn holder(&self, k: u32) -> Option<usize> {
        let unit = format!("sched@{k}.service");
        let running: Vec<usize> = (0..HOSTS)
            .filter(|&i| self.c.hosts[i].is_active(&unit))
            .collect();
        (running.len() == 1).then(|| running[0])
    }

    /// Waits until `actives` slots are each run by exactly one host, every host runs at most
    /// one, and exactly one other host runs the passive target; returns the holders by slot
    /// and the standby.
    fn wait_settled(&self, actives: u32, timeout: Duration) -> (Vec<usize>, usize) {
        let mut found = (Vec::new(), 0);
        hosts::wait_until(timeout, "every slot held once and one standby", || {
            let holders: Option<Vec<usize>> = (0..actives).map(|k| self.holder(k)).collect();
            let Some(holders) = holders else {
                return false;
            };
            let mut distinct = holders.clone();
            distinct.sort();
            distinct.dedup();
            let standbys: Vec<usize> = (0..HOSTS)
                .filter(|&i| self.c.hosts[i].is_active("sched-passive.target"))
                .collect();
            let ok = distinct.len() == holders.len()
                && standbys.len() == 1
                && !holders.contains(&standbys[0]);
            if ok {
                found = (holders, standbys[0]);
            }
            ok
        });
        found
    }

    /// Slot `k`'s spans on every host.
    fn spans(&self, k: u32) -> Vec<(String, Vec<Span>)> {
        (0..HOSTS)
            .map(|i| {
                let path = self.c.span_dir(i).join(format!("slot-{k}.log"));
                (self.c.hosts[i].name().to_string(), hosts::read_spans(path))
            })
            .collect()
    }

    /// No two hosts' runs of one slot overlap, no host runs two slots at once, and each
    /// slot's term only grows.
    fn check_history(&self, slots: u32) {
        for i in 0..HOSTS {
            let mine: Vec<(String, Vec<Span>)> = (0..slots)
                .map(|k| {
                    let path = self.c.span_dir(i).join(format!("slot-{k}.log"));
                    (format!("n{} slot {k}", i + 1), hosts::read_spans(path))
                })
                .collect();
            let both = hosts::find_overlaps(&mine);
            assert!(both.is_empty(), "a host in two slots at once: {both:#?}");
        }
        for k in 0..slots {
            let spans = self.spans(k);
            hosts::assert_no_overlap(&spans);
            let unit = format!("sched@{k}.service");
            let starts: Vec<(u64, u64, &str, &str)> = spans
                .iter()
                .flat_map(|(h, spans)| {
                    spans.iter().map(|s| {
                        let term = s.term.expect("PROMD_TERM in the service's environment");
                        (s.start_ns, term, h.as_str(), unit.as_str())
                    })
                })
                .collect();
            assert_terms_grow(starts);
        }
    }

    /// The first start of slot `k`'s service on host `i` at or after `t0`.
    fn start_after(&self, k: u32, i: usize, t0: u64) -> u64 {
        let path = self.c.span_dir(i).join(format!("slot-{k}.log"));
        hosts::read_spans(path)
            .iter()
            .map(|s| s.start_ns)
            .find(|&s| s >= t0)
            .unwrap_or_else(|| panic!("no start of slot {k} on host {i} after {t0}"))
    }

    /// Waits until slot `k` is held by a host other than `old`; asserts it was refilled
    /// within `bound` of `t0`. Returns the new holder and how long the refill took.
    fn refilled(
        &self,
        what: &str,
        k: u32,
        old: usize,
        t0: u64,
        bound: Duration,
    ) -> (usize, Duration) {
        let mut new = 0;
        hosts::wait_until(bound + Duration::from_secs(10), what, || {
            match self.holder(k) {
                Some(h) if h != old => {
                    new = h;
                    true
                }
                _ => false,
            }
        });
        let took = elapsed(t0, self.start_after(k, new, t0));
        eprintln!(
            "{what}: slot {k} held by n{} after {} ms",
            new + 1,
            took.as_millis()
        );
        assert!(took <= bound, "{what}: took {took:?}, bound {bound:?}");
        (new, took)
    }

    /// kill -9 of promd on `old`, slot `k`'s holder: refilled within lease + 1 s by another
    /// host, and promd back on `old`. Returns the new holder and the refill's time.
    fn kill_promd(&self, k: u32, old: usize) -> (usize, Duration) {
        let pid = self.c.promd_pid(old);
        let t0 = hosts::now_ns();
        self.c.hosts[old].signal(pid, Signal::SIGKILL);
        let refill = self.refilled("kill -9", k, old, t0, REFILL_BOUND);
        self.wait_promd_back(old, pid);
        refill
    }

    /// SIGSTOP of promd on `old`, slot `k`'s holder: its watchdog ends it and the units go
    /// with it; refilled within lease + 1 s, promd back on `old` (SIGCONT if it still
    /// exists). Returns the new holder and the refill's time.
    fn stop_promd(&self, k: u32, old: usize) -> (usize, Duration) {
        let pid = self.c.promd_pid(old);
        let t0 = hosts::now_ns();
        self.c.hosts[old].signal(pid, Signal::SIGSTOP);
        let refill = self.refilled("SIGSTOP", k, old, t0, REFILL_BOUND);
        if self.c.hosts[old].owns_pid(pid) {
            self.c.hosts[old].signal(pid, Signal::SIGCONT);
        }
        self.wait_promd_back(old, pid);
        refill
    }

    /// A silent cut of `old`, slot `k`'s holder: refilled within lease + 1 s, the cut host
    /// fences itself, then the cut heals. Returns the new holder and the refill's time.
    fn cut_holder(&self, k: u32, old: usize) -> (usize, Duration) {
        let t0 = hosts::now_ns();
        self.c.hosts[old].cut();
        let refill = self.refilled("silent cut", k, old, t0, REFILL_BOUND);
        let unit = format!("sched@{k}.service");
        hosts::wait_until(Duration::from_secs(30), "the cut host fenced", || {
            !self.c.hosts[old].is_active(&unit)
        });
        self.c.hosts[old].heal();
        refill
    }

    /// Waits until promd on host `i` runs again under another pid than `old_pid`.
    fn wait_promd_back(&self, i: usize, old_pid: u32) {
        hosts::wait_until(Duration::from_secs(60), "promd restarted", || {
            self.c.hosts[i]
                .pid_on_machine("promd")
                .is_some_and(|p| p != old_pid)
        });
    }

    /// `busctl call` on host `i`, as an operator would; a refusal is said, not failed on.
    fn try_call(&self, i: usize, method: &str) {
        let argv = support::bus::manager_call_argv(method, "sched", "60");
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        // Longer than busctl's own 60 s timeout, so that busctl is the one to give up.
        let out = self.c.hosts[i].exec_timeout(&argv, Duration::from_secs(70));
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            eprintln!("  {method} on n{}: refused: {}", i + 1, err.trim());
        }
    }

    /// `busctl call` on host `i`, as an operator would.
    fn call(&self, i: usize, method: &str) {
        let argv = support::bus::manager_call_argv(method, "sched", "60");
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.c.hosts[i].run_ok(&argv);
    }
}

#[test]
fn two_slots_on_five_hosts_refill_move_and_grow_without_overlap() {
    let net = Net::new(HOSTS);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let endpoints: Vec<Vec<String>> = (0..HOSTS)
        .map(|i| etcd.endpoints_via(net.gateway_ip(i)))
        .collect();
    let c = Cluster::boot_with(&net, StoreKind::Etcd(&etcd), LEASE, "", |i, spec| {
        spec.file("/etc/promd/promd.toml", config(i, &endpoints[i], 2));
        spec.file("/etc/systemd/system/promd.service", promd_unit());
        sched_units(spec);
    });
    let s = Slots { c };

    // Two hosts hold a slot each, one is the standby, two run neither target.
    let (holders, standby) = s.wait_settled(2, Duration::from_secs(60));
    eprintln!("slot holders {holders:?}, standby {standby}");
    for i in 0..HOSTS {
        let h = &s.c.hosts[i];
        let active = (0..2).filter(|k| h.is_active(&format!("sched-active@{k}.target")));
        let expected = usize::from(holders.contains(&i));
        assert_eq!(active.count(), expected, "{}", h.name());
        assert_eq!(
            h.is_active("sched-passive.target"),
            i == standby,
            "{}",
            h.name()
        );
        assert_eq!(
            h.is_active("sched-standby.service"),
            i == standby,
            "{}",
            h.name()
        );
    }
    // Each slot's service saw its slot and that slot's term; the group's env file says them.
    for (k, &i) in holders.iter().enumerate() {
        let h = &s.c.hosts[i];
        let seen = h
            .read_file(&format!("/run/sched-{k}.seen"))
            .unwrap_or_default();
        let env = h.read_file("/run/promd/sched.env").unwrap_or_default();
        let term = env
            .lines()
            .find_map(|l| l.strip_prefix("PROMD_TERM="))
            .unwrap_or("none");
        assert_eq!(seen.trim(), format!("slot={k} term={term}"), "{env}");
        assert!(env.contains(&format!("PROMD_SLOT={k}\n")), "{env}");
        assert!(env.contains("PROMD_ROLE=active\n"), "{env}");
    }
    let spare = (0..HOSTS)
        .find(|i| !holders.contains(i) && *i != standby)
        .unwrap_or_default();
    let env = s.c.hosts[spare]
        .read_file("/run/promd/sched.env")
        .unwrap_or_default();
    assert!(env.contains("PROMD_SLOT=\n"), "a spare's env file: {env}");

    // `systemctl status promd` (STATUS=) names the slot a host holds, with its term, and
    // every other slot's holder; the standby lists both; the spare says it is one.
    let terms: Vec<String> = holders
        .iter()
        .map(|&i| {
            let env = s.c.hosts[i]
                .read_file("/run/promd/sched.env")
                .unwrap_or_default();
            let term = env.lines().find_map(|l| l.strip_prefix("PROMD_TERM="));
            term.unwrap_or("none").to_string()
        })
        .collect();
    let slot = |k: usize| format!("slot {k} n{} (term {})", holders[k] + 1, terms[k]);
    let mut expected: Vec<(usize, String)> = (0..2)
        .map(|k| {
            let other = 1 - k;
            let line = format!(
                "sched: active in slot {k} (term {}), {}",
                terms[k],
                slot(other)
            );
            (holders[k], line)
        })
        .collect();
    expected.push((standby, format!("sched: passive, {}, {}", slot(0), slot(1))));
    expected.push((
        spare,
        format!("sched: passive, {}, {}, spare", slot(0), slot(1)),
    ));
    for (i, line) in expected {
        let h = &s.c.hosts[i];
        let mut seen = String::new();
        hosts::wait_until(
            Duration::from_secs(10),
            &format!("{}: STATUS= {line:?}", h.name()),
            || {
                seen = h.run_ok(&["systemctl", "show", "-p", "StatusText", "--value", "promd"]);
                seen.trim() == line
            },
        );
    }

    // D-Bus `Slots` on the group's object names each slot's holder, on every host.
    for h in &s.c.hosts {
        let slots = support::bus::busctl_json(
            h,
            &[
                "get-property",
                "org.promd1",
                "/org/promd1/group/sched",
                "org.promd1.Group",
                "Slots",
            ],
        );
        let holders_seen: Vec<String> = slots["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s[1].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let expected: Vec<String> = holders.iter().map(|i| format!("n{}", i + 1)).collect();
        assert_eq!(holders_seen, expected, "{}: {slots}", h.name());
    }
    let status = s.c.hosts[0].run_ok(&["promctl", "status"]);
    eprintln!("{status}");
    assert!(
        status.contains(&format!("slots: 0 n{} (term", holders[0] + 1)),
        "{status}"
    );
    // The HTTP document lists the slots as D-Bus does; /metrics has a series per slot
    // (`sched@1`) beside the group's, which is this host's own slot (docs/slots.md).
    for (k, &i) in holders.iter().enumerate() {
        let h = &s.c.hosts[i];
        let (code, body) = support::http::curl(h, "GET", "/v1/status");
        assert_eq!(code, 200, "{body}");
        let doc: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
        let slots = doc["groups"][0]["slots"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let seen: Vec<(u64, String, String)> = slots
            .iter()
            .map(|s| {
                let term = s["term"].as_u64().unwrap_or(0);
                let holder = s["holder"].as_str().unwrap_or("").to_string();
                (s["slot"].as_u64().unwrap_or(99), holder, term.to_string())
            })
            .collect();
        let expected: Vec<(u64, String, String)> = (0..2)
            .map(|j| (j as u64, format!("n{}", holders[j] + 1), terms[j].clone()))
            .collect();
        assert_eq!(seen, expected, "{}: {body}", h.name());
        let (_, metrics) = support::http::curl(h, "GET", "/metrics");
        for (series, want) in [
            (
                "promd_group_role{group=\"sched\",role=\"active\"}".to_string(),
                "1",
            ),
            (
                "promd_group_term{group=\"sched\"}".to_string(),
                terms[k].as_str(),
            ),
            (
                "promd_group_role{group=\"sched@1\",role=\"active\"}".to_string(),
                if k == 1 { "1" } else { "0" },
            ),
            (
                "promd_group_term{group=\"sched@1\"}".to_string(),
                terms[1].as_str(),
            ),
        ] {
            let line = format!("{series} {want}");
            assert!(
                metrics.lines().any(|l| l == line),
                "{}: no {line:?} in\n{metrics}",
                h.name()
            );
        }
    }

    // One line per slot, slot 1 right after its group, each naming its own leader.
    let brief = s.c.hosts[0].run_ok(&["promctl", "status", "--brief"]);
    eprintln!("{brief}");
    let rows: Vec<Vec<&str>> = brief
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let leaders: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r[0].to_string(), r[2].to_string()))
        .collect();
    let expected = vec![
        ("sched".to_string(), format!("n{}", holders[0] + 1)),
        ("sched@1".to_string(), format!("n{}", holders[1] + 1)),
    ];
    assert_eq!(leaders, expected, "{brief}");

    // kill -9 promd on slot 0's holder: the slot is refilled by a host without one; the
    // other slot's holder does not move.
    let (old, other) = (holders[0], holders[1]);
    let (new, _) = s.kill_promd(0, old);
    assert_ne!(new, other, "slot 1's holder took slot 0 too");
    assert_eq!(s.holder(1), Some(other), "slot 1 moved");

    // SIGSTOP promd on slot 1's holder: its watchdog ends it, the units go with it.
    let (holders, _) = s.wait_settled(2, Duration::from_secs(60));
    let old = holders[1];
    let (new, _) = s.stop_promd(1, old);
    assert_ne!(new, holders[0]);

    // A silent cut of slot 0's holder: it fences itself, another host takes the slot.
    let (holders, _) = s.wait_settled(2, Duration::from_secs(60));
    s.cut_holder(0, holders[0]);

    // Promote on the standby: it takes the slot of the lowest-priority holder, by
    // switchover; the other slot stays where it is.
    let (holders, standby) = s.wait_settled(2, Duration::from_secs(60));
    let weakest = if holders[0] > holders[1] { 0 } else { 1 }; // n1 ranks first
    let t0 = hosts::now_ns();
    s.call(standby, "Promote");
    let (after, _) = s.wait_settled(2, Duration::from_secs(30));
    assert_eq!(
        after[weakest], standby,
        "Promote took {after:?} from {holders:?}"
    );
    assert_eq!(
        after[1 - weakest],
        holders[1 - weakest],
        "the other slot moved"
    );
    let took = elapsed(t0, s.start_after(weakest as u32, standby, t0));
    eprintln!(
        "Promote: slot {weakest} moved to n{} in {} ms",
        standby + 1,
        took.as_millis()
    );

    // Demote on the higher-priority holder: its slot goes to a host without one, although
    // those stand by for the weaker holder's slot (docs/slots.md, "The arbiter").
    let (holders, _) = s.wait_settled(2, Duration::from_secs(60));
    let strongest = if holders[0] < holders[1] { 0 } else { 1 };
    let t0 = hosts::now_ns();
    s.call(holders[strongest], "Demote");
    let (after, _) = s.wait_settled(2, Duration::from_secs(30));
    assert!(
        !holders.contains(&after[strongest]),
        "Demote: {holders:?} -> {after:?}"
    );
    assert_eq!(
        after[1 - strongest],
        holders[1 - strongest],
        "Demote moved the other slot"
    );
    let took = elapsed(t0, s.start_after(strongest as u32, after[strongest], t0));
    eprintln!(
        "Demote: slot {strongest} moved to n{} in {} ms",
        after[strongest] + 1,
        took.as_millis()
    );

    // A reload to three slots, on every host, then back to two: in place, so slots 0 and 1
    // keep their holders (no hand-over) while slot 2 comes and goes.
    let (before, _) = s.wait_settled(2, Duration::from_secs(60));
    for actives in [3, 2] {
        for (i, eps) in endpoints.iter().enumerate() {
            s.c.hosts[i].write_file("/etc/promd/promd.toml", config(i, eps, actives));
            s.c.hosts[i].run_ok(&["systemctl", "reload", "promd"]);
        }
        let (holders, _) = s.wait_settled(actives, Duration::from_secs(60));
        eprintln!("actives = {actives}: holders {holders:?}");
        assert_eq!(
            holders[..2],
            before[..],
            "a reload to {actives} slots moved slot 0 or 1"
        );
        hosts::wait_until(
            Duration::from_secs(30),
            "no third slot beyond actives",
            || (0..HOSTS).all(|i| actives == 3 || !s.c.hosts[i].is_active("sched@2.service")),
        );
    }
    // Neither slot 0 nor slot 1 was stopped by the reloads.
    for (k, &i) in before.iter().enumerate() {
        let unit = format!("sched@{k}.service");
        assert!(s.c.hosts[i].is_active(&unit), "n{}: {unit}", i + 1);
    }
    s.check_history(3);

    campaign(&s);
    s.check_history(3);
}

/// The fault kinds of [`campaign`].
const KINDS: [&str; 6] = [
    "kill -9",
    "SIGSTOP",
    "cut",
    "Promote",
    "Demote",
    "kill the service",
];

/// The fault campaign with two slots (issue 16): a seeded schedule of faults (`KINDS`), each
/// on a random slot's holder (or the standby, for Promote) after a random gap, so that it
/// lands at a random phase of the renewal cycle. After each, every slot is held by one host
/// again and one other host stands by; a slot emptied by kill -9, SIGSTOP or a cut is held
/// again within lease + 1 s. The caller then checks that no slot's runs overlapped across
/// hosts and each slot's term only grew. CI runs 12 faults of seed 1; a long run:
/// `PROMD_SLOTS_FAULTS=200 PROMD_SLOTS_SEED=7`.
fn campaign(s: &Slots) {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (faults, seed) = (env("PROMD_SLOTS_FAULTS", 12), env("PROMD_SLOTS_SEED", 1));
    let mut rng = Rng::new(seed);
    let started = std::time::Instant::now();
    let mut worst: std::collections::BTreeMap<&str, (usize, Duration)> = Default::default();
    for n in 0..faults {
        let (holders, standby) = s.wait_settled(2, Duration::from_secs(90));
        let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
        let k = rng.below(2) as u32;
        let old = holders[k as usize];
        std::thread::sleep(rng.between(Duration::ZERO, Duration::from_millis(1500)));
        eprintln!(
            "[seed {seed} fault {n}] {kind}, slot {k} on n{} (holders {holders:?}, standby n{})",
            old + 1,
            standby + 1
        );
        let refill = match kind {
            "kill -9" => Some(s.kill_promd(k, old).1),
            "SIGSTOP" => Some(s.stop_promd(k, old).1),
            "cut" => Some(s.cut_holder(k, old).1),
            // A refusal is an answer too (the standby may be in its failure cooldown after
            // a "kill the service"); the slots must stay held either way.
            "Promote" => {
                s.try_call(standby, "Promote");
                None
            }
            "Demote" => {
                s.try_call(old, "Demote");
                None
            }
            _ => {
                let unit = format!("sched@{k}.service");
                s.c.hosts[old].run_ok(&["systemctl", "kill", "--signal=SIGKILL", &unit]);
                None
            }
        };
        if let Some(took) = refill {
            let e = worst.entry(kind).or_default();
            *e = (e.0 + 1, e.1.max(took));
        }
    }
    let (holders, _) = s.wait_settled(2, Duration::from_secs(90));
    eprintln!(
        "slots campaign, seed {seed}: {faults} faults in {:.0} s, holders now {holders:?}; \
         slowest refill per kind: {}",
        started.elapsed().as_secs_f64(),
        worst
            .iter()
            .map(|(kind, (n, t))| format!("{kind} {} ms (of {n})", t.as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
