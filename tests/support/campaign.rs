//! The fault campaign: three nspawn hosts running promd (etcd store, lease 2s) and the
//! span-recording `web.service`, a 3-member etcd, and a seeded random schedule of faults.
//!
//! Each fault starts from a settled cluster (one active host, two passive and eligible, every
//! promd running), after a random gap so that it lands at a random phase of the renewal
//! cycle. It is injected, lasts its random duration, and heals; then
//! - exactly one host must run `web.service` within the fault's bound, counted from the heal
//!   (each bound is stated with its reason in [`Kind::bound`]);
//! - the spans of every host must not overlap, and the term must grow on every hand-over
//!   ([`Cluster::check_history`], after every fault and at the end).
//!
//! The schedule depends on the seed only (fault kinds, which role is hit, durations, gaps), not
//! on what happened before, so `PROMD_CAMPAIGN_SEED=S PROMD_CAMPAIGN_FAULTS=N` replays the first
//! N faults of seed S. Which host is "the active one" is decided at run time.
//!
//! Two figures per fault, from the span logs (one clock for every host):
//! - **recovery**: from the heal until the start of the service on the host found active
//!   afterwards (0 if it was already running then) — the figure the bound applies to;
//! - **downtime**: how long, between the fault's start and that moment, no host ran the
//!   service at all.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::cluster::{Cluster, StoreKind};
use super::etcd::EtcdCluster;
use super::hosts::{self, Host, Net, Signal, Span};

/// The group's lease in the campaign.
pub const LEASE: Duration = Duration::from_secs(2);
/// Escalation settings: a crash loop fails over after the third failure, and the failed host
/// is ineligible for 5 s only, so escalations do not starve the cluster of standbys.
pub const GROUP_EXTRA: &str =
    "max-restarts = 2\nrestart-backoff = \"300ms\"\nfailure-cooldown = \"5s\"\n";
/// How long the cluster may take to settle after a fault (promd back, the failed host's
/// cooldown over, every passive host passive again) before the next one. Not a bound of the
/// issue's; a cluster that never settles is a finding all the same.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest random gap between a settled cluster and the next fault.
const MAX_GAP: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------------
// The schedule

/// xorshift64* seeded through splitmix64 (so that seeds 1, 2, 3 give unrelated streams).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (the modulo bias is below 2^-50 for the small `n` used here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`, to the millisecond.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    KillPromd,
    StopPromd,
    KillWeb,
    Cut,
    EtcdMember,
    EtcdQuorum,
    Promote,
    Demote,
    RestartPromd,
    /// Two faults at once, not in the default schedule (`PROMD_CAMPAIGN_KINDS=cut+stop`): cut
    /// the active host off, and while its renewals go unanswered, hang its promd (SIGSTOP)
    /// shortly before its fence deadline.
    CutThenStop,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::KillPromd,
        Kind::StopPromd,
        Kind::KillWeb,
        Kind::Cut,
        Kind::EtcdMember,
        Kind::EtcdQuorum,
        Kind::Promote,
        Kind::Demote,
        Kind::RestartPromd,
    ];

    /// The short name `PROMD_CAMPAIGN_KINDS` uses.
    pub fn key(self) -> &'static str {
        match self {
            Kind::KillPromd => "kill",
            Kind::StopPromd => "stop",
            Kind::KillWeb => "web",
            Kind::Cut => "cut",
            Kind::EtcdMember => "member",
            Kind::EtcdQuorum => "quorum",
            Kind::Promote => "promote",
            Kind::Demote => "demote",
            Kind::RestartPromd => "restart",
            Kind::CutThenStop => "cut+stop",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::KillPromd => "kill -9 promd",
            Kind::StopPromd => "SIGSTOP promd > lease",
            Kind::KillWeb => "kill -9 web.service",
            Kind::Cut => "cut a host's link",
            Kind::EtcdMember => "kill an etcd member",
            Kind::EtcdQuorum => "lose etcd quorum",
            Kind::Promote => "D-Bus Promote (passive)",
            Kind::Demote => "D-Bus Demote (active)",
            Kind::RestartPromd => "systemctl restart promd",
            Kind::CutThenStop => "cut, then SIGSTOP promd",
        }
    }

    /// The range of the fault's random duration (zero: an instant fault).
    fn durations(self) -> (Duration, Duration) {
        let ms = Duration::from_millis;
        match self {
            // "Longer than the lease": the watchdog (750 ms for a 2 s lease) fires first.
            Kind::StopPromd => (LEASE + ms(200), LEASE + ms(3000)),
            // From shorter than the fence deadline (L - L/4) to well past the lease.
            Kind::Cut => (ms(300), LEASE * 3),
            Kind::EtcdMember => (ms(500), ms(5000)),
            Kind::EtcdQuorum => (ms(1000), ms(6000)),
            // From the cut to the SIGSTOP: the last acknowledged renewal was sent up to L/3
            // before the cut, and the fence is due L - L/4 after it.
            Kind::CutThenStop => (LEASE / 2, LEASE * 4 / 5),
            _ => (Duration::ZERO, Duration::ZERO),
        }
    }

    /// Within how long after the heal exactly one host must be active, and why.
    ///
    /// Common ground (lease L = 2 s): a lease that is not renewed lapses at most L after its
    /// last renewal was sent, plus 0.5 s (etcd checks expiry every 500 ms); a standby sees the
    /// key vanish through its watch and the best one campaigns at once, a lower-ranked one
    /// after one grace period (L/4) per rank; starting `web.service` takes ~0.1 s. Every bound
    /// carries 1 s or more of slack for this test's polling (one `systemctl is-active` per host
    /// through nsenter) on a loaded 2-core machine.
    pub fn bound(self) -> (Duration, &'static str) {
        let s = Duration::from_secs;
        match self {
            Kind::KillPromd => (
                LEASE + s(3),
                "from the kill: BindsTo stops web with promd; the restarted promd releases the old key \
                 (else it lapses within L + 0.5 s); a standby campaigns at once or after L/4 per rank",
            ),
            Kind::StopPromd => (
                LEASE + s(3),
                "from SIGCONT (after > L): the watchdog (750 ms) killed promd long before, so as kill -9",
            ),
            Kind::KillWeb => (
                LEASE + s(3),
                "from the last kill: restart in place after the 300 ms backoff, or after the third \
                 failure a hand-over (stop, release, the best standby campaigns at once)",
            ),
            Kind::Cut => (
                LEASE + s(3),
                "from the heal: a cut active host fenced itself by s + L - L/4; its key lapses by \
                 s + L + 0.5 s, or it renews again after the heal and stays",
            ),
            Kind::EtcdMember => (
                LEASE + s(3),
                "from the member serving again: two members kept quorum; a client on the dead member \
                 moves to the next endpoint (500 ms connect timeout); a raft election extends leases",
            ),
            Kind::EtcdQuorum => (
                LEASE * 2 + s(3),
                "from quorum back (the first member restarted serves): the new raft leader renews every \
                 lease, so a fenced holder's key may live L more (+0.5 s); promd retries the store at \
                 least every 1 s, then campaigns (grace L/4 per rank)",
            ),
            Kind::Promote | Kind::Demote => (
                LEASE + s(3),
                "from the call's return (it returns once the hand-over is done or refused)",
            ),
            Kind::RestartPromd => (
                LEASE + s(3),
                "from the command's return: the stop hands over at once (stop, release, campaign)",
            ),
            Kind::CutThenStop => (
                LEASE + s(3),
                "from the heal (once another host is active): as a cut",
            ),
        }
    }
}

/// One planned fault; everything random about it, drawn from the seed.
#[derive(Clone, Debug)]
pub struct Plan {
    pub kind: Kind,
    /// Hit the active host (else a passive one), where the kind leaves a choice.
    pub at_active: bool,
    /// Selects the passive host, the etcd member(s).
    pub pick: u64,
    /// kill -9 web.service: how many kills in a row (each once it runs again).
    pub count: u32,
    pub duration: Duration,
    /// Wait this long after the cluster settled before the fault (a random phase).
    pub gap: Duration,
}

/// The seeded schedule: kinds come from a shuffled bag of all kinds (so every kind occurs
/// once in every 9 consecutive faults, in random order); every fault draws the same number of
/// random values, so a schedule's first N faults do not depend on its length.
pub struct Schedule {
    rng: Rng,
    kinds: Vec<Kind>,
    bag: Vec<Kind>,
}

impl Schedule {
    pub fn new(seed: u64, kinds: &[Kind]) -> Schedule {
        assert!(!kinds.is_empty(), "no fault kinds");
        Schedule {
            rng: Rng::new(seed),
            kinds: kinds.to_vec(),
            bag: Vec::new(),
        }
    }

    pub fn next_plan(&mut self) -> Plan {
        if self.bag.is_empty() {
            self.bag = self.kinds.clone();
            for i in (1..self.bag.len()).rev() {
                let j = self.rng.below(i as u64 + 1) as usize;
                self.bag.swap(i, j);
            }
        }
        let kind = self.bag.pop().unwrap_or(Kind::KillPromd);
        let side = self.rng.below(4);
        let pick = self.rng.next_u64();
        let count = self.rng.below(3) as u32 + 1;
        let (lo, hi) = kind.durations();
        let duration = self.rng.between(lo, hi);
        let gap = self.rng.between(Duration::ZERO, MAX_GAP);
        let at_active = match kind {
            // Mostly the active host, where a fault matters; sometimes a passive one.
            Kind::KillPromd | Kind::StopPromd => side < 3,
            Kind::Cut | Kind::RestartPromd => side < 2,
            Kind::KillWeb | Kind::Demote | Kind::CutThenStop => true,
            Kind::Promote | Kind::EtcdMember | Kind::EtcdQuorum => false,
        };
        Plan {
            kind,
            at_active,
            pick,
            count,
            duration,
            gap,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration from the environment

pub struct Config {
    pub seeds: Vec<u64>,
    /// Faults in total, shared out over the seeds.
    pub faults: usize,
    /// The kinds the schedule draws from: [`Kind::ALL`] unless `PROMD_CAMPAIGN_KINDS` says
    /// otherwise (a comma list of [`Kind::key`]s).
    pub kinds: Vec<Kind>,
}

impl Config {
    /// `PROMD_CAMPAIGN_SEED` (one seed) or `PROMD_CAMPAIGN_SEEDS` (a comma list) override
    /// `seeds`; `PROMD_CAMPAIGN_FAULTS` (the total, shared out over the seeds) overrides `faults`.
    pub fn from_env(seeds: &[u64], faults: usize) -> Config {
        let list = |v: String| -> Vec<u64> {
            v.split(',')
                .map(|s| {
                    s.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("bad seed {s:?} in {v:?}"))
                })
                .collect()
        };
        let seeds = match (
            std::env::var("PROMD_CAMPAIGN_SEED"),
            std::env::var("PROMD_CAMPAIGN_SEEDS"),
        ) {
            (Ok(one), _) => list(one),
            (_, Ok(many)) => list(many),
            _ => seeds.to_vec(),
        };
        assert!(!seeds.is_empty(), "no seeds");
        let faults = std::env::var("PROMD_CAMPAIGN_FAULTS")
            .ok()
            .map(|v| {
                v.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("bad PROMD_CAMPAIGN_FAULTS {v:?}"))
            })
            .unwrap_or(faults);
        let all: Vec<Kind> = Kind::ALL.into_iter().chain([Kind::CutThenStop]).collect();
        let kinds = match std::env::var("PROMD_CAMPAIGN_KINDS") {
            Ok(v) => v
                .split(',')
                .map(|k| {
                    let k = k.trim();
                    *all.iter().find(|x| x.key() == k).unwrap_or_else(|| {
                        let keys: Vec<&str> = all.iter().map(|x| x.key()).collect();
                        panic!("PROMD_CAMPAIGN_KINDS: unknown kind {k:?} (known: {keys:?})")
                    })
                })
                .collect(),
            Err(_) => Kind::ALL.to_vec(),
        };
        Config {
            seeds,
            faults,
            kinds,
        }
    }

    /// The faults of the `i`th seed.
    pub fn faults_of(&self, i: usize) -> usize {
        let n = self.seeds.len();
        self.faults / n + usize::from(i < self.faults % n)
    }
}

// ---------------------------------------------------------------------------------------------
// Outcomes and figures

#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    pub index: usize,
    pub kind: Kind,
    /// What was done, to whom, and how it ended (e.g. a refusal's message).
    pub what: String,
    pub result: String,
    pub from: String,
    pub to: String,
    pub recovery: Duration,
    pub downtime: Duration,
}

pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub spans: usize,
    pub seeds: Vec<u64>,
    pub elapsed: Duration,
}

/// The `p` quantile of sorted samples (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> String {
    format!("{}", d.as_millis())
}

/// `median / p99 / max` in ms.
pub fn distribution(samples: &[Duration]) -> String {
    let mut s = samples.to_vec();
    s.sort();
    format!(
        "{} / {} / {}",
        ms(percentile(&s, 0.5)),
        ms(percentile(&s, 0.99)),
        ms(s.last().copied().unwrap_or_default())
    )
}

impl Report {
    /// The per-kind table (markdown) and the totals.
    pub fn summary(&self) -> String {
        let mut by_kind: BTreeMap<Kind, Vec<&Outcome>> = BTreeMap::new();
        for o in &self.outcomes {
            by_kind.entry(o.kind).or_default().push(o);
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n| fault | count | hand-overs | outcomes | recovery after heal ms (median / p99 / max) | \
             downtime ms (median / p99 / max) | bound ms |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for (kind, os) in &by_kind {
            let mut results: BTreeMap<&str, usize> = BTreeMap::new();
            for o in os {
                *results.entry(o.result.as_str()).or_default() += 1;
            }
            let results = results
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let rec: Vec<Duration> = os.iter().map(|o| o.recovery).collect();
            let down: Vec<Duration> = os.iter().map(|o| o.downtime).collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                kind.name(),
                os.len(),
                os.iter().filter(|o| o.from != o.to).count(),
                results,
                distribution(&rec),
                distribution(&down),
                ms(kind.bound().0),
            );
        }
        out
    }

    /// The totals of a campaign that passed.
    pub fn totals(&self) -> String {
        format!(
            "{} faults over seeds {:?} in {:.0} s: {} active spans checked, 0 overlaps, the term grew \
             on every hand-over; after every fault exactly one host was active within its bound.",
            self.outcomes.len(),
            self.seeds,
            self.elapsed.as_secs_f64(),
            self.spans,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Running it

/// Runs the campaign of `cfg`, seed after seed (a fresh cluster for each); panics at the first
/// failure, after printing the seed, the fault log, the command that replays it, and where the
/// journals went.
pub fn run(cfg: &Config) -> Report {
    let started = Instant::now();
    let mut report = Report {
        outcomes: Vec::new(),
        spans: 0,
        seeds: cfg.seeds.clone(),
        elapsed: Duration::ZERO,
    };
    for (i, &seed) in cfg.seeds.iter().enumerate() {
        let faults = cfg.faults_of(i);
        if faults == 0 {
            continue;
        }
        let (outcomes, spans) = run_seed(seed, faults, &cfg.kinds, &report);
        report.outcomes.extend(outcomes);
        report.spans += spans;
    }
    report.elapsed = started.elapsed();
    report
}

fn run_seed(seed: u64, faults: usize, kinds: &[Kind], so_far: &Report) -> (Vec<Outcome>, usize) {
    let t0 = Instant::now();
    eprintln!("== campaign seed {seed}: {faults} faults, lease {LEASE:?} ==");
    let net = Net::new(3);
    let mut etcd = EtcdCluster::start(3, &net.gateway_ips());
    let cluster = Cluster::boot_with(&net, StoreKind::Etcd(&etcd), LEASE, GROUP_EXTRA, |_, _| {});
    let mut engine = Engine {
        seed,
        c: &cluster,
        etcd: &mut etcd,
        start: Instant::now(),
        log: Vec::new(),
        outcomes: Vec::new(),
        last_seen: String::new(),
        kinds: kinds.to_vec(),
        current: 0,
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        engine.settle();
        let mut schedule = Schedule::new(seed, kinds);
        for index in 0..faults {
            let plan = schedule.next_plan();
            engine.fault(index, &plan);
        }
        cluster.check_history()
    }));
    match result {
        Ok(spans) => {
            eprintln!(
                "== seed {seed}: {faults} faults passed in {:.0} s; {spans} spans, none overlapping ==",
                t0.elapsed().as_secs_f64()
            );
            (engine.outcomes, spans)
        }
        Err(panic) => {
            engine.report_failure(faults, so_far);
            resume_unwind(panic)
        }
    }
}

struct Engine<'a> {
    seed: u64,
    c: &'a Cluster,
    etcd: &'a mut EtcdCluster,
    start: Instant,
    log: Vec<String>,
    outcomes: Vec<Outcome>,
    /// The cluster as the last settle poll saw it (printed if it never settles).
    last_seen: String,
    kinds: Vec<Kind>,
    /// The fault in progress.
    current: usize,
}

/// One host as `systemctl` and promd's D-Bus API show it.
#[derive(Debug, Default)]
struct HostState {
    promd: String,
    web: String,
    passive: String,
    role: String,
}

fn host_state(h: &Host) -> HostState {
    let script = "systemctl is-active promd.service web.service web-passive.target; \
                  busctl --timeout=5 get-property org.promd1 /org/promd1/group/web org.promd1.Group Role \
                  2>/dev/null || echo unknown";
    let out = h.exec_timeout(&["sh", "-c", script], Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(|l| l.trim().to_string());
    let mut next = || lines.next().unwrap_or_default();
    HostState {
        promd: next(),
        web: next(),
        passive: next(),
        role: next()
            .trim_start_matches("s ")
            .trim_matches('"')
            .to_string(),
    }
}

/// ` PROMD_CAMPAIGN_KINDS=...` unless `kinds` is the default.
fn kinds_env(kinds: &[Kind]) -> String {
    if kinds == Kind::ALL {
        return String::new();
    }
    let keys: Vec<&str> = kinds.iter().map(|k| k.key()).collect();
    format!(" PROMD_CAMPAIGN_KINDS={}", keys.join(","))
}

/// The one host running the service and the start of its open span, if exactly one runs it.
/// After a SIGSTOP: SIGCONT the promd if it still exists, else the watchdog killed it. Says
/// which, for the fault log.
fn resume_unless_killed(host: &Host, pid: u32) -> &'static str {
    if host.pids_on_machine("promd").contains(&pid) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
        "resumed"
    } else {
        "killed by the watchdog"
    }
}

fn one_active(c: &Cluster) -> Option<(usize, u64)> {
    let active = c.active_hosts();
    let [a] = active[..] else { return None };
    let spans = c.spans();
    let open = spans[a].1.last().filter(|s| s.stop_ns.is_none())?;
    Some((a, open.start_ns))
}

/// Time in `[from, to]` during which no host's span was open.
fn uncovered(all: &[(String, Vec<Span>)], from: u64, to: u64) -> Duration {
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
    fn say(&mut self, line: String) {
        let line = format!(
            "[seed {} +{:7.1}s] {line}",
            self.seed,
            self.start.elapsed().as_secs_f64()
        );
        eprintln!("{line}");
        self.log.push(line);
    }

    fn name(&self, i: usize) -> &str {
        self.c.hosts[i].name()
    }

    /// Waits until one host is active and the others passive and eligible, promd running
    /// everywhere; returns the active host.
    fn settle(&mut self) -> usize {
        let mut active = 0;
        let mut seen = String::new();
        let c = self.c;
        let result = catch_unwind(AssertUnwindSafe(|| {
            hosts::wait_until(
                SETTLE_TIMEOUT,
                "the cluster settles (one active host, the others passive, promd running everywhere)",
                || {
                    let states: Vec<HostState> = c.hosts.iter().map(host_state).collect();
                    seen = states
                        .iter()
                        .zip(&c.hosts)
                        .map(|(s, h)| format!("{}: {s:?}", h.name()))
                        .collect::<Vec<_>>()
                        .join("; ");
                    let actives: Vec<usize> = (0..states.len())
                        .filter(|&i| states[i].web == "active")
                        .collect();
                    let [a] = actives[..] else { return false };
                    active = a;
                    states.iter().enumerate().all(|(i, s)| {
                        s.promd == "active"
                            && if i == a {
                                s.role == "active"
                            } else {
                                s.role == "passive" && s.passive == "active"
                            }
                    })
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

    fn passive_host(&self, active: usize, pick: u64) -> usize {
        let others: Vec<usize> = (0..self.c.hosts.len()).filter(|&i| i != active).collect();
        others[(pick % others.len() as u64) as usize]
    }

    /// busctl call ... Manager METHOD s web on host `h`: "ok" or the refusal's message.
    fn manager_call(&self, h: usize, method: &str) -> String {
        let out = self.c.hosts[h].exec_timeout(
            &[
                "busctl",
                "--timeout=45",
                "call",
                "org.promd1",
                "/org/promd1",
                "org.promd1.Manager",
                method,
                "s",
                "web",
            ],
            Duration::from_secs(60),
        );
        if out.status.success() {
            return "ok".into();
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let msg = err.lines().next().unwrap_or("").trim();
        let msg = msg.strip_prefix("Call failed: ").unwrap_or(msg);
        format!("refused ({msg})")
    }

    fn fault(&mut self, index: usize, plan: &Plan) {
        let c = self.c;
        self.current = index;
        let from = self.settle();
        std::thread::sleep(plan.gap); // a random phase of the renewal cycle, not a synchronisation
        let t_fault = hosts::now_ns();
        let mut result = "done".to_string();
        let target = if plan.at_active {
            from
        } else {
            self.passive_host(from, plan.pick)
        };
        let role = if target == from { "active" } else { "passive" };
        let tname = format!("{} ({role})", self.name(target));
        let what = match plan.kind {
            Kind::KillPromd => {
                let pid = c.promd_pid(target);
                c.hosts[target].signal(pid, Signal::SIGKILL);
                format!("kill -9 promd on {tname}")
            }
            Kind::StopPromd => {
                let pid = c.promd_pid(target);
                c.hosts[target].signal(pid, Signal::SIGSTOP);
                std::thread::sleep(plan.duration); // the fault's duration
                // The watchdog has usually killed it by now; resume it only if it still exists.
                result = resume_unless_killed(&c.hosts[target], pid).into();
                format!(
                    "SIGSTOP promd on {tname} for {} ms",
                    plan.duration.as_millis()
                )
            }
            Kind::KillWeb => {
                let mut kills = 0;
                for k in 0..plan.count {
                    if k > 0 {
                        // The next crash only once it runs again (in place or elsewhere).
                        hosts::wait_until(
                            Duration::from_secs(15),
                            "web.service runs again after a crash",
                            || one_active(c).is_some(),
                        );
                        if one_active(c).map(|(a, _)| a) != Some(from) {
                            break; // failed over: the crash loop is over
                        }
                    }
                    let out =
                        c.hosts[from].exec(&["systemctl", "kill", "--signal=KILL", "web.service"]);
                    kills += u32::from(out.status.success());
                }
                format!("kill -9 web.service on {tname} x{kills}")
            }
            Kind::Cut => {
                c.hosts[target].cut();
                std::thread::sleep(plan.duration); // the fault's duration
                c.hosts[target].heal();
                format!("cut {tname} for {} ms", plan.duration.as_millis())
            }
            Kind::EtcdMember => {
                let m = (plan.pick % 3) as usize;
                self.etcd.kill_member(m);
                std::thread::sleep(plan.duration); // the fault's duration
                self.etcd.restart_member(m);
                format!("kill etcd member {m} for {} ms", plan.duration.as_millis())
            }
            Kind::EtcdQuorum => {
                let m1 = (plan.pick % 3) as usize;
                let m2 = (m1 + 1 + ((plan.pick / 3) % 2) as usize) % 3;
                self.etcd.kill_member(m1);
                self.etcd.kill_member(m2);
                std::thread::sleep(plan.duration); // the fault's duration
                self.etcd.restart_member(m1);
                format!(
                    "kill etcd members {m1} and {m2} for {} ms",
                    plan.duration.as_millis()
                )
            }
            Kind::Promote => {
                result = self.manager_call(target, "Promote");
                format!("Promote on {tname}")
            }
            Kind::Demote => {
                result = self.manager_call(target, "Demote");
                format!("Demote on {tname}")
            }
            Kind::RestartPromd => {
                c.hosts[target].run_ok(&["systemctl", "restart", "promd.service"]);
                format!("systemctl restart promd on {tname}")
            }
            Kind::CutThenStop => {
                let pid = c.promd_pid(target);
                c.hosts[target].cut();
                std::thread::sleep(plan.duration); // the fault's timing
                c.hosts[target].signal(pid, Signal::SIGSTOP);
                // Both last until another host took over.
                hosts::wait_until(
                    LEASE * 2 + Duration::from_secs(5),
                    "another host takes over from the cut, hung one",
                    || one_active(c).is_some_and(|(a, _)| a != target),
                );
                c.hosts[target].heal();
                result = resume_unless_killed(&c.hosts[target], pid).into();
                format!(
                    "cut {tname}, SIGSTOP its promd {} ms later",
                    plan.duration.as_millis()
                )
            }
        };
        // Quorum is back once the first member serves again; the bound counts from there.
        let healed = Instant::now();
        let t_heal = hosts::now_ns();
        if plan.kind == Kind::EtcdQuorum {
            let m2 = (plan.pick % 3 + 1 + (plan.pick / 3) % 2) % 3;
            self.etcd.restart_member(m2 as usize);
        }
        let (bound, why) = plan.kind.bound();
        let mut found = None;
        let waited = catch_unwind(AssertUnwindSafe(|| {
            hosts::wait_until(
                bound.saturating_sub(healed.elapsed()),
                &format!(
                    "exactly one host active within {} ms of the heal of fault #{index} ({what}); \
                     bound: {why}",
                    bound.as_millis()
                ),
                || {
                    found = one_active(c);
                    found.is_some()
                },
            )
        }));
        if let Err(panic) = waited {
            let active = c.active_hosts();
            self.say(format!(
                "#{index} {what}: {result}; NOT recovered within {} ms (active now: {active:?})",
                bound.as_millis()
            ));
            resume_unwind(panic);
        }
        let t_ok = hosts::now_ns();
        let (to, open_start) = found.unwrap_or_default();
        let recovery = Duration::from_nanos(open_start.saturating_sub(t_heal));
        let downtime = uncovered(&c.spans(), t_fault, t_ok);
        let outcome = Outcome {
            seed: self.seed,
            index,
            kind: plan.kind,
            what: what.clone(),
            result: result.clone(),
            from: self.name(from).to_string(),
            to: self.name(to).to_string(),
            recovery,
            downtime,
        };
        self.say(format!(
            "#{index} {what}: {result}; {} -> {} active, recovery {} ms after the heal (bound {} ms), \
             downtime {} ms",
            outcome.from,
            outcome.to,
            recovery.as_millis(),
            bound.as_millis(),
            downtime.as_millis()
        ));
        assert!(
            recovery <= bound,
            "fault #{index} ({what}): the service started {recovery:?} after the heal, bound {bound:?}"
        );
        self.outcomes.push(outcome);
        c.check_history();
    }

    /// Prints what reproduces the failure and saves the journals, spans and etcd logs.
    fn report_failure(&self, faults: usize, so_far: &Report) {
        let failed_at = self.current;
        let dir = PathBuf::from(format!(
            "/tmp/promd-campaign-seed{}-{}",
            self.seed,
            hosts::now_ns() / 1_000_000_000
        ));
        let _ = std::fs::create_dir_all(&dir);
        for h in &self.c.hosts {
            let out = h.exec_timeout(
                &[
                    "journalctl",
                    "--no-pager",
                    "-q",
                    "-o",
                    "short-precise",
                    "-u",
                    "promd.service",
                    "-u",
                    "web.service",
                    "-u",
                    "web-active.target",
                    "-u",
                    "web-passive.target",
                ],
                Duration::from_secs(30),
            );
            let _ = std::fs::write(dir.join(format!("{}.journal", h.name())), &out.stdout);
        }
        for m in 0..3 {
            let _ = std::fs::copy(self.etcd.log_path(m), dir.join(format!("etcd-{m}.log")));
        }
        let spans = self.c.spans();
        let _ = std::fs::write(dir.join("timeline.txt"), hosts::timeline(&spans));
        let _ = std::fs::write(dir.join("faults.log"), self.log.join("\n") + "\n");
        let mut partial = Report {
            outcomes: so_far.outcomes.clone(),
            spans: 0,
            seeds: so_far.seeds.clone(),
            elapsed: Duration::ZERO,
        };
        partial.outcomes.extend(self.outcomes.iter().cloned());
        eprintln!(
            "\n==== CAMPAIGN FAILED: seed {}, fault #{failed_at} of {faults} ====\n\
             fault log:\n{}\n\
             spans:\n{}\n\
             figures of the faults that passed:{}\n\
             journals (promd, web), spans, etcd logs: {}\n\
             replay: PROMD_CAMPAIGN_SEED={} PROMD_CAMPAIGN_FAULTS={}{} \
             cargo test --release --test system_campaign -- --nocapture\n",
            self.seed,
            self.log.join("\n"),
            hosts::timeline(&spans),
            partial.summary(),
            dir.display(),
            self.seed,
            failed_at + 1,
            kinds_env(&self.kinds),
        );
    }
}
